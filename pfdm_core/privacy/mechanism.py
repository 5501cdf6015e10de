"""The PFDM upload as a Gaussian mechanism, and its (eps, delta) accountants.

Client side, once per image:  x <- x * min(1, C / ||x||_2),
                              x_tilde = sqrt(abar_t0) x + sqrt(1 - abar_t0) z,  z ~ N(0, I).
Dividing by sqrt(abar_t0) gives x + sigma z with sigma^2 = (1 - abar_t0) / abar_t0: a Gaussian
mechanism with l2 sensitivity Delta = 2C (replace-one neighbours, both clipped to norm C).

Two accountants for the same mechanism:
  * "thm51"    the paper's Theorem 5.1:  eps = 2C^2/sigma^2 + C sqrt(8 ln(1/delta) / sigma^2)
                (the classical Delta^2/(2 sigma^2) + Delta sqrt(2 ln(1/delta))/sigma, loose);
  * "analytic" the tight analytic Gaussian mechanism (Balle & Wang 2018, Theorem 8): the
                smallest eps with Phi(mu/2 - eps/mu) - e^eps Phi(-mu/2 - eps/mu) <= delta,
                mu = Delta / sigma.
Units: "per-image" (neighbours differ in one whole image of norm <= C, C = clip_norm) and
"per-pixel" (neighbours differ in `pixels` pixels of range [-1, 1]: Delta = 2 sqrt(pixels), i.e.
C = sqrt(pixels); pixels = 1 is the paper's per-pixel unit, pixels = k is group privacy).
Labels are uploaded in the clear: the guarantee covers pixels, not labels.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.special import log_ndtr, ndtr

from pfdm_core.core.schedule import Schedule

ACCOUNTANTS = ("thm51", "analytic")
UNITS = ("per-image", "per-pixel")


# ----------------------------------------------------------------------------- checks
def check_positive(value: float, name: str) -> float:
    if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


MAX_CLIP_NORM = 1e6  # images in [-1, 1]^d have l2 norm <= sqrt(d): 1e6 covers any d up to 1e12


def check_clip_norm(clip_norm: float) -> float:
    """A per-image l2 clip norm C in (0, MAX_CLIP_NORM], in one line otherwise."""
    if not (isinstance(clip_norm, (int, float, np.floating)) and not isinstance(clip_norm, bool)
            and math.isfinite(clip_norm) and 0 < clip_norm <= MAX_CLIP_NORM):
        raise ValueError(f"clip_norm must be a finite number in (0, {MAX_CLIP_NORM:g}], got {clip_norm!r}")
    return float(clip_norm)


def check_delta(delta: float) -> float:
    if not (isinstance(delta, (int, float, np.floating)) and 0 < delta < 1):
        raise ValueError(f"delta must be in the open interval (0, 1), got {delta!r}")
    return float(delta)


def check_images(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """A batch (B, ...) of finite values."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch tensor of shape (B, ...), got {getattr(x, 'shape', type(x))}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def sensitivity_norm(unit: str, clip_norm: float, pixels: int = 1) -> float:
    """The C of Theorem 5.1 for a unit: Delta = 2C."""
    if unit == "per-image":
        return check_clip_norm(clip_norm)
    if unit == "per-pixel":
        if int(pixels) != pixels or pixels < 1:
            raise ValueError(f"pixels must be an integer >= 1, got {pixels!r}")
        return math.sqrt(pixels)
    raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")


# ----------------------------------------------------------------------------- mechanism
def clip(x: torch.Tensor, clip_norm: float) -> torch.Tensor:
    """Per-image l2 clipping x * min(1, C / ||x||_2) over all non-batch dims."""
    check_clip_norm(clip_norm)
    if not torch.isfinite(x).all():
        raise ValueError("clip: x contains NaN or infinite values")
    norms = x.flatten(1).norm(dim=1).clamp_min(1e-12)  # (B,)
    scale = (clip_norm / norms).clamp(max=1.0)
    return x * scale.view(-1, *([1] * (x.dim() - 1)))  # (B, 1, ..., 1)


def sigma_of(sched: Schedule, t0: int) -> float:
    """sigma = sqrt((1 - abar_t0) / abar_t0): the mechanism's noise std on the clean scale."""
    t0 = sched.check_step(t0, "t0", 1, sched.T - 1)
    a = float(sched.alpha_bar[t0])
    return math.sqrt((1 - a) / a)


def _urandom_uniform(n: int) -> torch.Tensor:
    """n float64 numbers uniform on (0, 1], 53 random bits each, from os.urandom (the OS's CSPRNG)."""
    k = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)
    return torch.from_numpy((k.astype(np.float64) + 1.0) / 2.0**53)


