"""The eps-prediction loss and the DDPM / DDIM samplers over any sub-range of the chain.

Every function takes an *origin* step s (default 0) and works on the
sub-chain that starts there: the data of the sub-chain is x_s, its forward kernel is
q(x_t | x_s) = N(sqrt(abar_t/abar_s) x_s, (1 - abar_t/abar_s) I). With s = 0 this is plain DDPM.
PFDM's shared denoiser uses s = t0: the uploads x_tilde play x_t0 and the model predicts the
noise eps' of x_t = sqrt(abar_t/abar_t0) x_tilde + sqrt(1 - abar_t/abar_t0) eps' (`methods.server`).

    loss   = || eps - eps_theta(x_t, t, y) ||^2,  t ~ U{t_lo..t_hi}        (Ho et al. 2020, Alg. 1)
    DDPM   : x_{t-1} ~ q(x_{t-1} | x_t, x_s = x̂_s)                         (Alg. 2, posterior var)
    DDIM   : x_{t'} = sqrt(ā_t'/ā_s) x̂_s + sqrt(1 - ā_t'/ā_s - σ²) ε̂ + σ z   (Song et al. 2021, eq. 12)
with x̂_s = (x_t - sqrt(1 - ā_t/ā_s) ε̂) / sqrt(ā_t/ā_s). Classifier-free guidance with weight w:
ε̂ = (1 + w) ε_θ(x_t, t, y) - w ε_θ(x_t, t, ∅).

Sampling through a sub-chain model: `FullChainEps`. Training on the sub-chain is exact, but
*sampling* on it is not: a coarse DDIM step on the sub-chain treats x_s as data, i.e. as a
point it can jump to, and replaces the Gaussian noise that x_s itself carries (variance
1 - ā_s, ~1 at PFDM's t0) by its posterior mean. With the Bayes-optimal denoiser of
Gaussian data, 8 sub-chain steps from T to t0 = 693 hand over an x_t0 with half its variance.
The cure is to sample the full chain (origin 0) with the sub-chain model's prediction
converted. With x_t = sqrt(ā_t) x_0 + sqrt(1 - ā_t) ε and r = ā_t/ā_s,

    sqrt(1 - ā_t) ε = sqrt(r (1 - ā_s)) ε_s + sqrt(1 - r) ε'     (x_s = sqrt(ā_s) x_0 + sqrt(1 - ā_s) ε_s)

and ε_s, ε' are independent standard normals independent of x_0. Given x_t (and x_0) the
total noise n = sqrt(1 - ā_t) ε is fixed and E[ε' | n] = sqrt(1 - r) n / (1 - ā_t); averaging
over x_0 | x_t gives E[ε' | x_t] = sqrt((1 - r) / (1 - ā_t)) E[ε | x_t], so

    ε̂(x_t, t) = sqrt((1 - ā_t) / (1 - ā_t/ā_s)) ε̂'(x_t, t)          (t > s)

and DDIM / DDPM run with origin 0 from T down to s: the step that lands on s keeps the
noise of x_s instead of collapsing it (tests/test_pfdm_chain.py checks it with Gaussian
oracles at the step counts `methods.pfdm.pfdm_sample` uses).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from pfdm_core.core import omp
from pfdm_core.core.schedule import Schedule, q_sample_from

Denoiser = nn.Module  # any callable eps_theta(x_t, t, y) -> eps_hat


def check_range(sched: Schedule, t_lo: int, t_hi: int, origin: int = 0, min_steps: int = 1) -> tuple[int, int, int]:
    """Validate origin <= t_lo, t_lo + min_steps <= t_hi <= T and return them as ints.

    min_steps = 1 for a sampler (it moves from t_hi down to t_lo); 0 for training, whose range
    t_lo..t_hi is inclusive: PFDM's shared model at t0 = T - 1 owns the single step T."""
    origin = sched.check_step(origin, "origin", 0, sched.T - 1)
    t_lo = sched.check_step(t_lo, "t_lo", origin, sched.T - min_steps)
    t_hi = sched.check_step(t_hi, "t_hi", t_lo + min_steps, sched.T)
    return t_lo, t_hi, origin


