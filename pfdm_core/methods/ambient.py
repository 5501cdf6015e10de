"""Beyond the paper: the shared model learns below t0 from the uploads alone (ambient diffusion).

PFDM's server owns steps t0+1..T because the uploads x̃ are samples of x_t0: for t > t0 the
sub-chain loss is exact (Tweedie: E[x̃ | x_t] determines E[x_0 | x_t], `diffusion.FullChainEps`).
Below t0 no target exists in the uploads, but the posterior mean h(x_t, t) = E[x_0 | x_t] is a
martingale along the reverse process (Daras et al., "Consistent Diffusion Models" 2023 and
"Consistent Diffusion Meets Tweedie" 2024): for s < t,

    h(x_t, t) = E[ h(x_s, s) | x_t ],        h(x, t) = (x - sqrt(1 - ā_t) ε̂(x, t)) / sqrt(ā_t).

`AmbientLoss` trains one network on both: the paper's sub-chain loss for t in t0+1..T (its raw output
is ε̂' there, as the paper's shared model) and, for s ~ U{1..t0}, the consistency loss

    L_c = < a - h(x_s^1, s), a - h(x_s^2, s) > / d,    a = h(x_ta, t_a)  (no gradient),

whose expectation given x_ta is ||a - E[h(x_s, s) | x_ta]||^2 (two independent draws make the
square unbiased). x_ta is the upload diffused to the anchor step t_a > t0 (an exact sample of its
marginal; t_a where ā_ta/ā_t0 = 1/2: just above t0 the anchor's errors are amplified ~10x, and the
loss diverged on the Gaussian test); x_s^1, x_s^2 come from `jumps` posterior jumps of the
network's own reverse process (DDIM with eta = 1: x_τ' ~ q(x_τ' | x_τ, x̂_0 = h(x_τ, τ)), no
gradient). The anchor is trained by the exact loss above t0, so the part below t0 is pinned to what
the uploads determine, and to nothing more: where they barely carry the data's law (the digits' eps =
10 per image, ā_t0 ≈ 0.01) the term constrains little and the network's predictions below t0 drift
(tests/test_ambient.py shows both regimes on a Gaussian; docs/results.md, on digits). Approximation:
a jump plugs in the posterior mean, which is exact for the martingale when h(., s) is affine
(Gaussian data; tests/test_ambient.py checks it with the Bayes-optimal denoiser), approximate otherwise.

The result is post-processing of the uploads (same (eps, delta) as the paper's shared model). Below
t0 the raw network is a full-chain ε-predictor, so it can warm-start a personal denoiser on steps
1..t0 (`studies.personalization`), and `AmbientEps` samples it alone from T to 0.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from pfdm_core.core.diffusion import FullChainEps, diffusion_loss
from pfdm_core.core.schedule import Schedule, extract, q_sample_from
from pfdm_core.core.train import TrainConfig, train
from pfdm_core.methods.server import ModelFactory, Upload, pool


class AmbientEps(FullChainEps):
    """The ambient network as a full-chain ε-predictor on 1..T: its output scaled as `FullChainEps` above
    `origin` (t0, where it was trained on the sub-chain), unscaled at t <= t0 (trained as full-chain there)."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).long().expand(x.shape[0])
        above = t > self.origin
        a_t = self.sched.alpha_bar[t.cpu()]
        scale = torch.where(above.cpu(), ((1 - a_t) / (1 - a_t / self.sched.alpha_bar[self.origin])).sqrt(),
                            torch.ones_like(a_t))
        return self.model(x, t, y) * scale.to(x).view(-1, *[1] * (x.dim() - 1))


def x0_hat(eps_model: nn.Module, sched: Schedule, x_t: torch.Tensor, t: torch.Tensor,
           y: torch.Tensor | None) -> torch.Tensor:
    """h(x_t, t) = (x_t - sqrt(1 - ā_t) ε̂) / sqrt(ā_t) for a full-chain ε-predictor, t per sample."""
    a = extract(sched.alpha_bar, t.cpu(), x_t).to(x_t.device)
    return (x_t - (1 - a).sqrt() * eps_model(x_t, t, y)) / a.sqrt()


