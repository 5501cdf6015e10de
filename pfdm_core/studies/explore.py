"""Helpers for notebook 03: what a PFDM upload looks like at step t0, its eps, and an attack.

Privacy: Theorem 5.1 of the PFDM paper (Patel, Zhang, Wang et al., CVPR 2026) and the tight analytic
Gaussian mechanism (Balle & Wang 2018). Attack: the paper's reconstruction of x_0 from the upload
x_tilde, scored by similarity to the truth.

* `uploads`: x_tilde = sqrt(abar_t0) clip(x) + sqrt(1 - abar_t0) z for many t0 at once, with ONE
  noise draw z (so the images change smoothly with t0); t0 = 0 is the raw image.
* `eps_curves` / `eps_table`: eps of every t0 for both units and both accountants.
* `upload_widget`: ipywidgets sliders for t0, C, delta updating eps and the upload live.
* `reconstruct`, `posterior_mean_x0`, `l2_distance`, `ssim`, `reid_rate`, `reconstruction_sweep`:
  an adversary who knows t0 (and the label, which is uploaded in the clear) denoises the upload.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from pfdm_core.attacks.reconstruction import posterior_mean_x0, reconstruct, reid_rate, scores
from pfdm_core.core.schedule import Schedule
from pfdm_core.evaluation import plotting
from pfdm_core.privacy.mechanism import ACCOUNTANTS, UNITS, clip, epsilon, epsilon_curve

# attack sizes per preset: candidates N (test images), DDIM steps, t0 values scored
RECON = {
    "smoke": dict(num_candidates=100, ddim_steps=5, t0s=(10, 100, 400, 690)),
    "cpu": dict(num_candidates=100, ddim_steps=50, t0s=(10, 50, 100, 200, 300, 400, 500, 600, 690, 800, 900)),
    "paper": dict(num_candidates=360, ddim_steps=100, t0s=(10, 50, 100, 200, 300, 400, 500, 600, 690, 800, 900)),
}
RECONSTRUCTIONS = ("DDIM t0 -> 0", "one-step x0_hat", "upload / sqrt(abar), clamped")
ML_TESTS = ("ML test on upload", "ML test on upload + label")


# ----------------------------------------------------------------------------- uploads and eps
def abar_at(sched: Schedule, t0s: Sequence[int]) -> torch.Tensor:
    """alpha_bar at each t0 (t0 = 0 gives 1: the raw image), float64, shape (K,)."""
    return sched.alpha_bar[torch.as_tensor([sched.check_step(t, "t0", 0, sched.T - 1) for t in t0s])]


def uploads(
    x: torch.Tensor, t0s: Sequence[int], sched: Schedule, z: torch.Tensor, clip_norm: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_tilde, x_tilde / sqrt(abar)) for every t0, shape (K, B, ...), with the same noise z."""
    x = clip(x, clip_norm) if clip_norm is not None else x
    a = abar_at(sched, t0s).to(x).reshape(-1, *([1] * x.dim()))  # (K, 1, ..., 1)
    x_tilde = a.sqrt() * x + (1 - a).sqrt() * z  # (K, B, ...)
    return x_tilde, x_tilde / a.sqrt()


def eps_curves(sched: Schedule | None = None, clip_norm: float = 10.0, delta: float = 1e-5) -> pd.DataFrame:
    """eps for t0 = 1..T-1: one column per (unit, accountant), named 'per-image thm51' etc."""
    sched = sched or Schedule()
    cols = {f"{u} {a}": epsilon_curve(sched, clip_norm=clip_norm, delta=delta, accountant=a, unit=u)
            for u in UNITS for a in ACCOUNTANTS}
    return pd.DataFrame(cols, index=pd.RangeIndex(1, sched.T, name="t0"))


def eps_table(t0s: Sequence[int], sched: Schedule | None = None, clip_norm: float = 10.0,
              delta: float = 1e-5) -> pd.DataFrame:
    """eps at chosen t0 for both units and accountants, plus sigma (the noise std, clean scale)."""
    sched = sched or Schedule()
    a = abar_at(sched, t0s).numpy()
    out = {"sigma": np.sqrt((1 - a) / a)}
    out |= {f"{u} {acc}": [epsilon(t, sched, clip_norm, delta, acc, u) for t in t0s]
            for u in UNITS for acc in ACCOUNTANTS}
    return pd.DataFrame(out, index=pd.Index(list(t0s), name="t0"))


