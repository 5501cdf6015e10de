"""The README's claims about the committed `cpu` runs, checked against the committed result files: a claim the
committed numbers stop supporting fails `make test`.

runs/cpu/metric_bias.csv       scripts/metric_table.py: each estimator between two sets of real digits
runs/cpu/metric_old_new*.csv   scripts/metric_table.py: notebook 04's experiment over five seeds, old and new metric
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

RUNS = Path(__file__).resolve().parent.parent / "runs" / "cpu"
REFERENCE = 180  # client 0's majority reference on digits: 5 classes x ~36 held-out images


def _read(name: str) -> pd.DataFrame:
    path = RUNS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `python scripts/metric_table.py --publish` and commit its outputs")
    return pd.read_csv(path)


def test_per_class_fid_is_mostly_bias_at_the_reference_size():
    """README: between two sets of real digits of one distribution, at the reference's size, the per-class FID
    (the old headline) reports several times what the group FID reports; every FID's bias falls with n."""
    b = _read("metric_bias.csv")
    m = b.groupby("n")[["fid_per_class", "fid_full", "gfid"]].mean()
    assert m.loc[REFERENCE, "fid_per_class"] > 3 * m.loc[REFERENCE, "gfid"]
    assert (m.diff().dropna() < 0).all().all()  # smaller with more images, for each estimator


def test_stratified_kid_is_unbiased_and_the_iid_one_is_not():
    """README: on stratified sets the class-stratified KID averages 0 (within 3 standard errors of the mean at
    every size) while the i.i.d. KID is negative by more than 5 standard errors at every size."""
    b = _read("metric_bias.csv")
    for n, g in b.groupby("n"):
        se = lambda s: s.std(ddof=1) / math.sqrt(len(s))  # noqa: E731
        assert abs(g.gkid.mean()) < 3 * se(g.gkid), (n, g.gkid.mean())
        assert g.kid_iid.mean() < -5 * se(g.kid_iid), (n, g.kid_iid.mean())
