"""Sample-quality metrics on pluggable features: classifier FID, KID, precision/recall, accuracy.

No Inception weights are reachable offline, so features come from a small CNN classifier
trained in-repo on the *training split of the same data*; FID on those features is called
"classifier FID" everywhere (it is not comparable to the Inception FIDs of the paper).

    FID  = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^{1/2})          (Heusel et al. 2017)
    KID  = unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3                 (Binkowski et al. 2018)
    precision / recall = fraction of generated (real) samples inside the k-NN balls of the
                         real (generated) set                           (Kynkaanniemi et al. 2019)
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from scipy.spatial.distance import cdist
from sklearn.neighbors import NearestNeighbors
from torch import nn
from tqdm.auto import trange


class Classifier(nn.Module):
    """A small CNN; `features` is its penultimate layer (the metric's feature space)."""

    def __init__(self, in_channels: int = 1, image_size: int = 8, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), nn.GroupNorm(8, 2 * width), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.GroupNorm(8, 2 * width), nn.SiLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8 * width, 4 * width), nn.SiLU(),
        )
        self.head = nn.Linear(4 * width, num_classes)
        self.num_features = 4 * width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_classifier(
    x: torch.Tensor, y: torch.Tensor, epochs: int = 30, batch_size: int = 128, lr: float = 2e-3,
    seed: int = 0, progress: bool = False,
) -> Classifier:
    """Fit `Classifier` on (x, y) with Adam and small random shifts as augmentation."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Classifier(x.shape[1], x.shape[-1], int(y.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    n = len(x)
    for _ in trange(epochs, desc="classifier", disable=not progress, leave=False):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb = torch.roll(x[idx], shifts=tuple(torch.randint(-1, 2, (2,), generator=g).tolist()), dims=(2, 3))
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def _features(model: Classifier, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    return torch.cat([model.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def embed(model: Classifier, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """Features (N, D) as float64 numpy."""
    return _features(model, x, batch_size).double().numpy()


@torch.no_grad()
def accuracy(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of x that the classifier labels y (on samples: class-conditional fidelity)."""
    return _hit_rate(model(x), y)


def _hit_rate(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (N, D) and (M, D) by their Gaussian moments."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # near-singular product: regularise (as pytorch-fid)
        off = np.eye(len(s_a)) * 1e-6
        covmean = linalg.sqrtm((s_a + off) @ (s_b + off))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean.real))


def kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (KID), fine at small sample sizes."""
    d = a.shape[1]
    k = lambda u, v: (u @ v.T / d + 1) ** 3  # noqa: E731
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    m, n = len(a), len(b)
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                 - 2 * kab.mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall with k-NN manifolds (Kynkaanniemi et al. 2019)."""

    def coverage(ref: np.ndarray, query: np.ndarray) -> float:
        if len(ref) < 2:
            return float("nan")
        kk = min(k, len(ref) - 1)  # tiny sets (a client's 5 minority images): fewer neighbours
        radii = NearestNeighbors(n_neighbors=kk + 1).fit(ref).kneighbors(ref)[0][:, -1]  # (N,) k-th NN, not self
        dist = cdist(query, ref)  # (M, N) Euclidean, without an (M, N, D) temporary
        return float((dist <= radii[None, :]).any(1).mean())

    return coverage(real, fake), coverage(fake, real)


def evaluate(model: Classifier, real_x: torch.Tensor, fake_x: torch.Tensor, fake_y: torch.Tensor | None = None,
             k: int = 3, real_features: np.ndarray | None = None) -> dict[str, float]:
    """Classifier FID, KID, precision, recall (and accuracy on fake_y when given) of fake vs real.

    `real_features` = embed(model, real_x) when already computed (a fixed reference set)."""
    r = embed(model, real_x) if real_features is None else real_features
    with torch.no_grad():  # one pass of the classifier gives both the features and the logits
        feats = _features(model, fake_x)
        f = feats.double().numpy()
        p, rec = precision_recall(r, f, k)
        out = {"fid": frechet_distance(r, f), "kid": kid(r, f), "precision": p, "recall": rec}
        if fake_y is not None:
            logits = model.head(feats) if isinstance(model, Classifier) else model(fake_x)
            out["accuracy"] = _hit_rate(logits, fake_y)
    return out


def knn_precision_score(reference: torch.Tensor, features: Callable[[torch.Tensor], np.ndarray] | None = None,
                        k: int = 3) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """Phoenix's filter score (`methods.fedavg.ScoreFn`): precision (fraction of samples in the k-NN balls of `reference`) in a feature space
    (default: raw pixels; e.g. `lambda x: metrics.embed(clf, x)`)."""
    features = features or (lambda x: x.flatten(1).double().numpy())
    ref = features(reference)
    return lambda x, y: precision_recall(ref, features(x), k)[0]
