"""Downstream accuracy and class histograms (pfdm_core.downstream)."""
import numpy as np
import pandas as pd
import pytest
import torch

from pfdm_core.data.small import Dataset, load_digits, train_test_split
from pfdm_core.evaluation.downstream import (
    class_histogram,
    downstream_accuracy,
    downstream_table,
    per_class_accuracy,
)
from pfdm_core.evaluation.metrics import Classifier

TRAIN, TEST = train_test_split(load_digits(), 0.2, seed=0)


def test_classifier_on_real_digits_beats_chance_and_worst_class_is_lowest():
    out = downstream_accuracy(TRAIN.x, TRAIN.y, TEST, minority=range(5, 10), epochs=3, seed=0)
    assert out["accuracy"] > 0.5  # chance: 0.1
    assert out["accuracy_worst"] <= min(out["accuracy"], out["accuracy_major"], out["accuracy_minor"])
    assert 0 <= out["worst_class"] < 10
    # the overall accuracy pools the two groups (the test split is class-stratified: ~equal weights)
    assert min(out["accuracy_major"], out["accuracy_minor"]) <= out["accuracy"] <= max(
        out["accuracy_major"], out["accuracy_minor"])


def test_a_missing_class_is_the_worst_class():
    keep = TRAIN.y != 7  # a generator that never draws a 7
    out = downstream_accuracy(TRAIN.x[keep], TRAIN.y[keep], TEST, minority=[7], epochs=2, seed=0)
    assert out["worst_class"] == 7 and out["accuracy_worst"] == 0.0 and out["accuracy_minor"] == 0.0
    assert np.isnan(downstream_accuracy(TRAIN.x[:50], TRAIN.y[:50], TEST, epochs=1)["accuracy_minor"])


def test_per_class_accuracy():
    pred, y = torch.tensor([0, 1, 1, 2, 0]), torch.tensor([0, 1, 2, 2, 0])
    acc = per_class_accuracy(pred, y, 4)
    assert np.allclose(acc[:3], [1.0, 1.0, 0.5]) and np.isnan(acc[3])


def test_class_histogram_sums_to_n():
    torch.manual_seed(0)
    clf = Classifier(1, 8, 10).eval()
    x = torch.randn(37, 1, 8, 8)
    hist = class_histogram(clf, x)
    assert hist.shape == (10,) and hist.sum() == 37 and hist.dtype.kind == "i"


def test_downstream_table_and_errors():
    small = Dataset(TRAIN.x[:60], TRAIN.y[:60])
    df = downstream_table({"a": (small.x, small.y), "b": (small.x, small.y)}, TEST, minority=[0], epochs=1)
    assert isinstance(df, pd.DataFrame) and list(df.method) == ["a", "b"]
    assert df.loc[0, "accuracy"] == df.loc[1, "accuracy"]  # same data, same seed
    with pytest.raises(ValueError, match="labels"):
        downstream_accuracy(TRAIN.x[:5], TRAIN.y[:4], TEST)
