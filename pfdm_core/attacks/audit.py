"""The privacy audit of the upload: Clopper-Pearson lower bound on eps from distinguishing neighbours."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.stats import beta as beta_dist

from pfdm_core.core.schedule import Schedule
from pfdm_core.privacy.mechanism import check_delta, epsilon, privatize


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
    """Audit `privacy.mechanism.privatize` at t0 with x = C u, x' = -C u (||x - x'|| = 2C, both unclipped).

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


__all__ = ["Audit", "audit_upload", "eps_lower_bound"]
