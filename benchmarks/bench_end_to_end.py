"""End to end: the time of each notebook, at the `cpu` preset and in `make run` (the tour).

* `cpu` preset: read from the committed executed notebooks (papermill's `metadata.papermill.duration`,
  per notebook and per cell), not re-run here: at `cpu` they take from seconds to two hours on 2 cores.
  Each notebook's share of the sum is reported; the slowest cell of each says what dominates. These
  times were measured by whoever executed the notebook, on shared cores, some from cached checkpoints
  (see the README's learning path).
* `make run`: the tour (`TOUR` in scripts/rerun.py: 01-04 at `cpu`, some with lighter parameters; 05-10 at `smoke`).
  With --live it is executed here, notebook by notebook in a temporary folder at the tour's parameters,
  each alone on every thread (`make run` runs two lanes of one thread side by side: its times are in
  benchmarks/tour.json; about 15 minutes on 2 idle cores: more than `make bench`'s 10, hence opt-in), each time also
  as a ratio to the calibration workload measured in the same run (`pfdm_core.core.calibrate`: seconds
  per digits training step, median of the measurements before and after each notebook), so that a
  slower or busier machine moves both sides. Without --live the times of the last `make run` are read
  from its summary.json (runs/default/summary.json) when there is one, with the ratios to the
  calibration that `make run` measured itself. `--quick` skips the live runs.
Writes runs/bench/end_to_end.json.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(common.REPO / "scripts"))
import rerun  # noqa: E402

from pfdm_core.core import calibrate  # noqa: E402

NOTEBOOKS = common.REPO / "notebooks"


def committed_times(folder: Path = NOTEBOOKS) -> list[dict]:
    """Per notebook: papermill's duration, parameters, start time and the slowest cell."""
    rows = []
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text())
        pm = nb.get("metadata", {}).get("papermill", {})
        cells = [(c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0, "".join(c.get("source", "")))
                 for c in nb.get("cells", []) if c.get("cell_type") == "code"]
        slowest = max(cells, default=(0.0, ""))
        rows.append({"notebook": path.stem, "duration_s": pm.get("duration"), "parameters": pm.get("parameters") or {},
                     "executed": (pm.get("start_time") or "")[:16], "slowest_cell_s": slowest[0],
                     "slowest_cell": slowest[1].splitlines()[0][:80] if slowest[1] else ""})
    total = sum(r["duration_s"] or 0 for r in rows)
    for r in rows:
        r["share_of_cpu_total"] = (r["duration_s"] or 0) / total if total else None
        r["slowest_cell_share"] = r["slowest_cell_s"] / r["duration_s"] if r["duration_s"] else None
    return rows


def run_notebook(path: Path, tmp: Path) -> tuple[float, bool, str]:
    """Execute `path` at its tour parameters as `make run` does (own process, models and figures under tmp)."""
    env = {**os.environ, "PFDM_FIGURES": str(tmp / "figures"), "PFDM_RUNS": str(tmp / "runs"),
           "OMP_NUM_THREADS": str(torch.get_num_threads())}
    env.pop("PFDM_PRESET", None)
    params = ["-y", json.dumps(rerun.tour_parameters(path.name))]  # JSON is YAML
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "papermill", "--cwd", str(NOTEBOOKS), "--kernel", "python3",
                           *params, str(path), str(tmp / path.name)], env=env, capture_output=True, text=True)
    return time.perf_counter() - t, proc.returncode == 0, proc.stderr[-500:] if proc.returncode else ""


def last_make_run(summary: Path = common.REPO / "runs" / "default" / "summary.json") -> list[dict]:
    """Per notebook: seconds and status of the last `make run` (its summary.json), [] when there is none."""
    if not summary.exists():
        return []
    report = json.loads(summary.read_text())
    if report.get("preset") != "tour":
        return []
    return [{"notebook": Path(n["notebook"]).stem, "tour_s": n["seconds"], "ok": n["status"] == "ok",
             "tour_over_calibration": n.get("over_calibration")} for n in report["notebooks"]]


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--live", action="store_true", help="also execute the tour of `make run` (about 15 min on 2 idle cores)")
    p.add_argument("--notebooks", nargs="*", default=None, help="live tour runs of these only (e.g. 01 02); implies --live")
    args = p.parse_args(argv)
    common.setup_threads(args.threads)
    machine = common.machine()
    committed = committed_times()
    def calib() -> float:
        return calibrate.step_seconds(3, 1) if args.quick else calibrate.step_seconds()

    calib_s = [calib()]
    live = []
    if not args.quick and (args.live or args.notebooks):
        paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
        if args.notebooks:
            paths = [q for q in paths if q.stem[:2] in args.notebooks]
        with tempfile.TemporaryDirectory() as tmp:
            for path in paths:
                wall, ok, err = run_notebook(path, Path(tmp))
                calib_s.append(calib())
                live.append({"notebook": path.stem, "tour_s": wall, "ok": ok, "error": err})
    calib_s.append(calib())
    ref = statistics.median(calib_s)
    tour, source = (live, "live, this run") if live else (last_make_run(), "runs/default/summary.json (last make run)")
    for r in live:
        r["tour_over_calibration"] = r["tour_s"] / ref
    by_name = {r["notebook"]: r for r in tour}
    rows = [{**c, "tour_parameters": rerun.tour_parameters(c["notebook"] + ".ipynb"),
             "tour_s": by_name.get(c["notebook"], {}).get("tour_s"), "tour_ok": by_name.get(c["notebook"], {}).get("ok"),
             "tour_over_calibration": by_name.get(c["notebook"], {}).get("tour_over_calibration")} for c in committed]
    cpu_total = sum(r["duration_s"] or 0 for r in committed)
    make_run_s = sum(r["tour_s"] for r in tour) if tour and len(tour) == len(committed) else None
    payload = {"benchmark": "end_to_end", "quick": args.quick,
               "cpu_total_s": cpu_total, "cpu_total_min": cpu_total / 60,
               "cpu_missing": [r["notebook"] for r in committed if r["duration_s"] is None],
               "cpu_source": "sum of papermill durations of the committed executed notebooks (not re-run)",
               "make_run_s": make_run_s, "make_run_min": None if make_run_s is None else make_run_s / 60,
               "make_run_source": source if tour else None,
               "calibration": {"workload": calibrate.WORKLOAD + (" (quick)" if args.quick else ""),
                               "runs_s": calib_s, "median_s": ref},
               "rows": rows, "machine": machine}
    path = common.write("end_to_end", payload, args.out)
    for r in rows:
        r["cpu_min"] = None if r["duration_s"] is None else r["duration_s"] / 60
        r["tour_preset"] = r["tour_parameters"].get("preset")
    make_run = "not measured" if make_run_s is None else f"{make_run_s / 60:.1f} min ({source})"
    print(common.table(rows, ["notebook", "cpu_min", "share_of_cpu_total", "slowest_cell_share", "slowest_cell",
                              "tour_preset", "tour_s", "tour_over_calibration"],
                       f"Notebooks: cpu preset (committed papermill times; sum {cpu_total / 60:.1f} min) and make run's "
                       f"tour (sum {make_run}; calibration {ref:.3f} s per digits step) — {common.machine_line(payload['machine'])}"))
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
