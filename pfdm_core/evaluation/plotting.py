"""One figure style for the whole series, and `savefig` writing figures/ under stable names.

Figures go to `core.paths.figures_dir()`: $PFDM_FIGURES when set (`make test` points it to runs/smoke/figures so that
smoke runs never overwrite the committed figures), else to figures/ at the repository root.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

from pfdm_core.core.paths import figures_dir

PALETTE = "colorblind"


def set_style() -> None:
    """Seaborn 'whitegrid' with the colour-blind-safe palette, for every notebook."""
    sns.set_theme(style="whitegrid", palette=PALETTE, context="notebook")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 130, "savefig.bbox": "tight",
                         "legend.frameon": False, "axes.titlesize": 11})


def savefig(fig: plt.Figure, name: str, svg: bool = False) -> None:
    """Save `fig` as figures/<name>.png (and .svg when asked). Returns nothing, so that a notebook cell ending
    with it shows the figure and no path (`figures_dir()` says where it went)."""
    path = figures_dir() / f"{name}.png"
    fig.savefig(path)
    if svg:
        fig.savefig(path.with_suffix(".svg"))


def tile(x: torch.Tensor, nrow: int = 10, pad: int = 1) -> np.ndarray:
    """THE tiling of the package: a batch (B, C, H, W) in [-1, 1] -> one image (H', W', 3) in [0, 1],
    `nrow` images per row, white padding."""
    from torchvision.utils import make_grid

    grid = make_grid(x.detach().float().cpu().clamp(-1, 1), nrow=nrow, padding=pad, normalize=True,
                     value_range=(-1, 1), pad_value=1.0)  # (3, H', W')
    return grid.permute(1, 2, 0).numpy()


def image_grid(x: torch.Tensor, nrow: int = 10, ax: plt.Axes | None = None, title: str | None = None) -> plt.Axes:
    """Show a batch (B, C, H, W) in [-1, 1] as one grid image (no axes)."""
    ax = ax or plt.figure(figsize=(nrow * 0.45, np.ceil(len(x) / nrow) * 0.45)).gca()
    ax.imshow(tile(x, nrow), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax
