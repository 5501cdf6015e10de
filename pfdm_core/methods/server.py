"""PFDM's server side: the shared denoiser, trained on uploads only.

This module never sees a dataset: it does not import `data` or `privacy`, and its one entry
point takes `Upload` objects (privatized tensors x_tilde at step t0 and labels). The shared
model owns steps t0+1..T of the chain, with x_tilde playing x_t0: it is trained on the
sub-chain with origin t0 and predicts eps' of x_t = sqrt(abar_t/abar_t0) x_tilde + sqrt(1 - abar_t/abar_t0) eps'.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig, train

ModelFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class Upload:
    """What a PFDM client sends, once: privatized images x_tilde at step t0, labels in the clear."""

    x_tilde: torch.Tensor  # (N, C, H, W) = sqrt(abar_t0) clip(x) + sqrt(1 - abar_t0) z
    y: torch.Tensor  # (N,) labels (not protected by the mechanism)
    t0: int
    eps: float  # per-image eps spent (Theorem 5.1 accountant unless stated otherwise)


def server_train_shared(uploads: Sequence[Upload], make_model: ModelFactory, sched: Schedule,
                        config: TrainConfig, checkpoint: str | os.PathLike | None = None,
                        progress: bool = True) -> nn.Module:
    """Server side: train the shared denoiser on the pooled uploads, steps t0+1..T (origin t0)."""
    x, y, t0 = pool(uploads)
    return train(make_model(), sched, x, y, t0 + 1, sched.T, origin=t0, config=config,
                 checkpoint=checkpoint, progress=progress, desc=f"PFDM shared (t0={t0})").model


def pool(uploads: Sequence[Upload]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The pooled x_t0 and labels of a non-empty list of uploads that share one t0, and that t0."""
    if not isinstance(uploads, (list, tuple)) or not uploads or not all(isinstance(u, Upload) for u in uploads):
        raise TypeError("the server takes a non-empty list of Upload objects (privatized tensors), "
                        f"got {type(uploads).__name__}")
    t0s = {u.t0 for u in uploads}
    if len(t0s) != 1:
        raise ValueError(f"all uploads must share one t0, got {sorted(t0s)}")
    return torch.cat([u.x_tilde for u in uploads]), torch.cat([u.y for u in uploads]), t0s.pop()


def check_upload(x_tilde: np.ndarray, y: np.ndarray, t0: int, eps: float, *, shape: tuple[int, ...],
                 num_classes: int, sched: Schedule, min_t0: int, clip_norm: float,
                 eps_of: Callable[[int], float]) -> Upload:
    """A client's reply as an `Upload`, or a ValueError saying what is wrong with it (the server then
    excludes that client and goes on). Checked: float32 images of `shape`, finite; int64 labels in
    0..num_classes-1, one per image; min_t0 <= t0 <= T - 1 (never less noise than the server proposed);
    eps = eps_of(t0) (the accountant of the run); and that the images are consistent with the mechanism:
    x_tilde = sqrt(abar) x + sqrt(1 - abar) z with ||x|| <= C has a mean square per pixel of
    (1 - abar) + 2 sqrt(abar (1 - abar)) <x, z>/d + abar ||x||^2/d, i.e. within
    (1 - abar) +- 6 sqrt(2/(N d)) (1 - abar) + [-2 sqrt(abar (1 - abar)) C / sqrt(N d) ... abar C^2 / d + that].
    Raw images (mostly saturated pixels), rescaled uploads and barely noised ones fall outside. It is a
    plausibility check, not a proof: the server cannot verify a client's privacy, only refuse what cannot be
    the mechanism's output (a client can always send pure noise)."""
    if not isinstance(x_tilde, np.ndarray) or x_tilde.dtype != np.float32 or x_tilde.ndim != 1 + len(shape) \
            or tuple(x_tilde.shape[1:]) != tuple(shape) or len(x_tilde) < 1:
        raise ValueError(f"x_tilde must be float32 of shape (N, {', '.join(map(str, shape))}), N >= 1; got "
                         f"{getattr(x_tilde, 'dtype', type(x_tilde).__name__)} {tuple(getattr(x_tilde, 'shape', ()))}")
    if not np.isfinite(x_tilde).all():
        raise ValueError("x_tilde contains NaN or infinite values")
    if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.shape != (len(x_tilde),):
        raise ValueError(f"y must be int64 of shape ({len(x_tilde)},), got {getattr(y, 'dtype', type(y).__name__)} "
                         f"{tuple(getattr(y, 'shape', ()))}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got {int(y.min())}..{int(y.max())}")
    if isinstance(t0, bool) or int(t0) != t0 or not min_t0 <= int(t0) <= sched.T - 1:
        raise ValueError(f"t0 must be an integer in {min_t0}..{sched.T - 1} (at least the proposed one), got {t0!r}")
    t0 = int(t0)
    want = eps_of(t0)
    if not np.isfinite(eps) or abs(float(eps) - want) > 1e-6 * max(1.0, want):
        raise ValueError(f"eps {eps!r} is not the run's eps at t0 = {t0} (C = {clip_norm:g}): {want:.6g}")
    a, n, d = float(sched.alpha_bar[t0]), x_tilde.shape[0], int(np.prod(shape))
    ms = float(np.mean(x_tilde.astype(np.float64) ** 2))
    slack = 6 * (1 - a) * (2 / (n * d)) ** 0.5 + 2 * (a * (1 - a)) ** 0.5 * clip_norm / (n * d) ** 0.5
    lo, hi = (1 - a) - slack, (1 - a) + a * clip_norm**2 / d + slack
    if not lo <= ms <= hi:
        raise ValueError(f"x_tilde's mean square per pixel {ms:.4g} is outside [{lo:.4g}, {hi:.4g}], what the "
                         f"mechanism at t0 = {t0} gives for images of norm <= {clip_norm:g}: not a privatized upload")
    return Upload(torch.from_numpy(x_tilde.copy()), torch.from_numpy(y.copy()), t0, float(eps))
