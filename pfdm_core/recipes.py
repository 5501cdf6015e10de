"""Named training recipes with presets, cached as checkpoints under runs/checkpoints/.

`digits_ddpm(preset, seed)` trains (or loads, when the checkpoint exists) a class-conditional
DDPM on the training split of scikit-learn's digits. Notebooks 02 and 03 both call it, so the
model trained in one is reused by the other, and a run interrupted half-way resumes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .data import REPO_ROOT, Dataset, load_digits, train_test_split
from .metrics import Classifier, train_classifier
from .nets import UNet, UNetConfig
from .presets import choose, resolve
from .schedule import Schedule
from .train import TrainConfig, atomic_save, device, train


@dataclass(frozen=True)
class DDPMRecipe:
    net: UNetConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    T: int = 1000
    schedule: str = "linear"


DIGITS_DDPM = {
    "smoke": DDPMRecipe(UNetConfig(base_channels=16), TrainConfig(steps=40, batch_size=64, lr=1e-3)),
    # measured: ~0.07 s/step at batch 128 on 2 CPU cores -> about 3 minutes
    "cpu": DDPMRecipe(UNetConfig(base_channels=32), TrainConfig(steps=2500, batch_size=128, lr=1e-3)),
    "paper": DDPMRecipe(
        UNetConfig(base_channels=64, num_res_blocks=2, attn_resolutions=(4,), dropout=0.1),
        TrainConfig(steps=30000, batch_size=128, lr=2e-4, ema_decay=0.9995),
    ),
}


def runs_dir() -> Path:
    """$PFDM_RUNS, else runs/ at the repository root."""
    return Path(os.environ.get("PFDM_RUNS") or REPO_ROOT / "runs")


def digits_split(seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, test) of the digits, stratified 80/20 with the given seed."""
    return train_test_split(load_digits(), 0.2, seed)


def digits_ddpm(preset: str = "cpu", seed: int = 0, progress: bool = True) -> tuple[nn.Module, Schedule, list[float]]:
    """(model, schedule, loss history) of a conditional DDPM on the digits training split."""
    name = resolve(preset)
    recipe = choose(DIGITS_DDPM, name)
    sched = Schedule(recipe.T, recipe.schedule)
    train_set, _ = digits_split(seed)
    torch.manual_seed(seed)  # the initial weights, so a retrain reproduces the cached model
    model = UNet(recipe.net).to(device())
    cfg = replace(recipe.train, seed=seed, checkpoint_every=500)
    ckpt = runs_dir() / "checkpoints" / f"digits_ddpm_{name}_seed{seed}.pt"
    result = train(model, sched, train_set.x, train_set.y, 1, sched.T, config=cfg, checkpoint=ckpt,
                   progress=progress, desc=f"digits DDPM ({name})")
    return result.model, sched, result.losses


def cached_classifier(name: str, shape: tuple[int, int, int], fit: Callable[[], Classifier]) -> Classifier:
    """Classifier `name` from runs/checkpoints/<name>.pt, or `fit()` it and cache it there.

    shape = (in_channels, image_size, num_classes) of the cached network."""
    path = runs_dir() / "checkpoints" / f"{name}.pt"
    if path.exists():
        model = Classifier(*shape)
        model.load_state_dict(torch.load(path, map_location="cpu"))
        return model.eval()
    model = fit()
    atomic_save(model.state_dict(), path)
    return model


def digits_classifier(seed: int = 0, epochs: int = 30) -> Classifier:
    """The feature network of the digits metrics, trained on the training split (cached)."""
    def fit() -> Classifier:
        train_set, _ = digits_split(seed)
        return train_classifier(train_set.x, train_set.y, epochs=epochs, seed=seed)

    return cached_classifier(f"digits_classifier_seed{seed}_e{epochs}", (1, 8, 10), fit)
