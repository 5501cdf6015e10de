"""The app's task: a thin adapter from Flower's run/node config to pfdm_core.

Nothing here re-implements PFDM: the client side calls `methods.pfdm.client_upload` and
`client_train_personal`, the server side `server.server_train_shared`, evaluation calls
`experiment.sample_method` / `evaluate_client`, with the split and model factory of
`experiment` so that a Flower run and notebook 04's in-process run are like for like.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from pfdm_core import experiment
from pfdm_core.core.checkpoint import atomic_save, write_json
from pfdm_core.core.checkpoint import data_fingerprint as fingerprint
from pfdm_core.core.paths import runs_dir
from pfdm_core.core.schedule import Schedule, q_sample_from
from pfdm_core.core.train import TrainConfig, train
from pfdm_core.data.partition import client_classes
from pfdm_core.data.small import Dataset
from pfdm_core.methods.fedavg import fedavg_client_config
from pfdm_core.methods.pfdm import client_train_personal, client_upload
from pfdm_core.methods.server import Upload, server_train_shared
from pfdm_core.privacy.mechanism import t0_for_epsilon

FLOWER_METHODS = ("pfdm", "fedavg")


@dataclass(frozen=True)
class AppConfig:
    """[tool.flwr.app.config] of pyproject.toml, checked (keys spelled with '-' there)."""

    method: str = "pfdm"
    preset: str = "smoke"
    data: str = "digits"
    seed: int = 0
    num_clients: int = 0  # 0: the preset's
    min_clients: int = 2
    t0: int = 0  # 0: the preset's
    num_rounds: int = 0  # 0: the preset's
    connect_timeout: float = 120.0
    upload_timeout: float = 300.0
    round_timeout: float = 3600.0
    return_samples: bool = False
    out_dir: str = ""
    audit: bool = True

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> AppConfig:
        return _from_config(cls, run_config, "run-config")

    def __post_init__(self) -> None:
        _check_types(self, "run-config")  # values arrive untyped from TOML / --run-config
        if self.seed < 0:
            raise ValueError(f"run-config seed must be an integer >= 0, got {self.seed}")
        if self.method not in FLOWER_METHODS:
            raise ValueError(f"method must be one of {FLOWER_METHODS}, got {self.method!r}")
        cfg = self.experiment()  # validates preset, data, t0
        if not 1 <= self.min_clients <= cfg.split.num_clients:
            raise ValueError(f"min-clients must be in 1..num-clients={cfg.split.num_clients}, got {self.min_clients}")
        if self.num_rounds < 0 or min(self.connect_timeout, self.upload_timeout, self.round_timeout) <= 0:
            raise ValueError("num-rounds must be >= 0 and the timeouts > 0")

    def experiment(self) -> experiment.ExperimentConfig:
        """The pfdm_core experiment config this run reproduces (notebook 04's, same preset)."""
        over = {"num_clients": self.num_clients} if self.num_clients else {}
        cfg = experiment.preset_config(self.preset, self.data, **over)
        if self.t0:
            Schedule(cfg.T).check_step(self.t0, "t0", 1, cfg.T - 1)
            cfg = cfg.override(t0s=(self.t0,))
        return cfg

    @property
    def rounds(self) -> int:
        return self.num_rounds or self.experiment().fedavg.rounds

    def out(self) -> Path:
        return Path(self.out_dir) if self.out_dir else runs_dir() / "flower" / self.method


def _from_config(cls, config: Mapping[str, Any], what: str):
    """cls from a Flower config (keys spelled with '-'), refusing unknown keys."""
    known = {f.replace("_", "-") for f in cls.__dataclass_fields__}
    unknown = set(config) - known
    if unknown:
        raise ValueError(f"unknown {what} key(s) {sorted(unknown)}; allowed: {sorted(known)}")
    return cls(**{k.replace("-", "_"): v for k, v in config.items()})


def _check_types(obj: Any, what: str) -> None:
    """Every field int, float, bool or str as annotated (a float field takes an int; only bool takes a bool)."""
    for f in dataclasses.fields(obj):
        value, kind = getattr(obj, f.name), f.type
        ok = {"int": isinstance(value, int) and not isinstance(value, bool),
              "float": isinstance(value, (int, float)) and not isinstance(value, bool),
              "bool": isinstance(value, bool), "str": isinstance(value, str)}.get(kind.split(" ")[0], True)
        if not ok:
            raise ValueError(f"{what} {f.name.replace('_', '-')} must be {kind}, got {value!r} ({type(value).__name__})")


@dataclass(frozen=True)
class NodeSettings:
    """A SuperNode's own settings (--node-config), which the server cannot loosen.

    partition-id: the client's index in the simulation split (also the name of its row in result.json);
    data-file: an .npz of the client's OWN images ("x": float32 (N, C, H, W) in [-1, 1], "y": int64 (N,)),
    instead of its partition of a public dataset; t0 / eps: its privacy level (never less noise than the
    server proposes); clip: its clip norm C (at most the run's); allow-samples: whether its samples may
    leave it (they do only if the run also asks: return-samples); state-dir: its upload ledger;
    insecure-noise-seed: reproducible upload noise for simulations (voids the guarantee)."""

    partition_id: int
    data_file: str = ""
    t0: int = 0
    eps: float = 0.0  # 0: not set
    clip: float = 0.0  # 0: the run's
    allow_samples: bool = False
    state_dir: str = ""
    insecure_noise_seed: int = -1  # -1: secret noise

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> NodeSettings:
        if "partition-id" not in node_config:
            raise ValueError("this SuperNode has no partition-id: start it with --node-config 'partition-id=<k>'")
        return _from_config(cls, node_config, "node-config")

    def __post_init__(self) -> None:
        _check_types(self, "node-config")
        if self.partition_id < 0 or self.eps < 0 or self.clip < 0 or self.insecure_noise_seed < -1:
            raise ValueError(f"node-config partition-id, eps and clip must be >= 0, got {self.partition_id}, "
                             f"{self.eps}, {self.clip}")

    def clip_norm(self, cfg: experiment.ExperimentConfig) -> float:
        """The client's C: its own when set, never more than the run's."""
        return min(self.clip, cfg.privacy.clip_norm) if self.clip else cfg.privacy.clip_norm

    @property
    def noise_seed(self) -> int | None:
        return None if self.insecure_noise_seed < 0 else self.insecure_noise_seed


def load_own_data(path: str | Path, cfg: experiment.ExperimentConfig) -> Dataset:
    """A client's own images from an .npz ("x": float32 (N, C, H, W) in [-1, 1], "y": int64 labels)."""
    path = Path(path)
    shape = (cfg.net.in_channels, cfg.net.image_size, cfg.net.image_size)
    if not path.is_file():
        raise FileNotFoundError(f"node-config data-file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y = z["x"], z["y"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"node-config data-file {str(path)!r} is not an .npz with arrays 'x' and 'y': {e}") from None
    if x.ndim != 4 or tuple(x.shape[1:]) != shape or not np.issubdtype(x.dtype, np.floating) or len(x) < 1:
        raise ValueError(f"data-file {str(path)!r}: x must be float images of shape (N, {', '.join(map(str, shape))}), "
                         f"got {x.dtype} {tuple(x.shape)}")
    if not np.isfinite(x).all() or np.abs(x).max() > 1:
        raise ValueError(f"data-file {str(path)!r}: pixels must be finite and in [-1, 1]")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= cfg.net.num_classes:
        raise ValueError(f"data-file {str(path)!r}: y must hold {len(x)} integer labels in 0..{cfg.net.num_classes - 1}")
    return Dataset(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64)))


