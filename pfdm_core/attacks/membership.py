"""Membership inference on diffusion models: loss, SecMI, PIA; scores LOWER mean "member"; ROC metrics."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from pfdm_core.attacks.common import EpsFn, _abar, _check_batch, _default_step, _in_batches


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


__all__ = ["ATTACKS", "MIAResult", "loss_attack", "membership_inference", "pia", "roc_metrics", "secmi", "tpr_at_fpr"]
