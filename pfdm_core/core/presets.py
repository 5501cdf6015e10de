"""Named presets: `smoke` (seconds, CI), `cpu` (the teaching default, minutes on 2 cores),
`paper` (the paper's scale, a GPU and hours).

Each module that runs an experiment owns a table {preset name: config}; `choose` picks one,
letting the environment variable PFDM_PRESET override the notebook's parameter (how
`make test` runs every notebook at `smoke` while the committed notebooks show `cpu`).
"""
from __future__ import annotations

from typing import TypeVar

from pfdm_core.core import paths

NAMES = ("smoke", "cpu", "paper")
ENV_VAR = paths.PRESET
T = TypeVar("T")


def resolve(preset: str) -> str:
    """The preset to run: $PFDM_PRESET when set, else `preset`; unknown names raise."""
    chosen = paths.env(ENV_VAR) or preset
    if chosen not in NAMES:
        raise ValueError(f"unknown preset {chosen!r}; allowed: {', '.join(NAMES)}")
    return chosen


def choose(table: dict[str, T], preset: str) -> T:
    """table[resolve(preset)], with a clear error if the table lacks it."""
    name = resolve(preset)
    if name not in table:
        raise ValueError(f"preset {name!r} not defined here; allowed: {', '.join(table)}")
    return table[name]
