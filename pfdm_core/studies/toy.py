"""The toy of the PFDM paper's Theorem 5.2: a 2-D Gaussian mixture where PFDM has closed forms.

Data: component k is N(mu_k, Sigma_k) (`data.small.default_mixture`), label k. M clients in two
clusters (`data.partition.cluster_partition`): client m holds n_maj points of each majority class and
n_min of each minority class; heterogeneity is n_maj / n_min. Points are clipped to norm C.

Class-wise affine denoiser. On a sub-chain with origin s and r = abar_t / abar_s, the optimal
eps-predictor for data N(m, S) is affine (x_t and eps are jointly Gaussian):
    eps_hat(x_t) = sqrt(1 - r) (r S + (1 - r) I)^{-1} (x_t - sqrt(r) m).
Minimising the eps-loss over affine denoisers on an empirical data set gives exactly this with
(m, S) = its mean and covariance (ddof = 0): "training" = estimating (m, S).
Probability flow (DDIM, eta = 0, many steps) of that denoiser from r to r' is affine:
    x_r' = sqrt(r') m + F(S; r, r') (x_r - sqrt(r) m),
    F(S; r, r') = (r' S + (1 - r') I)^{1/2} (r S + (1 - r) I)^{-1/2}   (functions of S commute).
* local-only: the client's fit (m_c, S_c) of its own points of class k, run over T..1:
      x_0 = m_c + F(S_c; abar_T, 1) (x_T - sqrt(abar_T) m_c)              ~ N(m_c, S_c) as abar_T -> 0.
* PFDM: the shared denoiser w is fitted on the pooled uploads x_tilde = sqrt(abar_t0) x +
  sqrt(1 - abar_t0) z of class k from all clients (mean m_u, covariance S_u; origin t0, it
  predicts eps'); the personal denoiser theta_m is the client's (m_c, S_c) on steps t0..1:
      x_t0 = m_u + F(S_u; abar_T / abar_t0, 1) (x_T - sqrt(abar_T / abar_t0) m_u),
      x_0  = m_c + A (x_t0 - sqrt(abar_t0) m_c),   A = S_c^{1/2} (abar_t0 S_c + (1 - abar_t0) I)^{-1/2}.
Both are x_0 = G x_T + g with x_T ~ N(0, I), so the generated law is exactly N(g, G G^T).
t0 -> 0: A -> I and (m_u, S_u) -> the pooled fit (centralized); t0 -> T: S_u -> I, m_u -> 0,
A -> S_c^{1/2}: local-only. In between (ignoring the tiny x_T mismatch) the law has covariance
A S_u A and mean m_c + sqrt(abar_t0) A (m_pool - m_c) + sqrt(1 - abar_t0) A z_bar: the pooled
estimate, from sum_m n_mk points instead of the client's n_k, corrects the client's own fit.
Error: W2^2(N(m1, S1), N(m2, S2)) = |m1 - m2|^2 + tr(S1 + S2 - 2 (S2^{1/2} S1 S2^{1/2})^{1/2}),
to the true component N(mu_k, Sigma_k), averaged over many seeded draws of the clients' data.
Labels are uploaded in the clear; the upload of x is (eps, delta)-DP as in privacy.py.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from pfdm_core.core.diffusion import FullChainEps, ddim_sample
from pfdm_core.core.schedule import Schedule
from pfdm_core.data.partition import cluster_classes, cluster_partition
from pfdm_core.data.small import Dataset, default_mixture, gaussian_mixture
from pfdm_core.privacy.mechanism import clip, epsilon, privatize

# reps: client data draws; t0s / n_mins: sweeps; sim_n: samples of the simulated chain
TOY_PRESETS = {
    "smoke": {"reps": 40, "t0s": [1, 50, 200, 500, 999], "n_mins": [2, 5, 20, 100], "sim_n": 4000,
              "chain_n": 100},
    "cpu": {"reps": 1000, "t0s": [1, 10, 25, 50, 100, 150, 200, 300, 400, 500, 600, 700, 800, 900, 999],
            "n_mins": [2, 3, 5, 10, 20, 50, 100, 200], "sim_n": 40000, "chain_n": 300},
    "paper": {"reps": 4000, "t0s": [*range(1, 1000, 25), 999],
              "n_mins": [2, 3, 5, 10, 20, 50, 100, 200], "sim_n": 200000, "chain_n": 1000},
}


@dataclass(frozen=True)
class ToyConfig:
    K: int = 4  # mixture components = classes
    radius: float = 2.0  # component means on a circle of this radius
    std: float = 0.35  # component scale (see data.default_mixture)
    num_clients: int = 4  # two clusters of num_clients / 2
    n_maj: int = 200  # points per majority class on each client
    n_min: int = 5  # points per minority class on each client
    clip_norm: float | None = 3.0  # C of the upload (points lie well inside: clipping is ~free)
    T: int = 1000
    means: np.ndarray = field(init=False, repr=False)
    covs: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.K < 2 or self.K % 2:
            raise ValueError(f"K must be an even integer >= 2, got {self.K}")
        if self.num_clients < 2:
            raise ValueError(f"num_clients must be >= 2, got {self.num_clients}")
        if self.n_min < 2 or self.n_maj < self.n_min:
            raise ValueError(f"need 2 <= n_min <= n_maj (a covariance needs 2 points), "
                             f"got n_min={self.n_min}, n_maj={self.n_maj}")
        means, covs = default_mixture(self.K, self.radius, self.std)
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "covs", covs)

    def counts(self) -> np.ndarray:
        """(num_clients, K) points of each class on each client (cluster A first)."""
        maj_a = np.isin(np.arange(self.K), cluster_classes(self.K)[0])
        in_a = np.arange(self.num_clients) < (self.num_clients + 1) // 2
        return np.where(in_a[:, None] == maj_a[None], self.n_maj, self.n_min)

    def minority(self, client: int = 0) -> list[int]:
        """Minority classes of `client` (all classes when n_min == n_maj)."""
        return [int(k) for k in np.flatnonzero(self.counts()[client] == self.n_min)]

    def majority(self, client: int = 0) -> list[int]:
        """Majority classes of `client`."""
        return [k for k in range(self.K) if k not in self.minority(client)]


def check_t0(sched: Schedule, t0) -> np.ndarray:
    """Validate every t0 in 1..T-1 (ValueError naming t0) and return them as an int array."""
    return np.array([sched.check_step(t, "t0", 1, sched.T - 1) for t in np.ravel(t0).tolist()])


# ----------------------------------------------------------------------------- Gaussian algebra
def sqrtm_psd(S: np.ndarray) -> np.ndarray:
    """Symmetric square root of PSD matrices (..., d, d), batched via eigh."""
    lam, U = np.linalg.eigh(S)
    return (U * np.sqrt(lam.clip(min=0))[..., None, :]) @ np.swapaxes(U, -1, -2)


def fit_gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (..., d) and covariance (..., d, d), ddof = 0, of points x (..., n, d)."""
    m = x.mean(-2)
    xc = x - m[..., None, :]
    return m, np.swapaxes(xc, -1, -2) @ xc / x.shape[-2]


