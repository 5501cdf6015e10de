"""Privacy attacks on diffusion models and on the PFDM upload (DESIGN.md 2.1 and 3).

* Membership inference: per-sample scores, LOWER means "member". All three attacks query a
  full-chain noise predictor `EpsFn` (eps_hat of x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps):
  - `loss_attack`  ||eps_hat(x_t, t) - eps||^2 averaged over fixed steps and seeded noises
                   (Matsumoto et al. 2023; Carlini et al. 2023);
  - `secmi`        SecMI_stat (Duan et al., ICML 2023): deterministic DDIM inversion
                   x_0 -> x_{t_sec} in steps of k, one step up to t_sec + k and back down;
                   score ||x_{t_sec} - x~_{t_sec}||^2;
  - `pia`          PIA (Kong et al., ICLR 2024): eps_0 = eps_hat(x_0, 0),
                   x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps_0, score ||eps_hat(x_t, t) - eps_0||_p^p.
  `roc_metrics` gives ROC AUC, TPR at 1% and 0.1% FPR and the curve (scikit-learn).
* Memorization (`memorization`): d(x, NN1) / d(x, NN2) of each generated image against the
  training set; below 1/3 counts as a copy (Yoon et al. 2023; Gu et al. 2023).
* Reconstruction (`reconstruction_attack`): denoise the upload x_tilde from t0 back to x_0;
  SSIM, l2, classifier accuracy and re-identification among the N candidates (explore.py).
* Audit (`audit_upload`): distinguish uploads of neighbours x, x' with ||x - x'|| = 2C; the
  Clopper-Pearson bounds on the test's FPR / FNR give a (1 - alpha) lower confidence bound
  eps_lb = max_tau log((1 - delta - FNR_hi) / FPR_hi)  (Jagielski et al. 2020, Nasr et al. 2021),
  which must stay below both accountants' eps.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from scipy.stats import beta as beta_dist
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.neighbors import NearestNeighbors
from torch import nn

from .diffusion import sub_chain_eps_scale
from .explore import l2_distance, posterior_mean_x0, reconstruct, reid_rate, ssim
from .metrics import accuracy
from .privacy import check_delta, check_images, epsilon, privatize
from .schedule import Schedule


# ----------------------------------------------------------------------------- eps_fn
@dataclass(frozen=True)
class Segment:
    """A denoiser owning steps t_lo..t_hi, trained on the sub-chain whose data is x_origin."""

    model: nn.Module
    t_lo: int
    t_hi: int
    origin: int = 0


class EpsFn:
    """Full-chain eps_hat(x_t, t, y) assembled from denoisers that own contiguous step ranges.

    A sub-chain model (origin s > 0: PFDM's shared model, s = t0) predicts eps' of
    x_t = sqrt(abar_t/abar_s) x_s + sqrt(1 - abar_t/abar_s) eps'. Both predictions are the score
    -grad log p_t(x_t) up to scale (Tweedie), so eps = sqrt((1 - abar_t) / (1 - abar_t/abar_s)) eps'.
    A step outside t_lo..t_hi is answered at the nearest owned step (PIA's "t = 0" is the
    model's first step); attacks check the steps they are given with `check_step`.
    """

    def __init__(self, sched: Schedule, *segments: Segment) -> None:
        segs = sorted(segments, key=lambda s: s.t_lo)
        if not segs:
            raise ValueError("EpsFn needs at least one Segment")
        for s in segs:
            if not 0 <= s.origin < s.t_lo <= s.t_hi <= sched.T:
                raise ValueError(f"need 0 <= origin < t_lo <= t_hi <= T={sched.T}, got {s.origin}, {s.t_lo}, {s.t_hi}")
        for a, b in zip(segs, segs[1:]):
            if b.t_lo != a.t_hi + 1:
                raise ValueError(f"segments must cover contiguous steps, got {a.t_lo}..{a.t_hi} then {b.t_lo}..{b.t_hi}")
        self.sched, self.segments = sched, tuple(segs)
        self.t_lo, self.t_hi = segs[0].t_lo, segs[-1].t_hi

    @classmethod
    def of(cls, model: nn.Module, sched: Schedule, origin: int = 0) -> EpsFn:
        """One model owning origin+1..T (a plain DDPM: origin 0)."""
        return cls(sched, Segment(model, origin + 1, sched.T, origin))

    @classmethod
    def shared(cls, shared: nn.Module, sched: Schedule, t0: int) -> EpsFn:
        """PFDM's shared model alone: steps t0+1..T, x_tilde as x_t0 (what the server publishes)."""
        t0 = sched.check_step(t0, "t0", 1, sched.T - 1)
        return cls.of(shared, sched, origin=t0)

    @classmethod
    def pfdm(cls, shared: nn.Module, personal: nn.Module, sched: Schedule, t0: int) -> EpsFn:
        """Client m's chain as `federated.pfdm_sample` runs it: personal t <= t0, shared t > t0."""
        t0 = sched.check_step(t0, "t0", 1, sched.T - 1)
        return cls(sched, Segment(personal, 1, t0), Segment(shared, t0 + 1, sched.T, t0))

    def check_step(self, t: int, name: str = "t") -> int:
        return self.sched.check_step(t, name, self.t_lo, self.t_hi)

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor | int, y: torch.Tensor | None = None) -> torch.Tensor:
        t = torch.as_tensor(t, device=x_t.device).long().expand(x_t.shape[0]).clamp(self.t_lo, self.t_hi)  # (B,)
        out = torch.empty_like(x_t)
        for s in self.segments:
            m = (t >= s.t_lo) & (t <= s.t_hi)  # (B,) samples this segment answers
            if m.any():
                eps = s.model(x_t[m], t[m], None if y is None else y[m])
                if s.origin > 0:
                    scale = sub_chain_eps_scale(self.sched, t[m], s.origin)  # (b,) float64
                    eps = eps * scale.to(eps).view(-1, *[1] * (eps.dim() - 1))  # (b, 1, ..., 1)
                out[m] = eps
        return out


def _abar(eps_fn: EpsFn, t: int) -> float:
    return float(eps_fn.sched.alpha_bar[t])


def _default_step(eps_fn: EpsFn, fraction: float) -> int:
    """The step `fraction * T` above the model's first one (T = 1000: 0.1 -> 100 for a DDPM)."""
    return min(eps_fn.t_lo - 1 + max(1, round(fraction * eps_fn.sched.T)), eps_fn.t_hi)


def _check_batch(x: torch.Tensor, y: torch.Tensor | None, name: str = "x") -> None:
    check_images(x, name)
    if y is not None and len(y) != len(x):
        raise ValueError(f"{name} and its labels must have the same length, got {len(x)} and {len(y)}")


def _in_batches(fn: Callable[..., torch.Tensor], batch_size: int, *tensors: torch.Tensor | None) -> torch.Tensor:
    """fn over aligned chunks of the tensors (None passes through), concatenated along dim 0."""
    n = len(tensors[0])
    return torch.cat([fn(*(None if a is None else a[i:i + batch_size] for a in tensors))
                      for i in range(0, n, batch_size)])


# ----------------------------------------------------------------------------- membership inference
def loss_attack(eps_fn: EpsFn, x0: torch.Tensor, y: torch.Tensor | None = None, steps: Sequence[int] | None = None,
                num_noise: int = 4, seed: int = 0, batch_size: int = 1024) -> torch.Tensor:
    """Per-sample ||eps_hat(x_t, t, y) - eps||^2 (pixel mean), averaged over steps x num_noise draws, (B,).

    steps: default the model's lowest 5%..30% of T (50, 100, ..., 300 for a T = 1000 DDPM).
    """
    _check_batch(x0, y)
    steps = [_default_step(eps_fn, f) for f in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)] if steps is None else steps
    steps = [eps_fn.check_step(t, "steps") for t in steps]
    if not steps or num_noise < 1:
        raise ValueError(f"need at least one step and num_noise >= 1, got {steps}, {num_noise}")
    g = torch.Generator(x0.device).manual_seed(seed)
    noise = torch.randn((len(x0), len(steps), num_noise, *x0.shape[1:]), generator=g, device=x0.device)  # (B, S, K, ...)

    def score(xb: torch.Tensor, yb: torch.Tensor | None, nb: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(len(xb), device=xb.device)
        for i, t in enumerate(steps):
            a = _abar(eps_fn, t)
            for k in range(num_noise):
                e = nb[:, i, k]
                x_t = math.sqrt(a) * xb + math.sqrt(1 - a) * e
                total += (eps_fn(x_t, t, yb) - e).pow(2).flatten(1).mean(1)
        return total / (len(steps) * num_noise)

    return _in_batches(score, batch_size, x0, y, noise)


def _ddim_step(eps_fn: EpsFn, x_s: torch.Tensor, s: int, u: int, y: torch.Tensor | None) -> torch.Tensor:
    """Deterministic DDIM step s -> u, up or down: x_u = sqrt(abar_u) x0_hat + sqrt(1 - abar_u) eps_hat(x_s, s)."""
    a_s, a_u = _abar(eps_fn, s), _abar(eps_fn, u)
    eps = eps_fn(x_s, s, y)
    x0_hat = (x_s - math.sqrt(1 - a_s) * eps) / math.sqrt(a_s)
    return math.sqrt(a_u) * x0_hat + math.sqrt(1 - a_u) * eps


def secmi(eps_fn: EpsFn, x0: torch.Tensor, y: torch.Tensor | None = None, t_sec: int | None = None,
          k: int | None = None, batch_size: int = 1024) -> torch.Tensor:
    """SecMI_stat t-error ||x_{t_sec} - x~_{t_sec}||^2 (sum over pixels), (B,); deterministic.

    x_{t_sec}: DDIM inversion 0 -> k -> 2k ... -> t_sec (steps the model does not own are
    skipped); x~_{t_sec}: one DDIM step up to t_sec + k and back. Defaults (Duan et al.):
    t_sec = 100, k = 10 for a T = 1000 DDPM, measured from the model's first step.
    """
    _check_batch(x0, y)
    t_sec = _default_step(eps_fn, 0.1) if t_sec is None else eps_fn.check_step(t_sec, "t_sec")
    k = max(1, round(0.01 * eps_fn.sched.T)) if k is None else int(k)
    if k < 1 or t_sec + k > eps_fn.t_hi:
        raise ValueError(f"need k >= 1 and t_sec + k <= {eps_fn.t_hi}, got t_sec={t_sec}, k={k}")
    grid = [0] + [s for s in range(k, t_sec, k) if s >= eps_fn.t_lo] + [t_sec]

    def score(xb: torch.Tensor, yb: torch.Tensor | None) -> torch.Tensor:
        x = xb
        for s, u in zip(grid, grid[1:]):
            x = _ddim_step(eps_fn, x, s, u, yb)
        x_back = _ddim_step(eps_fn, _ddim_step(eps_fn, x, t_sec, t_sec + k, yb), t_sec + k, t_sec, yb)
        return (x_back - x).pow(2).flatten(1).sum(1)

    return _in_batches(score, batch_size, x0, y)


def pia(eps_fn: EpsFn, x0: torch.Tensor, y: torch.Tensor | None = None, t: int | None = None, p: float = 4.0,
        normalize: bool = False, batch_size: int = 1024) -> torch.Tensor:
    """PIA ||eps_hat(x_t, t) - eps_0||_p^p with the proximal initialisation eps_0 = eps_hat(x_0, 0), (B,).

    t: default 200 for a T = 1000 DDPM (Kong et al.). normalize=True is PIAN: eps_0 is rescaled
    to the mean |.| of a standard normal, sqrt(2/pi).
    """
    _check_batch(x0, y)
    t = _default_step(eps_fn, 0.2) if t is None else eps_fn.check_step(t, "t")
    a = _abar(eps_fn, t)

    def score(xb: torch.Tensor, yb: torch.Tensor | None) -> torch.Tensor:
        eps0 = eps_fn(xb, 0, yb)  # answered at the model's first step
        if normalize:
            eps0 = eps0 * math.sqrt(2 / math.pi) / eps0.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, *[1] * (xb.dim() - 1))
        x_t = math.sqrt(a) * xb + math.sqrt(1 - a) * eps0
        return (eps_fn(x_t, t, yb) - eps0).abs().pow(p).flatten(1).sum(1)

    return _in_batches(score, batch_size, x0, y)


