"""Shared helpers of the benchmarks: machine description, interleaved timing, JSON and tables.

Every speed figure of the benchmarks is a RATIO of two timings taken in the same process and
interleaved (A, B, A, B, ...), each the median of several repeats: background load on shared
cores then slows both sides alike and cancels out of the ratio, while absolute seconds do not.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/bench_x.py` from anywhere
    sys.path.insert(0, str(REPO))

# OMP_WAIT_POLICY (spin on idle cores, sleep on busy ones: pfdm_core/core/omp.py) is chosen before torch loads
# OpenMP, as in the notebooks; an explicit setting in the environment wins.
from pfdm_core.core import omp  # noqa: E402

omp.apply()

import torch  # noqa: E402


def default_out() -> Path:
    return Path(os.environ.get("PFDM_BENCH_OUT") or REPO / "runs" / "bench")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds (for the tests)")
    p.add_argument("--out", type=Path, default=None, help="folder of the JSON (default runs/bench, $PFDM_BENCH_OUT)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core, the default)")
    return p


def setup_threads(threads: int = 0) -> int:
    """torch intra-op threads = the cores this process may use (or `threads`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n = threads or cores
    torch.set_num_threads(max(1, int(n)))
    return torch.get_num_threads()


def machine() -> dict:
    """What ran the benchmark: CPU model, cores, torch, threads, date, load."""
    from pfdm_core.core.calibrate import machine as base

    return {**base(), "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def machine_line(m: dict) -> str:
    return (f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['threads']} threads, "
            f"OMP_WAIT_POLICY={m.get('omp_wait_policy')}), load {m['loadavg_start'][0]:.1f}, {m['date']}")


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, dict]:
    """Time each candidate `repeats` times, round-robin (A B C A B C ...), after `warmup` calls each.

    Returns {name: {"median_s", "times_s"}}; compare candidates only through ratios of medians."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(repeats):
        for k, fn in candidates.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: {"median_s": statistics.median(v), "times_s": v} for k, v in times.items()}


def table(rows: list[dict], cols: list[str], title: str = "") -> str:
    """A Markdown table of rows (dicts) over cols; floats with 3 significant decimals."""
    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return "" if v is None else str(v)
    lines = [f"### {title}"] if title else []
    lines += ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def write(name: str, payload: dict, out: Path | None = None) -> Path:
    """runs/bench/<name>.json (or out/<name>.json), with the machine's end load added."""
    out = Path(out) if out else default_out()
    out.mkdir(parents=True, exist_ok=True)
    payload.setdefault("machine", machine())
    payload["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path