def client_data(cfg: experiment.ExperimentConfig, seed: int, node: NodeSettings) -> Dataset:
    """The client's training images: its own data-file, or (simulation) its partition of the public split."""
    return load_own_data(node.data_file, cfg) if node.data_file else load_partition(cfg, seed, node.partition_id)


# ----------------------------------------------------------------------------- shared helpers
def make_model(cfg: experiment.ExperimentConfig, seed: int) -> nn.Module:
    return experiment.model_factory(cfg, seed)()  # the factory of experiment.train_method


def train_config(cfg: experiment.ExperimentConfig, seed: int) -> TrainConfig:
    return replace(cfg.train, seed=seed)


def load_partition(cfg: experiment.ExperimentConfig, seed: int, partition_id: int) -> Dataset:
    """Client partition_id's data: the split of experiment.make_split (notebook 04's)."""
    if not 0 <= int(partition_id) < cfg.split.num_clients:
        raise ValueError(f"node-config partition-id must be in 0..{cfg.split.num_clients - 1}, got {partition_id}")
    return experiment.make_split(cfg, seed).clients[int(partition_id)]


def array_bytes(arrays: Mapping[str, Any]) -> int:
    """Payload bytes of an ArrayRecord (or any {name: array})."""
    return int(sum(np.asarray(a.numpy() if hasattr(a, "numpy") else a).nbytes for a in arrays.values()))


# ----------------------------------------------------------------------------- PFDM, client side
def client_t0(proposed: int, node: NodeSettings, cfg: experiment.ExperimentConfig,
              clip_norm: float | None = None) -> int:
    """The client's own t0: its (checked) node settings' t0 or eps, per image at its clip norm; never less noise
    than proposed."""
    sched = Schedule(cfg.T)
    own = node.t0
    if node.eps > 0:
        own = max(own, t0_for_epsilon(node.eps, sched, clip_norm=clip_norm or cfg.privacy.clip_norm, delta=cfg.privacy.delta))
    t0 = max(int(proposed), own)
    return sched.check_step(t0, "t0", 1, cfg.T - 1)


def data_fingerprint(data: Dataset) -> str:
    """sha256 of a client's images and labels: the key of its upload ledger (`core.checkpoint.data_fingerprint`)."""
    return fingerprint(data.x, data.y, length=64)


def upload_once(cfg: experiment.ExperimentConfig, data: Dataset, t0: int, state_dir: str | Path,
                noise_seed: int | None = None, clip_norm: float | None = None) -> tuple[Upload, bool]:
    """Privatize a client's data once (methods.pfdm.client_upload, clip norm `clip_norm` or the run's) with
    secret noise.

    The noise comes from the operating system's entropy (`privacy.mechanism.secret_normal`): nothing the
    server holds (run config, seed, partition ids, the uploads) regenerates it. `noise_seed` is the
    client's own, INSECURE choice for simulations that must reproduce an in-process run (notebook 09
    sets it through node-config "insecure-noise-seed"); the server's run config never reaches it.
    The upload is kept in a ledger under state_dir, keyed by a fingerprint of the images: a client asked
    again (it reconnected, or a new run, whatever seed that run names) re-sends the same upload, so
    no new noise and no new eps. Returns (upload, repeated)."""
    path = Path(state_dir) / f"upload_{data_fingerprint(data)[:32]}.pt"
    if path.exists():
        try:
            return Upload(**torch.load(path, weights_only=True)), True
        except Exception as e:  # never privatize again silently: a second upload spends eps a second time
            raise ValueError(f"stored upload {path} cannot be read ({type(e).__name__}); this client already released "
                             "an upload of these images (ledger.jsonl): restore the file, or delete it knowing that a "
                             "new upload spends eps again") from None
    up = client_upload(data, t0, Schedule(cfg.T), clip_norm or cfg.privacy.clip_norm, seed=noise_seed, delta=cfg.privacy.delta)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"x_tilde": up.x_tilde, "y": up.y, "t0": up.t0, "eps": up.eps}, path)
    entry = {"fingerprint": path.stem.removeprefix("upload_"), "t0": up.t0, "eps_spent": up.eps, "images": len(up.y),
             "clip_norm": clip_norm or cfg.privacy.clip_norm, "secret_noise": noise_seed is None, "time": time.time()}
    write_json(path.with_suffix(".json"), entry)
    with open(Path(state_dir) / "ledger.jsonl", "a") as f:  # every release this client ever made, append-only
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return up, False


def ledger_eps_total(state_dir: str | Path) -> float:
    """The eps of every release in the client's ledger, added up (basic composition: an upper bound when
    the image sets overlap, e.g. the same patients in two datasets)."""
    path = Path(state_dir) / "ledger.jsonl"
    if not path.exists():
        return 0.0
    return float(sum(json.loads(line)["eps_spent"] for line in path.read_text().splitlines() if line.strip()))


