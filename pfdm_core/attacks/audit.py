"""The privacy audit of the upload: a Clopper-Pearson lower bound on eps from distinguishing neighbours.

An (eps, delta)-DP mechanism bounds every test that tells x from x' by its output:
FPR e^eps + FNR >= 1 - delta (and symmetrically), so observed error rates bound eps from below.
The audit is a test that can fail:

* the threshold of the test is chosen on calibration trials and the bound is computed on fresh trials
  (choosing it on the same trials is a search over thresholds that the confidence level does not cover);
* `eps_max` states the most the evidence trials can show (zero errors of either kind): an accountant's eps
  above it cannot be contradicted by the audit, whatever the mechanism does, and `can_refute` says so;
* the neighbours are the worst case under clipping: any two inputs in the clip ball are at most 2C apart,
  and x = C u, x' = -C u attain it (the Gaussian mechanism's privacy loss depends on the distance only);
* the statistic <x_tilde, u> is the likelihood-ratio test of that Gaussian pair: the most powerful one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
from scipy.stats import beta as beta_dist

from pfdm_core.core.schedule import Schedule
from pfdm_core.privacy.mechanism import check_delta, epsilon, privatize


@dataclass(frozen=True)
class Audit:
    """Empirical eps of a distinguishing test between uploads of two neighbours."""

    eps_lb: float  # eps >= eps_lb with confidence 1 - alpha (Clopper-Pearson upper bounds on FPR, FNR)
    threshold: float  # the test says "x" when the statistic > threshold (chosen on separate trials)
    fpr: float  # empirical, at the threshold, on the evidence trials
    fnr: float
    num_trials: int  # evidence trials per neighbour
    alpha: float
    delta: float
    eps_max: float  # the largest eps_lb num_trials can give (zero errors)
    calibration_trials: int = 0  # trials per neighbour that chose the threshold (0: it was given)
    eps_thm51: float | None = None  # the accountants' eps, when auditing the upload
    eps_analytic: float | None = None

    @property
    def can_refute(self) -> bool:
        """The evidence could show more than the tighter accountant's eps (else the audit is vacuous there)."""
        return self.eps_analytic is not None and self.eps_max > self.eps_analytic


def _eps_from_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> np.ndarray:
    """max(log((1 - delta - FNR) / FPR), log((1 - delta - FPR) / FNR)): (eps, delta)-DP forbids more."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(np.maximum(1 - delta - fnr, 0) / fpr)
        b = np.log(np.maximum(1 - delta - fpr, 0) / fnr)
    return np.nan_to_num(np.maximum(a, b), nan=-np.inf, posinf=np.inf)


def _cp_upper(k: np.ndarray, n: int, level: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound on a rate with k of n events: P(rate > bound) <= level."""
    return np.where(k < n, beta_dist.ppf(1 - level, k + 1, np.maximum(n - k, 1)), 1.0)


def max_certifiable_eps(num_trials: int, delta: float = 1e-5, alpha: float = 0.05) -> float:
    """The largest eps_lb a threshold test on num_trials per neighbour can report (no error of either kind):
    about log(num_trials / log(2 / alpha)), e.g. 10.2 for 10^5 trials at 95%."""
    zero = _cp_upper(np.array([0]), num_trials, alpha / 2)
    return float(_eps_from_rates(zero, zero, check_delta(delta))[0])


def _as_array(s: torch.Tensor | np.ndarray | list) -> np.ndarray:
    return np.asarray(torch.as_tensor(s).detach().cpu(), dtype=np.float64).ravel()


def _bounds(s1: np.ndarray, s0: np.ndarray, tau: np.ndarray, delta: float, alpha: float):
    fp = s0.size - np.searchsorted(np.sort(s0), tau, side="right")  # x' said "x"
    fn = np.searchsorted(np.sort(s1), tau, side="right")  # x said "x'"
    return _eps_from_rates(_cp_upper(fp, s0.size, alpha / 2), _cp_upper(fn, s1.size, alpha / 2), delta), fp, fn