def eps_text(t0: int, sched: Schedule, clip_norm: float, delta: float) -> str:
    """HTML of the eps at t0, each number in a span with a stable class (pfdm-eps-<unit>-<acc>)."""
    e = {(u, a): epsilon(t0, sched, clip_norm, delta, a, u) for u in UNITS for a in ACCOUNTANTS}
    span = lambda u, a: f'<span class="pfdm-eps-{u}-{a}">{e[u, a]:.2f}</span>'  # noqa: E731
    return (f"<b>per image</b> (C = {clip_norm:g}): eps = {span('per-image', 'thm51')} (Thm 5.1), "
            f"{span('per-image', 'analytic')} (analytic) &nbsp;|&nbsp; <b>per pixel</b>: eps = "
            f"{span('per-pixel', 'thm51')} (Thm 5.1), {span('per-pixel', 'analytic')} (analytic) "
            f"&nbsp;|&nbsp; delta = {delta:g}, sigma = {math.sqrt(1 / float(sched.alpha_bar[t0]) - 1):.3g}")


# ----------------------------------------------------------------------------- image grids
def tile(rows: torch.Tensor, pad: int = 1) -> np.ndarray:
    """(R, N, C, H, W) in [-1, 1] -> one grey image (R(H+pad)+pad, N(W+pad)+pad) in [0, 1] (`plotting.tile`)."""
    return plotting.tile(rows.flatten(0, 1), nrow=rows.shape[1], pad=pad)[..., 0]


