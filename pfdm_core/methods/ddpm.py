"""Local-only and centralized training: one full DDPM (steps 1..T) on some clients' raw data."""
from __future__ import annotations

import os

from torch import nn

from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig, train
from pfdm_core.data.small import Dataset
from pfdm_core.methods.server import ModelFactory


def train_full(data: Dataset, make_model: ModelFactory, sched: Schedule, config: TrainConfig,
               checkpoint: str | os.PathLike | None = None, progress: bool = True, desc: str = "DDPM") -> nn.Module:
    """A full DDPM on steps 1..T: local-only (one client's data) or centralized (`data.union` of all clients':
    no privacy at all)."""
    return train(make_model(), sched, data.x, data.y, 1, sched.T, config=config, checkpoint=checkpoint,
                 progress=progress, desc=desc).model


__all__ = ["train_full"]
