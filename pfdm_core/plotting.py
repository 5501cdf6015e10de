"""One figure style for the whole series, and `savefig` writing figures/ under stable names.

Figures go to $PFDM_FIGURES when set (`make test` points it to runs/smoke/figures so that
smoke runs never overwrite the committed figures), else to figures/ at the repository root.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

from .data import REPO_ROOT

PALETTE = "colorblind"


def set_style() -> None:
    """Seaborn 'whitegrid' with the colour-blind-safe palette, for every notebook."""
    sns.set_theme(style="whitegrid", palette=PALETTE, context="notebook")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 130, "savefig.bbox": "tight",
                         "legend.frameon": False, "axes.titlesize": 11})


def figures_dir() -> Path:
    d = Path(os.environ.get("PFDM_FIGURES") or REPO_ROOT / "figures")
    d.mkdir(parents=True, exist_ok=True)
    return d


def savefig(fig: plt.Figure, name: str, svg: bool = False) -> Path:
    """Save `fig` as figures/<name>.png (and .svg when asked); returns the PNG path."""
    path = figures_dir() / f"{name}.png"
    fig.savefig(path)
    if svg:
        fig.savefig(path.with_suffix(".svg"))
    return path


def image_grid(x: torch.Tensor, nrow: int = 10, ax: plt.Axes | None = None, title: str | None = None) -> plt.Axes:
    """Show a batch (B, C, H, W) in [-1, 1] as one grid image (no axes)."""
    from torchvision.utils import make_grid

    grid = make_grid(x.detach().float().cpu().clamp(-1, 1), nrow=nrow, padding=1, normalize=True,
                     value_range=(-1, 1), pad_value=1.0)  # (3, H', W')
    ax = ax or plt.figure(figsize=(nrow * 0.45, np.ceil(len(x) / nrow) * 0.45)).gca()
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax
