"""Run every benchmark in order (`make bench`), print their tables, write runs/bench/*.json.

    python benchmarks/run_all.py [--quick] [--live] [--out DIR] [--only threads unet sampling pfdm mfu end_to_end]

Each benchmark runs in its own process (a crash in one does not stop the others); the total
wall time is written to runs/bench/all.json. Budget: under 10 minutes on 2 cores.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BENCHMARKS = {"threads": "bench_threads.py", "unet": "bench_unet.py", "sampling": "bench_sampling.py",
              "pfdm": "bench_pfdm_vs_baselines.py", "mfu": "bench_mfu.py", "end_to_end": "bench_end_to_end.py"}


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=list(BENCHMARKS), default=None)
    p.add_argument("--live", action="store_true", help="end_to_end also executes make run's tour (+15-20 min)")
    args = p.parse_args(argv)
    out = args.out or common.default_out()
    extra = (["--quick"] if args.quick else []) + ["--out", str(out)] + (["--threads", str(args.threads)] if args.threads else [])
    results, start = {}, time.perf_counter()
    for name in args.only or BENCHMARKS:
        print(f"\n== {name}", flush=True)
        t = time.perf_counter()
        live = ["--live"] if args.live and name == "end_to_end" else []
        rc = subprocess.call([sys.executable, str(Path(__file__).parent / BENCHMARKS[name]), *extra, *live])
        results[name] = {"rc": rc, "wall_s": time.perf_counter() - t}
    total = time.perf_counter() - start
    common.write("all", {"benchmark": "all", "quick": args.quick, "results": results, "wall_s": total}, out)
    print("\n" + common.table([{"benchmark": k, **v} for k, v in results.items()] + [{"benchmark": "total", "wall_s": total}],
                              ["benchmark", "rc", "wall_s"], "make bench"))
    return int(any(v["rc"] for v in results.values()))


if __name__ == "__main__":
    sys.exit(main())
