"""One client's table: the headline group scores (majority / minority classes pooled: `metrics.group_scores`),
per-class metrics of its samples against held-out real images, and the mean ± std summary over seeds that every
results table prints."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from pfdm_core.data.small import Dataset
from pfdm_core.evaluation import metrics


def evaluate_client(clf: metrics.Classifier, fake: torch.Tensor, fake_y: torch.Tensor, test: Dataset,
                    majority: Sequence[int], extras: dict[str, Callable[[torch.Tensor], float]] | None = None,
                    test_features: np.ndarray | None = None, inception_net: nn.Module | None = None,
                    pca: metrics.FeaturePCA | None = None, conditional: bool = True) -> tuple[dict, list[dict]]:
    """Per-class metrics of samples (fake, fake_y) against the test images of each class, and with `pca` the
    headline group scores "gfid_major", "gfid_minor", "gkid_*", "gkid_se_*" (`metrics.group_scores`).

    `extras` {name: f(fake_c) -> float} adds columns (e.g. Colorized MNIST's colour match);
    `test_features` = metrics.embed(clf, test.x), computed once when many runs share a reference;
    `inception_net` (`inception.InceptionFeatures`) adds the standard Inception FID, "fid_inception";
    `pca` = `experiment.metric_pca(clf, split)`, fitted on training images (never on the reference);
    `conditional=False`: the samples of an unconditional model, fake_y the classifier's labels: the group KID
    is then the i.i.d. one (the samples are i.i.d. draws; their class counts are part of what is measured),
    accuracy is not defined (NaN), and a class with fewer than 3 samples gets NaN metrics."""
    extras = extras or {}
    feats = metrics.embed(clf, test.x) if test_features is None else test_features
    rows = []
    for c in range(int(test.y.max()) + 1):
        real_c, fake_c = test.x[test.y == c], fake[fake_y == c]
        row = {"class": c, "group": "majority" if c in majority else "minority", "n_samples": len(fake_c),
               "fid": np.nan, "kid": np.nan, "precision": np.nan, "recall": np.nan, "accuracy": np.nan}
        if len(fake_c) >= 3:
            row.update(metrics.evaluate(clf, real_c, fake_c, fake_y[fake_y == c] if conditional else None,
                                        real_features=feats[(test.y == c).numpy()]))
        if inception_net is not None:
            from pfdm_core.evaluation.inception import inception_fid

            row["fid_inception"] = inception_fid(real_c, fake_c, net=inception_net)
        rows.append({**row, **{name: f(fake_c) for name, f in extras.items()}})
    df = pd.DataFrame(rows)
    summary = {}
    if pca is not None:
        fake_feats = metrics.embed(clf, fake)
        minority = [c for c in range(int(test.y.max()) + 1) if c not in majority]
        for group, classes in (("major", list(majority)), ("minor", minority)):
            real_mask, fake_mask = np.isin(test.y.numpy(), classes), np.isin(fake_y.numpy(), classes)
            labels = (test.y.numpy()[real_mask], fake_y.numpy()[fake_mask]) if conditional else (None, None)
            scores = (metrics.group_scores(feats[real_mask], fake_feats[fake_mask], pca, *labels)
                      if fake_mask.sum() >= 3 else dict.fromkeys(("gfid", "gkid", "gkid_se"), np.nan))
            for key, value in scores.items():
                summary[f"{key}_{group}"] = value
    keys = ["fid", "kid", "precision", "recall", "accuracy", *extras] + (["fid_inception"] if inception_net is not None else [])
    for key in keys:
        summary[f"{key}_major"] = float(df[df.group == "majority"][key].mean())
        summary[f"{key}_minor"] = float(df[df.group == "minority"][key].mean())
        summary[f"{key}_avg"] = float(df[key].mean())
    return summary, rows


def summarize(df: pd.DataFrame, keys: Sequence[str] = ("fid_major", "fid_minor", "fid_avg")) -> pd.DataFrame:
    """mean +- std over seeds per (method, t0), as 'm ± s' strings ('m' alone for one seed), and the number of seeds."""
    g = df.fillna({"t0": -1}).groupby(["method", "t0"], sort=False)
    mean, std = g[list(keys)].mean(), g[list(keys)].std(ddof=1)  # std is NaN with a single seed
    cell = lambda m, s: f"{m:.2f}" if np.isnan(s) else f"{m:.2f} ± {s:.2f}"  # noqa: E731
    table = pd.DataFrame({k: [cell(m, s) for m, s in zip(mean[k], std[k])] for k in keys}, index=mean.index)
    table["seeds"] = g.size()
    return table.reset_index().replace({"t0": {-1: "-"}})


__all__ = ["evaluate_client", "summarize"]
