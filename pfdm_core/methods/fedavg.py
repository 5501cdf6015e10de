"""ONE FedAvg loop for a full DDPM, with the Phoenix strategies as its options (Jothiraj & Mashhadi
2023, arXiv 2306.04098). Every strategy is an option of `train_phoenix`, so they combine:
* FedAvg (McMahan et al. 2017): each round a fraction of the connected clients trains
  `steps // rounds` local steps from the global weights; the server averages the weights,
  weighted by client data size. `train_fedavg` is this loop with no strategy.
* Data sharing (Zhao et al. 2018, arXiv 1806.00582): a class-balanced global subset G with
  beta = |G| / total client data; each client receives a random fraction alpha of G, appended to
  its local data. G comes from a given pool, else from the union of the clients (then every
  client sees images of the others: no privacy at all for those images).
* Personalization layers (FedPer, Arivazhagan et al. 2019, arXiv 1912.00818): parameters whose
  names start with one of `personal_layers` are never averaged; each client keeps and trains
  its own copy.
* Threshold filtering: every round each participating client generates a few samples, scored
  by a precision metric (`knn_precision_score`, Kynkaanniemi et al. 2019, or any score fn;
  higher is better). The worst of the round is flagged (if its score is below `filter_threshold`);
  a client flagged in `filter_k` of its participating rounds in a row is disconnected, and its
  update of that round is dropped. Without a threshold someone is flagged every round, so long
  runs keep disconnecting until a single client is left: set the threshold for long runs.
* Unconditional (`unconditional=True`): Phoenix as published trains an unconditional DDPM; every label is
  replaced by the network's null label, in training, in the filter's samples and in sampling, and the class
  histogram of its samples (judged by a classifier) measures mode coverage. Without it the loop trains the
  class-conditional variant that the other methods of this repository share (labelled as such in the tables).
The partitions (IID, Dirichlet, two clusters) are in `data.partition`.
"""
from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import trange

from pfdm_core.core import checkpoint as ckpt
from pfdm_core.core.checkpoint import data_fingerprint
from pfdm_core.core.diffusion import generate
from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig, train
from pfdm_core.data.small import Dataset, union
from pfdm_core.methods.server import ModelFactory

ScoreFn = Callable[[torch.Tensor, torch.Tensor], float]  # (samples, labels) -> precision, higher is better


# ----------------------------------------------------------------------------- data sharing
def _check_fraction(value: float, name: str) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def share_global_subset(datasets: Sequence[Dataset], beta: float, alpha: float, seed: int = 0,
                        pool: Dataset | None = None) -> tuple[list[Dataset], Dataset]:
    """(clients with shared images appended, G). G is class-balanced, |G| = beta * total rounded
    down to a multiple of the number of classes; each client gets round(alpha |G|) distinct images of G."""
    beta, alpha = _check_fraction(beta, "beta"), _check_fraction(alpha, "alpha")
    pool = pool if pool is not None else union(datasets)
    total = sum(len(d) for d in datasets)
    classes = np.unique(pool.y.numpy())
    per_class = int(beta * total) // len(classes)
    if beta > 0 and per_class == 0:
        raise ValueError(f"beta={beta} gives |G| = {int(beta * total)} < {len(classes)} classes; raise beta")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in classes:
        members = np.flatnonzero(pool.y.numpy() == c)
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} images in the pool, G needs {per_class}; lower beta")
        chosen.append(rng.choice(members, per_class, replace=False))
    G = pool.subset(np.sort(np.concatenate(chosen)))
    n_share = round(alpha * len(G))
    out = []
    for d in datasets:
        s = G.subset(rng.choice(len(G), n_share, replace=False))
        out.append(Dataset(torch.cat([d.x, s.x]), torch.cat([d.y, s.y])))
    return out, G


# ----------------------------------------------------------------------------- aggregation
def personal_keys(keys: Sequence[str], prefixes: Sequence[str]) -> set[str]:
    """State-dict keys under any of the module prefixes (e.g. "head" -> "head.2.weight")."""
    out = set()
    for p in prefixes:
        p = p.rstrip(".")
        hits = {k for k in keys if k == p or k.startswith(p + ".")}
        if not hits:
            tops = sorted({k.split(".")[0] for k in keys})
            raise ValueError(f"personal layer {p!r} matches no parameter; top-level modules: {tops}")
        out |= hits
    return out


def weighted_average(states: Sequence[dict[str, torch.Tensor]], sizes: Sequence[int],
                     exclude: set[str] = frozenset()) -> dict[str, torch.Tensor]:
    """sum_k (n_k / n) state_k for every key not in `exclude` (FedAvg's server step, float64 sums)."""
    w = torch.tensor(sizes, dtype=torch.float64) / sum(sizes)
    return {key: sum(wi * s[key].double() for wi, s in zip(w, states)).to(states[0][key].dtype)
            for key in states[0] if key not in exclude}


# ----------------------------------------------------------------------------- the loop
@dataclass(frozen=True)
class PhoenixConfig:
    rounds: int = 8  # x (steps // rounds) local steps = TrainConfig.steps
    client_fraction: float = 1.0  # of the connected clients, per round
    beta: float = 0.0  # data sharing: |G| / total client data (0: off)
    alpha: float = 0.0  # data sharing: fraction of G each client receives
    personal_layers: tuple[str, ...] = ()  # parameter-name prefixes never averaged, e.g. ("head",)
    filter_k: int = 0  # disconnect after being worst this many participating rounds in a row (0: off)
    filter_threshold: float = float("inf")  # flag the worst only if its score is below this
    filter_samples: int = 20  # samples each client generates per round for its score
    filter_ddim_steps: int = 10
    unconditional: bool = False  # Phoenix as published: an unconditional DDPM (every label the null label)

    def __post_init__(self) -> None:
        if self.rounds < 1 or not 0 < self.client_fraction <= 1:
            raise ValueError(f"need rounds >= 1 and client_fraction in (0, 1], got {self.rounds}, {self.client_fraction}")
        _check_fraction(self.beta, "beta")
        _check_fraction(self.alpha, "alpha")
        if self.filter_k < 0 or self.filter_samples < 1 or self.filter_ddim_steps < 1:
            raise ValueError("need filter_k >= 0, filter_samples >= 1 and filter_ddim_steps >= 1, got "
                             f"{self.filter_k}, {self.filter_samples}, {self.filter_ddim_steps}")


# Phoenix's filter threshold. The paper disconnects "underperforming" clients by a precision threshold whose value
# is not in the text available to us; ours: the round's worst client is flagged only if fewer than half of its
# samples lie in the public images' k-NN manifold (precision < 0.5), so a healthy round flags no one.
FILTER_THRESHOLD = 0.5

STRATEGIES = {  # the Phoenix family, ready to compare (Phoenix, arXiv 2306.04098); "head" = the UNet's output layers
    "fedavg": PhoenixConfig(),
    "sharing": PhoenixConfig(beta=0.05, alpha=0.5),
    "personal": PhoenixConfig(personal_layers=("head",)),
    "personal_filter": PhoenixConfig(personal_layers=("head",), filter_k=3, filter_threshold=FILTER_THRESHOLD),
    "unconditional": PhoenixConfig(unconditional=True),  # Phoenix's default diffusion FL, as published
    "unconditional_sharing": PhoenixConfig(beta=0.05, alpha=0.5, unconditional=True),  # its data sharing
    "unconditional_personal_filter": PhoenixConfig(personal_layers=("head",), filter_k=3,  # its second strategy
                                                   filter_threshold=FILTER_THRESHOLD, unconditional=True),
}


_LATER_OPTIONS = {"unconditional": False}  # PhoenixConfig fields added later: name -> default


def null_label(model: nn.Module) -> int:
    """The label a conditional network reads as "no label" (`core.nets`: num_classes)."""
    return int(model.embed.num_classes)


@dataclass
class PhoenixResult:
    model: nn.Module  # the global model (personal layers: the initial weights)
    personal: list[dict[str, torch.Tensor]]  # client m's own personal layers ({} without personalization)
    disconnected: list[int] = field(default_factory=list)  # in order of disconnection
    history: list[dict] = field(default_factory=list)  # per round: clients, scores, flagged, disconnected

    def client_model(self, m: int) -> nn.Module:
        """Client m's model: the global weights with its own personal layers."""
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.personal[m], strict=False)
        return model.eval()


