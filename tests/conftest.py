import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
from threadpoolctl import threadpool_limits

# Tests use tiny models and 128x128 matrices: one thread (torch and BLAS) is fastest, and on a
# 2-core machine shared with other work it avoids spin-waiting thread pools (30-100x slowdowns seen).
torch.set_num_threads(1)
threadpool_limits(1)
# subprocesses (the CLI, notebooks, benchmarks' workers) keep the thread count they start with: a test that compares
# two runs bit for bit must not see the governor (core.omp.govern) change it when the machine gets busy
os.environ.setdefault("PFDM_THREADS", "fixed")


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path, monkeypatch):
    """Tests never write into the repository's figures/ or runs/."""
    monkeypatch.setenv("PFDM_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("PFDM_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("PFDM_PRESET", raising=False)