def secret_normal(shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """N(0, I) noise nobody can regenerate: Box-Muller on uniforms from the operating system's CSPRNG
    (os.urandom), with no seed for a server to know or search, and (z1 + z2 + z3 + z4) / 2 of four such
    draws, as Opacus' secure mode does, so that the low-order bits of one floating-point Gaussian draw,
    which floating-point attacks on DP noise read (Mironov 2012; Holohan & Braghin 2021), are blurred.
    Computed in float64, then cast to `dtype`."""
    n = math.prod(shape)
    z = torch.zeros(n, dtype=torch.float64)
    for _ in range(4):
        u1, u2 = _urandom_uniform(n), _urandom_uniform(n)
        z += torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)
    return (z / 2).reshape(shape).to(device=device, dtype=dtype)


def privatize(
    x: torch.Tensor,
    t0: int,
    sched: Schedule,
    clip_norm: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The upload x_tilde = sqrt(abar_t0) clip(x) + sqrt(1 - abar_t0) z (clip skipped if None).

    generator None (the default, and what every release that leaves a client must use): z is
    `secret_normal`. A seeded `generator` makes z reproducible, for in-process simulations and the
    notebooks only: anyone who knows or can guess the seed subtracts z and recovers clip(x)."""
    t0 = sched.check_step(t0, "t0", 1, sched.T - 1)
    x = check_images(x)
    if clip_norm is not None:
        x = clip(x, clip_norm)
    a = float(sched.alpha_bar[t0])
    if generator is None:
        z = secret_normal(tuple(x.shape), x.dtype, x.device)
    else:
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return math.sqrt(a) * x + math.sqrt(1 - a) * z


# ----------------------------------------------------------------------------- accountants
def eps_thm51(sigma: float | np.ndarray, C: float, delta: float) -> float | np.ndarray:
    """Theorem 5.1: eps = 2C^2/sigma^2 + C sqrt(8 ln(1/delta)/sigma^2) (vectorised over sigma)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    out = 2 * C**2 / sigma**2 + C * np.sqrt(8 * math.log(1 / delta) / sigma**2)
    return float(out) if out.ndim == 0 else out


def _delta_analytic(eps: float, mu: float) -> float:
    """delta(eps) of a Gaussian mechanism with mu = Delta/sigma (Balle & Wang 2018, Thm 8)."""
    return float(ndtr(mu / 2 - eps / mu) - math.exp(eps + log_ndtr(-mu / 2 - eps / mu)))


def eps_analytic(sigma: float, C: float, delta: float) -> float:
    """Tight eps of the Gaussian mechanism with sensitivity 2C and noise std sigma."""
    mu = 2 * C / sigma
    if _delta_analytic(0.0, mu) <= delta:
        return 0.0
    hi = 1.0
    while _delta_analytic(hi, mu) > delta:  # bracket the root; delta(eps) is decreasing
        hi *= 2
    return float(brentq(lambda e: _delta_analytic(e, mu) - delta, 0.0, hi, xtol=1e-12, rtol=1e-12))


def epsilon(
    t0: int,
    sched: Schedule | None = None,
    clip_norm: float = 10.0,
    delta: float = 1e-5,
    accountant: str = "thm51",
    unit: str = "per-image",
    pixels: int = 1,
) -> float:
    """eps of one PFDM upload at step t0 (see module docstring for accountant and unit)."""
    sched = sched or Schedule()
    C, delta = sensitivity_norm(unit, clip_norm, pixels), check_delta(delta)
    sigma = sigma_of(sched, t0)
    if accountant == "thm51":
        return eps_thm51(sigma, C, delta)
    if accountant == "analytic":
        return eps_analytic(sigma, C, delta)
    raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")


def epsilon_curve(sched: Schedule | None = None, **kwargs) -> np.ndarray:
    """eps for every t0 = 1..T-1 (index i holds t0 = i + 1)."""
    sched = sched or Schedule()
    return np.array([epsilon(t0, sched, **kwargs) for t0 in range(1, sched.T)])


def t0_for_epsilon(
    target_eps: float,
    sched: Schedule | None = None,
    clip_norm: float = 10.0,
    delta: float = 1e-5,
    accountant: str = "thm51",
    unit: str = "per-image",
    pixels: int = 1,
) -> int:
    """Smallest t0 in 1..T-1 whose upload is (target_eps, delta)-DP; eps decreases with t0."""
    sched = sched or Schedule()
    check_positive(target_eps, "epsilon")
    kw = dict(sched=sched, clip_norm=clip_norm, delta=delta, accountant=accountant, unit=unit, pixels=pixels)
    lo, hi = 1, sched.T - 1
    if epsilon(hi, **kw) > target_eps:
        raise ValueError(
            f"epsilon={target_eps} is not reachable with T={sched.T}: even t0={hi} gives "
            f"eps={epsilon(hi, **kw):.4g}; use a larger epsilon or a smaller clip_norm"
        )
    while lo < hi:  # binary search on the monotone curve
        mid = (lo + hi) // 2
        if epsilon(mid, **kw) <= target_eps:
            hi = mid
        else:
            lo = mid + 1
    return lo