def fedavg_client_config(config: TrainConfig, rounds: int, round_index: int, client: int) -> TrainConfig:
    """Client `client`'s local training in FedAvg round `round_index` (0-based): `config.steps // rounds`
    steps, seeded by round and client (shared by `train_phoenix` and the Flower app's clients)."""
    return replace(config, steps=max(1, config.steps // rounds), seed=config.seed + 1000 * round_index + client,
                   checkpoint_every=0)


def train_phoenix(datasets: Sequence[Dataset], make_model: ModelFactory, sched: Schedule, config: TrainConfig,
                  phoenix: PhoenixConfig | None = None, score_fn: ScoreFn | None = None, pool: Dataset | None = None,
                  checkpoint: str | os.PathLike | None = None, progress: bool = True) -> PhoenixResult:
    """FedAvg of a full DDPM with the Phoenix options (module docstring); checkpoints every round, resumes
    only what the same configuration and data trained (`core.checkpoint`)."""
    ph = phoenix or PhoenixConfig()
    if ph.filter_k and score_fn is None:
        raise ValueError("threshold filtering (filter_k > 0) needs a score_fn, e.g. "
                         "evaluation.metrics.knn_precision_score(reference)")
    if ph.beta > 0:
        datasets, _ = share_global_subset(datasets, ph.beta, ph.alpha, config.seed, pool)
    M = len(datasets)
    num_classes = int(max(d.y.max() for d in datasets)) + 1
    model = make_model()
    if ph.unconditional:  # every label the null label: the network learns p(x), not p(x | y)
        datasets = [Dataset(d.x, torch.full_like(d.y, null_label(model))) for d in datasets]
    mine = personal_keys(list(model.state_dict()), ph.personal_layers)
    personal = [{k: v.clone() for k, v in model.state_dict().items() if k in mine} for _ in range(M)]
    streak, disconnected, history = [0] * M, [], []
    g = torch.Generator().manual_seed(config.seed)
    start, path = 0, Path(checkpoint) if checkpoint else None
    # options added after checkpoints were first written count only when set, so those checkpoints stay valid
    options = {k: v for k, v in asdict(ph).items() if k not in _LATER_OPTIONS or v != _LATER_OPTIONS[k]}
    fingerprint = dict(config=asdict(config), phoenix=options, sizes=[len(d) for d in datasets],
                       data=[data_fingerprint(d.x, d.y) for d in datasets])
    state = ckpt.resume(path, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        personal, streak, disconnected, history = state["personal"], state["streak"], state["disconnected"], state["history"]
        g.set_state(state["gen"])
        start = state["round"]
    m = max(1, round(ph.client_fraction * M))
    for r in trange(start, ph.rounds, desc="FedAvg rounds", disable=not progress, initial=start, total=ph.rounds):
        active = [k for k in range(M) if k not in disconnected]
        chosen = [active[i] for i in torch.randperm(len(active), generator=g)[:m].tolist()]
        states, sizes, scores = [], [], {}
        for k in chosen:
            local = copy.deepcopy(model)
            local.load_state_dict(personal[k], strict=False)
            train(local, sched, datasets[k].x, datasets[k].y, 1, sched.T,
                  config=fedavg_client_config(config, ph.rounds, r, k), progress=False)
            states.append(local.state_dict())
            sizes.append(len(datasets[k]))
            personal[k] = {key: states[-1][key].clone() for key in mine}
            if ph.filter_k:
                y = (torch.full((ph.filter_samples,), null_label(model)) if ph.unconditional
                     else torch.arange(ph.filter_samples) % num_classes)
                x = generate(local, sched, y, (ph.filter_samples, *datasets[k].x.shape[1:]), "ddim",
                             ph.filter_ddim_steps, seed=config.seed + 1000 * r + k)
                scores[k] = float(score_fn(x, y))
        flagged = min(scores, key=scores.get) if len(scores) > 1 else None  # the worst of the round ...
        flagged = flagged if flagged is not None and scores[flagged] < ph.filter_threshold else None  # ... if bad
        for k in scores:
            streak[k] = streak[k] + 1 if k == flagged else 0
        if flagged is not None and streak[flagged] >= ph.filter_k:
            disconnected.append(flagged)
            i = chosen.index(flagged)  # its update of this round is dropped too
            states, sizes = states[:i] + states[i + 1:], sizes[:i] + sizes[i + 1:]
        model.load_state_dict(weighted_average(states, sizes, exclude=mine), strict=False)
        history.append(dict(round=r + 1, clients=chosen, scores=scores, flagged=flagged,
                            disconnected=list(disconnected)))
        ckpt.save(path, dict(model=model.state_dict(), personal=personal, streak=streak, disconnected=disconnected,
                             history=history, gen=g.get_state(), round=r + 1), fingerprint)
    return PhoenixResult(model.eval(), personal, disconnected, history)


def train_fedavg(datasets: Sequence[Dataset], make_model: ModelFactory, sched: Schedule, config: TrainConfig,
                 rounds: int, client_fraction: float = 1.0, checkpoint: str | os.PathLike | None = None,
                 progress: bool = True) -> nn.Module:
    """FedAvg diffusion (FedDM): `train_phoenix` with no strategy; returns the global model."""
    return train_phoenix(datasets, make_model, sched, config, PhoenixConfig(rounds, client_fraction),
                         checkpoint=checkpoint, progress=progress).model


__all__ = ["FILTER_THRESHOLD", "STRATEGIES", "PhoenixConfig", "PhoenixResult", "ScoreFn", "fedavg_client_config", "null_label", "personal_keys",
           "share_global_subset", "train_fedavg", "train_phoenix", "weighted_average"]