ATTACKS: dict[str, Callable[..., torch.Tensor]] = {"loss": loss_attack, "secmi": secmi, "pia": pia}


@dataclass(frozen=True)
class MIAResult:
    """Scores (lower = member) and the ROC of the threshold test 'member if score <= tau'."""

    member: np.ndarray  # (N_m,)
    nonmember: np.ndarray  # (N_n,)
    auc: float
    tpr_1pct: float  # TPR at FPR <= 1%
    tpr_01pct: float  # TPR at FPR <= 0.1% (needs >= 1000 non-members to mean anything)
    fpr: np.ndarray  # ROC curve
    tpr: np.ndarray

    def summary(self) -> dict[str, float]:
        return dict(auc=self.auc, tpr_1pct=self.tpr_1pct, tpr_01pct=self.tpr_01pct)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """Largest TPR of the ROC with FPR <= target (no interpolation, as Carlini et al. 2022)."""
    return float(tpr[fpr <= target].max())


def roc_metrics(member: torch.Tensor | np.ndarray, nonmember: torch.Tensor | np.ndarray) -> MIAResult:
    """ROC AUC, TPR at 1% / 0.1% FPR and the curve, members as positives, -score as the decision."""
    m, n = (np.asarray(torch.as_tensor(s).detach().cpu(), dtype=np.float64) for s in (member, nonmember))
    for name, s in (("member", m), ("nonmember", n)):
        if s.ndim != 1 or s.size == 0 or not np.isfinite(s).all():
            raise ValueError(f"{name} scores must be a non-empty 1-D array of finite values, got shape {s.shape}")
    labels, scores = np.r_[np.ones(len(m)), np.zeros(len(n))], -np.r_[m, n]
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return MIAResult(m, n, float(roc_auc_score(labels, scores)), tpr_at_fpr(fpr, tpr, 0.01),
                     tpr_at_fpr(fpr, tpr, 0.001), fpr, tpr)


