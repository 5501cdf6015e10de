"""The experiment on top of the package: its config, the presets per dataset, the split, and the run.

    cfg = preset_config("cpu", "digits", t0s=(693,))    # flat overrides routed by `ExperimentConfig.override`
    run(cfg, methods=("pfdm", "local", "central", "fedavg"), seeds=(0, 1, 2))

`ExperimentConfig` is nested by concern: `split` (who holds what), `privacy` (PFDM's t0s, clip C, delta),
`train` (the one step budget every method gets), `fedavg` (FedAvg / Phoenix rounds), `dpsgd` (the DP-SGD
rival), `eval` (client `client`'s table), plus `data`, `T` and `net`. Methods are looked up by name in
`methods.registry` (PFDM, local-only, centralized, FedAvg, DP-SGD, the Phoenix strategies).

Every trained model is checkpointed under `<out>/seed<s>/`, so a rerun (or a run resumed after an
interruption) loads what is done and trains only what is missing. Results go to `<out>/<name>.json` and
`<out>/<name>.csv` (one row per seed x method x t0; name defaults to "results"), per-class rows in
`<out>/<name>_per_class.csv` and the samples in `<out>/<name>_samples.pt`; several calls with different
names (the table, a t0 sweep) share one folder of checkpoints. Evaluation: samples of every class for
client `eval.client`; classifier FID / KID / precision / recall against the held-out real images of the
class; accuracy of the classifier on the samples; split into majority / minority / average.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from pfdm_core.core import paths
from pfdm_core.core.checkpoint import atomic_save, check_config_folder, write_json, write_text
from pfdm_core.core.nets import UNet, UNetConfig
from pfdm_core.core.presets import choose
from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig, device
from pfdm_core.data import images as datasets
from pfdm_core.data.partition import PARTITIONS, client_classes, cluster_partition
from pfdm_core.data.partition import partition as index_partition
from pfdm_core.data.small import Dataset, union
from pfdm_core.evaluation import metrics
from pfdm_core.evaluation.classifier import cached_classifier, digits_classifier
from pfdm_core.evaluation.client import evaluate_client, summarize  # noqa: F401  (re-exported: the tables)
from pfdm_core.methods import registry
from pfdm_core.methods.fedavg import PhoenixConfig
from pfdm_core.privacy.dpsgd import ACCOUNTANTS as DP_ACCOUNTANTS
from pfdm_core.privacy.dpsgd import DPConfig
from pfdm_core.privacy.mechanism import check_clip_norm, check_delta, t0_for_epsilon
from pfdm_core.privacy.mechanism import epsilon as eps_of

DATASETS = datasets.NAMES


def _check_number(name: str, value, lo: float, hi: float | None, integer: bool = False, low_open: bool = False,
                  high_open: bool = False) -> None:
    """One line naming the field, the value and the allowed range (NaN and infinities never pass)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (value > lo if low_open else value >= lo) and (hi is None or (value < hi if high_open else value <= hi)) \
        and (not integer or float(value).is_integer())
    if not ok:
        kind = "an integer" if integer else "a number"
        span = f"{'(' if low_open else '['}{lo:g}, {'∞)' if hi is None else f'{hi:g}' + (')' if high_open else ']')}"
        raise ValueError(f"{name} must be {kind} in {span}, got {value!r}")


@dataclass(frozen=True)
class SplitConfig:
    """Who holds what: the paper's two-cluster split ("cluster"), or the same images split "iid" / "dirichlet"."""
    num_clients: int = 4
    majority_per_class: int = 60
    minority_per_class: int = 5
    partition: str = "cluster"
    dirichlet_alpha: float = 0.5

    def __post_init__(self) -> None:
        if self.partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {PARTITIONS}, got {self.partition!r}")
        for name, lo in (("num_clients", 2), ("majority_per_class", 1), ("minority_per_class", 0)):
            _check_number(name, getattr(self, name), lo, None, integer=True)
        _check_number("dirichlet_alpha", self.dirichlet_alpha, 0, None, low_open=True)


