"""Downstream utility and fairness of synthetic data, and class histograms of generated samples.

* `downstream_accuracy`: train a classifier (`metrics.train_classifier`) on a client's synthetic
  data (x, y), test it on real held-out data: accuracy overall, on the client's majority and
  minority classes, and the worst-class accuracy (the paper's fairness claim: a fairer
  generator gives a better worst class).
* `class_histogram`: how many generated samples a classifier assigns to each class (Phoenix's
  mode-coverage figure, with the LeNet-style `metrics.Classifier`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from pfdm_core.data.small import Dataset
from pfdm_core.evaluation.metrics import Classifier, train_classifier


@torch.no_grad()
def predict(clf: Classifier, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Predicted labels (N,)."""
    return torch.cat([clf(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def per_class_accuracy(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> np.ndarray:
    """Accuracy of predictions `pred` on the images of each true class y (NaN for an absent class)."""
    hit = (pred == y).double().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.bincount(y.numpy(), weights=hit, minlength=num_classes) / np.bincount(y.numpy(), minlength=num_classes)


def downstream_accuracy(x: torch.Tensor, y: torch.Tensor, test: Dataset, minority: Sequence[int] = (),
                        epochs: int = 30, seed: int = 0) -> dict[str, float]:
    """Train on (x, y), test on real `test`: accuracy overall / majority / minority and the worst class.

    Majority = the classes not in `minority`; group accuracies pool that group's test images."""
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need as many labels as images (> 0), got {len(x)} images and {len(y)} labels")
    clf = train_classifier(x, y, epochs=epochs, seed=seed)  # a class missing from y is never predicted
    pred = predict(clf, test.x)
    hit = (pred == test.y).double()
    is_minor = torch.isin(test.y, torch.as_tensor(list(minority), dtype=test.y.dtype))
    acc = per_class_accuracy(pred, test.y, test.num_classes)
    group = lambda mask: float(hit[mask].mean()) if mask.any() else float("nan")
    return {"accuracy": float(hit.mean()), "accuracy_major": group(~is_minor), "accuracy_minor": group(is_minor),
            "accuracy_worst": float(np.nanmin(acc)), "worst_class": int(np.nanargmin(acc))}


def downstream_table(synthetic: Mapping[str, tuple[torch.Tensor, torch.Tensor]], test: Dataset,
                     minority: Sequence[int] = (), epochs: int = 30, seed: int = 0) -> pd.DataFrame:
    """`downstream_accuracy` for every method's synthetic set {method: (x, y)}: one row per method."""
    rows = [{"method": name, **downstream_accuracy(x, y, test, minority, epochs, seed)}
            for name, (x, y) in synthetic.items()]
    return pd.DataFrame(rows)


def class_histogram(clf: Classifier, x: torch.Tensor, num_classes: int | None = None) -> np.ndarray:
    """Counts (num_classes,) of the classifier's labels for samples x; sums to len(x)."""
    K = num_classes or clf.head.out_features
    return np.bincount(predict(clf, x).numpy(), minlength=K)


__all__ = ["class_histogram", "downstream_accuracy", "downstream_table", "per_class_accuracy", "predict"]
