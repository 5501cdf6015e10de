"""Probe (2026-12-03): libgomp's GOMP_SPINCOUNT against OpenMP's default and PASSIVE, idle and with BUSY spinning processes.

    python benchmarks/probe_spincount.py digits 0      # the digits cpu UNet, idle cores
    python benchmarks/probe_spincount.py mnist 1       # the MNIST one, one busy process

Each setting is a fresh process timing 15 training steps at batch 64 (`bench_threads.worker`), 3 interleaved repeats;
prints the median and its ratio to the best setting. The table in benchmarks/README.md ("A candidate not yet adopted")
came from it.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = {"default": {}, "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}, "spin1e3": {"GOMP_SPINCOUNT": "1000"},
            "spin1e4": {"GOMP_SPINCOUNT": "10000"}, "spin3e4": {"GOMP_SPINCOUNT": "30000"},
            "spin1e5": {"GOMP_SPINCOUNT": "100000"}}


def main(data: str = "digits", busy: int = 0, steps: int = 15, repeats: int = 3) -> dict[str, float]:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        runs: dict[str, list[float]] = {k: [] for k in SETTINGS}
        for _ in range(repeats):
            for name, extra in SETTINGS.items():
                env = {k: v for k, v in os.environ.items()
                       if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")} | extra
                out = subprocess.run([sys.executable, str(HERE / "bench_threads.py"), "--worker", "0", str(steps), "64",
                                      data], env=env, capture_output=True, text=True, check=True).stdout
                runs[name].append(json.loads(out.strip().splitlines()[-1])["s_per_step"])
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    med = {k: statistics.median(v) for k, v in runs.items()}
    best = min(med.values())
    print(data, "busy", busy, {k: f"{v * 1000:.1f}ms x{v / best:.2f}" for k, v in med.items()})
    return med


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "digits", int(sys.argv[2]) if len(sys.argv) > 2 else 0)
