"""Turns a SuperNode's ClientApp malicious, for tests/test_flower_app.py only (never installed).

Loaded by Python at start-up when this folder is on PYTHONPATH; with PFDM_TEST_MALICIOUS set it patches
`pfdm_core.flower_app.task.upload_once` as soon as that module is imported, so the node's reply is:
nan (one NaN pixel), raw (the raw images, claiming the requested t0) or shape (images cropped to 4 columns).
"""
import importlib.abc
import importlib.util
import os
import sys

MODE = os.environ.get("PFDM_TEST_MALICIOUS", "")


def _patch(task):
    honest = task.upload_once

    def upload_once(cfg, data, t0, state_dir, noise_seed=None, clip_norm=None):
        up, repeated = honest(cfg, data, t0, state_dir, noise_seed, clip_norm)
        x = up.x_tilde.clone()
        if MODE == "nan":
            x[0, 0, 0, 0] = float("nan")
        elif MODE == "raw":
            x = data.x.clone()
        elif MODE == "shape":
            x = x[..., :4].contiguous()
        return task.Upload(x, up.y, up.t0, up.eps), repeated

    task.upload_once = upload_once


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "pfdm_core.flower_app.task":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


if MODE:
    sys.meta_path.insert(0, _Hook())
