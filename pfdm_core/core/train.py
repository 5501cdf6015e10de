"""ONE training loop for every denoiser: model, data, step range, budget, checkpoints.

A method (PFDM's shared or personal half, local-only, centralized, ...) is a call to `train`
with its own data and step range [t_lo, t_hi] on the sub-chain starting at `origin`
(see `diffusion.diffusion_loss`). Long runs checkpoint every `checkpoint_every` steps to
`checkpoint` and resume from it: nothing a user trained is lost when a kernel dies.
"""
from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from pfdm_core.core import checkpoint as ckpt
from pfdm_core.core import omp
from pfdm_core.core.checkpoint import data_fingerprint
from pfdm_core.core.diffusion import diffusion_loss
from pfdm_core.core.schedule import Schedule


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # optimiser steps (the step budget, equal across methods)
    batch_size: int = 128
    lr: float = 2e-4  # Adam, as DDPM
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # global grad-norm clip (DDPM uses 1.0); 0 disables
    ema_decay: float = 0.0  # 0: no EMA; DDPM uses 0.9999 for long runs
    p_uncond: float = 0.0  # label dropout for classifier-free guidance
    seed: int = 0
    checkpoint_every: int = 0  # steps between checkpoints (0: none by count); also every ckpt.SAVE_SECONDS

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.ema_decay < 1 or not 0 <= self.p_uncond < 1:
            raise ValueError("ema_decay and p_uncond must be in [0, 1)")


@dataclass
class TrainResult:
    model: nn.Module  # the EMA weights when ema_decay > 0
    losses: list[float] = field(default_factory=list)  # one per step


@torch.no_grad()
def ema_update(ema: nn.Module | None, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (no-op without an EMA copy)."""
    if ema is not None:
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - decay)


def device() -> torch.device:
    """CUDA when present, else CPU (the code runs unchanged on both)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(
    model: nn.Module,
    sched: Schedule,
    x: torch.Tensor,
    y: torch.Tensor | None,
    t_lo: int,
    t_hi: int,
    origin: int = 0,
    config: TrainConfig | None = None,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    desc: str = "train",
    on_step: Callable[[int, nn.Module], None] | None = None,
    objective: Callable[[nn.Module, Schedule, torch.Tensor, torch.Tensor | None, torch.Generator], torch.Tensor]
    | None = None,
) -> TrainResult:
    """Minimise the eps-loss of `model` on data x (at step `origin`) over steps t_lo..t_hi.

    `on_step(step, model)` runs after every optimiser step with the weights a caller would use
    (the EMA copy when ema_decay > 0), e.g. to track a validation loss (`selection`).
    `objective(model, sched, x_batch, y_batch, generator)` replaces the eps-loss (e.g.
    `methods.ambient.AmbientLoss`, which owns its step ranges); its repr joins the checkpoint's fingerprint."""
    config = config or TrainConfig()
    if not torch.isfinite(x).all():
        raise ValueError("training data x contains NaN or infinite values")
    if y is not None and len(y) != len(x):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    dev = next(model.parameters()).device
    x, y = x.to(dev), (y.to(dev) if y is not None else None)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ema = copy.deepcopy(model).requires_grad_(False) if config.ema_decay > 0 else None
    gen = torch.Generator(device=dev).manual_seed(config.seed)
    losses: list[float] = []
    start = 0
    path = Path(checkpoint) if checkpoint else None
    # hashed only when there is a checkpoint: FedAvg's local rounds and selection call this loop without one
    fingerprint = dict(config=asdict(config), data=data_fingerprint(x, y), steps=[t_lo, t_hi, origin]) if path else None
    if fingerprint is not None and objective is not None:
        fingerprint["objective"] = repr(objective)
    state = ckpt.resume(path, fingerprint, legacy=lambda s: s.get("config") == asdict(config))
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        gen.set_state(state["gen"])
        start, losses = state["step"], state["losses"]

    def save(step: int) -> None:
        ckpt.check_finite_weights(model, step, path, desc)
        ckpt.save(path, dict(model=model.state_dict(), opt=opt.state_dict(), ema=ema.state_dict() if ema else None,
                             gen=gen.get_state(), step=step, losses=losses, config=asdict(config)), fingerprint)

    model.train()
    n = len(x)
    cadence = ckpt.Cadence(config.checkpoint_every)
    for step in tqdm(range(start, config.steps), desc=desc, disable=not progress, initial=start, total=config.steps):
        omp.govern()  # one thread while other processes are busy (core.omp)
        idx = torch.randint(0, n, (min(config.batch_size, n),), generator=gen, device=dev)
        if objective is None:
            loss = diffusion_loss(model, sched, x[idx], None if y is None else y[idx], t_lo, t_hi, origin,
                                  config.p_uncond, gen)
        else:
            loss = objective(model, sched, x[idx], None if y is None else y[idx], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        ema_update(ema, model, config.ema_decay)
        losses.append(loss.item())
        ckpt.check_finite(losses[-1], step + 1, path, desc)
        if on_step is not None:
            on_step(step + 1, ema if ema is not None else model)
        if path and cadence.due(step + 1):
            save(step + 1)
    if start < config.steps:
        save(config.steps)
    model.eval()
    return TrainResult(ema.eval() if ema is not None else model, losses)
