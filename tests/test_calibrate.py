"""The calibration workload (pfdm_core.core.calibrate) and the recorded tour behind the README's times."""
import json
import sys
from pathlib import Path

import pytest
import torch

from pfdm_core.cli import main
from pfdm_core.core import calibrate

REPO = Path(__file__).resolve().parent.parent


def test_step_seconds_is_a_positive_median_and_leaves_the_random_stream_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    s = calibrate.step_seconds(repeats=2, warmup=1, batch=8)
    assert 0 < s < 60
    assert torch.equal(torch.rand(3), expected)  # the caller's stream continues as if nothing ran


@pytest.mark.parametrize("kw", [{"repeats": 0}, {"warmup": -1}])
def test_step_seconds_refuses_bad_counts(kw):
    with pytest.raises(ValueError, match="repeats must be >= 1 and warmup >= 0"):
        calibrate.step_seconds(**kw)


def test_the_workload_is_notebook_04s_digits_step():
    from pfdm_core.core.nets import UNetConfig
    from pfdm_core.experiment import PRESETS

    cfg = PRESETS["digits"]["cpu"]
    assert UNetConfig(**calibrate.NET) == cfg.net
    assert (calibrate.BATCH, calibrate.LR, calibrate.T) == (cfg.train.batch_size, cfg.train.lr, cfg.T)


def test_machine_names_the_cpu_and_cores():
    m = calibrate.machine()
    assert m["cpu"] and m["cores"] >= 1 and m["torch"] == torch.__version__ and m["date"].endswith("UTC")


def test_cli_calibrate(capsys, monkeypatch):
    monkeypatch.setattr(calibrate, "step_seconds", lambda: 0.125)
    assert main(["calibrate"]) == 0
    assert "0.1250 s per calibration step" in capsys.readouterr().out


def test_the_recorded_tour_is_the_tour_of_today():
    """benchmarks/tour.json (the README's `make run` times) was measured with today's TOUR on every notebook:
    changing a notebook's tour parameters, or adding a notebook, asks for a new measurement."""
    sys.path.insert(0, str(REPO / "scripts"))
    import rerun

    rec = json.loads(rerun.RECORD.read_text())
    names = [p.name for p in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
    assert rec["preset"] == "tour" and [n["notebook"] for n in rec["notebooks"]] == names
    assert [n["parameters"] for n in rec["notebooks"]] == [rerun.tour_parameters(n) for n in names]
    assert all(n["status"] == "ok" for n in rec["notebooks"])
    step = rec["calibration"]["mean_s_per_step"]
    assert step == pytest.approx(sum(rec["calibration"]["s_per_step"]) / len(rec["calibration"]["s_per_step"]), abs=1e-5)
    assert rec["total_over_calibration"] == round(rec["total_seconds"] / step)
    assert sorted({n["lane"] for n in rec["notebooks"]}) == list(range(len(rerun.LANES)))
    for lane, prefixes in enumerate(rerun.LANES):  # each lane ran its notebooks one after the other within the total
        ran = [n for n in rec["notebooks"] if n["lane"] == lane]
        assert sorted(n["notebook"][:2] for n in ran) == sorted(prefixes)
        assert sum(n["seconds"] for n in ran) <= rec["total_seconds"] + 0.05 * len(ran)  # each rounded to 0.1 s
    assert all(n["over_calibration"] == round(n["seconds"] / step) for n in rec["notebooks"])
