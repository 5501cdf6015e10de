"""Datasets that need no network, data roots, and the federated partitions (DESIGN.md 3, 5).

* `gaussian_mixture`: K Gaussian components in 2-D (the Theorem 5.2 toy).
* `load_digits`: scikit-learn's 8x8 digits (1797 images, bundled), scaled to [-1, 1].
* `cluster_partition`: the paper's heterogeneous split. Clients form two clusters; cluster A's
  majority classes are 0..K/2-1 and its minority classes the rest, cluster B the reverse. Each
  client draws `majority_per_class` images of each majority class and `minority_per_class` of
  each minority class, without replacement and without overlap between clients.
* `data_root`: where real datasets live: $PFDM_DATA, ./data, then ../shared/data (also tried
  relative to the repository root, so notebooks run from notebooks/ find the same folder).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Dataset:
    """Images (N, C, H, W) or points (N, d) in float32, and integer labels (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray | torch.Tensor) -> Dataset:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Dataset(self.x[idx], self.y[idx])

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1


# ----------------------------------------------------------------------------- roots
def data_root(required: str | None = None) -> Path:
    """First existing data root among $PFDM_DATA, ./data, ../shared/data (cwd, then repo root).

    With `required` (a sub-path such as "MNIST/raw"), return the first root that contains it,
    or raise FileNotFoundError saying where to put the files.
    """
    candidates = [Path(p) for p in [os.environ.get("PFDM_DATA")] if p]
    for base in (Path.cwd(), REPO_ROOT):
        candidates += [base / "data", base.parent / "shared" / "data"]
    for root in candidates:
        if root.is_dir() and (required is None or (root / required).exists()):
            return root
    if required is None:
        return candidates[0] if candidates else Path.cwd() / "data"
    tried = "\n  ".join(str(c) for c in dict.fromkeys(candidates))
    raise FileNotFoundError(
        f"dataset folder '{required}' not found. Looked in:\n  {tried}\n"
        f"Put the files at <root>/{required} under one of these roots (or set PFDM_DATA=<root>)."
    )


# ----------------------------------------------------------------------------- datasets
def load_digits() -> Dataset:
    """scikit-learn's 8x8 digits as (1797, 1, 8, 8) in [-1, 1] (raw pixel values are 0..16)."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0  # (N, 1, 8, 8)
    return Dataset(x, torch.tensor(d.target, dtype=torch.long))


def gaussian_mixture(
    n_per_component: int | list[int],
    means: np.ndarray,
    covs: np.ndarray,
    seed: int = 0,
) -> Dataset:
    """Samples of a Gaussian mixture: component k gives n_k points N(means[k], covs[k]); label k."""
    means, covs = np.asarray(means, float), np.asarray(covs, float)
    K = len(means)
    ns = [n_per_component] * K if np.isscalar(n_per_component) else list(n_per_component)
    if len(ns) != K or min(ns) < 0:
        raise ValueError(f"n_per_component must be >= 0 for each of the {K} components, got {ns}")
    rng = np.random.default_rng(seed)
    xs = [rng.multivariate_normal(means[k], covs[k], size=ns[k]) for k in range(K)]
    ys = [np.full(ns[k], k) for k in range(K)]
    return Dataset(torch.tensor(np.concatenate(xs), dtype=torch.float32), torch.tensor(np.concatenate(ys)))


def default_mixture(K: int = 4, radius: float = 2.0, std: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """K components evenly on a circle of `radius`, each elongated along its tangent."""
    angles = 2 * np.pi * np.arange(K) / K
    means = radius * np.stack([np.cos(angles), np.sin(angles)], 1)  # (K, 2)
    tangents = np.stack([-np.sin(angles), np.cos(angles)], 1)
    covs = np.stack([std**2 * (0.3 * np.eye(2) + 2.0 * np.outer(u, u)) for u in tangents])  # (K, 2, 2)
    return means, covs


# ----------------------------------------------------------------------------- splits
def train_test_split(data: Dataset, test_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Stratified split into (train, test) with scikit-learn."""
    from sklearn.model_selection import train_test_split as _split

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    idx = np.arange(len(data))
    tr, te = _split(idx, test_size=test_fraction, stratify=data.y.numpy(), random_state=seed)
    return data.subset(np.sort(tr)), data.subset(np.sort(te))


def cluster_classes(num_classes: int = 10) -> tuple[list[int], list[int]]:
    """(majority classes of cluster A, majority classes of cluster B): 0..K/2-1 and the rest."""
    half = num_classes // 2
    return list(range(half)), list(range(half, num_classes))


def cluster_partition(
    labels: torch.Tensor | np.ndarray,
    num_clients: int = 4,
    majority_per_class: int = 60,
    minority_per_class: int = 5,
    seed: int = 0,
) -> list[np.ndarray]:
    """Index arrays, one per client, of the two-cluster majority/minority split (DESIGN.md 3).

    Clients 0..ceil(M/2)-1 form cluster A, the rest cluster B.
    """
    labels = np.asarray(labels)
    if num_clients < 2:
        raise ValueError(f"num_clients must be >= 2 (two clusters), got {num_clients}")
    if majority_per_class < 1 or minority_per_class < 0:
        raise ValueError(
            f"need majority_per_class >= 1 and minority_per_class >= 0, got {majority_per_class}, {minority_per_class}"
        )
    classes = np.unique(labels)
    maj_a, _ = cluster_classes(len(classes))
    n_a = (num_clients + 1) // 2
    rng = np.random.default_rng(seed)
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in classes}
    parts = []
    for m in range(num_clients):
        in_a = m < n_a
        idx = []
        for c in classes:
            n = majority_per_class if (c in maj_a) == in_a else minority_per_class
            if len(pools[c]) < n:
                raise ValueError(
                    f"class {c} has too few images for this partition: client {m} needs {n}, "
                    f"{len(pools[c])} left; lower majority_per_class/minority_per_class or num_clients"
                )
            idx += [pools[c].pop() for _ in range(n)]
        parts.append(np.sort(np.array(idx, dtype=np.int64)))
    return parts


def client_classes(client: int, num_clients: int = 4, num_classes: int = 10) -> tuple[list[int], list[int]]:
    """(majority, minority) classes of a client in `cluster_partition`."""
    a, b = cluster_classes(num_classes)
    return (a, b) if client < (num_clients + 1) // 2 else (b, a)