def show_rows(ax: plt.Axes, rows: torch.Tensor, labels: Sequence[str], title: str | None = None) -> plt.Axes:
    """Draw `tile(rows)` on ax with one y-label per row."""
    H = rows.shape[-2]
    ax.imshow(tile(rows), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([1 + r * (H + 1) + (H - 1) / 2 for r in range(len(labels))], labels)
    ax.set_xticks([])
    ax.grid(False)
    for s in ax.spines.values():
        s.set_visible(False)
    if title:
        ax.set_title(title)
    return ax


def png(rows: torch.Tensor, scale: int = 10) -> bytes:
    """PNG bytes of `tile(rows)` upscaled `scale` times (fast: no matplotlib)."""
    from PIL import Image

    img = Image.fromarray((tile(rows) * 255).round().astype(np.uint8))
    buf = io.BytesIO()
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def plot_upload_grid(x: torch.Tensor, t0s: Sequence[int], sched: Schedule, z: torch.Tensor,
                     clip_norm: float | None = None) -> plt.Figure:
    """Two panels, rows = t0: the upload x_tilde and x_tilde / sqrt(abar) (clamped to [-1, 1])."""
    up, rescaled = uploads(x, t0s, sched, z, clip_norm)
    a = abar_at(sched, t0s).numpy()
    labels = [f"t0={t}" + (" (raw)" if t == 0 else f"  σ={math.sqrt((1 - ai) / ai):.3g}") for t, ai in zip(t0s, a)]
    fig, axes = plt.subplots(1, 2, figsize=(2 + 0.9 * x.shape[0], 0.55 * len(t0s) + 0.8), sharey=True)
    show_rows(axes[0], up, labels, "upload x̃ = √ā x + √(1-ā) z")
    show_rows(axes[1], rescaled, labels, "x̃ / √ā = x + σ z  (clean scale)")
    return fig


def plot_static_fallback(x: torch.Tensor, sched: Schedule, z: torch.Tensor, t0s: Sequence[int] = (100, 400, 690),
                         clip_norm: float = 10.0, delta: float = 1e-5) -> plt.Figure:
    """What the widget shows, at a few t0, with eps (both accountants, per image) in the titles."""
    fig, axes = plt.subplots(len(t0s), 1, figsize=(2 + 0.6 * x.shape[0], 1.9 * len(t0s)))
    for ax, t0 in zip(np.atleast_1d(axes), t0s):
        up, rescaled = uploads(x, [t0], sched, z, clip_norm)
        rows = torch.cat([clip(x, clip_norm)[None], up, rescaled])  # (3, B, ...)
        e = [epsilon(t0, sched, clip_norm, delta, acc, "per-image") for acc in ACCOUNTANTS]
        show_rows(ax, rows, ["clip(x)", "x̃", "x̃/√ā"], f"t0={t0}: ε = {e[0]:.2f} (Thm 5.1), {e[1]:.2f} (analytic)")
    return fig


# ----------------------------------------------------------------------------- the widget
def upload_widget(x: torch.Tensor, sched: Schedule | None = None, t0: int = 690, clip_norm: float = 10.0,
                  delta: float = 1e-5, seed: int = 0, scale: int = 10):
    """A VBox with sliders t0 / C / delta, the eps label (class 'pfdm-eps') and the upload images.

    The noise z is drawn once (seeded), so moving t0 rescales the same upload; `box.update(t0=...)`
    sets the controls and refreshes (the same callback the sliders trigger).
    """
    import ipywidgets as w

    sched = sched or Schedule()
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)  # drawn once
    t0_slider = w.IntSlider(value=t0, min=1, max=sched.T - 1, description="t0",
                            tooltip="diffusion step of the upload (1..T-1)", continuous_update=True)
    c_slider = w.FloatSlider(value=clip_norm, min=0.5, max=12.0, step=0.5, description="C (l2 clip)",
                             tooltip="per-image l2 clip norm; pixels in [-1, 1]")
    deltas = sorted({1e-3, 1e-4, 1e-5, 1e-6, 1e-7, float(delta)}, reverse=True)
    delta_dd = w.Dropdown(options=[(f"{d:g}", d) for d in deltas], value=float(delta), description="delta")
    label = w.HTML(description="eps")
    label.add_class("pfdm-eps")
    image = w.Image(format="png")
    caption = w.HTML("rows: clip(x) · upload x̃ · x̃/√ā (clean scale, clamped to [-1, 1]); same noise z for every t0")

    def refresh(_=None) -> None:
        t, C, d = t0_slider.value, c_slider.value, delta_dd.value
        label.value = eps_text(t, sched, C, d)
        up, rescaled = uploads(x, [t], sched, z, C)
        image.value = png(torch.cat([clip(x, C)[None], up, rescaled]), scale)

    for control in (t0_slider, c_slider, delta_dd):
        control.observe(refresh, names="value")

    def update(t0: int | None = None, clip_norm: float | None = None, delta: float | None = None) -> str:
        """Set any of the controls, refresh, and return the eps label's HTML."""
        for control, value in ((t0_slider, t0), (c_slider, clip_norm), (delta_dd, delta)):
            if value is not None:
                control.value = value  # fires refresh when the value changes
        refresh()
        return label.value

    refresh()
    box = w.VBox([w.HBox([t0_slider, c_slider, delta_dd]), label, image, caption])
    box.update, box.controls = update, dict(t0=t0_slider, clip_norm=c_slider, delta=delta_dd, eps=label, image=image)
    return box


def reconstruction_sweep(model: nn.Module, sched: Schedule, x: torch.Tensor, y: torch.Tensor | None,
                         t0s: Sequence[int], seed: int = 0, num_steps: int = 50,
                         clip_norm: float | None = None) -> tuple[pd.DataFrame, dict[int, dict[str, torch.Tensor]]]:
    """Privatize x at each t0 (one seeded z) and attack it three ways (RECONSTRUCTIONS).

    Returns (scores: one row per (t0, method) with l2, ssim, reid; images[t0][method]). Two more
    rows per t0: the maximum-likelihood re-identification from the unclamped upload, from pixels
    only ('ML test on upload') and among the candidates with the upload's public label ('... + label').
    """
    model.eval()
    dev = next(model.parameters()).device
    x = clip(x, clip_norm) if clip_norm is not None else x
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    ups, rescaled = uploads(x, t0s, sched, z)
    rows, images = [], {}
    y_dev = None if y is None else y.to(dev)
    for k, t0 in enumerate(t0s):  # a few t0 values; each is one batched attack
        up = ups[k].to(dev)
        guesses = {RECONSTRUCTIONS[0]: reconstruct(model, sched, up, t0, y_dev, num_steps).cpu(),
                   RECONSTRUCTIONS[1]: posterior_mean_x0(model, sched, up, t0, y_dev).cpu(),
                   RECONSTRUCTIONS[2]: rescaled[k].clamp(-1, 1)}
        images[t0] = {"upload": ups[k], **guesses}
        rows += [dict(t0=t0, method=m, **scores(g, x)) for m, g in guesses.items()]
        rows.append(dict(t0=t0, method=ML_TESTS[0], reid=reid_rate(rescaled[k], x)))
        if y is not None:
            rows.append(dict(t0=t0, method=ML_TESTS[1], reid=reid_rate(rescaled[k], x, y)))
    return pd.DataFrame(rows), images


