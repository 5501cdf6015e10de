"""Run methods x seeds on one federated split, evaluate client `client`, write results (Table 1).

    run(ExperimentConfig, methods=("pfdm", "local", "central", "fedavg"), seeds=(0, 1, 2))

Methods: PFDM ("pfdm"), local-only ("local"), centralized ("central"), FedAvg ("fedavg"), and
the rivals of DESIGN.md 3-4: central DP-SGD diffusion (DPDM, "dpsgd", on the union of the
clients at eps = cfg.dp_eps) and the Phoenix strategies ("phoenix_sharing",
"phoenix_personal", "phoenix_filter"; `phoenix.STRATEGIES`). All share one network, one step
budget (`cfg.train`) and one split (`cfg.partition`: the paper's two-cluster split, IID or
Dirichlet).

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
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import datasets, metrics
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
from .dpsgd import DPConfig, train_dpsgd
from .nets import UNet, UNetConfig
from .phoenix import PARTITIONS, STRATEGIES, knn_precision_score, train_phoenix
from .phoenix import partition as index_partition
from .presets import choose
from .privacy import epsilon as eps_of
from .privacy import t0_for_epsilon
from .recipes import cached_classifier, digits_classifier, runs_dir
from .schedule import Schedule
from .train import TrainConfig, check_config_folder, device

METHODS = ("pfdm", "local", "central", "fedavg")  # the default table (Table 1)
PHOENIX = {"phoenix_sharing": "sharing", "phoenix_personal": "personal", "phoenix_filter": "personal_filter"}
ALL_METHODS = (*METHODS, "dpsgd", *PHOENIX)
DATASETS = datasets.NAMES


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
    classifier_train_size: int = 0  # images the metric's classifier trains on (0: the whole train pool)
    # the split: "cluster" (DESIGN.md 3), "iid" or "dirichlet", over the same number of images
    partition: str = "cluster"
    dirichlet_alpha: float = 0.5
    # DP-SGD (DPDM) rival, central on the union of the clients: target eps (Opacus accountant,
    # add/remove neighbours; see `dpsgd`), per-example gradient clip, noise multiplicity K
    dp_eps: float = 10.0
    dp_clip_norm: float = 1.0
    dp_multiplicity: int = 1  # DPDM uses 32 on MNIST; each draw costs a forward/backward pass
    dp_accountant: str = "rdp"
    phoenix_filter_reference: int = 500  # images of the public pool (split.train) scoring the filter

    def __post_init__(self) -> None:
        if self.data not in DATASETS:
            raise ValueError(f"data must be one of {DATASETS}, got {self.data!r}")
        if self.partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {PARTITIONS}, got {self.partition!r}")
        self.dp_config()  # validates the DP-SGD fields
        _check_number("clip_norm", self.clip_norm, 0, 1e6, low_open=True)
        _check_number("fedavg_fraction", self.fedavg_fraction, 0, 1, low_open=True)
        for name, lo in (("num_clients", 2), ("majority_per_class", 1), ("minority_per_class", 0), ("T", 2),
                         ("ddim_steps", 1), ("n_per_class", 1), ("fedavg_rounds", 1), ("classifier_epochs", 1),
                         ("classifier_train_size", 0)):
            _check_number(name, getattr(self, name), lo, None, integer=True)
        if not 0 <= self.client < self.num_clients:
            raise ValueError(f"client must be in 0..{self.num_clients - 1}, got {self.client}")
        if self.net.num_classes % 2:
            raise ValueError(f"the two-cluster split needs an even number of classes, got {self.net.num_classes}")
        for t0 in self.t0s:
            Schedule(self.T).check_step(t0, "t0", 1, self.T - 1)

    def dp_config(self) -> DPConfig:
        return DPConfig(self.dp_eps, self.delta, self.dp_clip_norm, self.dp_multiplicity, self.dp_accountant)


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


def _image_net(size: int, channels: int, base: int = 32, num_classes: int = 10) -> UNetConfig:
    return UNetConfig(size, channels, base, (1, 2, 2), num_classes=num_classes)


def _paper(size: int, channels: int, num_classes: int = 10, majority: int = 5000) -> ExperimentConfig:
    """The paper's scale: 5000 / 50 images per majority / minority class, the DDPM CIFAR-10 UNet.

    One client per cluster (num_clients = 2): a class then needs majority + minority images, 5050,
    which MNIST has (its smallest class, 5, has 5421 training images); four clients would need 10,100
    of a class and no dataset of the paper has them. CIFAR-10 has exactly 5000 per class, so its preset
    uses 4950 / 50 (`datasets.TRAIN_CLASS_COUNTS`; tests/test_datasets.py builds every preset's split)."""
    return ExperimentConfig(num_clients=2, majority_per_class=majority, minority_per_class=50, t0s=(284,),
                            clip_norm=float(size * size * channels) ** 0.5,
                            net=replace(UNetConfig.paper(num_classes), image_size=size, in_channels=channels),
                            train=TrainConfig(steps=100_000, batch_size=128, lr=2e-4, ema_decay=0.9999),
                            fedavg_rounds=100, fedavg_fraction=1.0, ddim_steps=100, n_per_class=1000,
                            classifier_epochs=10)


def _images(size: int, channels: int, num_classes: int = 10) -> dict[str, ExperimentConfig]:
    """smoke / cpu / paper for an image dataset of size x size x channels."""
    data = {(28, 1): "mnist", (32, 3): "cifar10"}.get((size, channels), "mnist")
    clip = float(size * size * channels) ** 0.5  # C = sqrt(d): ||x|| <= C for pixels in [-1, 1], never clipped
    return {
        "smoke": ExperimentConfig(data, majority_per_class=20, minority_per_class=3, clip_norm=clip, t0s=(284,),
                                  net=_image_net(size, channels, 16, num_classes),
                                  train=TrainConfig(steps=6, batch_size=16, lr=1e-3), fedavg_rounds=2, ddim_steps=5,
                                  n_per_class=8, classifier_epochs=1, classifier_train_size=1000),
        # measured on 2 cores: ~0.34 s per step of 64 images at 28x28 (1.06M parameters), so one
        # 800-step model takes ~4.5 min and one seed of all four methods about 25 minutes
        "cpu": ExperimentConfig(data, majority_per_class=500, minority_per_class=10, clip_norm=clip, t0s=(284,),
                                net=_image_net(size, channels, 32, num_classes),
                                train=TrainConfig(steps=800, batch_size=64, lr=1e-3), ddim_steps=25,
                                n_per_class=100, classifier_epochs=3, classifier_train_size=20000),
        "paper": replace(_paper(32, channels, num_classes, 4950 if data == "cifar10" else 5000), data=data),
    }


PRESETS = {
    "digits": {
        "smoke": ExperimentConfig(majority_per_class=20, minority_per_class=3, t0s=(693,), net=UNetConfig(base_channels=16),
                                  train=TrainConfig(steps=20, batch_size=32, lr=1e-3), fedavg_rounds=2, ddim_steps=10,
                                  n_per_class=10, classifier_epochs=3),
        "cpu": ExperimentConfig(),
        "paper": ExperimentConfig(net=UNetConfig(base_channels=64, num_res_blocks=2, attn_resolutions=(4,), dropout=0.1),
                                  train=TrainConfig(steps=20000, batch_size=128, lr=2e-4, ema_decay=0.9995),
                                  fedavg_rounds=100, ddim_steps=100, n_per_class=500),
    },
    "mnist": _images(28, 1),
    "cmnist": {k: replace(v, data="cmnist") for k, v in _images(32, 3).items()},
    "cifar10": _images(32, 3),
    "celeba": {k: replace(v, data="celeba") for k, v in _images(32, 3, num_classes=4).items()},
}
PRESETS["mnist"]["paper"] = replace(_paper(32, 1), data="mnist")  # MNIST padded to 32x32 for the paper UNet

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
    """The named preset of dataset `data` with fields overridden (e.g. t0s=(100, 400))."""
    if data not in PRESETS:
        raise ValueError(f"unknown dataset {data!r}; allowed: {', '.join(PRESETS)}")
    return replace(choose(PRESETS[data], preset), **overrides)


def t0_for(eps: float, cfg: ExperimentConfig, accountant: str = "thm51", unit: str = "per-image") -> int:
    """Smallest t0 whose upload has privacy `eps` (per image with C = cfg.clip_norm, or per pixel)."""
    return t0_for_epsilon(eps, Schedule(cfg.T), clip_norm=cfg.clip_norm, delta=cfg.delta, accountant=accountant,
                          unit=unit)


@dataclass
class Split:
    clients: list[Dataset]
    test: Dataset  # held-out real images: the metric's reference
    train: Dataset  # the metric classifier's training images (digits: the whole train split)


def make_split(cfg: ExperimentConfig, seed: int) -> Split:
    """The clients' data, the held-out reference of client cfg.client, and the classifier's pool.

    Colorized MNIST is painted after the partition: each client in its cluster's colours, the
    reference in client cfg.client's, the classifier's pool half in each (datasets module doc).
    """
    train_set, test_set = datasets.load_split(cfg.data, seed, cfg.net.image_size)
    parts = cluster_partition(train_set.y, cfg.num_clients, cfg.majority_per_class, cfg.minority_per_class, seed)
    if cfg.partition != "cluster":  # the same number of images, split IID or by Dirichlet(alpha)
        chosen = torch.from_numpy(np.concatenate(parts))
        y = train_set.y[chosen]
        parts = [chosen[p].numpy() for p in index_partition(y, cfg.partition, cfg.num_clients, seed,
                                                            cfg.dirichlet_alpha)]
    clients = [train_set.subset(p) for p in parts]
    n = cfg.classifier_train_size or len(train_set)
    pool = train_set.subset(torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))[:n])
    if cfg.data == "cmnist":
        cluster = lambda m: int(m >= (cfg.num_clients + 1) // 2)
        clients = [datasets.colorize_cluster(d, cluster(m), seed * 1000 + m) for m, d in enumerate(clients)]
        test_set = datasets.colorize_cluster(test_set, cluster(cfg.client), seed * 1000 + 999)
        half = len(pool) // 2
        pool = union([datasets.colorize_cluster(pool.subset(range(half)), 0, seed * 1000 + 998),
                      datasets.colorize_cluster(pool.subset(range(half, len(pool))), 1, seed * 1000 + 997)])
    shape = (cfg.net.in_channels, cfg.net.image_size, cfg.net.image_size)
    if tuple(test_set.x.shape[1:]) != shape:
        raise ValueError(f"data {cfg.data!r} has images {tuple(test_set.x.shape[1:])} but the net expects {shape}; "
                         "set net.in_channels / net.image_size to match")
    return Split(clients, test_set, pool)


def metric_classifier(cfg: ExperimentConfig, split: Split, seed: int) -> metrics.Classifier:
    """The feature network of the classifier FID for cfg.data (trained once per seed, then cached)."""
    if cfg.data == "digits":
        return digits_classifier(seed, cfg.classifier_epochs)
    c, s, k = cfg.net.in_channels, cfg.net.image_size, cfg.net.num_classes
    name = f"{cfg.data}{s}_classifier_seed{seed}_e{cfg.classifier_epochs}_n{len(split.train)}"
    return cached_classifier(name, (c, s, k), lambda: metrics.train_classifier(
        split.train.x, split.train.y, epochs=cfg.classifier_epochs, seed=seed, progress=True))


def evaluate_client(clf: metrics.Classifier, fake: torch.Tensor, fake_y: torch.Tensor, test: Dataset,
                    majority: Sequence[int], extras: dict[str, Callable[[torch.Tensor], float]] | None = None,
                    test_features: np.ndarray | None = None, inception_net: nn.Module | None = None,
                    ) -> tuple[dict, list[dict]]:
    """Per-class metrics of samples (fake, fake_y) against the test images of each class.

    `extras` {name: f(fake_c) -> float} adds columns (e.g. Colorized MNIST's colour match);
    `test_features` = metrics.embed(clf, test.x), computed once when many runs share a reference;
    `inception_net` (`inception.InceptionFeatures`) adds the standard Inception FID, "fid_inception"."""
    extras = extras or {}
    feats = metrics.embed(clf, test.x) if test_features is None else test_features
    rows = []
    for c in range(int(test.y.max()) + 1):
        real_c, fake_c = test.x[test.y == c], fake[fake_y == c]
        row = {"class": c, "group": "majority" if c in majority else "minority",
               **metrics.evaluate(clf, real_c, fake_c, fake_y[fake_y == c], real_features=feats[(test.y == c).numpy()])}
        if inception_net is not None:
            from .inception import inception_fid

            row["fid_inception"] = inception_fid(real_c, fake_c, net=inception_net)
        rows.append({**row, **{name: f(fake_c) for name, f in extras.items()}})
    df = pd.DataFrame(rows)
    summary = {}
    keys = ["fid", "kid", "precision", "recall", "accuracy", *extras] + (["fid_inception"] if inception_net is not None else [])
    for key in keys:
        summary[f"{key}_major"] = float(df[df.group == "majority"][key].mean())
        summary[f"{key}_minor"] = float(df[df.group == "minority"][key].mean())
        summary[f"{key}_avg"] = float(df[key].mean())
    return summary, rows


def extra_metrics(cfg: ExperimentConfig) -> dict[str, Callable[[torch.Tensor], float]]:
    """Colorized MNIST: "color" = fraction of samples painted in client cfg.client's colour band
    (the classifier FID is nearly colour-blind: its classifier is trained to ignore colour)."""
    if cfg.data != "cmnist":
        return {}
    cluster = int(cfg.client >= (cfg.num_clients + 1) // 2)
    return {"color": lambda x: float(datasets.in_band(datasets.stroke_hue(x), cluster).float().mean())}


def model_factory(cfg: ExperimentConfig, seed: int):
    """The UNet factory every method of a run uses (seeded, on train.device()); also the Flower app's."""
    def make() -> nn.Module:
        torch.manual_seed(seed)
        return UNet(cfg.net).to(device())
    return make


def train_method(method: str, cfg: ExperimentConfig, split: Split, seed: int, t0: int | None, folder: Path,
                 progress: bool = True, info: dict | None = None) -> dict[str, nn.Module]:
    """Train (or load from `folder`) the models of one method for client cfg.client.

    `info`, when given, receives what the method reports beyond its models (DP-SGD's accountant
    eps and noise multiplier, the clients Phoenix's filter disconnected)."""
    info = {} if info is None else info
    sched, make = Schedule(cfg.T), model_factory(cfg, seed)
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
    if method == "dpsgd":
        dp = cfg.dp_config()
        pooled = union(split.clients)
        res = train_dpsgd(make(), sched, pooled.x, pooled.y, tc, dp,
                          folder / f"dpsgd_eps{dp.eps:g}_K{dp.multiplicity}_C{dp.clip_norm:g}_{dp.accountant}.pt",
                          progress, desc=f"DP-SGD (eps={dp.eps:g})")
        info.update(dp_eps_spent=res.eps, dp_noise_multiplier=res.noise_multiplier, dp_sample_rate=res.sample_rate)
        return {"model": res.model}
    if method in PHOENIX:
        strategy = replace(STRATEGIES[PHOENIX[method]], rounds=cfg.fedavg_rounds, client_fraction=cfg.fedavg_fraction)
        score = None
        if strategy.filter_k:  # precision against public images (split.train), never the test reference
            clf = metric_classifier(cfg, split, seed)
            ref = split.train.x[torch.randperm(len(split.train), generator=torch.Generator().manual_seed(seed))
                                [:cfg.phoenix_filter_reference]]
            score = knn_precision_score(ref, lambda x: metrics.embed(clf, x))
        res = train_phoenix(split.clients, make, sched, tc, strategy, score, pool=split.train,  # G: public images
                            checkpoint=folder / f"{method}.pt", progress=progress)
        info.update(disconnected=res.disconnected)
        return {"model": res.client_model(cfg.client)}
    raise ValueError(f"unknown method {method!r}; allowed: {', '.join(ALL_METHODS)}")


def sample_method(method: str, models: dict[str, nn.Module], cfg: ExperimentConfig, y: torch.Tensor,
                  t0: int | None, seed: int) -> torch.Tensor:
    sched, shape = Schedule(cfg.T), (len(y), cfg.net.in_channels, cfg.net.image_size, cfg.net.image_size)
    if method == "pfdm":
        return pfdm_sample(models["shared"], models["personal"], sched, t0, y, shape, "ddim", cfg.ddim_steps, seed)
    return generate(models["model"], sched, y, shape, "ddim", cfg.ddim_steps, seed=seed)


# fields that change what is trained (the others only change sampling and evaluation) ...
_EVAL_ONLY = ("t0s", "n_per_class", "ddim_steps", "classifier_epochs", "classifier_train_size")
# ... and fields of one method only, which its own checkpoint guards (name and fingerprint)
_METHOD_OWN = ("dp_eps", "dp_clip_norm", "dp_multiplicity", "dp_accountant", "phoenix_filter_reference")


def check_folder(folder: Path, cfg: ExperimentConfig) -> None:
    """Refuse to reuse checkpoints in `folder` that were trained under another configuration.
    A field added to the config after the folder was written is read there as its default."""
    keep = lambda d: {k: v for k, v in _jsonable(d).items() if k not in _EVAL_ONLY + _METHOD_OWN}
    check_config_folder(folder, keep(asdict(cfg)), defaults=keep(asdict(ExperimentConfig())))


def run(cfg: ExperimentConfig, methods: Sequence[str] = METHODS, seeds: Sequence[int] = (0, 1, 2),
        out: str | Path | None = None, progress: bool = True, keep_samples: bool = True,
        name: str = "results") -> pd.DataFrame:
    """Train, sample and evaluate every (seed, method[, t0]); returns one row per run."""
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; allowed: {', '.join(ALL_METHODS)}")
    if not methods:
        raise ValueError(f"methods must list at least one of {', '.join(ALL_METHODS)}, got none")
    if not seeds:
        raise ValueError("seeds must list at least one seed")
    if len(set(seeds)) != len(seeds) or any(isinstance(s, bool) or int(s) != s or s < 0 for s in seeds):
        raise ValueError(f"seeds must list distinct integers >= 0, got {list(seeds)}")
    out = Path(out) if out else runs_dir() / cfg.data
    out.mkdir(parents=True, exist_ok=True)
    K = cfg.net.num_classes
    majority, _ = client_classes(cfg.client, cfg.num_clients, K)
    rows, class_rows, samples = [], [], {}
    jobs = [(s, m, t0) for s in seeds for m in methods for t0 in (cfg.t0s if m == "pfdm" else (None,))]
    sched = Schedule(cfg.T)
    for seed in seeds:
        check_folder(out / f"seed{seed}", cfg)
    splits = {seed: make_split(cfg, seed) for seed in seeds}
    refs: dict[int, tuple] = {}  # seed -> (classifier, features of the held-out reference)
    inception_net = _inception()
    for seed, method, t0 in tqdm(jobs, desc="runs", disable=not progress):
        split = splits[seed]
        if seed not in refs:  # the classifier is trained once per seed (then cached on disk)
            clf = metric_classifier(cfg, split, seed)
            refs[seed] = clf, metrics.embed(clf, split.test.x)
        clf, ref = refs[seed]
        start = time.perf_counter()
        extra: dict = {}
        models = train_method(method, cfg, split, seed, t0, out / f"seed{seed}", progress, extra)
        train_s = time.perf_counter() - start
        y = torch.arange(K).repeat_interleave(cfg.n_per_class)
        fake = sample_method(method, models, cfg, y, t0, seed)
        summary, per_class = evaluate_client(clf, fake, y, split.test, majority, extra_metrics(cfg), ref,
                                             inception_net)
        info = {"seed": seed, "method": method, "t0": t0,
                "eps_thm51": eps_of(t0, sched, cfg.clip_norm, cfg.delta) if t0 else None,
                "eps_analytic": eps_of(t0, sched, cfg.clip_norm, cfg.delta, "analytic") if t0 else None,
                "eps_pixel": eps_of(t0, sched, delta=cfg.delta, unit="per-pixel") if t0 else None,
                "seconds": time.perf_counter() - start, "train_seconds": train_s, **extra}
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


def _inception() -> nn.Module | None:
    """The FID Inception network when $PFDM_INCEPTION names a local weights file, else None
    (results then carry the classifier FID only, as labelled in every table)."""
    import os

    if not os.environ.get("PFDM_INCEPTION"):
        return None
    from .inception import InceptionFeatures

    return InceptionFeatures()


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


