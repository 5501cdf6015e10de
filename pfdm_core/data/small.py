"""`Dataset` and the datasets that need no network.

* `gaussian_mixture`: K Gaussian components in 2-D (the Theorem 5.2 toy).
* `load_digits`: scikit-learn's 8x8 digits (1797 images, bundled), scaled to [-1, 1];
  `digits_split`: its stratified 80/20 (train, test).
* `train_test_split`, `union`: the two operations on datasets every method needs.
Image datasets (MNIST, CIFAR-10, ...) are in `data.images`, partitions in `data.partition`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


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


def digits_split(seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, test) of the digits, stratified 80/20 with the given seed."""
    return train_test_split(load_digits(), 0.2, seed)


def union(datasets: Sequence[Dataset]) -> Dataset:
    """The datasets concatenated (centralized training's data, FedAvg's shared pool)."""
    return Dataset(torch.cat([d.x for d in datasets]), torch.cat([d.y for d in datasets]))
