"""The attacks' view of a model: a full-chain noise predictor `EpsFn` (also of PFDM's two segments)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pfdm_core.core.diffusion import sub_chain_eps_scale
from pfdm_core.core.schedule import Schedule
from pfdm_core.privacy.mechanism import check_images


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
        """Client m's chain as `methods.pfdm.pfdm_sample` runs it: personal t <= t0, shared t > t0."""
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


__all__ = ["EpsFn", "Segment"]