def membership_inference(attack: str, eps_fn: EpsFn, members: torch.Tensor, nonmembers: torch.Tensor,
                         y_members: torch.Tensor | None = None, y_nonmembers: torch.Tensor | None = None,
                         **kwargs) -> MIAResult:
    """Run one attack ('loss', 'secmi', 'pia') on both sets with the same seeds, and its ROC."""
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {tuple(ATTACKS)}, got {attack!r}")
    if members.shape[1:] != nonmembers.shape[1:]:
        raise ValueError(f"members and nonmembers must have the same image shape, got {tuple(members.shape)}, "
                         f"{tuple(nonmembers.shape)}")
    fn = ATTACKS[attack]
    return roc_metrics(fn(eps_fn, members, y_members, **kwargs), fn(eps_fn, nonmembers, y_nonmembers, **kwargs))


# ----------------------------------------------------------------------------- memorization
@dataclass(frozen=True)
class Memorization:
    """Nearest-neighbour test of generated images against the training set (l2 over pixels)."""

    ratio: np.ndarray  # (G,) d(x, NN1) / d(x, NN2)
    nn_index: np.ndarray  # (G,) training index of NN1
    d1: np.ndarray  # (G,) distance to NN1
    d2: np.ndarray  # (G,) distance to NN2
    threshold: float

    @property
    def flagged(self) -> np.ndarray:
        return self.ratio < self.threshold

    @property
    def count(self) -> int:
        return int(self.flagged.sum())

    def closest(self, k: int = 8) -> pd.DataFrame:
        """The k generated images with the smallest ratio: indices (generated, train), distances."""
        idx = np.argsort(self.ratio, kind="stable")[:k]
        return pd.DataFrame(dict(generated=idx, train=self.nn_index[idx], d1=self.d1[idx], d2=self.d2[idx],
                                 ratio=self.ratio[idx], flagged=self.flagged[idx]))


