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
