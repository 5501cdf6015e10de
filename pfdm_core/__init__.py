"""pfdm_core: private, personalized federated diffusion models (PFDM), the tested package behind the
pfdm notebooks. Floors, each importing only its own floor and the floors above it in this list (tests/test_layers.py):

    core        schedule, nets, diffusion, train, checkpoint, paths, presets, omp
    data        small datasets, image datasets, partitions          privacy   mechanism, DP-SGD
    methods     PFDM (client, server), local / central DDPM, one FedAvg loop (+ Phoenix), selection, registry
    evaluation  metrics, classifiers, client tables, Inception, downstream, plotting
    attacks     membership, memorization, reconstruction, audit
    experiment  config, presets, run;  then on top: studies (one module per notebook that needs one;
                nothing imports them), cli, flower_app

Importing the package does no work: the names below load on first use, and the OpenMP wait policy is
chosen by an explicit `core.omp.apply()` (called by `python -m pfdm_core` and the notebooks' first cell).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"
_EXPORTS = {
    "Schedule": "pfdm_core.core.schedule", "q_sample": "pfdm_core.core.schedule",
    "q_sample_from": "pfdm_core.core.schedule",
    "diffusion_loss": "pfdm_core.core.diffusion", "ddpm_sample": "pfdm_core.core.diffusion",
    "ddim_sample": "pfdm_core.core.diffusion", "sample": "pfdm_core.core.diffusion",
    "clip": "pfdm_core.privacy.mechanism", "privatize": "pfdm_core.privacy.mechanism",
    "epsilon": "pfdm_core.privacy.mechanism", "t0_for_epsilon": "pfdm_core.privacy.mechanism",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pfdm_core' has no attribute {name!r}")
