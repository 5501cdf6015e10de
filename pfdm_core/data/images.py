"""Real datasets for the federated runs: MNIST, Colorized MNIST, CIFAR-10, CelebA.

All return `data.Dataset` tensors (N, C, H, W) in [-1, 1] with integer labels, in one vectorised
conversion (no per-sample Python loop except CelebA's JPEG decoding). Roots are resolved by
`core.paths.data_root`: $PFDM_DATA, ./data, ../shared/data. Nothing is downloaded unless asked
(`download=True`, or `python -m pfdm_core download mnist|cifar10`); missing files raise one
FileNotFoundError that says where to put them and how to fetch them.

Colorized MNIST (our construction, reproducible from a seed): the digit's stroke is painted in
one colour per image on a black background, `x_rgb = -1 + (x + 1) * rgb(hue)`, with the hue drawn
from a band that depends on the client's cluster: cluster A (clients 0..M/2-1, majority classes
0-4) paints in warm hues (red to orange, hue 0.95..1.08 mod 1), cluster B (majority 5-9) in cool
hues (cyan to blue, 0.50..0.63), saturation 0.8..1.0 and value 0.8..1.0. So clients differ in
appearance as well as in class mix, and a model that ignores who it serves paints client 0's
minority digits in the other cluster's colours. Images are padded to 32x32 (the CIFAR-10 size).

CelebA: torchvision's layout (`<root>/celeba/img_align_celeba/*.jpg`, `list_attr_celeba.txt`,
`list_eval_partition.txt`), read here rather than by `torchvision.datasets.CelebA` because that
class verifies the official MD5 of every file and so refuses subsets and re-encoded copies.
Classes are binary attributes combined into 2**k labels: with attrs=("Male", "Smiling"),
label = 2 * Male + Smiling. Images are centre-cropped to 140x140 (as DDPM) and resized.
"""
from __future__ import annotations

import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pfdm_core.core.paths import data_root, download_root
from pfdm_core.data.small import Dataset, load_digits, train_test_split

NAMES = ("digits", "mnist", "cmnist", "cifar10", "celeba")
# Images per class in the training pool `load_split` returns (classes 0..9): MNIST's train-labels file
# (read off torchvision's copy), CIFAR-10's 5000 per class. Lets a preset's split be checked without the
# images (tests/test_datasets.py). digits: computed from the bundled data; CelebA: depends on the
# attributes and is read from list_attr_celeba.txt, so it is not listed.
TRAIN_CLASS_COUNTS = {
    "mnist": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "cifar10": (5000,) * 10,
}
TRAIN_CLASS_COUNTS["cmnist"] = TRAIN_CLASS_COUNTS["mnist"]
HUE_BANDS = {0: (0.95, 1.08), 1: (0.50, 0.63)}  # cluster -> hue interval (mod 1)
_FETCH = {"MNIST": "MNIST/raw", "CIFAR10": "cifar-10-batches-py"}


def _root(name: str, download: bool) -> Path:
    """The data root holding torchvision dataset `name`; ./data (or $PFDM_DATA) when downloading."""
    if download:
        root = download_root()
        root.mkdir(parents=True, exist_ok=True)
        return root
    try:
        return data_root(_FETCH[name])
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{name} not found.\n{err}\nTo download it (needs internet): python -m pfdm_core download "
            f"{name.lower()}   (writes torchvision's layout under ./data, or $PFDM_DATA)"
        ) from None


