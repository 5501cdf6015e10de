"""Run methods x seeds on one federated split, evaluate client `client`, write results (Table 1).

    run(ExperimentConfig, methods=("pfdm", "local", "central", "fedavg"), seeds=(0, 1, 2))

Every trained model is checkpointed under `<out>/seed<s>/`, so a rerun (or a run resumed after
an interruption) loads what is done and trains only what is missing. Results go to
`<out>/<name>.json` and `<out>/<name>.csv` (one row per seed x method x t0; name defaults to
"results"), per-class rows in `<out>/<name>_per_class.csv` and the samples in `<out>/<name>_samples.pt`;
several calls with different names (the table, a t0 sweep) share one folder of checkpoints. Evaluation (DESIGN.md 3): samples of every class for client
`client`; classifier FID / KID / precision / recall against the held-out real images of the
class; accuracy of the classifier on the samples; split into majority / minority / average.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import metrics
from .data import Dataset, client_classes, cluster_partition
from .diffusion import generate
from .federated import (
    client_train_personal,
    client_upload,
    pfdm_sample,
    server_train_shared,
    train_fedavg,
    train_full,
    union,
)
from .nets import UNet, UNetConfig
from .presets import choose
from .privacy import epsilon as eps_of
from .privacy import t0_for_epsilon
from .recipes import digits_classifier, digits_split, runs_dir
from .schedule import Schedule
from .train import TrainConfig, device

METHODS = ("pfdm", "local", "central", "fedavg")
DATASETS = ("digits",)


@dataclass(frozen=True)
class ExperimentConfig:
    data: str = "digits"
    num_clients: int = 4
    majority_per_class: int = 60
    minority_per_class: int = 5
    t0s: tuple[int, ...] = (693,)  # PFDM split steps; 693 = smallest t0 with eps <= 10 (Thm 5.1, C = 10)
    clip_norm: float = 10.0  # per-image l2 clip C (digits in [-1, 1]^64 have norm <= 8: never clipped)
    delta: float = 1e-5
    net: UNetConfig = UNetConfig(base_channels=32)
    # measured on 2 cores: ~25 steps/s -> ~32 s per 800-step model; a seed of all methods ~3.5 min
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=800, batch_size=64, lr=1e-3))
    fedavg_rounds: int = 8  # x (steps // rounds) local steps = the same 800-step budget
    fedavg_fraction: float = 0.5  # clients per round (half of them: keeps the CPU budget)
    T: int = 1000
    ddim_steps: int = 25  # knee of the quality/time curve of notebook 02
    n_per_class: int = 100  # samples per class for the metrics
    client: int = 0  # the client whose table is reported
    classifier_epochs: int = 30

    def __post_init__(self) -> None:
        if self.data not in DATASETS:
            raise ValueError(f"data must be one of {DATASETS}, got {self.data!r}")
        if not 0 <= self.client < self.num_clients:
            raise ValueError(f"client must be in 0..{self.num_clients - 1}, got {self.client}")
        for t0 in self.t0s:
            Schedule(self.T).check_step(t0, "t0", 1, self.T - 1)


PRESETS = {
    "smoke": ExperimentConfig(majority_per_class=20, minority_per_class=3, t0s=(693,), net=UNetConfig(base_channels=16),
                              train=TrainConfig(steps=20, batch_size=32, lr=1e-3), fedavg_rounds=2, ddim_steps=10,
                              n_per_class=10, classifier_epochs=3),
    "cpu": ExperimentConfig(),
    "paper": ExperimentConfig(net=UNetConfig(base_channels=64, num_res_blocks=2, attn_resolutions=(4,), dropout=0.1),
                              train=TrainConfig(steps=20000, batch_size=128, lr=2e-4, ema_decay=0.9995),
                              fedavg_rounds=100, ddim_steps=100, n_per_class=500),
}


def preset_config(preset: str, **overrides) -> ExperimentConfig:
    """The named preset with fields overridden (e.g. t0s=(100, 400))."""
    return replace(choose(PRESETS, preset), **overrides)


def t0_for(eps: float, cfg: ExperimentConfig, accountant: str = "thm51") -> int:
    return t0_for_epsilon(eps, Schedule(cfg.T), clip_norm=cfg.clip_norm, delta=cfg.delta, accountant=accountant)


@dataclass
class Split:
    clients: list[Dataset]
    test: Dataset  # held-out real images: the metric's reference
    train: Dataset  # the classifier's training split (union of all clients is a subset)


def make_split(cfg: ExperimentConfig, seed: int) -> Split:
    train_set, test_set = digits_split(seed)
    parts = cluster_partition(train_set.y, cfg.num_clients, cfg.majority_per_class, cfg.minority_per_class, seed)
    return Split([train_set.subset(p) for p in parts], test_set, train_set)


def evaluate_client(clf: metrics.Classifier, fake: torch.Tensor, fake_y: torch.Tensor, test: Dataset,
                    majority: Sequence[int]) -> tuple[dict, list[dict]]:
    """Per-class metrics of samples (fake, fake_y) against the test images of each class."""
    rows = []
    for c in range(int(test.y.max()) + 1):
        real_c, fake_c = test.x[test.y == c], fake[fake_y == c]
        rows.append({"class": c, "group": "majority" if c in majority else "minority",
                     **metrics.evaluate(clf, real_c, fake_c, fake_y[fake_y == c])})
    df = pd.DataFrame(rows)
    summary = {}
    for key in ("fid", "kid", "precision", "recall", "accuracy"):
        summary[f"{key}_major"] = float(df[df.group == "majority"][key].mean())
        summary[f"{key}_minor"] = float(df[df.group == "minority"][key].mean())
        summary[f"{key}_avg"] = float(df[key].mean())
    return summary, rows


def _make_model(cfg: ExperimentConfig, seed: int):
    def make() -> nn.Module:
        torch.manual_seed(seed)
        return UNet(cfg.net).to(device())
    return make


def train_method(method: str, cfg: ExperimentConfig, split: Split, seed: int, t0: int | None, folder: Path,
                 progress: bool = True) -> dict[str, nn.Module]:
    """Train (or load from `folder`) the models of one method for client cfg.client."""
    sched, make = Schedule(cfg.T), _make_model(cfg, seed)
    tc = replace(cfg.train, seed=seed, checkpoint_every=max(1, cfg.train.steps // 4))
    me = split.clients[cfg.client]
    if method == "pfdm":
        uploads = [client_upload(d, t0, sched, cfg.clip_norm, seed=seed * 100 + m, delta=cfg.delta)
                   for m, d in enumerate(split.clients)]  # each client privatizes once
        shared = server_train_shared(uploads, make, sched, tc, folder / f"pfdm_shared_t0{t0}.pt", progress)
        personal = client_train_personal(me, t0, make, sched, tc, cfg.clip_norm,
                                         folder / f"pfdm_personal_c{cfg.client}_t0{t0}.pt", progress)
        return {"shared": shared, "personal": personal}
    if method == "local":
        return {"model": train_full(me, make, sched, tc, folder / f"local_c{cfg.client}.pt", progress, "local-only")}
    if method == "central":
        return {"model": train_full(union(split.clients), make, sched, tc, folder / "central.pt", progress, "centralized")}
    if method == "fedavg":
        return {"model": train_fedavg(split.clients, make, sched, tc, cfg.fedavg_rounds, cfg.fedavg_fraction,
                                      folder / "fedavg.pt", progress)}
    raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")


def sample_method(method: str, models: dict[str, nn.Module], cfg: ExperimentConfig, y: torch.Tensor,
                  t0: int | None, seed: int) -> torch.Tensor:
    sched, shape = Schedule(cfg.T), (len(y), cfg.net.in_channels, cfg.net.image_size, cfg.net.image_size)
    if method == "pfdm":
        return pfdm_sample(models["shared"], models["personal"], sched, t0, y, shape, "ddim", cfg.ddim_steps, seed)
    return generate(models["model"], sched, y, shape, "ddim", cfg.ddim_steps, seed=seed)


# fields that change what is trained (the others only change sampling and evaluation)
_EVAL_ONLY = ("t0s", "n_per_class", "ddim_steps", "classifier_epochs")


def check_folder(folder: Path, cfg: ExperimentConfig) -> None:
    """Refuse to reuse checkpoints in `folder` that were trained under another configuration."""
    fingerprint = {k: v for k, v in _jsonable(asdict(cfg)).items() if k not in _EVAL_ONLY}
    path = folder / "config.json"
    if path.exists():
        old = json.loads(path.read_text())
        keys = sorted(k for k in fingerprint.keys() | old.keys() if fingerprint.get(k) != old.get(k))
        if keys:
            raise ValueError(f"{folder} holds models trained with another config (differs in {keys}); "
                             "use another --out or delete that folder")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(fingerprint, indent=1))


def run(cfg: ExperimentConfig, methods: Sequence[str] = METHODS, seeds: Sequence[int] = (0, 1, 2),
        out: str | Path | None = None, progress: bool = True, keep_samples: bool = True,
        name: str = "results") -> pd.DataFrame:
    """Train, sample and evaluate every (seed, method[, t0]); returns one row per run."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; allowed: {', '.join(METHODS)}")
    if not seeds:
        raise ValueError("seeds must list at least one seed")
    out = Path(out) if out else runs_dir() / "digits"
    out.mkdir(parents=True, exist_ok=True)
    majority, _ = client_classes(cfg.client, cfg.num_clients)
    rows, class_rows, samples = [], [], {}
    jobs = [(s, m, t0) for s in seeds for m in methods for t0 in (cfg.t0s if m == "pfdm" else (None,))]
    sched = Schedule(cfg.T)
    for seed in seeds:
        check_folder(out / f"seed{seed}", cfg)
    splits = {seed: make_split(cfg, seed) for seed in seeds}
    for seed, method, t0 in tqdm(jobs, desc="runs", disable=not progress):
        split = splits[seed]
        clf = digits_classifier(seed, cfg.classifier_epochs)  # trained once per seed, then loaded
        start = time.perf_counter()
        models = train_method(method, cfg, split, seed, t0, out / f"seed{seed}", progress)
        train_s = time.perf_counter() - start
        y = torch.arange(10).repeat_interleave(cfg.n_per_class)
        fake = sample_method(method, models, cfg, y, t0, seed)
        summary, per_class = evaluate_client(clf, fake, y, split.test, majority)
        info = {"seed": seed, "method": method, "t0": t0,
                "eps_thm51": eps_of(t0, sched, cfg.clip_norm, cfg.delta) if t0 else None,
                "eps_analytic": eps_of(t0, sched, cfg.clip_norm, cfg.delta, "analytic") if t0 else None,
                "seconds": time.perf_counter() - start, "train_seconds": train_s}
        rows.append({**info, **summary})
        class_rows += [{**info, **r} for r in per_class]
        if keep_samples:
            samples[(seed, method, t0)] = fake
    df = pd.DataFrame(rows)
    df.to_csv(out / f"{name}.csv", index=False)
    pd.DataFrame(class_rows).to_csv(out / f"{name}_per_class.csv", index=False)
    (out / f"{name}.json").write_text(json.dumps({"config": _jsonable(asdict(cfg)), "rows": rows}, indent=1))
    if keep_samples:
        torch.save(samples, out / f"{name}_samples.pt")
    return df


def summarize(df: pd.DataFrame, keys: Sequence[str] = ("fid_major", "fid_minor", "fid_avg")) -> pd.DataFrame:
    """mean +- std over seeds per (method, t0), as 'm ± s' strings, and the number of seeds."""
    g = df.fillna({"t0": -1}).groupby(["method", "t0"], sort=False)
    mean, std = g[list(keys)].mean(), g[list(keys)].std(ddof=1)  # std is NaN with a single seed
    table = pd.DataFrame({k: [f"{m:.2f} ± {s:.2f}" for m, s in zip(mean[k], std[k])] for k in keys}, index=mean.index)
    table["seeds"] = g.size()
    return table.reset_index().replace({"t0": {-1: "-"}})


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj if isinstance(obj, (int, float, str, bool, type(None))) else str(obj)