def memorization(generated: torch.Tensor, train: torch.Tensor, threshold: float = 1 / 3) -> Memorization:
    """Flag generated x with d(x, NN1) / d(x, NN2) < threshold (a near-copy of one training image)."""
    check_images(generated, "generated")
    check_images(train, "train")
    if generated.shape[1:] != train.shape[1:]:
        raise ValueError(f"generated and train must have the same image shape, got {tuple(generated.shape[1:])}, "
                         f"{tuple(train.shape[1:])}")
    if len(train) < 2 or not 0 < threshold <= 1:
        raise ValueError(f"need >= 2 training images and threshold in (0, 1], got {len(train)}, {threshold}")
    nn_ = NearestNeighbors(n_neighbors=2).fit(train.flatten(1).double().cpu().numpy())
    dist, idx = nn_.kneighbors(generated.flatten(1).double().cpu().numpy())  # (G, 2) each
    d1, d2 = dist[:, 0], dist[:, 1]
    ratio = np.where(d1 == 0, 0.0, d1 / np.maximum(d2, 1e-300))  # an exact copy of a duplicate: 0
    return Memorization(ratio, idx[:, 0], d1, d2, float(threshold))


def pair_images(result: Memorization, generated: torch.Tensor, train: torch.Tensor, k: int = 8) -> torch.Tensor:
    """(2, k, C, H, W): the k closest generated images over their nearest training images."""
    df = result.closest(k)
    return torch.stack([generated[df.generated.tolist()], train[df.train.tolist()]])