def gaussian_w2(m1: np.ndarray, S1: np.ndarray, m2: np.ndarray, S2: np.ndarray) -> np.ndarray:
    """Wasserstein-2 distance between N(m1, S1) and N(m2, S2), batched over leading dims."""
    R2 = sqrtm_psd(S2)
    cross = np.linalg.eigvalsh(R2 @ S1 @ R2).clip(min=0)  # eigenvalues of S2^1/2 S1 S2^1/2
    tr = np.trace(S1 + S2, axis1=-2, axis2=-1) - 2 * np.sqrt(cross).sum(-1)
    return np.sqrt(np.maximum(((m1 - m2) ** 2).sum(-1) + tr, 0.0))


def flow_map(m: np.ndarray, S: np.ndarray, r_from, r_to) -> tuple[np.ndarray, np.ndarray]:
    """(F, b) with x_r' = F x_r + b: probability flow of N(m, S) data from ratio r to r'."""
    lam, U = np.linalg.eigh(S)
    lam = lam.clip(min=0)
    r_from, r_to = np.asarray(r_from, float)[..., None], np.asarray(r_to, float)[..., None]
    f = np.sqrt((r_to * lam + 1 - r_to) / (r_from * lam + 1 - r_from))  # (..., d)
    F = (U * f[..., None, :]) @ np.swapaxes(U, -1, -2)
    b = np.sqrt(r_to) * m - (F @ (np.sqrt(r_from) * m)[..., None])[..., 0]
    return F, b


