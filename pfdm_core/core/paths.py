"""Every folder the project reads or writes, and the environment variables that move them.

    PFDM_DATA       a data root, tried first (then ./data and ../shared/data, from the working
                    directory and from the repository root)
    PFDM_RUNS       checkpoints, results and caches (default: runs/ in `home()`)
    PFDM_FIGURES    figures (default: figures/ in `home()`; `make test` points it to runs/smoke/figures)
    PFDM_INCEPTION  the FID Inception weights file (no default: the classifier FID is used)
    PFDM_PRESET     overrides every notebook's preset (read by `core.presets`)

An empty value counts as unset. No other module reads the environment for a path. `home()` is the
repository root in a checkout (an editable install), else the working directory: a wheel installed on
Colab or in a virtualenv writes runs/ and figures/ beside the notebook, never into site-packages.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA, RUNS, FIGURES, INCEPTION, PRESET = "PFDM_DATA", "PFDM_RUNS", "PFDM_FIGURES", "PFDM_INCEPTION", "PFDM_PRESET"


def env(name: str) -> str | None:
    """$name, or None when it is unset or empty."""
    return os.environ.get(name) or None


def is_checkout(root: Path | None = None) -> bool:
    """`root` (default: where the package lives) is a checkout of the repository, not site-packages."""
    root = REPO_ROOT if root is None else root
    return (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir()


def home() -> Path:
    """The default parent of runs/ and figures/: the repository root of a checkout, else the working directory."""
    return REPO_ROOT if is_checkout() else Path.cwd()


def runs_dir() -> Path:
    """$PFDM_RUNS, else runs/ in `home()`."""
    return Path(env(RUNS) or home() / "runs")


def cache_dir() -> Path:
    """Cached models shared by runs (the digits DDPM, the metrics' classifiers): <runs>/checkpoints."""
    return runs_dir() / "checkpoints"


def figures_dir() -> Path:
    """$PFDM_FIGURES, else figures/ in `home()` (created)."""
    d = Path(env(FIGURES) or home() / "figures")
    d.mkdir(parents=True, exist_ok=True)
    return d


def data_roots() -> list[Path]:
    """The data roots in the order they are tried: $PFDM_DATA, then ./data and ../shared/data from the
    working directory, then from the repository root (so notebooks run from notebooks/ find them)."""
    roots = [Path(env(DATA))] if env(DATA) else []
    for base in (Path.cwd(), REPO_ROOT):
        roots += [base / "data", base.parent / "shared" / "data"]
    return list(dict.fromkeys(roots))


def _holds(path: Path) -> bool:
    """A file, or a folder with at least one entry (an empty folder left by a failed download holds nothing)."""
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def data_root(required: str | None = None) -> Path:
    """The first data root that holds `required` (a sub-path such as "MNIST/raw"), else FileNotFoundError
    naming every place it looked. $PFDM_DATA, when set, is the only root: a root named on purpose that
    lacks the files is an error, not a reason to read another copy."""
    roots = data_roots()
    if env(DATA):
        roots = roots[:1]
    if required is None:
        return next((r for r in roots if r.is_dir()), roots[0])
    for root in roots:
        if _holds(root / required):
            return root
    tried = "\n  ".join(str(r / required) for r in roots)
    raise FileNotFoundError(
        f"dataset folder '{required}' not found (or empty). Looked for:\n  {tried}\n"
        f"Put the files at <root>/{required} under one of these roots (or set {DATA}=<root>).")


def download_root() -> Path:
    """Where `python -m pfdm_core download` writes: $PFDM_DATA, else ./data."""
    return Path(env(DATA) or "data")


def inception_weights() -> str | None:
    """$PFDM_INCEPTION (the FID Inception weights), or None."""
    return env(INCEPTION)