@dataclass(frozen=True)
class PrivacyConfig:
    """PFDM's uploads: split steps t0 (one run each), per-image l2 clip C, delta."""
    t0s: tuple[int, ...] = (693,)  # 693 = smallest t0 with eps <= 10 (Thm 5.1, C = 10)
    clip_norm: float = 10.0  # digits in [-1, 1]^64 have norm <= 8: never clipped
    delta: float = 1e-5

    def __post_init__(self) -> None:
        check_clip_norm(self.clip_norm)
        check_delta(self.delta)
        if not isinstance(self.t0s, tuple) or not self.t0s:
            raise ValueError(f"t0s must be a non-empty tuple of steps, got {self.t0s!r}")
        # each t0 is checked against the schedule's length by ExperimentConfig


@dataclass(frozen=True)
class FedAvgConfig:
    """FedAvg and Phoenix: rounds x (steps // rounds) local steps = the same budget; clients per round."""
    rounds: int = 8
    fraction: float = 0.5  # half of the clients per round: keeps the CPU budget
    filter_reference: int = 500  # Phoenix's filter: public images (split.public, held by no client) scoring it

    def __post_init__(self) -> None:
        _check_number("fedavg_rounds", self.rounds, 1, None, integer=True)
        _check_number("fedavg_fraction", self.fraction, 0, 1, low_open=True)
        _check_number("phoenix_filter_reference", self.filter_reference, 1, None, integer=True)


@dataclass(frozen=True)
class DPSGDConfig:
    """The DP-SGD (DPDM) rival, central on the union of the clients: target eps (Opacus accountant,
    add/remove neighbours; `privacy.dpsgd`), per-example gradient clip, noise multiplicity K. Its delta
    is the experiment's (`PrivacyConfig.delta`)."""
    eps: float = 10.0
    clip_norm: float = 1.0
    multiplicity: int = 1  # DPDM uses 32 on MNIST; each draw costs a forward/backward pass
    accountant: str = "rdp"
    batch_size: int = 0  # expected Poisson batch (0: the shared budget's batch); DPDM: large batches
    steps: int = 0  # optimiser steps (0: the shared budget's steps)

    def __post_init__(self) -> None:
        _check_number("dp_eps", self.eps, 0, None, low_open=True)
        _check_number("dp_clip_norm", self.clip_norm, 0, None, low_open=True)
        _check_number("dp_multiplicity", self.multiplicity, 1, None, integer=True)
        _check_number("dp_batch_size", self.batch_size, 0, None, integer=True)
        _check_number("dp_steps", self.steps, 0, None, integer=True)
        if self.accountant not in DP_ACCOUNTANTS:
            raise ValueError(f"dp_accountant must be one of {DP_ACCOUNTANTS}, got {self.accountant!r}")


@dataclass(frozen=True)
class EvalConfig:
    """Client `client`'s table: DDIM samples per class, the metric classifier's training."""
    client: int = 0
    ddim_steps: int = 25  # knee of the quality/time curve of notebook 02
    n_per_class: int = 100
    classifier_epochs: int = 30
    classifier_train_size: int = 0  # 0: the whole train pool
    reference_per_class: int = 0  # held-out images per class in the reference (0: all; smoke keeps it small)

    def __post_init__(self) -> None:  # `client` is checked against the split by ExperimentConfig
        # n_per_class >= 3: the class-stratified KID and its jackknife need 3 samples of every class
        for name, lo in (("ddim_steps", 1), ("n_per_class", 3), ("classifier_epochs", 1), ("classifier_train_size", 0),
                         ("reference_per_class", 0)):
            _check_number(name, getattr(self, name), lo, None, integer=True)