def law(G: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Law N(g, G G^T) of x_0 = G x_T + g with x_T ~ N(0, I)."""
    return g, G @ np.swapaxes(G, -1, -2)


def local_map(m_c: np.ndarray, S_c: np.ndarray, sched: Schedule) -> tuple[np.ndarray, np.ndarray]:
    """x_T -> x_0 of local-only sampling (client's fit over all steps T..1)."""
    return flow_map(m_c, S_c, float(sched.alpha_bar[sched.T]), 1.0)


def pfdm_map(m_c, S_c, m_u, S_u, sched: Schedule, t0) -> tuple[np.ndarray, np.ndarray]:
    """x_T -> x_0 of PFDM: shared fit (m_u, S_u) on T..t0+1 (origin t0), then (m_c, S_c) on t0..1."""
    a0 = sched.alpha_bar[check_t0(sched, t0)].numpy().reshape(np.shape(t0))  # abar_t0, t0's shape
    F1, b1 = flow_map(m_u, S_u, float(sched.alpha_bar[sched.T]) / a0, 1.0)  # x_T -> x_t0
    F2, b2 = flow_map(m_c, S_c, a0, 1.0)  # x_t0 -> x_0
    return F2 @ F1, (F2 @ b1[..., None])[..., 0] + b2


# ----------------------------------------------------------------------------- Monte Carlo over data
@dataclass
class ToyResult:
    """W2 to the true components: local (R, K), pooled raw data (R, K), PFDM (len(t0s), R, K)."""

    config: ToyConfig
    t0s: np.ndarray
    w2_local: np.ndarray
    w2_pooled: np.ndarray
    w2_pfdm: np.ndarray

    def mean_std(self, which: str, classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std over data draws of the W2 averaged over `classes`."""
        w = getattr(self, f"w2_{which}")[..., classes].mean(-1)  # (..., R)
        return w.mean(-1), w.std(-1)

    def gain(self, classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Paired W2(local) - W2(PFDM) over `classes`: mean and std per t0."""
        g = (self.w2_local[..., classes].mean(-1) - self.w2_pfdm[..., classes].mean(-1))  # (L, R)
        return g.mean(-1), g.std(-1)


@contextmanager
def _one_thread():
    """Run torch on one thread: 2-D ops are tiny, and thread hand-offs dominate (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _clip(x: np.ndarray, clip_norm: float | None) -> np.ndarray:
    if clip_norm is None:
        return x
    return clip(torch.from_numpy(x.reshape(-1, x.shape[-1])), clip_norm).numpy().reshape(x.shape)


@_one_thread()
def run_trials(cfg: ToyConfig, t0s: list[int], reps: int = 200, seed: int = 0,
               client: int = 0) -> ToyResult:
    """Closed-form W2 of local-only, pooled and PFDM for `reps` seeded draws of all clients' data."""
    sched, t0s, counts = Schedule(cfg.T), check_t0(Schedule(cfg.T), t0s), cfg.counts()
    L, K = len(t0s), cfg.K
    w2_local, w2_pooled, w2_pfdm = np.zeros((reps, K)), np.zeros((reps, K)), np.zeros((L, reps, K))
    for k in range(K):  # one class at a time; everything else vectorised over draws and t0
        n_c, n_pool = counts[client, k], counts[:, k].sum()
        rng = np.random.default_rng([seed, k])
        x = cfg.means[k] + rng.standard_normal((reps, n_pool, 2)) @ np.linalg.cholesky(cfg.covs[k]).T
        xc = _clip(x, cfg.clip_norm)  # (R, N, 2): what every client trains on and uploads
        m_c, S_c = fit_gaussian(xc[:, :n_c])  # the client's points come first
        w2_local[:, k] = gaussian_w2(*law(*local_map(m_c, S_c, sched)), cfg.means[k], cfg.covs[k])
        w2_pooled[:, k] = gaussian_w2(*fit_gaussian(xc), cfg.means[k], cfg.covs[k])
        gen_seed, flat = int(rng.integers(2**62)), torch.from_numpy(xc.reshape(-1, 2))  # (R N, 2)
        ups = (privatize(flat, int(t0), sched, None, torch.Generator().manual_seed(gen_seed))
               for t0 in t0s)  # the same z for every t0 (common random numbers)
        fits = (fit_gaussian(u.numpy().reshape(xc.shape)) for u in ups)
        m_u, S_u = map(np.stack, zip(*fits))  # (L, R, 2), (L, R, 2, 2)
        G, g = pfdm_map(m_c, S_c, m_u, S_u, sched, t0s[:, None])
        w2_pfdm[:, :, k] = gaussian_w2(*law(G, g), cfg.means[k], cfg.covs[k])
    return ToyResult(cfg, t0s, w2_local, w2_pooled, w2_pfdm)


# ----------------------------------------------------------------------------- one data draw, simulated
def client_split(cfg: ToyConfig, seed: int = 0) -> tuple[Dataset, list[np.ndarray]]:
    """All clients' points (clipped) and each client's index array (`data.partition.cluster_partition`)."""
    data = gaussian_mixture(cfg.counts().sum(0).tolist(), cfg.means, cfg.covs, seed)
    if cfg.clip_norm is not None:
        data = Dataset(clip(data.x, cfg.clip_norm), data.y)
    return data, cluster_partition(data.y, cfg.num_clients, cfg.n_maj, cfg.n_min, seed)


def class_fits(x: torch.Tensor, y: torch.Tensor, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class mean (K, 2) and covariance (K, 2, 2) of points x with labels y."""
    m, S = map(np.stack, zip(*(fit_gaussian(x[y == k].double().numpy()) for k in range(K))))
    return m, S


class AffineDenoiser(nn.Module):
    """Class-wise optimal eps-predictor of N(means[y], covs[y]) on the sub-chain with origin s."""

    def __init__(self, means: np.ndarray, covs: np.ndarray, sched: Schedule, origin: int = 0) -> None:
        super().__init__()
        covs = torch.as_tensor(covs, dtype=torch.float64)
        lam, U = torch.linalg.eigh(covs)  # S_k = U_k diag(lam_k) U_k^T
        self.register_buffer("means", torch.as_tensor(means, dtype=torch.float64))  # (K, d)
        self.register_buffer("covs", covs)  # (K, d, d)
        self.register_buffer("lam", lam.clamp_min(0))  # (K, d)
        self.register_buffer("U", U)  # (K, d, d)
        self.register_buffer("ratio", sched.alpha_bar / sched.alpha_bar[origin])  # abar_t / abar_s

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r = self.ratio[t][:, None]  # (B, 1)
        U = self.U[y]  # (B, d, d)
        v = (x.double() - r.sqrt() * self.means[y])[:, None, :] @ U  # (U^T (x - sqrt(r) m))^T (B,1,d)
        v = v[:, 0] / (r * self.lam[y] + 1 - r)  # (r S + (1 - r) I)^{-1} in the eigenbasis
        return ((1 - r).sqrt() * (U @ v[..., None])[..., 0]).to(x.dtype)


def fit_denoisers(cfg: ToyConfig, data: Dataset, parts: list[np.ndarray], t0: int, seed: int = 0,
                  client: int = 0) -> tuple[AffineDenoiser, AffineDenoiser]:
    """(shared w on the pooled uploads, origin t0; personal theta of `client`, origin 0)."""
    sched = Schedule(cfg.T)
    t0 = int(check_t0(sched, t0)[0])
    idx = np.concatenate(parts)
    ups = privatize(data.x[idx].double(), t0, sched, cfg.clip_norm, torch.Generator().manual_seed(seed))
    shared = AffineDenoiser(*class_fits(ups, data.y[idx], cfg.K), sched, origin=t0)
    personal = AffineDenoiser(*class_fits(data.x[parts[client]], data.y[parts[client]], cfg.K), sched)
    return shared, personal


@_one_thread()
def sample_chain(shared: nn.Module | None, personal: nn.Module, y: torch.Tensor, t0: int,
                 cfg: ToyConfig, seed: int = 0,
                 snapshots: tuple[int, ...] = ()) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """(x_T, {t: x_t}) of DDIM (eta = 0, every step): shared T..t0 then personal t0..0.

    shared=None runs `personal` over all steps (local-only). The dict always holds t = 0.
    """
    sched = Schedule(cfg.T)
    t0 = int(check_t0(sched, t0)[0])
    x_T = torch.randn(len(y), 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    stops = sorted({cfg.T, 0, *snapshots} | ({t0} if shared is not None else set()), reverse=True)
    x, out = x_T, {cfg.T: x_T}
    for hi, lo in pairwise(stops):
        # the shared fit answers on the full chain (diffusion.FullChainEps), as in methods.pfdm.pfdm_sample
        model = FullChainEps(shared, sched, t0) if shared is not None and lo >= t0 else personal
        x = ddim_sample(model, sched, x, y, t_hi=hi, t_lo=lo, num_steps=hi - lo, clip_x0=False)
        out[lo] = x
    return x_T, out


def w2_table(cfg: ToyConfig, shared: AffineDenoiser, personal: AffineDenoiser, t0: int,
             n: int, seed: int = 0, client: int = 0) -> list[dict]:
    """Per method and class: W2 to the truth (closed form; simulated samples' moments), and the gap
    between simulated and closed-form samples of the same x_T (W2 of their moments; RMS distance)."""
    y, sched = torch.arange(cfg.K).repeat_interleave(n // cfg.K), Schedule(cfg.T)
    m_c, S_c, rows = personal.means.numpy(), personal.covs.numpy(), []
    for name, sh in (("local", None), ("PFDM", shared)):
        x_T, out = sample_chain(sh, personal, y, t0, cfg, seed)
        G, g = local_map(m_c, S_c, sched) if sh is None else pfdm_map(
            m_c, S_c, sh.means.numpy(), sh.covs.numpy(), sched, t0)
        x0 = (G[y] @ x_T.numpy()[..., None])[..., 0] + g[y]  # the closed-form map on the same x_T
        path = np.linalg.norm(out[0].numpy() - x0, axis=1)  # (n,)
        m, S = law(G, g)
        for k in range(cfg.K):
            sim, closed = fit_gaussian(out[0][y == k].numpy()), fit_gaussian(x0[y == k])  # same x_T
            rows.append({"method": name, "cls": k,
                         "role": "minority" if k in cfg.minority(client) else "majority",
                         "w2_closed": float(gaussian_w2(m[k], S[k], cfg.means[k], cfg.covs[k])),
                         "w2_sim": float(gaussian_w2(*sim, cfg.means[k], cfg.covs[k])),
                         "w2_sim_vs_closed": float(gaussian_w2(*sim, *closed)),
                         "rms_path_err": float(np.sqrt((path[y == k] ** 2).mean()))})
    return rows


def epsilon_of(t0s, cfg: ToyConfig, delta: float = 1e-5) -> np.ndarray:
    """Per-point eps (Theorem 5.1, clip C = cfg.clip_norm) of the upload at each t0; inf unclipped."""
    sched = Schedule(cfg.T)
    t0s = check_t0(sched, t0s)
    if cfg.clip_norm is None:
        return np.full(len(t0s), math.inf)
    return np.array([epsilon(int(t), sched, cfg.clip_norm, delta) for t in t0s])


# ----------------------------------------------------------------------------- pictures
def color(k: int) -> str:
    """Colour of class k: the palette's cycle without C3, too close to C1 in 'colorblind'."""
    return f"C{k + (k >= 3)}"


def plot_points(ax, x, y, cfg: ToyConfig, t: int = 0, title: str | None = None, s: float = 5) -> None:
    """Points coloured by class, with the 2-sigma ellipses of the true components' law at step t."""
    x, y, a = np.asarray(x), np.asarray(y), float(Schedule(cfg.T).alpha_bar[t])
    ax.scatter(x[:, 0], x[:, 1], c=[color(k) for k in y], s=s, alpha=0.6, linewidths=0)
    circle = np.stack([np.cos(np.linspace(0, 2 * np.pi, 100)), np.sin(np.linspace(0, 2 * np.pi, 100))])
    for k in range(cfg.K):  # x_t of class k ~ N(sqrt(abar_t) mu_k, abar_t Sigma_k + (1 - abar_t) I)
        S = a * cfg.covs[k] + (1 - a) * np.eye(2)
        ax.plot(*(np.sqrt(a) * cfg.means[k][:, None] + 2 * sqrtm_psd(S) @ circle), color=color(k), lw=1)
        if t == 0:
            ax.text(*(1.5 * cfg.means[k]), str(k), color=color(k), ha="center", va="center")
    ax.set(xlim=(-4, 4), ylim=(-4, 4), aspect="equal", xticks=[], yticks=[], title=title)


def plot_band(ax, x, mean, std, label: str, **kw) -> None:
    """A mean line with a +-std band."""
    (line,) = ax.plot(x, mean, label=label, **kw)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)


def plot_chain_grid(rows: dict, cfg: ToyConfig, ts: list[int], t0: int) -> plt.Figure:
    """One row per {name: ({t: x_t}, y)}, one column per step t in ts."""
    fig, axes = plt.subplots(len(rows), len(ts), figsize=(2.1 * len(ts), 2.3 * len(rows)),
                             squeeze=False)
    for i, (name, (xs, y)) in enumerate(rows.items()):
        for j, t in enumerate(ts):
            plot_points(axes[i, j], xs[t], y, cfg, t, f"t = {t}" + (" = t0" if t == t0 else ""))
        axes[i, 0].set_ylabel(name)
    return fig


def plot_t0_sweep(ax, res: ToyResult, classes: list[int], title: str) -> None:
    """W2 (mean +- std over draws) of local-only, pooled raw data and PFDM against t0; eps on top."""
    for which, label, ls in (("local", "local-only", "-"),
                             ("pooled", "pooled raw data (no privacy)", "--")):
        m, s = res.mean_std(which, classes)
        plot_band(ax, res.t0s, np.full(len(res.t0s), m), np.full(len(res.t0s), s), label, ls=ls)
    plot_band(ax, res.t0s, *res.mean_std("pfdm", classes), "PFDM", marker="o", ms=3)
    ax.set(xlabel="t0 (hand-off step)", ylabel="W2 to the true component", ylim=(0, None))
    ax.set_title(title, pad=48)  # above the eps axis
    ticks = [t for t in (100, 300, 500, 700, 900) if res.t0s.min() <= t <= res.t0s.max()]
    top = ax.secondary_xaxis("top")
    top.set_xticks(ticks, [f"{e:.3g}" for e in epsilon_of(ticks, res.config)])
    top.set_xlabel(f"ε per point of the upload (Thm 5.1, δ = 1e-5, C = {res.config.clip_norm})")