# ----------------------------------------------------------------------------- reconstruction
@dataclass(frozen=True)
class Reconstruction:
    x_hat: torch.Tensor  # (N, C, H, W) the adversary's guesses of x_0
    ssim: torch.Tensor  # (N,) SSIM with the truth
    l2: torch.Tensor  # (N,) l2 distance to the truth
    reid: float  # fraction whose nearest candidate (of the N truths) is their own
    accuracy: float | None  # fraction classified as their label (with a classifier and labels)

    def summary(self) -> dict[str, float | None]:
        return dict(ssim=self.ssim.mean().item(), l2=self.l2.mean().item(), reid=self.reid, accuracy=self.accuracy)


def reconstruction_attack(eps_fn: EpsFn, x_tilde: torch.Tensor, t0: int, x_true: torch.Tensor,
                          y: torch.Tensor | None = None, classifier: nn.Module | None = None,
                          num_steps: int = 50) -> Reconstruction:
    """Denoise uploads x_tilde (at step t0) back to x_0 and score against the truth.

    A model owning steps 1..t0 runs deterministic DDIM t0 -> 0 (`explore.reconstruct`); one that
    owns none below t0 (PFDM's shared model) can only make the one-step estimate
    x0_hat = (x_tilde - sqrt(1 - abar_t0) eps_hat) / sqrt(abar_t0) with eps_hat at its first step.
    Labels are public in PFDM: a conditional model gets y. Candidates for re-identification are
    the N true images (chance 1/N). If uploads were clipped, pass clip(x) as x_true.
    """
    _check_batch(x_tilde, y, "x_tilde")
    check_images(x_true, "x_true")
    if x_tilde.shape != x_true.shape:
        raise ValueError(f"x_tilde and x_true must have the same shape, got {tuple(x_tilde.shape)}, {tuple(x_true.shape)}")
    t0 = eps_fn.sched.check_step(t0, "t0", 1, eps_fn.sched.T - 1)
    if eps_fn.t_lo == 1:
        x_hat = reconstruct(eps_fn, eps_fn.sched, x_tilde, t0, y, num_steps)
    else:
        x_hat = posterior_mean_x0(eps_fn, eps_fn.sched, x_tilde, t0, y)
    acc = accuracy(classifier, x_hat, y) if classifier is not None and y is not None else None
    return Reconstruction(x_hat, ssim(x_hat, x_true), l2_distance(x_hat, x_true), reid_rate(x_hat, x_true), acc)


