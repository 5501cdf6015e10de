"""Noise schedules and the forward process of DDPM (Ho et al. 2020).

Indexing follows DDPM exactly: steps t = 1..T, beta_1..beta_T, and
alpha_bar_t = prod_{s=1..t} (1 - beta_s). Index 0 is the clean data, so the arrays
below have length T + 1 with beta_0 = 0 and alpha_bar_0 = 1. alpha_bar is computed and
stored in float64 (the privacy accountant of Theorem 5.1 needs it to 2 decimals at
t0 ~ 700 where alpha_bar ~ 5e-3); tensors are cast to the data's dtype only when used.

    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps                    (from 0)
    x_t = sqrt(alpha_bar_t / alpha_bar_s) x_s + sqrt(1 - alpha_bar_t / alpha_bar_s) eps'  (s < t)

References: Ho et al. 2020 (linear), Nichol & Dhariwal 2021 (cosine,
https://arxiv.org/abs/2102.09672).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

SCHEDULES = ("linear", "cosine")


def linear_betas(T: int, beta_1: float = 1e-4, beta_T: float = 0.02) -> torch.Tensor:
    """beta_1..beta_T spaced linearly (Ho et al. 2020), float64, shape (T,)."""
    return torch.linspace(beta_1, beta_T, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """beta_1..beta_T of the cosine schedule (Nichol & Dhariwal 2021), float64, shape (T,)."""
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


@dataclass(frozen=True)
class Schedule:
    """A T-step variance schedule. `betas[t]` and `alpha_bar[t]` for t = 0..T (float64)."""

    T: int = 1000
    kind: str = "linear"
    betas: torch.Tensor = field(init=False, repr=False)
    alpha_bar: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.T, int) or self.T < 2:
            raise ValueError(f"T must be an integer >= 2, got {self.T!r}")
        if self.kind == "linear":
            # DDPM's 1e-4..0.02 is tuned for T = 1000; rescale so shorter chains end as noisy.
            scale = 1000 / self.T
            b = linear_betas(self.T, 1e-4 * scale, min(0.02 * scale, 0.999))
        elif self.kind == "cosine":
            b = cosine_betas(self.T)
        else:
            raise ValueError(f"unknown schedule kind {self.kind!r}; allowed: {SCHEDULES}")
        betas = torch.cat([torch.zeros(1, dtype=torch.float64), b])  # (T+1,), beta_0 = 0
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alpha_bar", torch.cumprod(1 - betas, 0))  # alpha_bar_0 = 1

    def check_step(self, t: int, name: str = "t", lo: int = 0, hi: int | None = None) -> int:
        """Return int(t) if lo <= t <= hi (default 0..T), else raise a ValueError naming it."""
        hi = self.T if hi is None else hi
        try:
            ok = not isinstance(t, (bool, str)) and int(t) == t and lo <= int(t) <= hi
        except (TypeError, ValueError, OverflowError):  # None, NaN, infinity, objects
            ok = False
        if not ok:
            raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {t!r}")
        return int(t)


def extract(a: torch.Tensor, t: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
    """a[t] reshaped to broadcast against x: (B,) -> (B, 1, ..., 1), in x's dtype and device."""
    out = a[torch.as_tensor(t).long()].to(x)
    return out.reshape(out.shape + (1,) * (x.dim() - out.dim()))


def q_sample(
    sched: Schedule, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (t per sample or one int)."""
    return q_sample_from(sched, x0, 0, t, noise)


def q_sample_from(
    sched: Schedule,
    x_s: torch.Tensor,
    s: torch.Tensor | int,
    t: torch.Tensor | int,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """x_t = sqrt(abar_t/abar_s) x_s + sqrt(1 - abar_t/abar_s) eps' for s <= t."""
    s_t, t_t = torch.as_tensor(s).long(), torch.as_tensor(t).long()
    if (s_t > t_t).any() or (s_t < 0).any() or (t_t > sched.T).any():
        raise ValueError(f"need 0 <= s <= t <= T={sched.T}, got s={s!r}, t={t!r}")
    noise = torch.randn_like(x_s) if noise is None else noise
    ratio = (sched.alpha_bar[t_t] / sched.alpha_bar[s_t]).to(x_s)  # abar_t / abar_s, () or (B,)
    ratio = ratio.reshape(ratio.shape + (1,) * (x_s.dim() - ratio.dim()))  # (B, 1, ..., 1)
    return ratio.sqrt() * x_s + (1 - ratio).sqrt() * noise
