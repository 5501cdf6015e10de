"""Sample-quality metrics on pluggable features: classifier FID, KID, precision/recall, accuracy.

No Inception weights are reachable offline, so features come from a small CNN classifier
trained in-repo on the *training split of the same data*; FID on those features is called
"classifier FID" everywhere (it is not comparable to the Inception FIDs of the paper).

    FID  = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^{1/2})          (Heusel et al. 2017)
    KID  = unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3                 (Binkowski et al. 2018)
    precision / recall = fraction of generated (real) samples inside the k-NN balls of the
                         real (generated) set                           (Kynkaanniemi et al. 2019)

The headline metric: group FID (`group_scores`, "gfid"). FID's plug-in estimate is biased upward
by about Tr(S)/n per set plus a covariance term that grows like d^2/n, and with d = 128 features
against ~36 reference images per digits class (the per-class "fid") the reference covariance is
rank-deficient: that number is mostly bias. So the headline pools a group's classes (the client's
majority or its minority classes: ~180 reference images on digits, ~5000 on MNIST) and projects the
features onto their first `PCA_DIM` principal components, fitted once on the *training* images'
features (`FeaturePCA`), so d is well below the number of reference images. Beside it, KID on the
same pooled sets in the full feature space ("gkid": unbiased at any n) with its jackknife standard
error ("gkid_se"). `real_vs_real` measures what each estimator reports between two disjoint sets of
real images (true value 0): the bias, shown in `scripts/metric_bias.py`. Per-class numbers stay as
detail (the per-class table).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from scipy.spatial.distance import cdist
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
    return kid_with_se(a, b)[0]


def kid_with_se(a: np.ndarray, b: np.ndarray, a_labels: np.ndarray | None = None,
                b_labels: np.ndarray | None = None) -> tuple[float, float]:
    """KID and its jackknife standard error; with labels, the class-stratified KID.

    Without labels: the unbiased MMD^2 of Binkowski et al. for i.i.d. sets. With labels, both sets are read as
    equal-weight mixtures of their classes, with fixed counts per class (as a class-conditional model's samples
    and a stratified reference are): MMD^2 = sum_{c,c'} w_c w_c' [k_aa(c,c') + k_bb(c,c') - 2 k_ab(c,c')] with
    w_c = 1/C and each block's mean taken off the diagonal where c = c'. (The i.i.d. estimator is biased on such
    sets, because it weights same-class pairs by m_c(m_c - 1) / (m(m-1)) instead of 1/C^2; on the digits features
    that bias is about 10x its own spread.) The s.e. is the stratified jackknife: leave one image out, within
    each (set, class) stratum; it is conservative (about 1.4x) when the two distributions are equal, where the
    U-statistic is degenerate.
    """
    a_labels = np.zeros(len(a), int) if a_labels is None else np.asarray(a_labels)
    b_labels = np.zeros(len(b), int) if b_labels is None else np.asarray(b_labels)
    classes = np.unique(np.concatenate([a_labels, b_labels]))
    Ha = (a_labels[:, None] == classes[None]).astype(float)  # (m, C) one-hot
    Hb = (b_labels[:, None] == classes[None]).astype(float)
    ma, nb = Ha.sum(0), Hb.sum(0)
    if min(ma.min(), nb.min()) < 3:
        raise ValueError(f"KID needs at least 3 images of each class in each set, got {ma.astype(int).tolist()} "
                         f"and {nb.astype(int).tolist()} for classes {classes.tolist()}")
    d = a.shape[1]
    k = lambda u, v: (u @ v.T / d + 1) ** 3  # noqa: E731
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    Ra = kaa @ Ha - np.diag(kaa)[:, None] * Ha  # (m, C): row sums per class, self excluded
    Rb = kbb @ Hb - np.diag(kbb)[:, None] * Hb
    Rab_a, Rab_b = kab @ Hb, kab.T @ Ha  # (m, C), (n, C)
    Saa, Sbb, Sab = Ha.T @ Ra, Hb.T @ Rb, Ha.T @ Rab_a  # (C, C) block sums
    W = np.full((len(classes),) * 2, 1.0 / len(classes) ** 2)

    def pairs(u: np.ndarray) -> np.ndarray:  # (..., C) counts -> (..., C, C) off-diagonal pair counts
        return u[..., :, None] * u[..., None, :] - np.eye(len(classes)) * u[..., :, None]

    def mmd(saa, sbb, sab, m_c, n_c):
        return (W * (saa / pairs(m_c) + sbb / pairs(n_c) - 2 * sab / (m_c[..., :, None] * n_c[..., None, :]))).sum((-2, -1))

    value = mmd(Saa, Sbb, Sab, ma, nb)
    # leave a_i out: its row and column leave Saa, its row leaves Sab, its class loses one image
    outer = lambda e, r: e[:, :, None] * r[:, None, :]  # noqa: E731
    loo_a = mmd(Saa - outer(Ha, Ra) - outer(Ra, Ha), Sbb, Sab - outer(Ha, Rab_a), ma - Ha, nb)
    loo_b = mmd(Saa, Sbb - outer(Hb, Rb) - outer(Rb, Hb), Sab - outer(Rab_b, Hb), ma, nb - Hb)
    var = 0.0
    for loo, H, counts in ((loo_a, Ha, ma), (loo_b, Hb, nb)):
        for j, n_s in enumerate(counts):
            t = loo[H[:, j] > 0]
            var += (n_s - 1) / n_s * ((t - t.mean()) ** 2).sum()
    return float(value), float(np.sqrt(var))


PCA_DIM = 16  # features of the group FID: well below the ~180 reference images of a digits group


@dataclass(frozen=True)
class FeaturePCA:
    """The projection of the group FID: the first `dim` principal axes of the training images' features."""
    mean: np.ndarray  # (D,)
    axes: np.ndarray  # (dim, D), orthonormal rows

    @classmethod
    def fit(cls, features: np.ndarray, dim: int = PCA_DIM) -> FeaturePCA:
        if not 1 <= dim <= min(features.shape):
            raise ValueError(f"dim must be in 1..{min(features.shape)} for features of shape {features.shape}, got {dim}")
        from sklearn.decomposition import PCA

        pca = PCA(n_components=dim, svd_solver="full").fit(features)
        return cls(pca.mean_, pca.components_)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) @ self.axes.T


def group_scores(real: np.ndarray, fake: np.ndarray, pca: FeaturePCA, real_labels: np.ndarray | None = None,
                 fake_labels: np.ndarray | None = None) -> dict[str, float]:
    """The headline scores of one group of classes (features pooled over the group's classes):
    "gfid" = FID in the `pca` space, "gkid" = KID in the full feature space (class-stratified when labels are
    given, as they are for class-conditional samples), "gkid_se" = its jackknife s.e."""
    value, se = kid_with_se(real, fake, real_labels, fake_labels)
    return {"gfid": frechet_distance(pca(real), pca(fake)), "gkid": value, "gkid_se": se}


def real_vs_real(features: np.ndarray, labels: np.ndarray, classes: Sequence[int], sizes: Sequence[int],
                 pca: FeaturePCA, repeats: int = 20, seed: int = 0) -> list[dict]:
    """What each estimator reports between two disjoint random sets of real images of `classes` (true value 0).

    For each n in `sizes` (images per set, pooled over `classes`) and each repeat: the pooled FID in the full
    feature space ("fid_full"), the pooled FID in the `pca` space ("gfid"), the class-stratified KID ("gkid"),
    the i.i.d. KID on the same stratified sets ("kid_iid", biased on them), and the per-class FID in the full
    space averaged over `classes` (the old per-class "fid", n / len(classes) images per class)."""
    rng = np.random.default_rng(seed)
    pools = {c: np.flatnonzero(labels == c) for c in classes}
    rows = []
    for n in sizes:
        per = n // len(classes)
        if per < 2 or any(2 * per > len(p) for p in pools.values()):
            raise ValueError(f"sizes: {n} images per set needs 2 x {per} real images of each class in {list(classes)}")
        for r in range(repeats):
            idx = {c: rng.permutation(p)[:2 * per] for c, p in pools.items()}
            a = np.concatenate([features[i[:per]] for i in idx.values()])
            b = np.concatenate([features[i[per:]] for i in idx.values()])
            la = np.repeat(list(idx), per)  # both sets hold `per` images of each class
            per_class = np.mean([frechet_distance(features[i[:per]], features[i[per:]]) for i in idx.values()])
            rows.append({"n": per * len(classes), "per_class": per, "repeat": r, "fid_full": frechet_distance(a, b),
                         "gfid": frechet_distance(pca(a), pca(b)), "gkid": kid_with_se(a, b, la, la)[0],
                         "kid_iid": kid(a, b), "fid_per_class": per_class})
    return rows


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall with k-NN manifolds (Kynkaanniemi et al. 2019)."""

    def coverage(ref: np.ndarray, query: np.ndarray) -> float:
        if len(ref) < 2:
            return float("nan")
        kk = min(k, len(ref) - 1)  # tiny sets (a client's 5 minority images): fewer neighbours
        # imported here, not at the top: scikit-learn costs seconds per process
        from sklearn.neighbors import NearestNeighbors

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