def diffusion_loss(
    model: Denoiser,
    sched: Schedule,
    x_s: torch.Tensor,
    y: torch.Tensor | None,
    t_lo: int,
    t_hi: int,
    origin: int = 0,
    p_uncond: float = 0.0,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """eps-prediction loss with t ~ U{max(t_lo, origin+1)..t_hi}, data x_s at the origin step.

    p_uncond: probability of replacing a label by the null label (classifier-free guidance).
    reduction="none" returns the per-sample loss (B,), used by membership-inference attacks.
    """
    t_lo, t_hi, origin = check_range(sched, max(t_lo, origin + 1), t_hi, origin, min_steps=0)
    B, dev = x_s.shape[0], x_s.device
    t = torch.randint(t_lo, t_hi + 1, (B,), generator=generator, device=dev)
    noise = torch.randn(x_s.shape, generator=generator, device=dev, dtype=x_s.dtype)
    x_t = q_sample_from(sched, x_s, origin, t, noise)
    if y is not None and p_uncond > 0:
        drop = torch.rand(B, generator=generator, device=dev) < p_uncond
        y = torch.where(drop, torch.full_like(y, _num_classes(model)), y)
    per_sample = (model(x_t, t, y) - noise).pow(2).flatten(1).mean(1)  # (B,)
    return per_sample.mean() if reduction == "mean" else per_sample


def _num_classes(model: nn.Module) -> int:
    return model.embed.num_classes


def guided_eps(model: Denoiser, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, w: float) -> torch.Tensor:
    """ε̂ with classifier-free guidance weight w (w = 0: plain conditional model)."""
    if w == 0 or y is None:
        return model(x, t, y)
    null = torch.full_like(y, _num_classes(model))
    eps_c, eps_u = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
    return (1 + w) * eps_c - w * eps_u


def sub_chain_eps_scale(sched: Schedule, t: torch.Tensor, origin: int) -> torch.Tensor:
    """sqrt((1 - ā_t) / (1 - ā_t/ā_s)) for s = origin < t (float64, t's shape): the factor that
    turns a sub-chain model's ε̂' into the full chain's ε̂ (module docstring)."""
    a_t = sched.alpha_bar[torch.as_tensor(t).long().cpu()]
    if (torch.as_tensor(t) <= origin).any():
        raise ValueError(f"a model on the sub-chain from origin {origin} owns steps > {origin} only")
    return ((1 - a_t) / (1 - a_t / sched.alpha_bar[origin])).sqrt()


class FullChainEps(nn.Module):
    """A denoiser trained on the sub-chain from `origin` s (PFDM's shared model: s = t0, data x_t0)
    answering as a full-chain eps-predictor: ε̂ = sqrt((1 - ā_t)/(1 - ā_t/ā_s)) ε̂'. Sample it with
    origin 0 and t_lo >= s (a sampler evaluates the model only at steps t > t_lo)."""

    def __init__(self, model: Denoiser, sched: Schedule, origin: int) -> None:
        super().__init__()
        self.model, self.sched = model, sched
        self.origin = sched.check_step(origin, "origin", 1, sched.T - 1)

    @property
    def embed(self):  # what guided_eps reads (the null label)
        return self.model.embed

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        scale = sub_chain_eps_scale(self.sched, t, self.origin).to(x)  # (B,)
        return self.model(x, t, y) * scale.view(-1, *[1] * (x.dim() - 1))


def _ratio(sched: Schedule, t: int, origin: int) -> float:
    return float(sched.alpha_bar[t] / sched.alpha_bar[origin])  # abar_t / abar_s in float64


@torch.no_grad()
def ddpm_sample(
    model: Denoiser,
    sched: Schedule,
    x_start: torch.Tensor,
    y: torch.Tensor | None = None,
    t_hi: int | None = None,
    t_lo: int = 0,
    origin: int = 0,
    guidance: float = 0.0,
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Ancestral sampling x_{t_hi} -> x_{t_lo} (Ho et al. 2020, Alg. 2 on the sub-chain).

    x_start is x_{t_hi} (pure noise when t_hi = T). clip_x0 clamps x̂_0 to [-1, 1]; it only
    applies when origin = 0 (x_t0 of PFDM's shared model is not bounded).
    """
    t_hi = sched.T if t_hi is None else t_hi
    t_lo, t_hi, origin = check_range(sched, t_lo, t_hi, origin)
    x = x_start
    for t in tqdm(range(t_hi, t_lo, -1), desc="DDPM", disable=not progress, leave=False):
        omp.govern()  # one thread while other processes are busy (core.omp)
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = guided_eps(model, x, tt, y, guidance)
        r_t, r_prev = _ratio(sched, t, origin), _ratio(sched, t - 1, origin)
        x_s = (x - (1 - r_t) ** 0.5 * eps) / r_t**0.5  # x̂_s
        if clip_x0 and origin == 0:
            x_s = x_s.clamp(-1, 1)
        beta = float(sched.betas[t])
        mean = (r_prev**0.5 * beta * x_s + (1 - beta) ** 0.5 * (1 - r_prev) * x) / (1 - r_t)
        var = beta * (1 - r_prev) / (1 - r_t)  # posterior variance beta~_t, 0 when t-1 = s
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = mean + var**0.5 * noise if var > 0 else mean
    return x


def ddim_timesteps(t_lo: int, t_hi: int, num_steps: int) -> list[int]:
    """Evenly spaced steps t_hi = τ_0 > τ_1 > ... > τ_n = t_lo (n <= t_hi - t_lo)."""
    num_steps = max(1, min(int(num_steps), t_hi - t_lo))
    ts = torch.linspace(t_hi, t_lo, num_steps + 1, dtype=torch.float64).round().long().tolist()
    return sorted(set(ts), reverse=True)


@torch.no_grad()
def ddim_sample(
    model: Denoiser,
    sched: Schedule,
    x_start: torch.Tensor,
    y: torch.Tensor | None = None,
    t_hi: int | None = None,
    t_lo: int = 0,
    num_steps: int = 50,
    eta: float = 0.0,
    origin: int = 0,
    guidance: float = 0.0,
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM x_{t_hi} -> x_{t_lo} in `num_steps` steps (eta = 0: deterministic, 1: DDPM-like)."""
    t_hi = sched.T if t_hi is None else t_hi
    t_lo, t_hi, origin = check_range(sched, t_lo, t_hi, origin)
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    x, ts = x_start, ddim_timesteps(t_lo, t_hi, num_steps)
    for t, t_next in tqdm(list(zip(ts[:-1], ts[1:])), desc="DDIM", disable=not progress, leave=False):
        omp.govern()  # one thread while other processes are busy (core.omp)
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = guided_eps(model, x, tt, y, guidance)
        r_t, r_next = _ratio(sched, t, origin), _ratio(sched, t_next, origin)
        x_s = (x - (1 - r_t) ** 0.5 * eps) / r_t**0.5
        if clip_x0 and origin == 0:
            x_s = x_s.clamp(-1, 1)
            eps = (x - r_t**0.5 * x_s) / (1 - r_t) ** 0.5  # keep ε̂ consistent with clipped x̂_0
        sigma = eta * ((1 - r_next) / (1 - r_t) * (1 - r_t / r_next)) ** 0.5
        x = r_next**0.5 * x_s + max(1 - r_next - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x


def sample(
    model: Denoiser,
    sched: Schedule,
    x_start: torch.Tensor,
    sampler: str = "ddim",
    num_steps: int = 50,
    **kwargs,
) -> torch.Tensor:
    """Dispatch to `ddpm_sample` or `ddim_sample` (num_steps only used by DDIM)."""
    if sampler == "ddpm":
        return ddpm_sample(model, sched, x_start, **kwargs)
    if sampler == "ddim":
        return ddim_sample(model, sched, x_start, num_steps=num_steps, **kwargs)
    raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")


class _Sliced:
    """eps_theta evaluated `size` rows at a time: the same numbers as one call on the whole batch,
    but a batch of a thousand images spills the CPU's caches (measured in benchmarks/: DDIM on
    1000 MNIST-size samples ran about twice as fast in slices of 64 to 128 as in one batch)."""

    def __init__(self, model: Denoiser, size: int) -> None:
        self.model, self.size = model, size
        self.embed = getattr(model, "embed", None)  # what guided_eps reads (the null label)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if len(x) <= self.size:
            return self.model(x, t, y)
        return torch.cat([self.model(x[i:i + self.size], t[i:i + self.size], None if y is None else y[i:i + self.size])
                          for i in range(0, len(x), self.size)])


def generate(
    model: Denoiser,
    sched: Schedule,
    y: torch.Tensor | None,
    shape: tuple[int, ...],
    sampler: str = "ddim",
    num_steps: int = 50,
    seed: int = 0,
    batch_size: int = 1000,
    progress: bool = False,
    x_start: torch.Tensor | None = None,
    eval_batch_size: int | None = None,
    **kwargs,
) -> torch.Tensor:
    """Samples, one per label in y (or shape[0] if y is None), in chunks of `batch_size`.

    Starts from pure noise x_T ~ N(0, I) of the whole batch's `shape` (N, ...), or from
    `x_start` (e.g. x_t0 with t_hi=t0 in kwargs, to continue a chain); returned on the CPU.
    Each chunk draws its noise as one batch (so `batch_size` fixes the samples); the network
    runs on CPU in slices of `eval_batch_size` rows (default: 2**16 pixels per slice, so 64
    images of 32x32, 83 of 28x28, no slicing at 8x8), which changes the speed, not the samples.
    """
    g = torch.Generator().manual_seed(seed)
    dev = next(iter([*model.parameters(), *model.buffers()]), torch.empty(0)).device
    if eval_batch_size is None:
        eval_batch_size = max(16, 2**16 // max(1, math.prod(shape[2:])))
    if dev.type == "cpu" and eval_batch_size < batch_size:
        model = _Sliced(model, eval_batch_size)
    x_T = torch.randn(shape, generator=g) if x_start is None else x_start
    chunks = []
    for i in tqdm(range(0, shape[0], batch_size), desc="sampling", disable=not progress, leave=False):
        yb = None if y is None else y[i:i + batch_size].to(dev)
        chunks.append(sample(model, sched, x_T[i:i + batch_size].to(dev), sampler, num_steps, y=yb,
                             generator=torch.Generator(dev).manual_seed(seed + i), **kwargs).cpu())
    return torch.cat(chunks)