def _to_unit(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> float32 (N, C, H, W) in [-1, 1]."""
    x = torch.as_tensor(images)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return x.float().div(127.5).sub(1.0).contiguous()


MNIST_FILES = {  # torchvision's raw layout: file -> size in bytes (idx header + data)
    "train-images-idx3-ubyte": 16 + 60000 * 28 * 28, "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 28 * 28, "t10k-labels-idx1-ubyte": 8 + 10000,
}


def check_mnist_files(raw: Path) -> None:
    """Every raw MNIST file present with its exact size, else one error naming each file checked."""
    bad = {f: (raw / f).stat().st_size if (raw / f).is_file() else None for f in MNIST_FILES}
    bad = {f: n for f, n in bad.items() if n != MNIST_FILES[f]}
    if bad:
        lines = "\n  ".join(f"{raw / f}: {'missing' if n is None else f'{n} bytes, expected {MNIST_FILES[f]}'}"
                            for f, n in bad.items())
        raise ValueError(f"MNIST under {raw} is incomplete or corrupt:\n  {lines}\n"
                         "Replace these files (python -m pfdm_core download mnist, into an empty root).")


@lru_cache(maxsize=4)
def _mnist(train: bool, download: bool) -> Dataset:
    from torchvision.datasets import MNIST

    root = _root("MNIST", download)
    if not download:
        check_mnist_files(root / "MNIST" / "raw")
    d = MNIST(str(root), train=train, download=download)
    return Dataset(_to_unit(d.data), d.targets.long())


def load_mnist(train: bool = True, image_size: int = 28, download: bool = False) -> Dataset:
    """MNIST (60000 train / 10000 test), (N, 1, 28, 28) in [-1, 1]; image_size=32 pads 2 pixels."""
    if image_size not in (28, 32):
        raise ValueError(f"image_size for MNIST must be 28 or 32 (padded), got {image_size}")
    d = _mnist(train, download)
    x = F.pad(d.x, (2, 2, 2, 2), value=-1.0) if image_size == 32 else d.x
    return Dataset(x, d.y)


def load_cifar10(train: bool = True, download: bool = False) -> Dataset:
    """CIFAR-10 (50000 train / 10000 test), (N, 3, 32, 32) in [-1, 1]."""
    from torchvision.datasets import CIFAR10

    root = _root("CIFAR10", download)
    try:
        d = CIFAR10(str(root), train=train, download=download)
    except Exception as e:  # torchvision's integrity check or an unpickling error of a damaged batch file
        files = sorted(str(p) for p in (root / "cifar-10-batches-py").glob("*"))
        raise ValueError(f"CIFAR-10 under {root / 'cifar-10-batches-py'} cannot be read ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); files checked: {', '.join(files) or 'none'}. "
                         "Replace them (python -m pfdm_core download cifar10, into an empty root).") from None
    return Dataset(_to_unit(d.data), torch.tensor(d.targets, dtype=torch.long))


def cifar10_available() -> bool:
    try:
        _root("CIFAR10", False)
        return True
    except FileNotFoundError:
        return False


# ----------------------------------------------------------------------------- Colorized MNIST
def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Vectorised HSV -> RGB for (N,) tensors with h mod 1; returns (N, 3) in [0, 1]."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + 6.0 * (h % 1.0)[:, None]) % 6.0  # (N, 3)
    return v[:, None] - (v * s)[:, None] * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def cluster_colors(n: int, cluster: int, seed: int) -> torch.Tensor:
    """(n, 3) RGB stroke colours of one cluster's band, reproducible from `seed`."""
    if cluster not in HUE_BANDS:
        raise ValueError(f"cluster must be one of {sorted(HUE_BANDS)}, got {cluster}")
    g = torch.Generator().manual_seed(seed)
    lo, hi = HUE_BANDS[cluster]
    h = lo + (hi - lo) * torch.rand(n, generator=g)
    s, v = 0.8 + 0.2 * torch.rand(n, generator=g), 0.8 + 0.2 * torch.rand(n, generator=g)
    return hsv_to_rgb(h, s, v)


def colorize(x: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    """Grey digits (N, 1, H, W) in [-1, 1] -> (N, 3, H, W): stroke in colour rgb (N, 3), black ground."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"colorize expects grey images (N, 1, H, W), got shape {tuple(x.shape)}")
    if rgb.shape != (len(x), 3):
        raise ValueError(f"rgb must have shape ({len(x)}, 3), got {tuple(rgb.shape)}")
    return -1.0 + (x + 1.0) * rgb[:, :, None, None]


def colorize_cluster(data: Dataset, cluster: int, seed: int) -> Dataset:
    """`data` painted in the colours of `cluster` (seeded)."""
    return Dataset(colorize(data.x, cluster_colors(len(data), cluster, seed)), data.y)


def stroke_hue(x: torch.Tensor) -> torch.Tensor:
    """Hue in [0, 1) of the mean colour of the brightest pixels of RGB images (N, 3, H, W)."""
    rgb = (x + 1.0) / 2.0
    bright = rgb.amax(1, keepdim=True)  # (N, 1, H, W)
    w = (bright > 0.5 * bright.flatten(1).amax(1)[:, None, None, None]).float()
    mean = (rgb * w).flatten(2).sum(2) / w.flatten(2).sum(2).clamp_min(1.0)  # (N, 3)
    import matplotlib.colors as mcolors

    return torch.tensor(mcolors.rgb_to_hsv(mean.clamp(0, 1).numpy())[:, 0])


def in_band(hue: torch.Tensor, cluster: int, margin: float = 0.05) -> torch.Tensor:
    """Whether each hue lies in `cluster`'s band (mod 1), widened by `margin`."""
    lo, hi = HUE_BANDS[cluster]
    centre, half = (lo + hi) / 2, (hi - lo) / 2 + margin
    return ((hue - centre + 0.5) % 1.0 - 0.5).abs() <= half


# ----------------------------------------------------------------------------- CelebA
def load_celeba(split: str = "train", attrs: tuple[str, ...] = ("Male", "Smiling"), image_size: int = 32,
                limit: int | None = None, root: str | Path | None = None) -> Dataset:
    """CelebA from a local copy in torchvision's layout; labels from binary attributes.

    split: train | valid | test | all. `limit` keeps the first `limit` images of the split.
    """
    import pandas as pd
    from PIL import Image
    from torchvision.transforms.v2.functional import center_crop, pil_to_tensor, resize

    splits = {"train": 0, "valid": 1, "test": 2, "all": None}
    if split not in splits:
        raise ValueError(f"split must be one of {', '.join(splits)}, got {split!r}")
    if not attrs:
        raise ValueError("attrs must name at least one CelebA attribute, e.g. ('Male', 'Smiling')")
    base = Path(root) / "celeba" if root else data_root("celeba/list_attr_celeba.txt") / "celeba"
    table = pd.read_csv(base / "list_attr_celeba.txt", sep=r"\s+", skiprows=1)  # index: file name
    unknown = [a for a in attrs if a not in table.columns]
    if unknown:
        raise ValueError(f"unknown CelebA attribute(s) {unknown}; allowed: {', '.join(table.columns)}")
    part = pd.read_csv(base / "list_eval_partition.txt", sep=r"\s+", header=None, index_col=0).iloc[:, 0]
    files = table.index if splits[split] is None else table.index[part.reindex(table.index).to_numpy() == splits[split]]
    files = files[:limit] if limit else files
    bits = (table.loc[files, list(attrs)].to_numpy() > 0).astype(np.int64)  # (N, k)
    y = torch.tensor(bits @ (2 ** np.arange(len(attrs))[::-1]), dtype=torch.long)
    images = [resize(center_crop(pil_to_tensor(Image.open(base / "img_align_celeba" / f).convert("RGB")), [140, 140]),
                     [image_size, image_size], antialias=True) for f in files]  # JPEG decoding: one file at a time
    return Dataset(_to_unit(torch.stack(images).permute(0, 2, 3, 1)), y)


# ----------------------------------------------------------------------------- splits
def load_split(name: str, seed: int = 0, image_size: int | None = None) -> tuple[Dataset, Dataset]:
    """(train pool, held-out test) of a dataset. Colorized MNIST returns grey 32x32 MNIST:
    the colours depend on the client and are painted after the partition (`experiment.make_split`)."""
    if name == "digits":
        return train_test_split(load_digits(), 0.2, seed)
    if name in ("mnist", "cmnist"):
        size = 32 if name == "cmnist" else (image_size or 28)
        return load_mnist(True, size), load_mnist(False, size)
    if name == "cifar10":
        return load_cifar10(True), load_cifar10(False)
    if name == "celeba":
        return load_celeba("train", image_size=image_size or 32), load_celeba("test", image_size=image_size or 32)
    raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(NAMES)}")


_DOWNLOADS = {"mnist": ("MNIST",), "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz")}


def download(name: str) -> Path:
    """Fetch MNIST or CIFAR-10 with torchvision into ./data (or $PFDM_DATA); returns the root."""
    fetch = {"mnist": lambda: _mnist(True, True), "cifar10": lambda: load_cifar10(True, True)}
    if name not in fetch:
        raise ValueError(f"download supports {', '.join(fetch)} (CelebA: see docs/package.md), got {name!r}")
    root = download_root()
    new = [root / p for p in _DOWNLOADS[name] if not (root / p).exists()]  # what this call may create
    try:
        fetch[name]()
    except Exception as e:  # offline, interrupted, corrupt: leave nothing that would shadow another root
        for p in new:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        raise OSError(f"download of {name} failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                           f"nothing was left under {root}") from None
    return _root(name.upper(), False)
