"""The feature networks of the classifier FID, trained once and cached by what they were trained on.

A cached classifier lives at <runs>/checkpoints/<name>-<fingerprint>.pt, where the fingerprint hashes
its training images, labels, epochs and seed: a changed input trains a new one instead of reusing (or
crashing on) an old one; a cache file that cannot be read is retrained and replaced (it is a cache).
"""
from __future__ import annotations

import hashlib
import warnings

import torch

from pfdm_core.core import paths
from pfdm_core.core.checkpoint import atomic_save, data_fingerprint
from pfdm_core.data.small import Dataset, digits_split
from pfdm_core.evaluation.metrics import Classifier, train_classifier


def cached_classifier(name: str, data: Dataset, epochs: int, seed: int, progress: bool = False) -> Classifier:
    """`train_classifier(data, epochs, seed)`, cached under a name that includes a fingerprint of all four."""
    num_classes = int(data.y.max()) + 1
    key = hashlib.sha256(f"{data_fingerprint(data.x, data.y)}|{epochs}|{seed}|{num_classes}".encode()).hexdigest()[:12]
    path = paths.cache_dir() / f"{name}-{key}.pt"
    shape = (data.x.shape[1], data.x.shape[-1], num_classes)
    if path.exists():
        try:
            model = Classifier(*shape)
            model.load_state_dict(torch.load(path, map_location="cpu"))
            return model.eval()
        except Exception as e:  # a damaged cache: train again and replace it
            warnings.warn(f"cached classifier {path} cannot be read ({type(e).__name__}); training it again",
                          stacklevel=2)
    model = train_classifier(data.x, data.y, epochs=epochs, seed=seed, progress=progress)
    atomic_save(model.state_dict(), path)
    return model


def digits_classifier(seed: int = 0, epochs: int = 30) -> Classifier:
    """The feature network of the digits metrics, trained on the training split `digits_split(seed)`."""
    return cached_classifier(f"digits_classifier_seed{seed}_e{epochs}", digits_split(seed)[0], epochs, seed)


__all__ = ["cached_classifier", "digits_classifier"]
