"""Each benchmark runs in quick mode (seconds) and writes its JSON with the ratio fields."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(tmp_path, monkeypatch):
    """Import a benchmark module; its checkpoints (PFDM_RUNS) and JSON go to tmp_path."""
    monkeypatch.setenv("PFDM_RUNS", str(tmp_path / "runs"))
    monkeypatch.syspath_prepend(str(BENCH))

    def run(name: str, *args: str) -> dict:
        module = importlib.import_module(name)
        module.main(["--quick", "--out", str(tmp_path), "--threads", "1", *args])
        return json.loads((tmp_path / f"{module_json[name]}.json").read_text())
    return run


module_json = {"bench_threads": "threads", "bench_unet": "unet", "bench_sampling": "sampling", "bench_end_to_end": "end_to_end",
               "bench_pfdm_vs_baselines": "pfdm", "bench_mfu": "mfu"}


def _machine_ok(out: dict) -> None:
    m = out["machine"]
    assert m["cores"] >= 1 and m["date"] and m["torch"]


def test_interleaved_ratios_and_table():
    sys.path.insert(0, str(BENCH))
    import common

    res = common.interleaved({"a": lambda: sum(range(100)), "b": lambda: sum(range(1000))}, repeats=3)
    assert set(res) == {"a", "b"} and all(len(v["times_s"]) == 3 and v["median_s"] > 0 for v in res.values())
    text = common.table([{"x": 1.23456, "y": None}], ["x", "y"], "t")
    assert "| 1.23 |  |" in text


def test_bench_unet_diffusers(bench):
    pytest.importorskip("diffusers", reason="diffusers not installed (benchmark-only dependency): "
                                            "the UNet vs diffusers comparison needs `pip install diffusers`")
    out = bench("bench_unet")
    _machine_ok(out)
    row = out["rows"][0]
    assert row["params_diffusers"] == row["params_pfdm"]  # the same DDPM layout at width 32
    assert row["ratio_pfdm_over_diffusers"] > 0 and row["img_s_pfdm"] > 0


def test_bench_unet_without_diffusers(bench, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    out = bench("bench_unet")
    assert out["diffusers"] is None and "not installed" in out["note"]
    assert out["rows"][0]["ratio_pfdm_over_diffusers"] is None and out["rows"][0]["img_s_pfdm"] > 0


def test_bench_sampling(bench):
    out = bench("bench_sampling")
    _machine_ok(out)
    rows = {(r["sampler"], r["steps"]): r for r in out["rows"]}
    assert set(rows) == {("ddpm", 1000), ("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddim", 100)}
    assert rows[("ddpm", 1000)]["time_ratio_vs_ddpm"] == 1.0
    assert rows[("ddim", 10)]["speedup_vs_ddpm"] > 1  # 100x fewer network calls
    assert all(r["fid"] >= 0 for r in out["rows"])
    assert out["slicing"]["speedup_sliced_vs_one_batch"] > 0
    assert out["knee_ddim_steps"] in (10, 25, 50, 100, None) and "default_is_knee" in out


def test_knee_rule():
    sys.path.insert(0, str(BENCH))
    import bench_sampling

    rows = [{"sampler": "ddpm", "steps": 1000, "fid": 10.0}, {"sampler": "ddim", "steps": 10, "fid": 20.0},
            {"sampler": "ddim", "steps": 25, "fid": 10.5}, {"sampler": "ddim", "steps": 50, "fid": 9.8}]
    assert bench_sampling.knee(rows) == 25


def test_bench_end_to_end(bench):
    out = bench("bench_end_to_end")
    _machine_ok(out)
    names = [r["notebook"] for r in out["rows"]]
    assert names == sorted(names) and any(n.startswith("01_") for n in names)
    shares = [r["share_of_cpu_total"] for r in out["rows"] if r["share_of_cpu_total"] is not None]
    assert abs(sum(shares) - 1) < 1e-9 and out["cpu_total_s"] > 0
    assert out["calibration"]["median_s"] > 0
    assert all(r["tour_parameters"]["preset"] in ("smoke", "cpu") for r in out["rows"])  # make run's tour


def test_bench_end_to_end_reads_the_last_make_run(tmp_path):
    sys.path.insert(0, str(BENCH))
    import bench_end_to_end

    summary = tmp_path / "summary.json"
    assert bench_end_to_end.last_make_run(summary) == []
    summary.write_text(json.dumps({"preset": "cpu", "notebooks": [{"notebook": "01_a.ipynb", "seconds": 3, "status": "ok"}]}))
    assert bench_end_to_end.last_make_run(summary) == []  # a `--preset cpu` rerun is not make run
    summary.write_text(json.dumps({"preset": "tour", "notebooks": [{"notebook": "01_a.ipynb", "seconds": 3, "status": "ok"},
                                                                   {"notebook": "02_b.ipynb", "seconds": 5, "status": "failed: x"}]}))
    assert bench_end_to_end.last_make_run(summary) == [  # an older summary: no calibration recorded
        {"notebook": "01_a", "tour_s": 3, "ok": True, "tour_over_calibration": None},
        {"notebook": "02_b", "tour_s": 5, "ok": False, "tour_over_calibration": None}]
    summary.write_text(json.dumps({"preset": "tour", "notebooks": [
        {"notebook": "01_a.ipynb", "seconds": 3, "status": "ok", "over_calibration": 30}]}))
    assert bench_end_to_end.last_make_run(summary)[0]["tour_over_calibration"] == 30  # make run's own ratio


def test_bench_pfdm_vs_baselines(bench):
    out = bench("bench_pfdm_vs_baselines")
    _machine_ok(out)
    methods = [r["method"] for r in out["rows"]]
    assert any(m.startswith("PFDM") for m in methods) and "local-only" in methods
    assert all(r["client_compute_vs_local"] >= 0 for r in out["rows"])
    default = out["rows"][0]
    assert default["fid_minor_vs_default"] == 1.0 and default["bytes_vs_pfdm"] == 1.0
    for b in out["bytes"]:
        assert b["fedavg_over_pfdm"] > 0 and b["pfdm_up"] == b["images"] * (b["dim"] * 4 + 8)


def test_bench_threads(bench):
    out = bench("bench_threads")
    _machine_ok(out)
    rows = {r["setting"]: r for r in out["rows"]}
    assert rows["OpenMP default (N threads, idle ones spin)"]["speedup_vs_default"] == 1.0
    assert all(r["speedup_vs_default"] > 0 for r in out["rows"]) and len(rows) == len(sys.modules["bench_threads"].CANDIDATES) + 1  # + the pick
    picked = next(r for r in out["rows"] if r["setting"].startswith("pfdm_core picks: "))
    assert rows[picked["setting"].removeprefix("pfdm_core picks: ")]["median_s_per_step"] == picked["median_s_per_step"]


def test_bench_mfu(bench):
    """MFU is measured FLOPs per second over the same run's matmul rate; the step's time is broken down."""
    out = bench("bench_mfu")
    _machine_ok(out)
    (row,) = out["rows"]
    assert row["gflop_per_step"] > 0 and row["s_per_step"] > 0 and out["matmul_gflop_s"] > 0
    assert row["mfu"] == pytest.approx(row["gflop_s"] / row["matmul_gflop_s"])
    shares = {k: v for k, v in row["breakdown"].items() if k != "wall_s"}
    assert all(0 <= v <= 1.5 for v in shares.values()) and shares["convolution"] > 0
    assert out["calibration_digits_step_s"] > 0  # pfdm_core.core.calibrate, timed in the same run


def test_bench_threads_worker_with_a_load_that_appears_mid_run(monkeypatch):
    """The mid-run scenario: a CPU-bound process starts halfway through the timed steps; the worker reports the
    medians before and after, `measure` collects them per setting, and the spinner is gone when it returns."""
    import subprocess

    monkeypatch.syspath_prepend(str(BENCH))
    import bench_threads

    runs = bench_threads.measure("digits", 4, 4, 1, midrun=1)
    assert set(runs) == set(bench_threads.CANDIDATES)
    assert all(len(v) == 1 and min(v[0]) > 0 for v in runs.values()), runs

    out = subprocess.run([sys.executable, str(BENCH / "bench_threads.py"), "--worker", "1", "4", "4", "digits", "1"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    r = json.loads(out.strip().splitlines()[-1])
    assert r["s_per_step_before"] > 0 and r["s_per_step_after"] > 0 and r["threads"] == 1
    left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if b"while True: pass" in _read_bytes(p)]
    assert not left, left


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""
