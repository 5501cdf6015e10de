"""The paired comparison helper (pfdm_core.evaluation.compare): sign convention, interval, guards."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy.stats import t as student_t

from pfdm_core.evaluation.compare import learned, paired, paired_table, short_of


def table(a: list[float], b: list[float], key: str = "fid_minor") -> pd.DataFrame:
    rows = [{"seed": s, "method": "pfdm", key: v} for s, v in enumerate(a)]
    return pd.DataFrame(rows + [{"seed": s, "method": "local", key: v} for s, v in enumerate(b)])


def test_sign_interval_and_wins_by_hand():
    df = table([10.0, 12.0, 20.0], [15.0, 14.0, 19.0])  # gains of pfdm (lower FID): 5, 2, -1
    p = paired(df, "pfdm", "local")
    assert list(p.gains) == [5.0, 2.0, -1.0] and p.wins == 2 and p.n == 3 and p.mean == 2.0
    half = student_t.ppf(0.975, 2) * 3.0 / math.sqrt(3)  # std of (5, 2, -1) is 3
    assert p.lo == pytest.approx(2 - half) and p.hi == pytest.approx(2 + half) and not p.excludes_zero
    assert str(p).startswith("pfdm vs local on fid_minor: pfdm better in 2/3 seeds, mean gain +2.00 [")


def test_higher_is_better_flips_the_sign():
    df = table([0.9, 0.8], [0.7, 0.7], "accuracy_minor")
    p = paired(df, "pfdm", "local", "accuracy_minor", lower_is_better=False)
    assert list(p.gains.round(6)) == [0.2, 0.1] and p.wins == 2
    assert paired(df, "local", "pfdm", "accuracy_minor", lower_is_better=False).mean == pytest.approx(-p.mean)


def test_one_seed_has_no_interval():
    p = paired(table([1.0], [2.0]), "pfdm", "local")
    assert math.isnan(p.lo) and "one seed: no interval" in str(p) and not p.excludes_zero


def test_a_clear_gain_excludes_zero():
    p = paired(table([1.0, 1.1, 0.9, 1.0, 1.05], [5.0, 5.2, 4.9, 5.1, 5.0]), "pfdm", "local")
    assert p.excludes_zero and p.lo > 3.5


def test_only_shared_seeds_are_paired():
    df = pd.concat([table([1.0, 2.0], [3.0, 3.0]), pd.DataFrame([{"seed": 7, "method": "pfdm", "fid_minor": 0.0}])])
    assert paired(df, "pfdm", "local").n == 2


@pytest.mark.parametrize("mutate, message", [
    (lambda df: df[df.method != "local"], "no rows of method 'local'"),
    (lambda df: pd.concat([df, df[df.method == "pfdm"]]), "several rows per seed"),
    (lambda df: df.assign(seed=[0, 1, 5, 6]), "share no seed"),
])
def test_guards(mutate, message):
    with pytest.raises(ValueError, match=message):
        paired(mutate(table([1.0, 2.0], [3.0, 4.0])), "pfdm", "local")
    with pytest.raises(ValueError, match="metric 'fid' is not a column"):
        paired(table([1.0], [2.0]), "pfdm", "local", "fid")


def test_paired_table():
    df = table([10.0, 12.0], [15.0, 14.0]).assign(recall_major=[0.5, 0.6, 0.4, 0.4])
    t = paired_table(df, [("pfdm", "local")], {"fid_minor": True, "recall_major": False})
    assert list(t.metric) == ["fid_minor", "recall_major"] and list(t.wins) == ["2/2", "2/2"]


def test_learned_needs_every_row_above_the_floor():
    df = pd.DataFrame({"method": ["pfdm", "local"], "accuracy_avg": [0.9, 0.5]})
    assert learned(df)  # the floor itself counts
    assert not learned(df.assign(accuracy_avg=[0.9, 0.49]))
    with pytest.raises(ValueError, match="metric 'acc' is not a column"):
        learned(df, "acc")
    with pytest.raises(ValueError, match="floor must be in"):
        learned(df, floor=0.0)
    with pytest.raises(ValueError, match="no rows"):
        learned(df.iloc[:0])


def test_short_of_names_the_methods_whose_mean_is_under_the_floor():
    df = pd.DataFrame({"method": ["pfdm", "local", "pfdm", "local"], "accuracy_avg": [0.9, 0.4, 0.7, 0.59]})
    assert short_of(df) == pytest.approx({"local": 0.495})  # the mean over seeds, as doc_tables reports it
    assert short_of(df, floor=0.85) == pytest.approx({"local": 0.495, "pfdm": 0.8})  # sorted by name
    assert list(short_of(df, floor=0.85)) == ["local", "pfdm"]
    assert short_of(df.assign(accuracy_avg=[0.9, 0.5, 0.7, 0.6])) == {}  # the floor itself counts
    one_seed = df.iloc[:2]
    assert (short_of(one_seed) == {}) == learned(one_seed)  # one row per method: the rows learned rejects
    with pytest.raises(ValueError, match="no rows"):
        short_of(df.iloc[:0])
