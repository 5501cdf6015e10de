"""Execute the notebooks with papermill at one preset and collect their results in one summary.

    python scripts/rerun.py --preset cpu                 # every notebook -> runs/cpu/
    python scripts/rerun.py --preset smoke -n 01 04      # notebooks whose names start with 01 or 04

Each executed notebook goes to <out>/<name>.ipynb and its figures to <out>/figures/ (the committed
figures/ are left alone). The experiments write their result files (results*.json) under
runs/<preset>/<data>/ (or $PFDM_RUNS/<preset>/<data>/); every one written during this rerun is
gathered into <out>/summary.json together with each notebook's status and wall time.
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


def rerun(preset: str, prefixes: list[str] | None = None, out: Path | None = None, kernel: str = "python3") -> dict:
    import papermill as pm

    from pfdm_core.presets import PRESETS
    from pfdm_core.recipes import runs_dir

    if preset not in PRESETS:
        raise SystemExit(f"rerun: unknown preset {preset!r}; allowed: {', '.join(PRESETS)}")
    out = Path(out or REPO / "runs" / preset)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["PFDM_PRESET"] = preset  # notebooks resolve their preset through it
    os.environ["PFDM_FIGURES"] = str((out / "figures").resolve())
    start, report = time.time(), {"preset": preset, "notebooks": [], "results": {}}
    for nb in notebooks(prefixes):
        t = time.perf_counter()
        try:
            pm.execute_notebook(nb, out / nb.name, parameters={"preset": preset}, cwd=REPO / "notebooks",
                                kernel_name=kernel, progress_bar=False)
            status = "ok"
        except Exception as err:  # a failing notebook is reported; the others still run
            status = f"failed: {type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
        report["notebooks"].append({"notebook": nb.name, "status": status, "seconds": round(time.perf_counter() - t, 1)})
        print(f"{nb.name}: {status} ({report['notebooks'][-1]['seconds']} s)", flush=True)
    for path in sorted((runs_dir() / preset).glob("**/results*.json")):
        if path.stat().st_mtime >= start:
            report["results"][str(path.relative_to(runs_dir()))] = json.loads(path.read_text())["rows"]
    (out / "summary.json").write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu", help="smoke | cpu | paper")
    p.add_argument("-n", "--notebooks", nargs="*", default=None, help="name prefixes, e.g. 01 04 (default: all)")
    p.add_argument("--out", default=None, help="folder of the executed notebooks (default runs/<preset>)")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    args = p.parse_args(argv)
    report = rerun(args.preset, args.notebooks, Path(args.out) if args.out else None, args.kernel)
    failed = [n["notebook"] for n in report["notebooks"] if n["status"] != "ok"]
    print(f"summary: {len(report['notebooks']) - len(failed)} ok, {len(failed)} failed; "
          f"{len(report['results'])} result files -> {(Path(args.out) if args.out else REPO / 'runs' / args.preset)}/summary.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
