import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# Tests use tiny tensors: one thread is faster than two and immune to a busy machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path, monkeypatch):
    """Tests never write into the repository's figures/ or runs/."""
    monkeypatch.setenv("PFDM_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("PFDM_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("PFDM_PRESET", raising=False)