# the flat names every override accepts (CLI, papermill parameters, preset_config): name -> (section, field)
FLAT = {**{f: ("split", f) for f in ("num_clients", "majority_per_class", "minority_per_class", "partition",
                                     "dirichlet_alpha")},
        **{f: ("privacy", f) for f in ("t0s", "clip_norm", "delta")},
        "fedavg_rounds": ("fedavg", "rounds"), "fedavg_fraction": ("fedavg", "fraction"),
        "phoenix_filter_reference": ("fedavg", "filter_reference"),
        "dp_eps": ("dpsgd", "eps"), "dp_clip_norm": ("dpsgd", "clip_norm"),
        "dp_multiplicity": ("dpsgd", "multiplicity"), "dp_accountant": ("dpsgd", "accountant"),
        "dp_batch_size": ("dpsgd", "batch_size"), "dp_steps": ("dpsgd", "steps"),
        **{f: ("eval", f) for f in ("client", "ddim_steps", "n_per_class", "classifier_epochs",
                                    "classifier_train_size", "reference_per_class")}}


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment, by concern. `override(t0s=..., dp_eps=...)` takes the flat names of `FLAT`."""
    data: str = "digits"
    T: int = 1000
    net: UNetConfig = UNetConfig(base_channels=32)
    # measured on 2 cores: ~25 steps/s -> ~32 s per 800-step model; a seed of all methods ~3.5 min
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=800, batch_size=64, lr=1e-3))
    split: SplitConfig = SplitConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    fedavg: FedAvgConfig = FedAvgConfig()
    dpsgd: DPSGDConfig = DPSGDConfig()
    eval: EvalConfig = EvalConfig()

    def __post_init__(self) -> None:
        """The checks across sections (each section checks its own fields when it is built)."""
        if self.data not in DATASETS:
            raise ValueError(f"data must be one of {DATASETS}, got {self.data!r}")
        _check_number("T", self.T, 2, None, integer=True)
        _check_number("client", self.eval.client, 0, self.split.num_clients - 1, integer=True)
        for t0 in self.privacy.t0s:
            try:
                Schedule(self.T).check_step(t0, "t0", 1, self.T - 1)
            except ValueError as err:  # the range comes from T: name it too
                raise ValueError(f"{err} (T = {self.T})") from None
        if self.net.num_classes % 2:
            raise ValueError(f"the two-cluster split needs an even number of classes, got {self.net.num_classes}")

    def override(self, **flat) -> ExperimentConfig:
        """A copy with fields changed by flat name (`FLAT`: t0s, clip_norm, dp_eps, client, ...) or by section
        (data, T, net, train, split, privacy, fedavg, dpsgd, eval)."""
        top, sections = {}, {}
        for name, value in flat.items():
            if name in FLAT:
                section, key = FLAT[name]
                sections.setdefault(section, {})[key] = value
            elif name in {f.name for f in fields(self)}:
                top[name] = value
            else:
                raise ValueError(f"unknown config field {name!r}; allowed: {', '.join([*FLAT, *(f.name for f in fields(self))])}")
        for section, kw in sections.items():
            top[section] = replace(top.get(section, getattr(self, section)), **kw)
        return replace(self, **top)

    def flat(self) -> dict:
        """Every field under its flat name (`FLAT`), with data, T, net and train: config.json's layout."""
        out = {"data": self.data, "T": self.T, "net": asdict(self.net), "train": asdict(self.train)}
        out.update({name: getattr(getattr(self, s), k) for name, (s, k) in FLAT.items()})
        return out

    def dp_config(self) -> DPConfig:
        d = self.dpsgd
        return DPConfig(d.eps, self.privacy.delta, d.clip_norm, d.multiplicity, d.accountant)


def _image_net(size: int, channels: int, base: int = 32, num_classes: int = 10) -> UNetConfig:
    return UNetConfig(size, channels, base, (1, 2, 2), num_classes=num_classes)


def _paper(size: int, channels: int, data: str, num_classes: int = 10, majority: int = 5000) -> ExperimentConfig:
    """The paper's scale: 5000 / 50 images per majority / minority class, the DDPM CIFAR-10 UNet.

    One client per cluster (num_clients = 2): a class then needs majority + minority images, 5050,
    which MNIST has (its smallest class, 5, has 5421 training images); four clients would need 10,100
    of a class and no dataset of the paper has them. CIFAR-10 has exactly 5000 per class, so its preset
    uses 4950 / 50 (`data.images.TRAIN_CLASS_COUNTS`; tests/test_datasets.py builds every preset's split)."""
    return ExperimentConfig(
        data, net=replace(UNetConfig.paper(num_classes), image_size=size, in_channels=channels),
        train=TrainConfig(steps=100_000, batch_size=128, lr=2e-4, ema_decay=0.9999),
        split=SplitConfig(num_clients=2, majority_per_class=majority, minority_per_class=50),
        privacy=PrivacyConfig(t0s=(284,), clip_norm=float(size * size * channels) ** 0.5),
        fedavg=FedAvgConfig(rounds=100, fraction=1.0), eval=EvalConfig(ddim_steps=100, n_per_class=1000,
                                                                        classifier_epochs=10))


def _images(data: str, size: int, channels: int, num_classes: int = 10) -> dict[str, ExperimentConfig]:
    """smoke / cpu / paper for an image dataset of size x size x channels (paper: 32 x 32, MNIST padded)."""
    privacy = PrivacyConfig(t0s=(284,), clip_norm=float(size * size * channels) ** 0.5)  # C = sqrt(d): never clipped
    return {
        "smoke": ExperimentConfig(data, net=_image_net(size, channels, 16, num_classes),
                                  train=TrainConfig(steps=6, batch_size=16, lr=1e-3),
                                  split=SplitConfig(majority_per_class=20, minority_per_class=3), privacy=privacy,
                                  fedavg=FedAvgConfig(rounds=2), eval=EvalConfig(ddim_steps=5, n_per_class=8,
                                  classifier_epochs=1, classifier_train_size=1000, reference_per_class=50)),
        # measured on 2 cores: ~0.34 s per step of 64 images at 28x28 (1.06M parameters), so one
        # 800-step model takes ~4.5 min and one seed of all four methods about 25 minutes
        "cpu": ExperimentConfig(data, net=_image_net(size, channels, 32, num_classes),
                                train=TrainConfig(steps=800, batch_size=64, lr=1e-3),
                                split=SplitConfig(majority_per_class=500, minority_per_class=10), privacy=privacy,
                                eval=EvalConfig(ddim_steps=25, n_per_class=100, classifier_epochs=3,
                                                classifier_train_size=20000)),
        "paper": _paper(32, channels, data, num_classes, 4950 if data == "cifar10" else 5000),
    }


PRESETS: dict[str, dict[str, ExperimentConfig]] = {  # dataset -> preset -> config: the one table of presets
    "digits": {
        "smoke": ExperimentConfig(net=UNetConfig(base_channels=16), train=TrainConfig(steps=20, batch_size=32, lr=1e-3),
                                  split=SplitConfig(majority_per_class=20, minority_per_class=3),
                                  fedavg=FedAvgConfig(rounds=2),
                                  eval=EvalConfig(ddim_steps=10, n_per_class=10, classifier_epochs=3)),
        "cpu": ExperimentConfig(),
        "paper": ExperimentConfig(net=UNetConfig(base_channels=64, num_res_blocks=2, attn_resolutions=(4,), dropout=0.1),
                                  train=TrainConfig(steps=20000, batch_size=128, lr=2e-4, ema_decay=0.9995),
                                  fedavg=FedAvgConfig(rounds=100), eval=EvalConfig(ddim_steps=100, n_per_class=500)),
    },
    "mnist": _images("mnist", 28, 1),
    "cmnist": _images("cmnist", 32, 3),
    "cifar10": _images("cifar10", 32, 3),
    "celeba": _images("celeba", 32, 3, num_classes=4),
}
PRESETS["mnist"]["paper"] = _paper(32, 1, "mnist")  # MNIST padded to 32x32 for the paper UNet

# Table 1 of the paper (FID majority / minority / avg, Inception features, client 0): for orientation only.
PAPER_TABLE1 = {
    "cifar10": {"central": (16.27, 17.62, 16.95), "fedavg": (18.05, 19.15, 18.60), "local": (19.87, 36.44, 28.16),
                "pfdm": (19.85, 35.78, 27.82)},
    "cmnist": {"central": (1.85, 1.45, 1.66), "fedavg": (1.89, 1.51, 1.70), "local": (2.19, 5.99, 4.09),
               "pfdm": (1.72, 4.79, 3.26)},
    "celeba": {"central": (13.72, 11.70, 12.71), "fedavg": (14.47, 11.83, 13.15), "local": (23.42, 41.38, 32.40),
               "pfdm": (18.11, 28.09, 23.10)},
    "mnist": {"pfdm": (5.40, 8.51, 6.96), "dpsgd": (31.06, 36.40, 33.73)},  # eps = 10
}


def paper_table(data: str) -> pd.DataFrame:
    """The paper's Table 1 rows for `data` (empty when the paper reports none)."""
    rows = [{"method": m, "fid_major": a, "fid_minor": b, "fid_avg": c}
            for m, (a, b, c) in PAPER_TABLE1.get(data, {}).items()]
    return pd.DataFrame(rows, columns=["method", "fid_major", "fid_minor", "fid_avg"])


def preset_config(preset: str, data: str = "digits", **overrides) -> ExperimentConfig:
    """The named preset of dataset `data` with fields overridden by flat name (`ExperimentConfig.override`,
    e.g. t0s=(100, 400), dp_eps=5) or by section (net=..., train=...)."""
    if data not in PRESETS:
        raise ValueError(f"unknown dataset {data!r}; allowed: {', '.join(PRESETS)}")
    return choose(PRESETS[data], preset).override(**overrides)


def t0_for(eps: float, cfg: ExperimentConfig, accountant: str = "thm51", unit: str = "per-image") -> int:
    """Smallest t0 whose upload has privacy `eps` (per image with C = cfg.privacy.clip_norm, or per pixel)."""
    return t0_for_epsilon(eps, Schedule(cfg.T), clip_norm=cfg.privacy.clip_norm, delta=cfg.privacy.delta,
                          accountant=accountant, unit=unit)


@dataclass
class Split:
    clients: list[Dataset]
    test: Dataset  # held-out real images: the metric's reference
    train: Dataset  # the metric classifier's training images (digits: the whole train split)
    public: Dataset | None = None  # training images that no client holds: Phoenix's shared set G and filter reference


def make_split(cfg: ExperimentConfig, seed: int) -> Split:
    """The clients' data, the held-out reference of client cfg.eval.client, and the classifier's pool.

    Colorized MNIST is painted after the partition: each client in its cluster's colours, the
    reference in client cfg.eval.client's, the classifier's pool half in each (datasets module doc).
    """
    train_set, test_set = datasets.load_split(cfg.data, seed, cfg.net.image_size)
    if cfg.eval.reference_per_class:  # the first k held-out images of each class (a cheap reference for smoke runs)
        k = cfg.eval.reference_per_class
        test_set = test_set.subset(np.sort(np.concatenate([np.flatnonzero(test_set.y.numpy() == c)[:k]
                                                           for c in range(cfg.net.num_classes)])))
    parts = cluster_partition(train_set.y, cfg.split.num_clients, cfg.split.majority_per_class, cfg.split.minority_per_class, seed)
    if cfg.split.partition != "cluster":  # the same number of images, split IID or by Dirichlet(alpha)
        chosen = torch.from_numpy(np.concatenate(parts))
        y = train_set.y[chosen]
        parts = [chosen[p].numpy() for p in index_partition(y, cfg.split.partition, cfg.split.num_clients, seed,
                                                            cfg.split.dirichlet_alpha)]
    clients = [train_set.subset(p) for p in parts]
    public = train_set.subset(np.setdiff1d(np.arange(len(train_set)), np.concatenate(parts)))
    n = cfg.eval.classifier_train_size or len(train_set)
    pool = train_set.subset(torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))[:n])
    if cfg.data == "cmnist":
        cluster = lambda m: int(m >= (cfg.split.num_clients + 1) // 2)
        clients = [datasets.colorize_cluster(d, cluster(m), seed * 1000 + m) for m, d in enumerate(clients)]
        test_set = datasets.colorize_cluster(test_set, cluster(cfg.eval.client), seed * 1000 + 999)
        half = len(pool) // 2
        pool = union([datasets.colorize_cluster(pool.subset(range(half)), 0, seed * 1000 + 998),
                      datasets.colorize_cluster(pool.subset(range(half, len(pool))), 1, seed * 1000 + 997)])
        half = len(public) // 2
        public = union([datasets.colorize_cluster(public.subset(range(half)), 0, seed * 1000 + 996),
                        datasets.colorize_cluster(public.subset(range(half, len(public))), 1, seed * 1000 + 995)])
    shape = (cfg.net.in_channels, cfg.net.image_size, cfg.net.image_size)
    if tuple(test_set.x.shape[1:]) != shape:
        raise ValueError(f"data {cfg.data!r} has images {tuple(test_set.x.shape[1:])} but the net expects {shape}; "
                         "set net.in_channels / net.image_size to match")
    return Split(clients, test_set, pool, public)


def metric_classifier(cfg: ExperimentConfig, split: Split, seed: int) -> metrics.Classifier:
    """The feature network of the classifier FID for cfg.data (trained once per seed and data, then cached)."""
    if cfg.data == "digits":
        return digits_classifier(seed, cfg.eval.classifier_epochs)
    return cached_classifier(f"{cfg.data}{cfg.net.image_size}_classifier_seed{seed}_e{cfg.eval.classifier_epochs}",
                             split.train, cfg.eval.classifier_epochs, seed, progress=True)


def metric_pca(clf: metrics.Classifier, split: Split, max_images: int = 5000) -> metrics.FeaturePCA:
    """The group FID's projection: PCA of the metric classifier's features of at most `max_images` training
    images (a fixed random subset), never of the held-out reference."""
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(split.train.x), generator=g)[:max_images]
    return metrics.FeaturePCA.fit(metrics.embed(clf, split.train.x[idx]))