# ----------------------------------------------------------------------------- figures
def plot_eps_curves(curves: pd.DataFrame, refs: Sequence[tuple] = ()) -> plt.Figure:
    """eps versus t0 (log y): colour = unit, line style = accountant; refs = (t0, eps, text, (dx, dy))."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    colours = dict(zip(UNITS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for col in curves:
        unit, acc = col.split()
        ax.plot(curves.index, curves[col], color=colours[unit], ls="-" if acc == "thm51" else "--",
                label=f"{unit}, {'Theorem 5.1' if acc == 'thm51' else 'analytic (Balle & Wang)'}")
    for t0, e, text, offset in refs:
        ax.plot(t0, e, "o", color="k", ms=4, zorder=5)
        ax.annotate(text, (t0, e), xytext=offset, textcoords="offset points", fontsize=8, va="center",
                    ha="right" if offset[0] < 0 else "left" if offset[0] > 0 else "center",
                    bbox=dict(fc="white", ec="none", alpha=0.85, pad=1), arrowprops=dict(arrowstyle="-", lw=0.6, color="k"))
    ax.axhline(10, color="grey", lw=0.8, ls=":")
    ax.set(yscale="log", xlabel="t0 (diffusion step of the upload)", ylabel="ε (log scale)", xlim=(0, curves.index[-1]))
    ax.set_ylim(1e-1, 1e5)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def plot_reconstructions(images: dict[int, dict[str, torch.Tensor]], originals: torch.Tensor,
                         t0s: Sequence[int], n: int = 10) -> plt.Figure:
    """Rows: the originals, then for each t0 the upload x̃ and the two reconstructions."""
    rows, labels = [originals[:n]], ["original"]
    for t0 in t0s:
        rows += [images[t0][k][:n] for k in ("upload", RECONSTRUCTIONS[0], RECONSTRUCTIONS[1])]
        labels += [f"t0={t0}: upload x̃", "DDIM t0→0", "one-step x̂0"]
    fig, ax = plt.subplots(figsize=(0.5 * n + 2, 0.42 * len(rows) + 0.5))
    show_rows(ax, torch.stack(rows), labels)
    return fig


def plot_scores(df: pd.DataFrame, chance: dict[str, float], eps10_t0: int | None = None) -> plt.Figure:
    """l2 distance, SSIM and re-identification rate versus t0, one line per attack."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    names = dict(l2="mean l2 distance to the truth", ssim="mean SSIM with the truth", reid="re-identification rate")
    for ax, metric in zip(axes, names):
        for method, g in df.dropna(subset=[metric]).groupby("method", sort=False):
            ax.plot(g.t0, g[metric], "s:" if method in ML_TESTS else "o-", ms=3, label=method)
        ax.axhline(chance[metric], color="grey", ls="--", lw=1, label="no information (another digit; 1/N)")
        if f"{metric}_label" in chance:
            ax.axhline(chance[f"{metric}_label"], color="grey", ls="-.", lw=1,
                       label="label only (another digit of the class)")
        if eps10_t0:
            ax.axvline(eps10_t0, color="k", lw=0.8, ls=":", label=f"t0={eps10_t0}: ε≤10 per image")
        ax.set(xlabel="t0", title=names[metric])
    axes[2].legend(loc="upper left", bbox_to_anchor=(1.02, 1))
    return fig