def posterior_jump(sched: Schedule, x_t: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, x0: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """x_t' ~ q(x_t' | x_t, x_0) for t' <= t per sample (DDIM with eta = 1):
    mean sqrt(ā_t') (1 - r)/(1 - ā_t) x_0 + sqrt(r) (1 - ā_t')/(1 - ā_t) x_t, variance (1 - ā_t')(1 - r)/(1 - ā_t),
    r = ā_t/ā_t' (t' = t: x_t itself)."""
    a_t = extract(sched.alpha_bar, t.cpu(), x_t).to(x_t.device)
    a_n = extract(sched.alpha_bar, t_next.cpu(), x_t).to(x_t.device)
    r = a_t / a_n
    mean = (a_n.sqrt() * (1 - r) * x0 + r.sqrt() * (1 - a_n) * x_t) / (1 - a_t)
    var = ((1 - a_n) * (1 - r) / (1 - a_t)).clamp_min(0)
    z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
    return mean + var.sqrt() * z


@dataclass(frozen=True)
class AmbientLoss:
    """The shared model's objective with consistency below t0 (module docstring); weight 0: the paper's loss."""

    t0: int
    weight: float = 1.0  # lambda of the consistency term (x_0 units, per pixel)
    jumps: int = 2  # posterior jumps from t0 + 1 down to s
    clip_x0: bool = True  # clamp the jumps' x̂_0 to [-1, 1], as the package's samplers do (images)
    anchor_ratio: float = 0.5  # the anchor step t_a: the first t > t0 with ā_t/ā_t0 <= this (see `anchor_step`)

    def __post_init__(self) -> None:
        if isinstance(self.t0, bool) or int(self.t0) != self.t0 or self.t0 < 1:
            raise ValueError(f"t0 must be an integer >= 1, got {self.t0!r}")
        if not self.weight >= 0:
            raise ValueError(f"weight must be >= 0, got {self.weight!r}")
        if isinstance(self.jumps, bool) or int(self.jumps) != self.jumps or self.jumps < 1:
            raise ValueError(f"jumps must be an integer >= 1, got {self.jumps!r}")
        if not 0 < self.anchor_ratio < 1:
            raise ValueError(f"anchor_ratio must be in (0, 1), got {self.anchor_ratio!r}")

    def anchor_step(self, sched: Schedule) -> int:
        """t_a: the first step above t0 with ā_t/ā_t0 <= anchor_ratio. Just above t0 the sub-chain model's
        ε̂' is multiplied by sqrt((1 - ā_t)/(1 - ā_t/ā_t0)) and then by sqrt(1 - ā_t)/sqrt(ā_t) in h: its
        errors are amplified most there, so the anchor sits where the uploads' own noise is no longer tiny."""
        r = sched.alpha_bar / sched.alpha_bar[self.t0]
        above = ((r <= self.anchor_ratio) & (torch.arange(len(r)) > self.t0)).nonzero()
        return int(above[0]) if len(above) else sched.T

    def __call__(self, model: nn.Module, sched: Schedule, x: torch.Tensor, y: torch.Tensor | None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """The loss of one batch of uploads x (= x_t0) with labels y: the paper's sub-chain loss on t0+1..T plus
        `weight` times `consistency` on half of the batch."""
        t0 = sched.check_step(self.t0, "t0", 1, sched.T - 1)
        loss = diffusion_loss(model, sched, x, y, t0 + 1, sched.T, origin=t0, generator=generator)
        if self.weight == 0:
            return loss
        b = max(1, len(x) // 2)  # half a batch of consistency pairs
        return loss + self.weight * self.consistency(model, sched, x[:b], None if y is None else y[:b],
                                                     generator).mean()

    def consistency(self, model: nn.Module, sched: Schedule, x: torch.Tensor, y: torch.Tensor | None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """L_c per upload (B,): <a - h(x_s^1, s), a - h(x_s^2, s)> / d with s ~ U{1..t0} (module docstring)."""
        t0 = sched.check_step(self.t0, "t0", 1, sched.T - 1)
        f, t_a, dev = AmbientEps(model, sched, t0), self.anchor_step(sched), x.device
        s = torch.randint(1, t0 + 1, (len(x),), generator=generator, device=dev)
        ta = torch.full_like(s, t_a)
        with torch.no_grad():
            noise = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
            x_a = q_sample_from(sched, x, t0, t_a, noise)  # exact sample of x_{t_a}
            anchor = x0_hat(f, sched, x_a, ta, y)
            xx, yy, ss, cur = torch.cat([x_a, x_a]), None if y is None else torch.cat([y, y]), torch.cat([s, s]), \
                torch.cat([ta, ta])
            for j in range(1, self.jumps + 1):  # t_a = τ_0 > τ_1 > ... > τ_jumps = s, evenly spaced
                nxt = t_a - torch.div((t_a - ss) * j, self.jumps, rounding_mode="floor")
                x0 = x0_hat(f, sched, xx, cur, yy)
                xx = posterior_jump(sched, xx, cur, nxt, x0.clamp(-1, 1) if self.clip_x0 else x0, generator)
                cur = nxt
        h1, h2 = x0_hat(f, sched, xx, ss, yy).chunk(2)
        return ((anchor - h1) * (anchor - h2)).flatten(1).mean(1)


def gradient_norms(model: nn.Module, loss: AmbientLoss, sched: Schedule, x: torch.Tensor, y: torch.Tensor | None,
                   generator: torch.Generator | None = None) -> tuple[float, float]:
    """The global gradient norms of the two terms of `loss` on one batch of uploads x: (the sub-chain loss on
    t0+1..T, `weight` times the consistency term on half the batch), as `AmbientLoss.__call__` sums them. Their ratio
    says which term steers an update (train clips the sum's norm, `TrainConfig.grad_clip`). Leaves no gradient."""
    t0 = sched.check_step(loss.t0, "t0", 1, sched.T - 1)
    b = max(1, len(x) // 2)
    terms = (lambda: diffusion_loss(model, sched, x, y, t0 + 1, sched.T, origin=t0, generator=generator),
             lambda: loss.weight * loss.consistency(model, sched, x[:b], None if y is None else y[:b], generator).mean())
    norms = []
    for term in terms:
        model.zero_grad(set_to_none=True)
        term().backward()
        norms.append(float(torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in model.parameters()
                                          if p.grad is not None))))
    model.zero_grad(set_to_none=True)
    return norms[0], norms[1]


def server_train_ambient(uploads: Sequence[Upload], make_model: ModelFactory, sched: Schedule, config: TrainConfig,
                         checkpoint: str | os.PathLike | None = None, progress: bool = True,
                         loss: AmbientLoss | None = None) -> nn.Module:
    """Server side: the shared denoiser on the pooled uploads, steps 1..T by `AmbientLoss` (default: weight 1,
    2 jumps). Its raw output is ε̂' above t0 (use it as the paper's shared model: `pfdm_sample`, `EpsFn.pfdm`)
    and ε̂ at t <= t0 (warm-start a personal denoiser; `AmbientEps` samples it alone)."""
    x, y, t0 = pool(uploads)
    loss = AmbientLoss(t0) if loss is None else loss
    if loss.t0 != t0:
        raise ValueError(f"the loss's t0 ({loss.t0}) is not the uploads' ({t0})")
    return train(make_model(), sched, x, y, 1, sched.T, config=config, checkpoint=checkpoint, progress=progress,
                 desc=f"PFDM ambient shared (t0={t0})", objective=loss).model


__all__ = ["AmbientEps", "AmbientLoss", "gradient_norms", "posterior_jump", "server_train_ambient", "x0_hat"]
