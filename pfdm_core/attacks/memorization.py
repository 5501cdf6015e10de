"""Memorization: d(x, NN1) / d(x, NN2) of each generated image against the training set."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.neighbors import NearestNeighbors

from pfdm_core.privacy.mechanism import check_images


# ----------------------------------------------------------------------------- memorization
@dataclass(frozen=True)
class Memorization:
    """Nearest-neighbour test of generated images against the training set (l2 over pixels)."""

    ratio: np.ndarray  # (G,) d(x, NN1) / d(x, NN2)
    nn_index: np.ndarray  # (G,) training index of NN1
    d1: np.ndarray  # (G,) distance to NN1
    d2: np.ndarray  # (G,) distance to NN2
    threshold: float

    @property
    def flagged(self) -> np.ndarray:
        return self.ratio < self.threshold

    @property
    def count(self) -> int:
        return int(self.flagged.sum())

    def closest(self, k: int = 8) -> pd.DataFrame:
        """The k generated images with the smallest ratio: indices (generated, train), distances."""
        idx = np.argsort(self.ratio, kind="stable")[:k]
        return pd.DataFrame(dict(generated=idx, train=self.nn_index[idx], d1=self.d1[idx], d2=self.d2[idx],
                                 ratio=self.ratio[idx], flagged=self.flagged[idx]))


def memorization(generated: torch.Tensor, train: torch.Tensor, threshold: float = 1 / 3) -> Memorization:
    """Flag generated x with d(x, NN1) / d(x, NN2) < threshold (a near-copy of one training image)."""
    check_images(generated, "generated")
    check_images(train, "train")
    if generated.shape[1:] != train.shape[1:]:
        raise ValueError(f"generated and train must have the same image shape, got {tuple(generated.shape[1:])}, "
                         f"{tuple(train.shape[1:])}")
    if len(train) < 2 or not 0 < threshold <= 1:
        raise ValueError(f"need >= 2 training images and threshold in (0, 1], got {len(train)}, {threshold}")
    nn_ = NearestNeighbors(n_neighbors=2).fit(train.flatten(1).double().cpu().numpy())
    dist, idx = nn_.kneighbors(generated.flatten(1).double().cpu().numpy())  # (G, 2) each
    d1, d2 = dist[:, 0], dist[:, 1]
    ratio = np.where(d1 == 0, 0.0, d1 / np.maximum(d2, 1e-300))  # an exact copy of a duplicate: 0
    return Memorization(ratio, idx[:, 0], d1, d2, float(threshold))


def pair_images(result: Memorization, generated: torch.Tensor, train: torch.Tensor, k: int = 8) -> torch.Tensor:
    """(2, k, C, H, W): the k closest generated images over their nearest training images."""
    df = result.closest(k)
    return torch.stack([generated[df.generated.tolist()], train[df.train.tolist()]])


__all__ = ["Memorization", "memorization", "pair_images"]
