"""ONE training loop for every denoiser: model, data, step range, budget, checkpoints.

A method (PFDM's shared or personal half, local-only, centralized, ...) is a call to `train`
with its own data and step range [t_lo, t_hi] on the sub-chain starting at `origin`
(see `diffusion.diffusion_loss`). Long runs checkpoint every `checkpoint_every` steps to
`checkpoint` and resume from it: nothing a user trained is lost when a kernel dies.
"""
from __future__ import annotations

import copy
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .diffusion import diffusion_loss
from .schedule import Schedule


@dataclass
class TrainConfig:
    steps: int = 1000  # optimiser steps (the step budget, equal across methods)
    batch_size: int = 128
    lr: float = 2e-4  # Adam, as DDPM
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # global grad-norm clip (DDPM uses 1.0); 0 disables
    ema_decay: float = 0.0  # 0: no EMA; DDPM uses 0.9999 for long runs
    p_uncond: float = 0.0  # label dropout for classifier-free guidance
    seed: int = 0
    checkpoint_every: int = 0  # 0: only at the end (when a checkpoint path is given)

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


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """write(f) into a temporary file of this process and thread, fsync, then rename onto `path`: a crash never
    leaves half a file, two writers never share a temporary file, and a failed write leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_save(obj: object, path: Path) -> None:
    """torch.save through `atomic_write`: a crash never leaves half a checkpoint."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint written by `atomic_save`, or one line naming the file when it cannot be read (truncated,
    empty, not a checkpoint): delete it to restart from scratch."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # zip reader, unpickler and EOF errors all mean the same thing here
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         "delete it to train again from scratch") from None


@torch.no_grad()
def ema_update(ema: nn.Module | None, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (no-op without an EMA copy)."""
    if ema is not None:
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - decay)


def check_config_folder(folder: Path, fingerprint: dict, defaults: dict | None = None) -> None:
    """Refuse a checkpoint folder whose config.json differs from `fingerprint`; record it otherwise.
    A key missing from an older config.json is read as its value in `defaults` (if given)."""
    path = folder / "config.json"
    if path.exists():
        old = {**(defaults or {}), **json.loads(path.read_text())}
        diff = sorted(k for k in fingerprint.keys() | old.keys() if fingerprint.get(k) != old.get(k))
        if diff:
            raise ValueError(f"{folder} holds models trained with another config (differs in {diff}); "
                             "use another folder (--out) or delete it to retrain")
        return
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fingerprint, indent=1))


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
) -> TrainResult:
    """Minimise the eps-loss of `model` on data x (at step `origin`) over steps t_lo..t_hi.

    `on_step(step, model)` runs after every optimiser step with the weights a caller would use
    (the EMA copy when ema_decay > 0), e.g. to track a validation loss (`selection`)."""
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
    if path and path.exists():  # resume
        state = load_checkpoint(path)
        if state["config"] != asdict(config):
            raise ValueError(f"checkpoint {path} was written with another TrainConfig; delete it to restart")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        gen.set_state(state["gen"])
        start, losses = state["step"], state["losses"]

    def save(step: int) -> None:
        if path:
            atomic_save(dict(model=model.state_dict(), opt=opt.state_dict(), ema=ema.state_dict() if ema else None,
                             gen=gen.get_state(), step=step, losses=losses, config=asdict(config)), path)

    model.train()
    n = len(x)
    for step in tqdm(range(start, config.steps), desc=desc, disable=not progress, initial=start, total=config.steps):
        idx = torch.randint(0, n, (min(config.batch_size, n),), generator=gen, device=dev)
        loss = diffusion_loss(model, sched, x[idx], None if y is None else y[idx], t_lo, t_hi, origin,
                              config.p_uncond, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        ema_update(ema, model, config.ema_decay)
        losses.append(loss.item())
        if on_step is not None:
            on_step(step + 1, ema if ema is not None else model)
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            save(step + 1)
    if start < config.steps:
        save(config.steps)
    model.eval()
    return TrainResult(ema.eval() if ema is not None else model, losses)
