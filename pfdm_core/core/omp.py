"""OpenMP's wait policy, chosen once per process before torch starts its thread pool.

torch runs one OpenMP thread per core; between two operators its idle threads either spin
(OpenMP's default) or sleep (`OMP_WAIT_POLICY=PASSIVE`). Measured with benchmarks/bench_threads.py
on 2 cores (benchmarks/README.md, Performance): on idle cores spinning is faster (digits UNet step 1.5x, MNIST
1.25x), because waking a sleeping thread costs more than a small operator; on cores shared with
other busy processes sleeping is faster (MNIST 1.5-2.6x, digits 10x, 18x in one probe), because a
spinning thread waits at every barrier for a sibling that the OS has descheduled.

So `apply()` (called by every notebook's first cell, `python -m pfdm_core` and the benchmarks; importing
pfdm_core does no work) samples how busy the machine is for 0.1 s before torch loads and sets PASSIVE when
other processes keep at least half a core busy; an explicit OMP_WAIT_POLICY in the environment always wins.
The choice is fixed for the life of the process (OpenMP reads it once), so a load that appears later meets
the policy chosen at the start.
"""
from __future__ import annotations

import os
import sys
import time

BUSY_CORES = 0.5  # other processes' CPU use (in cores) from which idle threads should sleep


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores from /proc/stat, None where there is no /proc (macOS, Windows)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


def busy_cores(window: float = 0.1) -> float:
    """Cores kept busy by running processes, measured over `window` seconds (this process idles meanwhile)."""
    first = _cpu_times()
    if first is None:  # no /proc: the 1-minute load average, capped at the core count
        return min(os.getloadavg()[0], os.cpu_count() or 1) if hasattr(os, "getloadavg") else 0.0
    time.sleep(window)
    second = _cpu_times()
    busy, total = second[0] - first[0], second[1] - first[1]
    return (os.cpu_count() or 1) * busy / total if total > 0 else 0.0


def choose_wait_policy(busy: float, cores: int) -> str | None:
    """"PASSIVE" when other processes use at least BUSY_CORES cores of a multi-core machine, else None
    (OpenMP's default: spin). One core: torch runs one thread, nothing to wait for, nothing to choose."""
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got {cores}")
    return "PASSIVE" if cores > 1 and busy >= BUSY_CORES else None


def apply() -> str | None:
    """Set OMP_WAIT_POLICY for this process unless the environment already does or torch is loaded.

    Returns the policy in effect (None = OpenMP's default)."""
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return os.environ.get("OMP_WAIT_POLICY")
    policy = choose_wait_policy(busy_cores(), os.cpu_count() or 1)
    if policy:
        os.environ["OMP_WAIT_POLICY"] = policy
    return policy