def extra_metrics(cfg: ExperimentConfig) -> dict[str, Callable[[torch.Tensor], float]]:
    """Colorized MNIST: "color" = fraction of samples painted in client cfg.eval.client's colour band
    (the classifier FID is nearly colour-blind: its classifier is trained to ignore colour)."""
    if cfg.data != "cmnist":
        return {}
    cluster = int(cfg.eval.client >= (cfg.split.num_clients + 1) // 2)
    return {"color": lambda x: float(datasets.in_band(datasets.stroke_hue(x), cluster).float().mean())}


def model_factory(cfg: ExperimentConfig, seed: int):
    """The UNet factory every method of a run uses (seeded, on train.device()); also the Flower app's."""
    def make() -> nn.Module:
        torch.manual_seed(seed)
        return UNet(cfg.net).to(device())
    return make


def context(cfg: ExperimentConfig, split: Split, seed: int, t0: int | None, folder: Path,
            progress: bool = True) -> registry.Context:
    """What every method of `registry.METHODS` needs for one (seed, t0) run of this config."""
    public = split.public if split.public is not None else split.train  # (a Split built by hand may lack it)

    def score():  # Phoenix's filter: precision against public images no client holds, never the test reference
        clf = metric_classifier(cfg, split, seed)
        ref = public.x[torch.randperm(len(public), generator=torch.Generator().manual_seed(seed))
                       [:cfg.fedavg.filter_reference]]
        return metrics.knn_precision_score(ref, lambda x: metrics.embed(clf, x))

    train = replace(cfg.train, seed=seed, checkpoint_every=max(1, cfg.train.steps // 4))
    d = cfg.dpsgd
    dp_train = replace(train, batch_size=d.batch_size or train.batch_size, steps=d.steps or train.steps,
                       checkpoint_every=max(1, (d.steps or train.steps) // 4))
    return registry.Context(
        clients=split.clients, client=cfg.eval.client, make_model=model_factory(cfg, seed), sched=Schedule(cfg.T),
        train=train, dp_train=dp_train, folder=Path(folder),
        seed=seed, t0=t0, clip_norm=cfg.privacy.clip_norm, delta=cfg.privacy.delta,
        fedavg=PhoenixConfig(cfg.fedavg.rounds, cfg.fedavg.fraction), dp=cfg.dp_config(), pool=public,
        score=score, progress=progress)


def train_method(method: str, cfg: ExperimentConfig, split: Split, seed: int, t0: int | None, folder: Path,
                 progress: bool = True, info: dict | None = None) -> dict[str, nn.Module]:
    """Train (or load from `folder`) the models of one method for client cfg.eval.client (`registry.METHODS`).

    `info`, when given, receives what the method reports beyond its models (DP-SGD's accountant
    eps and noise multiplier, the clients Phoenix's filter disconnected)."""
    ctx = context(cfg, split, seed, t0, folder, progress)
    models = registry.get(method).train(ctx)
    if info is not None:
        info.update(ctx.info)
    return models


def sample_method(method: str, models: dict[str, nn.Module], cfg: ExperimentConfig, y: torch.Tensor,
                  t0: int | None, seed: int) -> torch.Tensor:
    """Samples of labels y from a method's trained models (DDIM with cfg.eval.ddim_steps)."""
    shape = (len(y), cfg.net.in_channels, cfg.net.image_size, cfg.net.image_size)
    return registry.sample(method, models, Schedule(cfg.T), y, shape, cfg.eval.ddim_steps, seed, t0)


# fields that change what is trained (the others only change sampling and evaluation) ...
_EVAL_ONLY = ("t0s", "n_per_class", "ddim_steps", "classifier_epochs", "classifier_train_size", "reference_per_class")
# ... and fields of one method only, which its own checkpoint guards (name and fingerprint)
_METHOD_OWN = ("dp_eps", "dp_clip_norm", "dp_multiplicity", "dp_accountant", "dp_batch_size", "dp_steps",
               "phoenix_filter_reference")


def check_folder(folder: Path, cfg: ExperimentConfig) -> None:
    """Refuse to reuse checkpoints in `folder` that were trained under another configuration (its config.json,
    in the flat layout of `ExperimentConfig.flat`). A field added after the folder was written is read there
    as its default."""
    keep = lambda d: {k: v for k, v in _jsonable(d).items() if k not in _EVAL_ONLY + _METHOD_OWN}
    check_config_folder(folder, keep(cfg.flat()), defaults=keep(ExperimentConfig().flat()))


def run(cfg: ExperimentConfig, methods: Sequence[str] = registry.TABLE1, seeds: Sequence[int] = (0, 1, 2),
        out: str | Path | None = None, progress: bool = True, keep_samples: bool = True,
        name: str = "results") -> pd.DataFrame:
    """Train, sample and evaluate every (seed, method[, t0]); returns one row per run."""
    unknown = [m for m in methods if m not in tuple(registry.METHODS)]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; allowed: {', '.join(tuple(registry.METHODS))}")
    if not methods:
        raise ValueError(f"methods must list at least one of {', '.join(tuple(registry.METHODS))}, got none")
    if not seeds:
        raise ValueError("seeds must list at least one seed")
    if len(set(seeds)) != len(seeds) or any(isinstance(s, bool) or int(s) != s or s < 0 for s in seeds):
        raise ValueError(f"seeds must list distinct integers >= 0, got {list(seeds)}")
    out = Path(out) if out else paths.runs_dir() / cfg.data
    splits = {seed: make_split(cfg, seed) for seed in seeds}  # an impossible split is refused before any write
    out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        check_folder(out / f"seed{seed}", cfg)
    K = cfg.net.num_classes
    majority, _ = client_classes(cfg.eval.client, cfg.split.num_clients, K)
    rows, class_rows, samples = [], [], {}
    jobs = [(s, m, t0) for s in seeds for m in methods for t0 in (cfg.privacy.t0s if registry.get(m).uses_t0 else (None,))]
    sched = Schedule(cfg.T)
    refs: dict[int, tuple] = {}  # seed -> (classifier, features of the held-out reference)
    inception_net = _inception()
    for seed, method, t0 in tqdm(jobs, desc="runs", disable=not progress):
        split = splits[seed]
        if seed not in refs:  # the classifier is trained once per seed (then cached on disk)
            clf = metric_classifier(cfg, split, seed)
            refs[seed] = clf, metrics.embed(clf, split.test.x), metric_pca(clf, split)
        clf, ref, pca = refs[seed]
        start = time.perf_counter()
        extra: dict = {}
        models = train_method(method, cfg, split, seed, t0, out / f"seed{seed}", progress, extra)
        train_s = time.perf_counter() - start
        y = torch.arange(K).repeat_interleave(cfg.eval.n_per_class)
        fake = sample_method(method, models, cfg, y, t0, seed)
        conditional = registry.get(method).conditional
        if not conditional:  # an unconditional model's samples: labelled by the metric classifier (mode coverage)
            with torch.no_grad():
                y_eval = clf(fake).argmax(1)
            extra["class_counts"] = " ".join(map(str, torch.bincount(y_eval, minlength=K).tolist()))
        summary, per_class = evaluate_client(clf, fake, y if conditional else y_eval, split.test, majority,
                                             extra_metrics(cfg), ref, inception_net, pca, conditional)
        info = {"seed": seed, "method": method, "t0": t0,
                "eps_thm51": eps_of(t0, sched, cfg.privacy.clip_norm, cfg.privacy.delta) if t0 else None,
                "eps_analytic": eps_of(t0, sched, cfg.privacy.clip_norm, cfg.privacy.delta, "analytic") if t0 else None,
                "eps_pixel": eps_of(t0, sched, delta=cfg.privacy.delta, unit="per-pixel") if t0 else None,
                "seconds": time.perf_counter() - start, "train_seconds": train_s, **extra}
        rows.append({**info, **summary})
        class_rows += [{**info, **r} for r in per_class]
        if keep_samples:
            samples[(seed, method, t0)] = fake
    df = pd.DataFrame(rows)
    write_text(out / f"{name}.csv", df.to_csv(index=False))
    write_text(out / f"{name}_per_class.csv", pd.DataFrame(class_rows).to_csv(index=False))
    write_json(out / f"{name}.json", {"config": _jsonable(cfg.flat()), "rows": rows})
    if keep_samples:
        atomic_save(samples, out / f"{name}_samples.pt")
    return df


def _inception() -> nn.Module | None:
    """The FID Inception network when $PFDM_INCEPTION names a local weights file, else None
    (results then carry the classifier FID only, as labelled in every table)."""
    if not paths.inception_weights():
        return None
    from pfdm_core.evaluation.inception import InceptionFeatures

    return InceptionFeatures()


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj if isinstance(obj, (int, float, str, bool, type(None))) else str(obj)


