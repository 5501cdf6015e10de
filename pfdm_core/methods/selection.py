"""Model selection by validation, never by the test reference (the fair comparison of notebook 10).

A client model trained long on a few images of a class memorizes them, so training length decides
how PFDM compares with local-only training; it is chosen by the same rule for every method.

The rule, the same for every method:
* each client holds out a stratified fraction of its own images (`stratified_holdout`: every
  class it holds with at least two images keeps at least one for training and gives at least
  one to validation, so minority classes are validated too);
* a model's training length is the step, among every `every` steps of its budget, with the
  lowest **validation denoising loss** (`ValidationLoss`): the eps-loss on the held-out images
  over the model's own steps, with common random numbers (the same t and noise draws at every
  evaluation, so two checkpoints are compared on identical noise);
* client models (local-only, PFDM's personal denoiser) validate on the client's own held-out
  images; global models (centralized, FedAvg, PFDM's shared model) on all clients' held-out
  images pooled (PFDM's server only ever has uploads: it validates on held-out *uploads*).
The test reference of the metrics is not an argument of anything here.
"""
from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pfdm_core.core import checkpoint as ckpt
from pfdm_core.core.checkpoint import data_fingerprint
from pfdm_core.core.schedule import Schedule, q_sample_from
from pfdm_core.core.train import TrainConfig, train
from pfdm_core.data.small import Dataset


def stratified_holdout(data: Dataset, fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, validation): per class, round(fraction * n_c) images held out, clamped to
    1..n_c - 1 for classes with n_c >= 2 (a single image stays in training)."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    y = data.y.numpy()
    val = []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        if len(members) >= 2:
            val.append(members[:int(np.clip(round(fraction * len(members)), 1, len(members) - 1))])
    val_idx = np.sort(np.concatenate(val)) if val else np.array([], dtype=int)
    train_idx = np.setdiff1d(np.arange(len(y)), val_idx)
    return data.subset(train_idx), data.subset(val_idx)


class ValidationLoss:
    """eps-loss of a model on held-out data x (at step `origin`) over steps t_lo..t_hi, with
    `draws` fixed (t, noise) pairs per image drawn once from `seed`: deterministic, comparable."""

    def __init__(self, sched: Schedule, x: torch.Tensor, y: torch.Tensor | None, t_lo: int, t_hi: int,
                 origin: int = 0, draws: int = 16, seed: int = 0, batch_size: int = 2048):
        if len(x) == 0:
            raise ValueError("the validation set is empty")
        g = torch.Generator().manual_seed(seed)
        lo = max(t_lo, origin + 1)
        self.x0 = x.repeat(draws, *([1] * (x.dim() - 1)))
        self.y = None if y is None else y.repeat(draws)
        self.t = torch.randint(lo, t_hi + 1, (len(self.x0),), generator=g)
        self.noise = torch.randn(self.x0.shape, generator=g)
        self.x_t = q_sample_from(sched, self.x0, origin, self.t, self.noise)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        dev = next(model.parameters()).device
        total = 0.0
        for i in range(0, len(self.x_t), self.batch_size):
            sl = slice(i, i + self.batch_size)
            y = None if self.y is None else self.y[sl].to(dev)
            pred = model(self.x_t[sl].to(dev), self.t[sl].to(dev), y)
            total += float((pred - self.noise[sl].to(dev)).pow(2).flatten(1).mean(1).sum())
        model.train(was_training)
        return total / len(self.x_t)


@dataclass
class Selected:
    model: nn.Module  # the weights of the best validation step
    best_step: int
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, validation loss)


class _Stop(Exception):
    pass


def train_selected(model: nn.Module, sched: Schedule, x: torch.Tensor, y: torch.Tensor | None, t_lo: int, t_hi: int,
                   val: ValidationLoss, origin: int = 0, config: TrainConfig | None = None, every: int = 50,
                   patience: int = 0, checkpoint: str | os.PathLike | None = None, progress: bool = True,
                   desc: str = "train (selected)") -> Selected:
    """`core.train.train` up to config.steps, keeping the weights of the lowest validation loss seen
    every `every` steps; with `patience` > 0, training stops once that many evaluations in a row
    bring no improvement (early stopping). The best weights, the curve and whether training
    stopped are saved beside `checkpoint` (`<name>.best.pt`) at every evaluation: a rerun
    resumes an unfinished run and returns a finished one without training."""
    config = config or TrainConfig()
    if every < 1 or patience < 0:
        raise ValueError(f"need every >= 1 and patience >= 0, got {every}, {patience}")
    best_path = Path(checkpoint).with_suffix(".best.pt") if checkpoint else None
    fingerprint = dict(config=asdict(config), every=every, patience=patience, steps=[t_lo, t_hi, origin],
                       data=data_fingerprint(x, y),
                       validation=data_fingerprint(val.x_t, val.y) if isinstance(val, ValidationLoss) else None
                       ) if best_path else None
    state = {"step": 0, "loss": float("inf"), "model": None, "curve": [], "stopped": False}
    saved = ckpt.resume(best_path, fingerprint, legacy=lambda s: "curve" in s)  # older files: trusted by name
    if saved is not None:
        state = {k: saved[k] for k in state}

    def on_step(step: int, m: nn.Module) -> None:
        if step % every and step != config.steps:
            return
        loss = val(m)
        state["curve"].append((step, loss))
        if loss < state["loss"]:
            state.update(step=step, loss=loss, model=copy.deepcopy(m.state_dict()))
        state["stopped"] = bool(patience) and step - state["step"] >= patience * every
        ckpt.save(best_path, state, fingerprint)
        if state["stopped"]:
            raise _Stop

    if not state["stopped"]:
        try:
            train(model, sched, x, y, t_lo, t_hi, origin, config, checkpoint, progress, desc, on_step)
        except _Stop:
            pass
    model.load_state_dict(state["model"])
    return Selected(model.eval(), state["step"], state["curve"])


__all__ = ["Selected", "ValidationLoss", "stratified_holdout", "train_selected"]
