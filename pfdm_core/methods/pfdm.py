"""PFDM's client side and its sampler, each a composition of the one training loop.

`client_upload` (clip + privatize once, the only place where x_0 and `privatize` meet) ->
`server.server_train_shared` (server side: takes `Upload`s, never a dataset; owns steps t0+1..T
of the chain with x_tilde as x_t0) -> `client_train_personal` (steps 1..t0 on the client's clean,
identically clipped data) -> `pfdm_sample` (chain the two, `pfdm_handover` at t0).
The other methods: `ddpm` (local-only, centralized), `fedavg` (FedAvg, Phoenix), `privacy.dpsgd`.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from pfdm_core.core.diffusion import FullChainEps, generate
from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig, train
from pfdm_core.data.small import Dataset
from pfdm_core.methods.server import ModelFactory, Upload, server_train_shared
from pfdm_core.privacy.mechanism import clip, epsilon, privatize


def client_upload(data: Dataset, t0: int, sched: Schedule, clip_norm: float, seed: int | None = None,
                  delta: float = 1e-5, accountant: str = "thm51") -> Upload:
    """Client side: clip each image to norm clip_norm and diffuse it to step t0, once.

    seed None: secret noise (`privacy.mechanism.secret_normal`), what a real client must use. An integer seed
    makes the upload reproducible and is INSECURE: whoever knows the seed inverts the upload. It is for
    in-process simulations, where one process plays every party (notebooks, experiment.run)."""
    g = None if seed is None else torch.Generator().manual_seed(seed)
    x_tilde = privatize(data.x, t0, sched, clip_norm, generator=g)
    eps = epsilon(t0, sched, clip_norm=clip_norm, delta=delta, accountant=accountant)
    return Upload(x_tilde, data.y.clone(), t0, eps)


def client_train_personal(data: Dataset, t0: int, make_model: ModelFactory, sched: Schedule,
                          config: TrainConfig, clip_norm: float | None = None,
                          checkpoint: str | os.PathLike | None = None, progress: bool = True) -> nn.Module:
    """Client side: the personal denoiser on clean data (clipped as uploaded), steps 1..t0.

    This is the paper's recipe (the whole `config.steps`, no hold-out), kept so notebook 04 reproduces
    the paper's protocol. The recipe that generalizes better on few images (validation-selected length,
    EMA, dropout, weight decay; notebook 10) is `studies.personalization.OUR_RECIPE`, trained by
    `studies.personalization.train_client_model` with a held-out split of the client's data."""
    t0 = sched.check_step(t0, "t0", 1, sched.T - 1)
    x = clip(data.x, clip_norm) if clip_norm is not None else data.x
    return train(make_model(), sched, x, data.y, 1, t0, config=config, checkpoint=checkpoint,
                 progress=progress, desc=f"PFDM personal (t0={t0})").model


def split_steps(t0: int, T: int, num_steps: int) -> tuple[int, int]:
    """DDIM steps for the shared (T..t0) and personal (t0..0) segments, proportional to length."""
    num_steps = max(2, int(num_steps))  # at least one step per segment
    n_shared = min(num_steps - 1, max(1, round(num_steps * (T - t0) / T)))
    return n_shared, num_steps - n_shared


@torch.no_grad()
def pfdm_handover(shared: nn.Module, sched: Schedule, t0: int, y: torch.Tensor, shape: tuple[int, ...],
                  sampler: str = "ddim", num_steps: int = 8, seed: int = 0, batch_size: int = 1000,
                  clip_x0: bool = True) -> torch.Tensor:
    """x_T ~ N(0, I) -> x_t0 with the shared model w (trained on the sub-chain from t0) driving the
    *full* chain: ε̂ = sqrt((1 - ā_t)/(1 - ā_t/ā_t0)) ε̂'_w (`diffusion.FullChainEps`), so the x_t0
    handed over keeps its noise (sampling on the sub-chain would replace it by a posterior mean)."""
    t0 = sched.check_step(t0, "t0", 1, sched.T - 1)
    return generate(FullChainEps(shared, sched, t0), sched, y, shape, sampler, num_steps, seed=seed,
                    batch_size=batch_size, t_lo=t0, clip_x0=clip_x0)


@torch.no_grad()
def pfdm_sample(shared: nn.Module, personal: nn.Module, sched: Schedule, t0: int, y: torch.Tensor,
                shape: tuple[int, ...], sampler: str = "ddim", num_steps: int = 25, seed: int = 0,
                batch_size: int = 1000, guidance: float = 0.0, clip_x0: bool = True) -> torch.Tensor:
    """Client m's samples: x_T ~ N(0, I) -> shared w denoises T..t0+1 (`pfdm_handover`) -> personal
    theta_m t0..1 (with classifier-free guidance weight `guidance` when theta_m was trained with label
    dropout). DDIM's `num_steps` are split between the segments in proportion to their lengths."""
    t0 = sched.check_step(t0, "t0", 1, sched.T - 1)
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2 (one per segment at least), got {num_steps!r}")
    n_shared, n_personal = split_steps(t0, sched.T, num_steps)
    x_t0 = pfdm_handover(shared, sched, t0, y, shape, sampler, n_shared, seed, batch_size, clip_x0)
    return generate(personal, sched, y, shape, sampler, n_personal, seed=seed + 1, batch_size=batch_size,
                    x_start=x_t0, t_hi=t0, guidance=guidance, clip_x0=clip_x0)

__all__ = ["Upload", "client_upload", "server_train_shared", "client_train_personal", "pfdm_handover", "pfdm_sample",
           "split_steps"]
