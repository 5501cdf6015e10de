"""The committed notebooks show what teaches and nothing that misleads (no progress bars frozen at 0%,
no path echoes, no '± nan', no papermill injected-parameters cell, every saved figure shown)."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
sys.path.insert(0, str(REPO / "scripts"))
import clean_notebooks  # noqa: E402


def _texts(cell: dict) -> list[str]:
    out = []
    for o in cell.get("outputs", []):
        out.append("".join(o.get("text", "")))
        out.append("".join(o.get("data", {}).get("text/plain", "")))
        out.append("".join(o.get("data", {}).get("text/html", "")))
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_committed_outputs_are_clean(path: Path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert not any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in code), \
        f"{path.name}: a papermill injected-parameters cell is committed"
    assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in code) == 1, \
        f"{path.name}: needs exactly one cell tagged 'parameters'"
    for i, c in enumerate(code):
        progress = [o for o in c.get("outputs", []) if clean_notebooks.is_progress(o)]
        assert not progress, f"{path.name}, code cell {i}: progress output; run scripts/clean_notebooks.py"
        for t in _texts(c):
            assert "PosixPath(" not in t, f"{path.name}, code cell {i}: a path echo in the output"
            assert not re.search(r"±\s*nan", t), f"{path.name}, code cell {i}: '± nan' in the output"
        if "savefig(" in "".join(c["source"]) and c.get("outputs"):
            assert any("image/png" in o.get("data", {}) for o in c["outputs"]), \
                f"{path.name}, code cell {i}: saves a figure but does not show it"


def test_the_cleaner_removes_frozen_bars_and_keeps_everything_else():
    bar = {"output_type": "display_data", "metadata": {},
           "data": {clean_notebooks.WIDGET: {"model_id": "aa11", "version_major": 2, "version_minor": 0},
                    "text/plain": "runs:   0%|          | 0/12 [00:00<?, ?it/s]"}}
    slider = {"output_type": "display_data", "metadata": {},
              "data": {clean_notebooks.WIDGET: {"model_id": "bb22", "version_major": 2, "version_minor": 0},
                       "text/plain": "interactive(children=(IntSlider(value=300, max=1000), Output()))"}}
    stderr = {"output_type": "stream", "name": "stderr", "text": "training: 100%|##########| 800/800 [00:09<00:00]\n"}
    warning = {"output_type": "stream", "name": "stderr", "text": "UserWarning: 100% of the samples are near-copies\n"}
    printed = {"output_type": "stream", "name": "stdout", "text": "gap closed 0.51 [0.02, 1.01]\n"}
    state = {"aa11": {"state": {"children": ["IPY_MODEL_cc33"]}}, "cc33": {"state": {}},
             "bb22": {"state": {"children": ["IPY_MODEL_dd44"]}}, "dd44": {"state": {}}}
    nb = {"cells": [{"cell_type": "code", "outputs": [bar, slider, stderr, warning, printed]}],
          "metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {"state": state}}}}
    assert clean_notebooks.clean(nb) == 2
    assert nb["cells"][0]["outputs"] == [slider, warning, printed]
    kept = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert set(kept) == {"bb22", "dd44"}  # the slider and what it refers to; the bar's models are gone
