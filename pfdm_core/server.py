"""PFDM's server side (DESIGN.md 2.2): the shared denoiser, trained on uploads only.

This module never sees a dataset: it does not import `data` or `privacy`, and its one entry
point takes `Upload` objects (privatized tensors x_tilde at step t0 and labels). The shared
model owns steps t0+1..T of the chain, with x_tilde playing x_t0: it is trained on the
sub-chain with origin t0 and predicts eps' of x_t = sqrt(abar_t/abar_t0) x_tilde + sqrt(1 - abar_t/abar_t0) eps'.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from .schedule import Schedule
from .train import TrainConfig, train

ModelFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class Upload:
    """What a PFDM client sends, once: privatized images x_tilde at step t0, labels in the clear."""

    x_tilde: torch.Tensor  # (N, C, H, W) = sqrt(abar_t0) clip(x) + sqrt(1 - abar_t0) z
    y: torch.Tensor  # (N,) labels (not protected by the mechanism)
    t0: int
    eps: float  # per-image eps spent (Theorem 5.1 accountant unless stated otherwise)


def server_train_shared(uploads: Sequence[Upload], make_model: ModelFactory, sched: Schedule,
                        config: TrainConfig, checkpoint: str | os.PathLike | None = None,
                        progress: bool = True) -> nn.Module:
    """Server side: train the shared denoiser on the pooled uploads, steps t0+1..T (origin t0)."""
    if not isinstance(uploads, (list, tuple)) or not uploads or not all(isinstance(u, Upload) for u in uploads):
        raise TypeError("server_train_shared takes a non-empty list of Upload objects (privatized tensors), "
                        f"got {type(uploads).__name__}")
    t0s = {u.t0 for u in uploads}
    if len(t0s) != 1:
        raise ValueError(f"all uploads must share one t0, got {sorted(t0s)}")
    t0 = t0s.pop()
    x = torch.cat([u.x_tilde for u in uploads])  # pooled x_t0 of all clients
    y = torch.cat([u.y for u in uploads])
    return train(make_model(), sched, x, y, t0 + 1, sched.T, origin=t0, config=config,
                 checkpoint=checkpoint, progress=progress, desc=f"PFDM shared (t0={t0})").model
