"""One paired comparison of two methods over seeds: the per-seed gain, its mean with a t-interval, and wins.

    p = paired(df, "pfdm", "local", "fid_minor")      # df: one row per (seed, method), e.g. experiment.run's
    print(p)   # pfdm vs local on fid_minor: pfdm better in 3/3 seeds, mean gain +5.68 [-3.04, +14.40] (95%, 3 seeds)

The gain is b - a for a metric where lower is better (FID, KID) and a - b otherwise (accuracy,
recall), so a positive gain always means that `a` is better. The interval is the two-sided
Student-t interval of the mean of the per-seed gains (seeds paired: the same split and
reference for both methods); with one seed there is no interval, and the text says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import t as student_t


@dataclass(frozen=True)
class Paired:
    a: str
    b: str
    key: str
    gains: pd.Series  # per seed: positive = `a` better
    mean: float
    lo: float  # NaN with fewer than two seeds
    hi: float
    level: float = 0.95

    @property
    def wins(self) -> int:
        return int((self.gains > 0).sum())

    @property
    def n(self) -> int:
        return len(self.gains)

    @property
    def excludes_zero(self) -> bool:
        """The interval lies on one side of 0 (False without an interval)."""
        return self.lo > 0 or self.hi < 0

    def __str__(self) -> str:
        interval = (f"[{self.lo:+.2f}, {self.hi:+.2f}] ({self.level:.0%}, {self.n} seeds)" if self.n > 1
                    else "(one seed: no interval)")
        return (f"{self.a} vs {self.b} on {self.key}: {self.a} better in {self.wins}/{self.n} seeds, "
                f"mean gain {self.mean:+.2f} {interval}")


def _per_seed(df: pd.DataFrame, method: str, key: str) -> pd.Series:
    rows = df[df["method"] == method]
    if rows.empty:
        raise ValueError(f"no rows of method {method!r}; methods here: {sorted(df['method'].unique())}")
    if rows["seed"].duplicated().any():
        raise ValueError(f"method {method!r} has several rows per seed (one per t0?): select one t0 first")
    return rows.set_index("seed")[key]


def paired(df: pd.DataFrame, a: str, b: str, key: str = "fid_minor", lower_is_better: bool = True,
           level: float = 0.95) -> Paired:
    """Method `a` against method `b` on metric `key`, paired by seed (the seeds both have)."""
    if key not in df.columns:
        raise ValueError(f"metric {key!r} is not a column; columns: {list(df.columns)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    va, vb = _per_seed(df, a, key), _per_seed(df, b, key)
    seeds = va.index.intersection(vb.index).sort_values()
    if seeds.empty:
        raise ValueError(f"methods {a!r} and {b!r} share no seed")
    gains = (vb[seeds] - va[seeds]) if lower_is_better else (va[seeds] - vb[seeds])
    gains = gains.astype(float).rename(f"gain of {a} over {b}")
    return Paired(a, b, key, gains, *mean_interval(gains.to_numpy(), level), level)


def mean_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): the two-sided Student-t interval of the mean of `values` (NaN bounds for fewer than two)."""
    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    half = float(student_t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def paired_table(df: pd.DataFrame, pairs: list[tuple[str, str]], keys: dict[str, bool],
                 level: float = 0.95) -> pd.DataFrame:
    """One row per (a, b, metric): mean gain, interval, wins / seeds. `keys`: metric -> lower is better."""
    rows = []
    for a, b in pairs:
        for key, lower in keys.items():
            p = paired(df, a, b, key, lower, level)
            rows.append({"a": a, "b": b, "metric": key, "mean_gain": p.mean, "lo": p.lo, "hi": p.hi,
                         "wins": f"{p.wins}/{p.n}", "excludes_0": p.excludes_zero})
    return pd.DataFrame(rows)


LEARNED = 0.5  # five times chance (0.1) on ten classes


def _check_floor(df: pd.DataFrame, key: str, floor: float) -> None:
    if key not in df.columns:
        raise ValueError(f"metric {key!r} is not a column; columns: {list(df.columns)}")
    if not 0 < floor <= 1:
        raise ValueError(f"floor must be in (0, 1], got {floor!r}")
    if df.empty:
        raise ValueError("no rows to judge")


def learned(df: pd.DataFrame, key: str = "accuracy_avg", floor: float = LEARNED) -> bool:
    """Whether every row's samples are recognised as the requested class at least `floor` of the time.

    A comparison of models that did not learn supports no verdict and no table: notebooks 05 and 06
    print a result only where this holds for every method compared.
    """
    _check_floor(df, key, floor)
    return bool((df[key] >= floor).all())


def short_of(df: pd.DataFrame, key: str = "accuracy_avg", floor: float = LEARNED, by: str = "method") -> dict[str, float]:
    """The groups (methods) whose mean `key` over their rows (seeds) is below `floor`: name -> that mean, sorted by
    name. What a text names when `learned` fails (with one seed per method, exactly the rows it rejects)."""
    _check_floor(df, key, floor)
    mean = df.groupby(by)[key].mean()
    return {str(k): float(v) for k, v in mean[mean < floor].items()}


def markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table of `df` (floats to 3 decimals), for the committed result tables."""
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


__all__ = ["LEARNED", "Paired", "learned", "markdown", "mean_interval", "paired", "paired_table", "short_of"]
