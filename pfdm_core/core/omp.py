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
The wait policy is fixed for the life of the process (OpenMP reads it once), so a load that appears later meets
the policy chosen at the start. What can change later is torch's thread count: `govern()`, called between two
training or sampling steps, drops it to one thread while other processes keep BUSY_CORES busy and gives the
threads back when they stop. Measured with a load that appears mid-run (benchmarks/README.md): one thread hardly
slows (1.03x digits, 0.94x MNIST) where N spinning threads slow 2.5-3.5x. The float rounding of a convolution
depends on the thread count (weights differ by ~1e-5 after 15 digits steps), so a run during which the governor
acted is not bit-identical to a quiet one; `PFDM_THREADS=fixed` (or a process that starts with one thread, as
the tests do) keeps the count pinned.
"""
from __future__ import annotations

import os
import sys
import time

BUSY_CORES = 0.5  # other processes' CPU use (in cores) from which idle threads should sleep
THREADS = "PFDM_THREADS"  # "fixed": govern() never changes torch's thread count


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


class Governor:
    """torch's thread count, re-decided between steps: 1 while other processes use >= `busy` cores, else the count
    the process started with. A check reads /proc/stat and this process's CPU time (os.times) at most every
    `every` seconds, so calling it once per step costs a clock read."""

    def __init__(self, every: float = 0.25, busy: float = BUSY_CORES) -> None:
        import torch

        self.torch = torch  # loaded once: __call__ runs before every step
        self.every, self.busy, self.cores = every, busy, os.cpu_count() or 1
        self.fixed = os.environ.get(THREADS, "auto") == "fixed" or _cpu_times() is None
        self.full = self._set = torch.get_num_threads()
        self.changes: list[tuple[float, int]] = []  # (time.monotonic(), threads) at each change
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, tuple[int, int] | None]:
        t = os.times()
        return time.monotonic(), t.user + t.system, _cpu_times()

    def others(self, now: tuple[float, float, tuple[int, int] | None]) -> float:
        """Cores other processes kept busy since the last check (the machine's busy cores minus this process's)."""
        (w0, own0, c0), (w1, own1, c1) = self._last, now
        if c0 is None or c1 is None or c1[1] <= c0[1] or w1 <= w0:
            return 0.0
        return self.cores * (c1[0] - c0[0]) / (c1[1] - c0[1]) - (own1 - own0) / (w1 - w0)

    def __call__(self) -> int:
        """Decide (at most every `every` s) and return torch's thread count."""
        torch = self.torch
        cur = torch.get_num_threads()
        if cur != self._set:  # the caller changed it (torch.set_num_threads): that is the new full count
            self.full = self._set = cur
        if self.fixed or self.full == 1 or time.monotonic() - self._last[0] < self.every:
            return cur
        now = self._sample()
        want = 1 if self.others(now) >= self.busy else self.full
        self._last = now
        if want != cur:
            torch.set_num_threads(want)
            self._set = want
            self.changes.append((now[0], want))
        return want


_governor: Governor | None = None


def govern() -> int:
    """The process's `Governor`, called between two steps (training loops and samplers); returns the thread count."""
    global _governor
    if _governor is None:
        _governor = Governor()
    return _governor()