def train_personal(cfg: experiment.ExperimentConfig, seed: int, data: Dataset, t0: int,
                   clip_norm: float | None = None) -> nn.Module:
    """The personal denoiser on the client's data, clipped as its upload was."""
    return client_train_personal(data, t0, lambda: make_model(cfg, seed), Schedule(cfg.T),
                                 train_config(cfg, seed), clip_norm or cfg.privacy.clip_norm, progress=False)


def evaluate(cfg: experiment.ExperimentConfig, seed: int, partition_id: int, method: str,
             models: dict[str, nn.Module], t0: int | None) -> tuple[dict[str, float], torch.Tensor]:
    """Client partition_id's samples of every class and their metrics (as experiment.run)."""
    split = experiment.make_split(cfg, seed)
    clf = experiment.metric_classifier(cfg, split, seed)
    K = cfg.net.num_classes
    y = torch.arange(K).repeat_interleave(cfg.eval.n_per_class)
    fake = experiment.sample_method(method, models, cfg, y, t0, seed)
    majority, _ = client_classes(int(partition_id), cfg.split.num_clients, K)
    summary, _ = experiment.evaluate_client(clf, fake, y, split.test, majority,
                                            pca=experiment.metric_pca(clf, split))
    return summary, fake


# ----------------------------------------------------------------------------- PFDM, server side
def harmonize(uploads: list[Upload], seed: int, T: int) -> list[Upload]:
    """Bring uploads made at different t0 to the largest one by diffusing them further
    (post-processing of released data: costs no privacy), so one shared model owns t0+1..T."""
    t0 = max(u.t0 for u in uploads)
    g = torch.Generator().manual_seed(seed + 7)
    sched = Schedule(T)
    return [u if u.t0 == t0 else Upload(q_sample_from(sched, u.x_tilde, u.t0, t0,
                                                      torch.randn(u.x_tilde.shape, generator=g)), u.y, t0, u.eps)
            for u in uploads]


def train_shared(uploads: list[Upload], cfg: experiment.ExperimentConfig, seed: int) -> nn.Module:
    return server_train_shared(harmonize(uploads, seed, cfg.T), lambda: make_model(cfg, seed),
                               Schedule(cfg.T), train_config(cfg, seed), progress=False)


# ----------------------------------------------------------------------------- FedAvg, client side
def fedavg_local(cfg: experiment.ExperimentConfig, seed: int, partition_id: int, state: dict, server_round: int,
                 rounds: int) -> tuple[dict, float, int]:
    """One FedAvg client step, as inside methods.fedavg.train_phoenix: steps // rounds local steps."""
    data = load_partition(cfg, seed, partition_id)
    model = make_model(cfg, seed)
    model.load_state_dict(state)
    tc = fedavg_client_config(train_config(cfg, seed), rounds, server_round - 1, int(partition_id))
    res = train(model, Schedule(cfg.T), data.x, data.y, 1, cfg.T, config=tc, progress=False)
    return model.state_dict(), float(np.mean(res.losses)), len(data)


# ----------------------------------------------------------------------------- the privacy audit
def max_raw_correlation(arrays: list[np.ndarray], raw: torch.Tensor) -> float:
    """Largest |Pearson correlation| between any image-sized row of `arrays` and any raw image.

    Every array whose size is a multiple of one image (C*H*W) is cut into image-sized rows; a
    raw (or barely noised) image among them gives ~1.0, a PFDM upload at t0 ~ 700 about 0.1."""
    ref = raw.flatten(1).double()  # (N, d)
    d = ref.shape[1]
    ref = (ref - ref.mean(1, keepdim=True)) / ref.std(1, keepdim=True).clamp_min(1e-12)
    best = 0.0
    for a in arrays:
        a = np.asarray(a)
        if a.size == 0 or a.size % d or not np.issubdtype(a.dtype, np.floating):
            continue
        rows = torch.from_numpy(a.reshape(-1, d).astype(np.float64))  # (M, d)
        rows = (rows - rows.mean(1, keepdim=True)) / rows.std(1, keepdim=True).clamp_min(1e-12)
        best = max(best, float((rows @ ref.T / (d - 1)).abs().max()))
    return best
