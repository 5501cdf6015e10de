"""Probe (2026-12-03): libgomp's GOMP_SPINCOUNT against OpenMP's default and PASSIVE, idle and with BUSY spinning processes.

    python benchmarks/probe_spincount.py digits 0      # the digits cpu UNet, idle cores
    python benchmarks/probe_spincount.py mnist 1       # the MNIST one, one busy process

Each setting is a fresh process timing 15 training steps at batch 64 (`bench_threads.worker`), 3 interleaved repeats;
prints the median and its ratio to the best setting. The table in benchmarks/README.md ("A candidate not yet adopted")
came from it.
"""
from __future__ import annotations

import statistics
import sys

import bench_threads

SETTINGS = {"default": {"threads": 0, "policy": None}, "PASSIVE": {"threads": 0, "policy": "PASSIVE"},
            **{f"spin{name}": {"threads": 0, "policy": None, "spin": count}
               for name, count in (("1e3", "1000"), ("1e4", "10000"), ("3e4", "30000"), ("1e5", "100000"))}}


def main(data: str = "digits", busy: int = 0, steps: int = 15, repeats: int = 3) -> dict[str, float]:
    spinners = bench_threads.spin(busy)
    try:
        runs = bench_threads.measure(data, 64, steps, repeats, candidates=SETTINGS)
    finally:
        bench_threads.stop(spinners)
    med = {k: statistics.median(v) for k, v in runs.items()}
    best = min(med.values())
    print(data, "busy", busy, {k: f"{v * 1000:.1f}ms x{v / best:.2f}" for k, v in med.items()})
    return med


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "digits", int(sys.argv[2]) if len(sys.argv) > 2 else 0)
