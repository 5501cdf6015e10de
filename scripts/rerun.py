"""Execute the notebooks with papermill at one preset and collect their results in one summary.

    python scripts/rerun.py --preset cpu                 # every notebook -> runs/cpu/
    python scripts/rerun.py --preset smoke -n 01 04      # notebooks whose names start with 01 or 04
    python scripts/rerun.py --tour --out runs/default    # `make run`: the tour (TOUR below)

The tour is what `make run` executes: the teaching notebooks 01-04 at `cpu` (notebook 02 with fewer
samples for its metrics, notebook 04 with PFDM and local-only, one seed, no t0 sweep), the
federated-scale notebooks 05-10 at `smoke`, each with its parameters passed to papermill (so every
executed notebook shows them in its injected-parameters cell). It runs in the two LANES below at
once, each notebook's kernel on one thread; a `--preset` rerun executes the notebooks one after the
other. It checks on a laptop that every notebook runs end to end, with real training where it takes
minutes; the `cpu` results (hours of training on 2 cores, committed as the executed notebooks and
under runs/cpu/) come from `--preset cpu`.

Each executed notebook goes to <out>/<name>.ipynb and its figures to <out>/figures/ (the committed
figures/ are left alone). The experiments write their result files (results*.json) under
runs/<preset>/<data>/ (or $PFDM_RUNS/<preset>/<data>/; with --tour $PFDM_RUNS defaults to <out>, so
the tour's models and results never replace the committed runs/cpu/ ones); every one written during
this rerun is gathered into <out>/summary.json together with each notebook's parameters, status and
wall time, and the total.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def notebooks(prefixes: list[str] | None) -> list[Path]:
    found = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    chosen = [p for p in found if not prefixes or any(p.name.startswith(x) for x in prefixes)]
    if not chosen:
        raise SystemExit(f"rerun: no notebook matches {prefixes}; have {[p.name for p in found]}")
    return chosen


RECORD = REPO / "benchmarks" / "tour.json"  # the measured tour behind the README's times (--record)

# `make run`: notebook-name prefix -> papermill parameters. Measured on 2 idle cores: see benchmarks/README.md's
# Performance section; `--record benchmarks/tour.json` keeps its measured times (tests/test_calibrate.py).
TOUR: dict[str, dict] = {
    "01": {"preset": "cpu"},
    # DDPM-vs-DDIM metrics on 100 samples (cpu: 600): its 1000-step DDPM of 200 took 90 s of the lane (2026-12-04)
    "02": {"preset": "cpu", "n_per_class": 10},
    "03": {"preset": "cpu"},  # reuses notebook 02's model
    # PFDM vs local-only, one seed, no t0 sweep; all four methods x 3 seeds + sweep: `--preset cpu` (13-17 min)
    "04": {"preset": "cpu", "seeds": [0], "sweep_t0s": [], "methods": ["pfdm", "local"]},
    "05": {"preset": "smoke"},  # cpu: ~1.5-2 h (MNIST; Colorized MNIST is not trained at cpu)
    "06": {"preset": "smoke"},  # cpu with CIFAR-10: ~1 h (estimate)
    "07": {"preset": "smoke"},  # cpu: ~10 min
    "08": {"preset": "smoke"},  # cpu: ~15 min after notebook 04
    "09": {"preset": "smoke"},  # cpu: ~8 min
    "10": {"preset": "smoke"},  # cpu: ~1 h of training (the ablation), minutes from cache
}


# `make run` executes the tour in two lanes at once, every kernel on one thread on 2 cores (`lane_env`). On 2 cores
# two one-thread notebooks side by side beat one notebook on two threads: in a tour in lanes 02 and 04 took 297 and
# 258 s side by side, against 248 + 231 s one after the other (AMD EPYC, 2026-12-04; the small UNets' steps gain only
# 1.3-1.6x from a second thread, and imports, kernel and Flower process start-ups gain nothing). Within a lane the
# order keeps a reuse: 03 loads 02's DDPM, 09's in-process run loads 08's smoke models (runs/smoke/digits).
# Balanced on the one-thread times of a tour in lanes (benchmarks/tour.json): each lane is about half of it.
LANES: tuple[tuple[str, ...], ...] = (("02", "03", "05", "06", "10", "01"), ("04", "08", "09", "07"))


def lane_env(lanes: int) -> dict[str, str]:
    """What each lane's kernels run with: the usable cores shared out (one thread each on 2 cores), pinned."""
    threads = str(max(1, len(os.sched_getaffinity(0)) // lanes) if hasattr(os, "sched_getaffinity") else 1)
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PFDM_THREADS": "fixed"}


def tour_parameters(name: str) -> dict:
    """The tour's papermill parameters of notebook `name` (e.g. "04_pfdm_digits.ipynb")."""
    for prefix, params in TOUR.items():
        if name.startswith(prefix):
            return dict(params)
    raise SystemExit(f"rerun: notebook {name} has no entry in the tour (scripts/rerun.py TOUR)")


def run_lane(lane: list[Path], index: int, out: Path, kernel: str, env: dict[str, str],
             preset: str | None = None) -> list[dict]:
    """Execute the notebooks of one lane in order (preset None: each at its tour parameters), with `env` set."""
    import clean_notebooks  # scripts/, next to this file
    import papermill as pm

    os.environ.update(env)  # inherited by the kernels (and their subprocesses: notebook 09's Flower nodes)
    records = []
    for nb in lane:
        params = {"preset": preset} if preset else tour_parameters(nb.name)
        t = time.perf_counter()
        try:
            pm.execute_notebook(nb, out / nb.name, parameters=params, cwd=REPO / "notebooks",
                                kernel_name=kernel, progress_bar=False)
            clean_notebooks.main([str(out / nb.name)])  # no progress bars frozen at 0% in what is kept
            status = "ok"
        except Exception as err:  # a failing notebook is reported; the others still run
            status = f"failed: {type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
        records.append({"notebook": nb.name, "parameters": params, "status": status, "lane": index,
                        "seconds": round(time.perf_counter() - t, 1)})
        print(f"{nb.name}: {status} ({records[-1]['seconds']} s, lane {index})", flush=True)
    return records


def rerun(preset: str | None, prefixes: list[str] | None = None, out: Path | None = None, kernel: str = "python3") -> dict:
    """Every chosen notebook at `preset`, or (preset None) at its tour parameters."""
    from pfdm_core.core.checkpoint import write_json
    from pfdm_core.core.paths import runs_dir
    from pfdm_core.core.presets import ENV_VAR
    from pfdm_core.core.presets import NAMES as PRESETS

    if preset is not None and preset not in PRESETS:
        raise SystemExit(f"rerun: unknown preset {preset!r}; allowed: {', '.join(PRESETS)}")
    out = Path(out or REPO / "runs" / (preset or "default"))
    out.mkdir(parents=True, exist_ok=True)
    if preset is None:
        os.environ.pop(ENV_VAR, None)  # the tour's per-notebook presets must not be overridden
        # its models and results stay beside the tour, never over the committed runs/cpu/ results
        os.environ.setdefault("PFDM_RUNS", str(out.resolve()))
    else:
        os.environ[ENV_VAR] = preset  # notebooks resolve their preset through it
    os.environ["PFDM_FIGURES"] = str((out / "figures").resolve())
    from pfdm_core.core import calibrate

    # the calibration workload before the first and after the last notebook: every time is also a ratio to it
    calibration = [calibrate.step_seconds()]
    start, report = time.time(), {"preset": preset or "tour", "notebooks": [], "results": {}}
    chosen = notebooks(prefixes)
    if preset is None:  # the tour: its lanes, side by side, each in its own process
        lanes = [(i, [nb for p in lane for nb in chosen if nb.name.startswith(p)]) for i, lane in enumerate(LANES)]
        lanes = [(i, lane) for i, lane in lanes if lane]  # each keeps its index in LANES
        if len(lanes) > 1:
            import multiprocessing

            with multiprocessing.get_context("spawn").Pool(len(lanes)) as pool:
                env = lane_env(len(lanes))
                done = pool.starmap(run_lane, [(lane, i, out, kernel, env) for i, lane in lanes])
        else:  # one lane left (-n): this process, on every thread
            done = [run_lane(lane, i, out, kernel, {}) for i, lane in lanes]
        report["notebooks"] = sorted((n for lane in done for n in lane), key=lambda n: n["notebook"])
    else:
        report["notebooks"] = run_lane(chosen, 0, out, kernel, {}, preset)
    report["total_seconds"] = round(time.time() - start, 1)
    calibration.append(calibrate.step_seconds())
    step = round(sum(calibration) / len(calibration), 5)  # the recorded value is the one every ratio uses
    report["calibration"] = {"workload": calibrate.WORKLOAD, "s_per_step": [round(c, 5) for c in calibration],
                             "mean_s_per_step": step}
    report["machine"] = calibrate.machine()
    report["total_over_calibration"] = round(report["total_seconds"] / step)
    for n in report["notebooks"]:
        n["over_calibration"] = round(n["seconds"] / step)
    for path in sorted(runs_dir().glob("*/**/results*.json")):
        if path.stat().st_mtime >= start:
            try:
                rows = json.loads(path.read_text())["rows"]
            except (ValueError, KeyError, TypeError) as err:  # a damaged results file is reported, not fatal
                rows = f"unreadable ({type(err).__name__}): rerun the notebook that wrote {path}"
            report["results"][str(path.relative_to(runs_dir()))] = rows
    write_json(out / "summary.json", report)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default=None, help="smoke | cpu | paper (default cpu, unless --tour)")
    p.add_argument("--tour", action="store_true", help="`make run`: each notebook at its TOUR parameters")
    p.add_argument("-n", "--notebooks", nargs="*", default=None, help="name prefixes, e.g. 01 04 (default: all)")
    p.add_argument("--out", default=None, help="folder of the executed notebooks (default runs/<preset>)")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    p.add_argument("--record", default=None, help=f"with --tour: also write its times to this file (the README's "
                   f"are {RECORD.relative_to(REPO)}: scripts/doc_tables.py turns them into text)")
    args = p.parse_args(argv)
    if args.tour and args.preset:
        p.error("--tour runs each notebook at its own preset; drop --preset")
    if args.record and not (args.tour and args.notebooks is None):
        p.error("--record keeps the times of a whole tour: use it with --tour and without -n")
    preset = None if args.tour else (args.preset or "cpu")
    out = Path(args.out) if args.out else REPO / "runs" / (preset or "default")
    report = rerun(preset, args.notebooks, out, args.kernel)
    failed = [n["notebook"] for n in report["notebooks"] if n["status"] != "ok"]
    if args.record and not failed:
        from pfdm_core.core.checkpoint import write_json

        write_json(Path(args.record), {k: v for k, v in report.items() if k != "results"})
        print(f"recorded the tour's times in {args.record}")
    print(f"summary: {len(report['notebooks']) - len(failed)} ok, {len(failed)} failed in "
          f"{report['total_seconds'] / 60:.1f} min = {report['total_over_calibration']} calibration steps of "
          f"{report['calibration']['mean_s_per_step']:.3f} s; {len(report['results'])} result files -> {out}/summary.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
