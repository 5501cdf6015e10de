"""End to end: the time of each notebook at its defaults, and of `make run` (their sum).

* Default preset: read from the committed executed notebooks (papermill's
  `metadata.papermill.duration`, per notebook and per cell), not re-run here: at the `cpu` preset
  they take from seconds to two hours on 2 cores. Each notebook's share of `make run` is the
  ratio reported; the slowest cell of each says what dominates. These times were measured by
  whoever executed the notebook, on shared cores, some re-executed from cached checkpoints
  (see the README's notebook table).
* Smoke preset, live: every notebook executed with papermill at PFDM_PRESET=smoke (figures and
  checkpoints in a temporary folder; only with --live: 12 minutes on 2 busy cores on 2026-11-24,
  which does not fit `make bench`'s 10 minutes), each time as a ratio to a calibration workload measured in
  the same run (5 training steps of the MNIST `cpu` UNet at batch 64, median of the runs before
  and after), so that a slower or busier machine moves both sides. `--quick` skips the live runs.
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

from pfdm_core.diffusion import diffusion_loss  # noqa: E402
from pfdm_core.experiment import PRESETS  # noqa: E402
from pfdm_core.nets import UNet  # noqa: E402
from pfdm_core.schedule import Schedule  # noqa: E402

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
        r["share_of_make_run"] = (r["duration_s"] or 0) / total if total else None
        r["slowest_cell_share"] = r["slowest_cell_s"] / r["duration_s"] if r["duration_s"] else None
    return rows


def calibration(steps: int = 20, batch: int = 64):
    """A fixed workload: `steps` training steps of the MNIST cpu UNet (the reference of the ratios)."""
    net = PRESETS["mnist"]["cpu"].net
    torch.manual_seed(0)
    model, sched = UNet(net), Schedule(1000)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = torch.randn(batch, 1, net.image_size, net.image_size), torch.randint(0, 10, (batch,))

    def run() -> float:
        t = time.perf_counter()
        for _ in range(steps):
            loss = diffusion_loss(model, sched, x, y, 1, 1000)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - t
    return run


def run_notebook(path: Path, tmp: Path) -> tuple[float, bool, str]:
    env = {**os.environ, "PFDM_PRESET": "smoke", "PFDM_FIGURES": str(tmp / "figures"), "PFDM_RUNS": str(tmp / "runs"),
           "OMP_NUM_THREADS": str(torch.get_num_threads())}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "papermill", "--cwd", str(NOTEBOOKS), "--kernel", "python3",
                           str(path), str(tmp / path.name)], env=env, capture_output=True, text=True)
    return time.perf_counter() - t, proc.returncode == 0, proc.stderr[-500:] if proc.returncode else ""


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--live", action="store_true", help="also execute every notebook at smoke (about 12 min on 2 busy cores)")
    p.add_argument("--notebooks", nargs="*", default=None, help="live smoke runs of these only (e.g. 01 02); implies --live")
    args = p.parse_args(argv)
    common.setup_threads(args.threads)
    machine = common.machine()
    committed = committed_times()
    calib = calibration(2 if args.quick else 5, 8 if args.quick else 64)
    calib()  # warm-up
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
                live.append({"notebook": path.stem, "smoke_s": wall, "ok": ok, "error": err})
    calib_s.append(calib())
    ref = statistics.median(calib_s)
    for r in live:
        r["smoke_over_calibration"] = r["smoke_s"] / ref
    total_smoke = sum(r["smoke_s"] for r in live)
    by_name = {r["notebook"]: r for r in live}
    rows = [{**c, "smoke_s": by_name.get(c["notebook"], {}).get("smoke_s"),
             "smoke_ok": by_name.get(c["notebook"], {}).get("ok"),
             "smoke_over_calibration": by_name.get(c["notebook"], {}).get("smoke_over_calibration")} for c in committed]
    make_run_s = sum(r["duration_s"] or 0 for r in committed)
    payload = {"benchmark": "end_to_end", "quick": args.quick,
               "make_run_default_s": make_run_s, "make_run_default_min": make_run_s / 60,
               "make_run_missing": [r["notebook"] for r in committed if r["duration_s"] is None],
               "make_run_source": "sum of papermill durations of the committed executed notebooks (not re-run)",
               "calibration": {"workload": "5 train steps, MNIST cpu UNet, batch 64" if not args.quick else "quick",
                               "runs_s": calib_s, "median_s": ref},
               "smoke_total_s": total_smoke, "smoke_total_over_calibration": total_smoke / ref if live else None,
               "rows": rows, "machine": machine}
    path = common.write("end_to_end", payload, args.out)
    for r in rows:
        r["default_min"] = None if r["duration_s"] is None else r["duration_s"] / 60
    print(common.table(rows, ["notebook", "default_min", "share_of_make_run", "slowest_cell_share", "slowest_cell",
                              "smoke_s", "smoke_over_calibration"],
                       f"Notebooks: default preset (committed papermill times; sum = make run "
                       f"{make_run_s / 60:.1f} min) and live smoke runs (calibration {ref:.2f} s) — "
                       f"{common.machine_line(payload['machine'])}"))
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