# ----------------------------------------------------------------------------- privacy audit
@dataclass(frozen=True)
class Audit:
    """Empirical eps of a distinguishing test between uploads of two neighbours."""

    eps_lb: float  # eps >= eps_lb with confidence 1 - alpha (Clopper-Pearson upper bounds on FPR, FNR)
    threshold: float  # the test says "x" when the statistic > threshold
    fpr: float  # empirical, at the threshold
    fnr: float
    num_trials: int  # per neighbour
    alpha: float
    delta: float
    eps_thm51: float | None = None  # the accountants' eps, when auditing the upload
    eps_analytic: float | None = None


def _eps_from_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> np.ndarray:
    """max(log((1 - delta - FNR) / FPR), log((1 - delta - FPR) / FNR)): (eps, delta)-DP forbids more."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(np.maximum(1 - delta - fnr, 0) / fpr)
        b = np.log(np.maximum(1 - delta - fpr, 0) / fnr)
    return np.nan_to_num(np.maximum(a, b), nan=-np.inf, posinf=np.inf)


def _cp_upper(k: np.ndarray, n: int, level: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound on a rate with k of n events: P(rate > bound) <= level."""
    return np.where(k < n, beta_dist.ppf(1 - level, k + 1, np.maximum(n - k, 1)), 1.0)


def eps_lower_bound(stat_x: torch.Tensor | np.ndarray, stat_xp: torch.Tensor | np.ndarray, delta: float = 1e-5,
                    alpha: float = 0.05) -> Audit:
    """Best threshold test 'x if stat > tau' over all tau; each rate bounded at level alpha / 2."""
    s1, s0 = (np.asarray(torch.as_tensor(s).detach().cpu(), dtype=np.float64).ravel() for s in (stat_x, stat_xp))
    delta = check_delta(delta)
    if s1.size == 0 or s0.size == 0 or not 0 < alpha < 1:
        raise ValueError(f"need non-empty statistics and alpha in (0, 1), got {s1.size}, {s0.size}, {alpha}")
    n1, n0 = s1.size, s0.size
    tau = np.unique(np.r_[s1, s0, -np.inf])  # (K,) every distinct decision
    fp = n0 - np.searchsorted(np.sort(s0), tau, side="right")  # x' said "x"
    fn = np.searchsorted(np.sort(s1), tau, side="right")  # x said "x'"
    lb = _eps_from_rates(_cp_upper(fp, n0, alpha / 2), _cp_upper(fn, n1, alpha / 2), delta)
    best = int(np.argmax(lb))
    return Audit(max(float(lb[best]), 0.0), float(tau[best]), float(fp[best] / n0), float(fn[best] / n1),
                 min(n0, n1), alpha, delta)


def audit_upload(sched: Schedule, t0: int, clip_norm: float = 10.0, num_trials: int = 10_000, delta: float = 1e-5,
                 alpha: float = 0.05, shape: tuple[int, ...] = (1, 8, 8), seed: int = 0) -> Audit:
    """Audit `privacy.privatize` at t0 with x = C u, x' = -C u (||x - x'|| = 2C, both unclipped).

    The statistic <x_tilde, u> is the likelihood ratio test of this Gaussian pair (the optimal
    attack), drawn num_trials times per neighbour in one batch.
    """
    if num_trials < 1:
        raise ValueError(f"num_trials must be >= 1, got {num_trials}")
    u = torch.ones(shape) / math.prod(shape) ** 0.5  # unit vector
    g = torch.Generator().manual_seed(seed)
    stats = [(privatize((sign * clip_norm * u).expand(num_trials, *shape), t0, sched, clip_norm, g) * u)
             .flatten(1).sum(1) for sign in (1, -1)]  # (num_trials,) each
    res = eps_lower_bound(stats[0], stats[1], delta, alpha)
    eps = {a: epsilon(t0, sched, clip_norm, delta, a) for a in ("thm51", "analytic")}
    return replace(res, eps_thm51=eps["thm51"], eps_analytic=eps["analytic"])


__all__ = ["Segment", "EpsFn", "loss_attack", "secmi", "pia", "ATTACKS", "MIAResult", "tpr_at_fpr", "roc_metrics",
           "membership_inference", "Memorization", "memorization", "pair_images", "Reconstruction",
           "reconstruction_attack", "Audit", "eps_lower_bound", "audit_upload"]
