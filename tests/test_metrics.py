"""Sample-quality metrics (pfdm_core.evaluation.metrics): FID, KID, precision/recall, accuracy, Classifier.

Statistical checks use fixed seeds, so they are deterministic; tolerances are set from the
sampling error of each estimator (a few standard errors), not tuned to the implementation.
"""
import math

import numpy as np
import pytest
import torch
from torch import nn

from pfdm_core.evaluation import metrics
from pfdm_core.evaluation.metrics import (
    Classifier,
    accuracy,
    embed,
    evaluate,
    frechet_distance,
    kid,
    precision_recall,
)


def _gauss(n, d, seed, mean=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(mean, scale, size=(n, d))


def _correlated_gauss(n, d, seed):
    """N(0, S) with a non-diagonal S, so the covariance term of FID is exercised."""
    rng = np.random.default_rng(seed)
    A = np.random.default_rng(123).normal(size=(d, d)) / math.sqrt(d)  # fixed mixing: same S for every seed
    return rng.normal(size=(n, d)) @ A.T


# ----------------------------------------------------------------------------- FID
def test_fid_of_identical_arrays_is_zero():
    a = _correlated_gauss(500, 16, 0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_fid_two_large_samples_of_same_gaussian_near_zero():
    d = 8
    a, b = _correlated_gauss(20000, d, 1), _correlated_gauss(20000, d, 2)
    fid = frechet_distance(a, b)
    # finite-sample bias is O(d^2 / n) ~ 3e-3; a 0.25 mean shift would give 0.0625
    assert 0 <= fid < 0.02
    assert frechet_distance(b, a) == pytest.approx(fid, rel=1e-6)  # symmetric


def test_fid_equals_squared_mean_shift_for_equal_covariances():
    a = _correlated_gauss(2000, 8, 3)
    shift = np.array([1.0, -2.0, 0.5, 0, 0, 0, 0, 3.0])
    # exactly equal covariances (b is a translated copy of a): FID = ||shift||^2
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    # independent samples of the two Gaussians: within sampling error
    b = _correlated_gauss(20000, 8, 4) + shift
    a = _correlated_gauss(20000, 8, 5)
    assert frechet_distance(a, b) == pytest.approx(float(shift @ shift), rel=0.02)


def test_fid_monotone_in_shift():
    a, b = _gauss(3000, 6, 6), _gauss(3000, 6, 7)
    e = np.ones(6) / math.sqrt(6)
    shifts = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
    fids = [frechet_distance(a, b + s * e) for s in shifts]
    assert all(f1 < f2 for f1, f2 in zip(fids, fids[1:])), fids
    for s, f in zip(shifts[2:], fids[2:]):
        assert f == pytest.approx(s**2, rel=0.1, abs=0.05)


def test_fid_covariance_term():
    # N(0, I) vs N(0, 4 I) in d dims: ||mu||^2 = 0, Tr(I + 4I - 2 * 2I) = d
    d = 6
    a, b = _gauss(20000, d, 8), _gauss(20000, d, 9, scale=2.0)
    assert frechet_distance(a, b) == pytest.approx(d, rel=0.05)


# ----------------------------------------------------------------------------- KID
def _kid_biased(a, b):
    """The biased V-statistic MMD^2 (diagonals kept): what KID must NOT be."""
    d = a.shape[1]
    k = lambda u, v: (u @ v.T / d + 1) ** 3  # noqa: E731
    return float(k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean())


def test_kid_unbiased_on_equal_distributions():
    rng = np.random.default_rng(10)
    draws, m, d = 400, 10, 8
    u, v = [], []
    for _ in range(draws):
        a, b = rng.normal(size=(m, d)), rng.normal(size=(m, d))
        u.append(kid(a, b))
        v.append(_kid_biased(a, b))
    u, v = np.array(u), np.array(v)
    se_u, se_v = u.std(ddof=1) / math.sqrt(draws), v.std(ddof=1) / math.sqrt(draws)
    assert abs(u.mean()) < 3 * se_u, (u.mean(), se_u)  # unbiased: mean ~ 0
    assert v.mean() > 5 * se_v  # the V-statistic is positively biased at this sample size
    assert (u < 0).any()  # an unbiased estimator of 0 must go negative sometimes


def test_kid_positive_for_shifted_distributions():
    a, b = _gauss(200, 8, 11), _gauss(200, 8, 12)
    same = kid(a, b)
    shifted = [kid(a, b + s) for s in (0.5, 1.0, 2.0)]
    assert all(k > 0 for k in shifted)
    assert same < shifted[0] < shifted[1] < shifted[2]


# ----------------------------------------------------------------------------- precision / recall
def test_precision_recall_identical_sets_is_one():
    a = _gauss(200, 4, 13)
    assert precision_recall(a, a.copy(), k=3) == (1.0, 1.0)


def test_precision_recall_same_distribution_high():
    p, r = precision_recall(_gauss(400, 4, 14), _gauss(400, 4, 15), k=3)
    assert p > 0.75 and r > 0.75


def test_precision_recall_far_fake_set_is_zero():
    real = _gauss(200, 4, 16)
    p, r = precision_recall(real, _gauss(200, 4, 17, mean=100.0), k=3)
    assert p == 0.0 and r == 0.0


def test_precision_and_recall_are_not_swapped():
    # mode collapse: every fake lies at the centre of the real cloud -> high precision, low recall
    real = _gauss(400, 2, 18)
    fake = _gauss(400, 2, 19, scale=0.02)
    p, r = precision_recall(real, fake, k=3)
    assert p > 0.95 and r < 0.2, (p, r)


# ----------------------------------------------------------------------------- accuracy / classifier
class _FirstPixelsLogits(nn.Module):
    """Logits = the first 3 pixels: predictions are controlled by the input."""

    def forward(self, x):
        return x.flatten(1)[:, :3]


def test_accuracy_fraction_of_agreeing_predictions():
    x = torch.zeros(4, 1, 2, 2)
    for i, c in enumerate([0, 1, 2, 0]):
        x[i, 0].view(-1)[c] = 1.0  # predicted class c
    y = torch.tensor([0, 1, 0, 0])
    assert accuracy(_FirstPixelsLogits(), x, y) == pytest.approx(0.75)
    assert accuracy(_FirstPixelsLogits(), x, torch.tensor([0, 1, 2, 0])) == 1.0


def test_classifier_shapes():
    torch.manual_seed(0)
    clf = Classifier()
    x = torch.randn(5, 1, 8, 8)
    assert clf(x).shape == (5, 10)
    assert clf.features(x).shape == (5, clf.num_features) == (5, 128)
    wide = Classifier(in_channels=3, image_size=32, num_classes=7, width=16)
    assert wide(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert wide.features(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    f = embed(clf.eval(), x, batch_size=2)
    assert f.shape == (5, 128) and f.dtype == np.float64
    assert np.allclose(f, embed(clf, x, batch_size=1024), atol=1e-6)  # batching does not change features


def test_train_classifier_learns_separable_classes():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 8, 8, generator=g) * 0.3 - 1
    y = torch.arange(96) % 2
    x[y == 1, :, :4] += 2.0  # class 1: bright top half
    clf = metrics.train_classifier(x, y, epochs=4, batch_size=32, seed=0)
    assert not clf.training
    assert accuracy(clf, x, y) > 0.9


def test_evaluate_keys_and_identity():
    torch.manual_seed(0)
    clf = Classifier(width=8).eval()
    g = torch.Generator().manual_seed(1)
    real = torch.rand(24, 1, 8, 8, generator=g) * 2 - 1
    fake = torch.rand(20, 1, 8, 8, generator=g) * 2 - 1
    out = evaluate(clf, real, fake, torch.zeros(20, dtype=torch.long))
    assert set(out) == {"fid", "kid", "precision", "recall", "accuracy"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    assert set(evaluate(clf, real, fake)) == {"fid", "kid", "precision", "recall"}
    same = evaluate(clf, real, real.clone())
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    assert same["precision"] == 1.0 and same["recall"] == 1.0


# ----------------------------------------------------------------------------- headline: group FID / KID
def _stratified_kid_by_hand(a, b, la, lb):
    """The class-stratified KID from its definition: equal-weight sum of block means, diagonal blocks off-diagonal."""
    d, classes = a.shape[1], np.unique(la)
    k = lambda u, v: (u @ v.T / d + 1) ** 3  # noqa: E731
    total = 0.0
    def block(x, lx, y, ly, c, e, same):
        m = k(x[lx == c], y[ly == e])
        if same and c == e:
            return (m.sum() - np.trace(m)) / (m.shape[0] * (m.shape[0] - 1))
        return m.mean()

    for c in classes:
        for e in classes:
            total += (block(a, la, a, la, c, e, True) + block(b, lb, b, lb, c, e, True)
                      - 2 * block(a, la, b, lb, c, e, False))
    return total / len(classes) ** 2


def test_stratified_kid_and_its_jackknife_match_their_definitions():
    rng = np.random.default_rng(24)
    a, b = rng.normal(size=(13, 4)), rng.normal(0.3, 1.0, size=(11, 4))
    la, lb = np.array([0] * 4 + [1] * 5 + [2] * 4), np.array([0] * 3 + [1] * 4 + [2] * 4)
    value, se = metrics.kid_with_se(a, b, la, lb)
    assert value == pytest.approx(_stratified_kid_by_hand(a, b, la, lb), rel=1e-10)
    var = 0.0  # the stratified jackknife, by brute force: leave each image out, spread within its (set, class)
    for x, lx, which in ((a, la, 0), (b, lb, 1)):
        for c in np.unique(lx):
            loo = []
            for i in np.flatnonzero(lx == c):
                keep = np.arange(len(x)) != i
                args = (x[keep], b, lx[keep], lb) if which == 0 else (a, x[keep], la, lx[keep])
                loo.append(_stratified_kid_by_hand(*args[:2], *args[2:]))
            loo = np.array(loo)
            var += (len(loo) - 1) / len(loo) * ((loo - loo.mean()) ** 2).sum()
    assert se == pytest.approx(math.sqrt(var), rel=1e-8)
    assert metrics.kid_with_se(a, b)[0] == pytest.approx(kid(a, b))  # no labels: one class, the i.i.d. KID
    with pytest.raises(ValueError, match="at least 3 images of each class"):
        metrics.kid_with_se(a, b[:9], la, lb[:9])


@pytest.mark.parametrize("shift, low, high", [(0.0, 1.0, 1.8), (0.3, 0.8, 1.3)])
def test_kid_jackknife_se_matches_the_spread_over_draws(shift, low, high):
    """The jackknife s.e. against the spread of KID over 400 independent draws (a std known to about 4%): close
    when the distributions differ, conservative (larger) when they are equal and the U-statistic is degenerate."""
    rng = np.random.default_rng(20)
    draws, m, n, d = 400, 60, 90, 8
    values, ses = [], []
    for _ in range(draws):
        value, se = metrics.kid_with_se(rng.normal(size=(m, d)), rng.normal(shift, 1.0, size=(n, d)))
        values.append(value)
        ses.append(se)
    ratio = np.mean(ses) / np.std(values, ddof=1)
    assert low < ratio < high, ratio


def test_kid_with_se_value_is_kid_and_needs_three_images():
    a, b = _gauss(30, 5, 21), _gauss(40, 5, 22, mean=0.2)
    assert metrics.kid_with_se(a, b)[0] == pytest.approx(kid(a, b), rel=1e-12)
    with pytest.raises(ValueError, match="at least 3"):
        metrics.kid_with_se(a[:2], b)


def test_feature_pca_finds_the_high_variance_axes():
    rng = np.random.default_rng(23)
    scales = np.array([5.0, 3.0, 1.0, 0.1, 0.1, 0.1])
    f = rng.normal(size=(2000, 6)) * scales + 7.0
    pca = metrics.FeaturePCA.fit(f, dim=2)
    assert np.allclose(pca.axes @ pca.axes.T, np.eye(2), atol=1e-10)  # orthonormal rows
    assert np.allclose(np.abs(pca.axes[:, :2]), np.eye(2), atol=0.05)  # the two largest axes, in order
    z = pca(f)
    assert z.shape == (2000, 2) and np.allclose(z.mean(0), 0, atol=1e-10)
    with pytest.raises(ValueError, match="dim must be in 1..6"):
        metrics.FeaturePCA.fit(f, dim=7)


def _class_features(n_per_class, classes=10, d=128, spread=1.0, seed=0):
    """Features of a 10-class mixture in d dimensions: random class means, anisotropic within-class noise."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, spread, size=(classes, d))
    scale = np.linspace(2.0, 0.2, d)
    x = np.concatenate([means[c] + rng.normal(size=(n_per_class, d)) * scale for c in range(classes)])
    return x, np.repeat(np.arange(classes), n_per_class)


def test_real_vs_real_shows_the_bias_the_group_fid_avoids():
    """Between two sets of one distribution (true distance 0), at the digits sizes (36 images per class, 5 classes
    per group), each estimator's value against its value for a real difference (one class of the group replaced
    by another): the per-class FID in 128 dimensions reports a large part of a real difference; the pooled FID in
    16 PCA dimensions a small part; the stratified KID is unbiased, the i.i.d. KID on stratified sets is not."""
    x, y = _class_features(400)
    pca = metrics.FeaturePCA.fit(x[::2], dim=16)
    rows = metrics.real_vs_real(x, y, classes=range(5), sizes=[180, 1000], pca=pca, repeats=8, seed=1)
    small = [r for r in rows if r["n"] == 180]
    a = x[np.isin(y, [0, 1, 2, 3, 4])][::10][:180]
    b = x[np.isin(y, [5, 1, 2, 3, 4])][1::10][:180]  # class 0 replaced by class 5
    per_class = np.mean([r["fid_per_class"] for r in small]) / frechet_distance(x[y == 0][:36], x[y == 5][:36])
    gfid = np.mean([r["gfid"] for r in small]) / frechet_distance(pca(a), pca(b))
    assert per_class > 0.3, per_class
    assert gfid < 0.15 and gfid < per_class / 3, (gfid, per_class)
    large = [r for r in rows if r["n"] == 1000]
    assert np.mean([r["gfid"] for r in large]) < np.mean([r["gfid"] for r in small])  # bias falls with n
    kids = np.array([r["gkid"] for r in rows])
    assert abs(kids.mean()) < 3 * kids.std(ddof=1) / math.sqrt(len(kids)), kids.mean()
    with pytest.raises(ValueError, match="sizes"):
        metrics.real_vs_real(x, y, classes=range(5), sizes=[5000], pca=pca)


def test_iid_kid_is_biased_on_stratified_sets():
    """With well-separated classes and fixed class counts, the i.i.d. KID is negative on equal distributions by
    many of its standard errors (why the headline KID is stratified)."""
    x, y = _class_features(400, spread=3.0)
    pca = metrics.FeaturePCA.fit(x[::2], dim=16)
    rows = metrics.real_vs_real(x, y, classes=range(5), sizes=[180], pca=pca, repeats=8, seed=2)
    iid, strat = np.array([r["kid_iid"] for r in rows]), np.array([r["gkid"] for r in rows])
    assert iid.mean() < -5 * iid.std(ddof=1) / math.sqrt(len(iid))
    assert abs(strat.mean()) < 3 * strat.std(ddof=1) / math.sqrt(len(strat))


def test_group_scores_rank_a_shift_and_a_missing_class():
    x, y = _class_features(200, seed=3)
    pca = metrics.FeaturePCA.fit(x, dim=16)
    group, odd = y < 5, np.arange(len(y)) % 2 == 1
    real, real_y, fake, fake_y = x[group & ~odd], y[group & ~odd], x[group & odd], y[group & odd]
    same = metrics.group_scores(real, fake, pca, real_y, fake_y)
    swapped = fake.copy()  # class 0 never generated: its samples are class 1's images
    swapped[fake_y == 0] = fake[fake_y == 1]
    missing = metrics.group_scores(real, swapped, pca, real_y, fake_y)
    shifted = metrics.group_scores(real, fake + 0.5, pca, real_y, fake_y)
    assert set(same) == {"gfid", "gkid", "gkid_se"}
    assert same["gfid"] < missing["gfid"] and same["gfid"] < shifted["gfid"]
    assert abs(same["gkid"]) < 3 * same["gkid_se"] < min(missing["gkid"], shifted["gkid"])