def choose_threshold(stat_x: torch.Tensor | np.ndarray, stat_xp: torch.Tensor | np.ndarray, delta: float = 1e-5,
                     alpha: float = 0.05) -> float:
    """The threshold whose Clopper-Pearson bound is largest on these (calibration) statistics."""
    s1, s0 = _as_array(stat_x), _as_array(stat_xp)
    tau = np.unique(np.r_[s1, s0, -np.inf])  # every distinct decision
    lb, _, _ = _bounds(s1, s0, tau, check_delta(delta), alpha)
    return float(tau[int(np.argmax(lb))])


def eps_lower_bound(stat_x: torch.Tensor | np.ndarray, stat_xp: torch.Tensor | np.ndarray, delta: float = 1e-5,
                    alpha: float = 0.05, threshold: float | None = None) -> Audit:
    """The lower bound of the test 'x if stat > threshold' on these statistics, each rate bounded at alpha / 2.

    Without `threshold`, the first half of each set of statistics chooses it (`choose_threshold`) and the
    second half is the evidence, so the bound holds at confidence 1 - alpha."""
    s1, s0 = _as_array(stat_x), _as_array(stat_xp)
    delta = check_delta(delta)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    calibration = 0
    if threshold is None:
        if s1.size < 2 or s0.size < 2:
            raise ValueError(f"need non-empty statistics (>= 2 each, to calibrate on half), got {s1.size}, {s0.size}")
        calibration = min(s1.size, s0.size) // 2
        threshold = choose_threshold(s1[:calibration], s0[:calibration], delta, alpha)
        s1, s0 = s1[calibration:], s0[calibration:]
    if s1.size == 0 or s0.size == 0:
        raise ValueError(f"need non-empty statistics, got {s1.size}, {s0.size}")
    lb, fp, fn = _bounds(s1, s0, np.array([threshold]), delta, alpha)
    n = min(s1.size, s0.size)
    return Audit(max(float(lb[0]), 0.0), float(threshold), float(fp[0] / s0.size), float(fn[0] / s1.size), n,
                 alpha, delta, max_certifiable_eps(n, delta, alpha), calibration)


Mechanism = Callable[[torch.Tensor, int, Schedule, float, torch.Generator], torch.Tensor]


def audit_upload(sched: Schedule, t0: int, clip_norm: float = 10.0, num_trials: int = 10_000, delta: float = 1e-5,
                 alpha: float = 0.05, shape: tuple[int, ...] = (1, 8, 8), seed: int = 0,
                 mechanism: Mechanism = privatize) -> Audit:
    """Audit `mechanism` (default: the upload, `privacy.mechanism.privatize`) at t0 with the worst-case pair
    x = C u, x' = -C u: num_trials calibration trials per neighbour choose the threshold, num_trials fresh
    ones are the evidence. The statistic <x_tilde, u> is the likelihood-ratio test of the Gaussian pair."""
    if num_trials < 1:
        raise ValueError(f"num_trials must be >= 1, got {num_trials}")
    u = torch.ones(shape) / math.prod(shape) ** 0.5  # unit vector
    g = torch.Generator().manual_seed(seed)  # a simulation of the mechanism: seeded for reproducibility
    stats = [(mechanism((sign * clip_norm * u).expand(2 * num_trials, *shape), t0, sched, clip_norm, g) * u)
             .flatten(1).sum(1) for sign in (1, -1)]  # (2 num_trials,) each: calibration, then evidence
    res = eps_lower_bound(stats[0], stats[1], delta, alpha)
    eps = {a: epsilon(t0, sched, clip_norm, delta, a) for a in ("thm51", "analytic")}
    return replace(res, eps_thm51=eps["thm51"], eps_analytic=eps["analytic"])


__all__ = ["Audit", "audit_upload", "choose_threshold", "eps_lower_bound", "max_certifiable_eps"]
