"""The federated methods, each a composition of the one training loop (DESIGN.md 2, 3).

* PFDM: `client_upload` (client side: clip + privatize once, the only place where x_0 and
  `privatize` meet) -> `server_train_shared` (server side: takes `Upload`s, never a dataset;
  owns steps t0+1..T of the chain with x_tilde as x_t0) -> `client_train_personal` (steps
  1..t0 on the client's clean, identically clipped data) -> `pfdm_sample` (chain the two).
* Local-only: `train_full` on one client's data. Centralized: `train_full` on the union of
  all clients' raw data (no privacy; an upper bound). FedAvg diffusion (FedDM):
  `train_fedavg`, federated averaging of full DDPMs (raw data stays local, no formal DP).

Every method trains the same network family with the same step budget (`TrainConfig.steps`
optimiser steps for the final model; FedAvg: rounds x local_steps = steps).
"""
from __future__ import annotations

import copy
import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import trange

from .data import Dataset
from .diffusion import FullChainEps, generate
from .privacy import clip, epsilon, privatize
from .schedule import Schedule
from .server import ModelFactory, Upload, server_train_shared
from .train import TrainConfig, atomic_save, load_checkpoint, train


def client_upload(data: Dataset, t0: int, sched: Schedule, clip_norm: float, seed: int | None = None,
                  delta: float = 1e-5, accountant: str = "thm51") -> Upload:
    """Client side: clip each image to norm clip_norm and diffuse it to step t0, once.

    seed None: secret noise (`privacy.secret_normal`), what a real client must use. An integer seed
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
    EMA, dropout, weight decay; notebook 10) is `personalization.OUR_RECIPE`, trained by
    `personalization.train_client_model` with a held-out split of the client's data."""
    t0 = sched.check_step(t0, "t0", 1, sched.T - 1)
    x = clip(data.x, clip_norm) if clip_norm is not None else data.x
    return train(make_model(), sched, x, data.y, 1, t0, config=config, checkpoint=checkpoint,
                 progress=progress, desc=f"PFDM personal (t0={t0})").model


def train_full(data: Dataset, make_model: ModelFactory, sched: Schedule, config: TrainConfig,
               checkpoint: str | os.PathLike | None = None, progress: bool = True, desc: str = "DDPM") -> nn.Module:
    """A full DDPM on steps 1..T: local-only (one client) or centralized (the union)."""
    return train(make_model(), sched, data.x, data.y, 1, sched.T, config=config, checkpoint=checkpoint,
                 progress=progress, desc=desc).model


def union(datasets: Sequence[Dataset]) -> Dataset:
    return Dataset(torch.cat([d.x for d in datasets]), torch.cat([d.y for d in datasets]))


def fedavg_client_config(config: TrainConfig, rounds: int, round_index: int, client: int) -> TrainConfig:
    """Client `client`'s local training in FedAvg round `round_index` (0-based): `config.steps // rounds`
    steps, seeded by round and client (shared by train_fedavg and the Flower app's clients)."""
    return replace(config, steps=max(1, config.steps // rounds), seed=config.seed + 1000 * round_index + client,
                   checkpoint_every=0)


def train_fedavg(datasets: Sequence[Dataset], make_model: ModelFactory, sched: Schedule, config: TrainConfig,
                 rounds: int, client_fraction: float = 1.0, checkpoint: str | os.PathLike | None = None,
                 progress: bool = True) -> nn.Module:
    """FedAvg (McMahan et al. 2017) of a full DDPM: each round, a fraction of clients trains
    `config.steps // rounds` local steps from the global weights; the server averages the
    weights, weighted by client data size. Checkpoints after every round and resumes."""
    if rounds < 1 or not 0 < client_fraction <= 1:
        raise ValueError(f"need rounds >= 1 and client_fraction in (0, 1], got {rounds}, {client_fraction}")
    model = make_model()
    start, path = 0, Path(checkpoint) if checkpoint else None
    if path and path.exists():
        state = load_checkpoint(path)
        model.load_state_dict(state["model"])
        start = state["round"]
    g = torch.Generator().manual_seed(config.seed)
    for _ in range(start):  # replay the client draws of finished rounds
        torch.randperm(len(datasets), generator=g)
    m = max(1, round(client_fraction * len(datasets)))
    for r in trange(start, rounds, desc="FedAvg rounds", disable=not progress, initial=start, total=rounds):
        chosen = torch.randperm(len(datasets), generator=g)[:m].tolist()
        states, sizes = [], []
        for k in chosen:
            local = copy.deepcopy(model)
            cfg = fedavg_client_config(config, rounds, r, k)
            train(local, sched, datasets[k].x, datasets[k].y, 1, sched.T, config=cfg, progress=False)
            states.append(local.state_dict())
            sizes.append(len(datasets[k]))
        w = torch.tensor(sizes, dtype=torch.float64) / sum(sizes)
        avg = {key: sum(wi * s[key].double() for wi, s in zip(w, states)).to(states[0][key].dtype)
               for key in states[0]}
        model.load_state_dict(avg)
        if path:
            atomic_save({"model": model.state_dict(), "round": r + 1}, path)
    return model.eval()


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

__all__ = ["Upload", "client_upload", "server_train_shared", "client_train_personal", "train_full",
           "fedavg_client_config",
           "train_fedavg", "union", "pfdm_handover", "pfdm_sample", "split_steps"]
