"""OpenMP wait policy: spin on idle cores, sleep when other processes keep the cores busy."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pfdm_core.core import omp


def test_choose_wait_policy_rule():
    assert omp.choose_wait_policy(0.0, 2) is None  # idle: OpenMP's default (spin)
    assert omp.choose_wait_policy(0.49, 2) is None
    assert omp.choose_wait_policy(0.5, 2) == "PASSIVE"  # half a core used elsewhere
    assert omp.choose_wait_policy(3.0, 16) == "PASSIVE"
    assert omp.choose_wait_policy(1.0, 1) is None  # one core: one thread, nothing to wait for
    with pytest.raises(ValueError, match="cores must be >= 1"):
        omp.choose_wait_policy(0.0, 0)


def test_busy_cores_sees_a_busy_process():
    idle = omp.busy_cores(0.3)
    assert 0.0 <= idle <= (__import__("os").cpu_count() or 1) + 1e-9
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert omp.busy_cores(0.5) >= 0.5, "a process spinning on one core must count as (about) one busy core"
    finally:
        spinner.kill()
        spinner.wait()


def test_apply_respects_the_environment_and_a_loaded_torch(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert omp.apply() == "ACTIVE"  # an explicit setting wins
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert "torch" in sys.modules and omp.apply() is None  # too late to choose: left alone
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(omp, "busy_cores", lambda window=0.1: 1.0)
    monkeypatch.setattr(omp.os, "cpu_count", lambda: 2)
    assert omp.apply() == "PASSIVE" and omp.os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setattr(omp, "busy_cores", lambda window=0.1: 0.0)
    assert omp.apply() is None and "OMP_WAIT_POLICY" not in omp.os.environ


def test_a_fresh_import_decides_before_torch():
    code = ("import os, sys; import pfdm_core; "
            "print(os.environ.get('OMP_WAIT_POLICY', 'default'))")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() in ("default", "PASSIVE")
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "ACTIVE"


class _Clock:
    """A fake machine for the governor: wall seconds, this process's CPU seconds, /proc/stat (busy, total) jiffies."""

    def __init__(self, cores: int = 2):
        self.wall = self.own = 0.0
        self.busy = self.total = 0
        self.cores = cores

    def advance(self, seconds: float, own_cores: float, other_cores: float) -> None:
        self.wall += seconds
        self.own += own_cores * seconds
        self.busy += round(100 * seconds * (own_cores + other_cores))
        self.total += round(100 * seconds * self.cores)

    def sample(self):
        return self.wall, self.own, (self.busy, self.total)


def _governor(monkeypatch, clock: _Clock, threads: int = 2, fixed: bool = False) -> omp.Governor:
    import torch

    torch.set_num_threads(threads)
    monkeypatch.setattr(omp.Governor, "_sample", staticmethod(clock.sample))
    monkeypatch.setattr(omp.time, "monotonic", lambda: clock.wall)
    monkeypatch.setattr(omp.os, "cpu_count", lambda: clock.cores)
    if fixed:
        monkeypatch.setenv(omp.THREADS, "fixed")
    else:
        monkeypatch.delenv(omp.THREADS, raising=False)
    return omp.Governor(every=0.5)


def test_governor_drops_to_one_thread_under_load_and_gives_the_threads_back(monkeypatch):
    import torch

    clock = _Clock()
    try:
        gov = _governor(monkeypatch, clock)
        clock.advance(0.2, 2.0, 0.0)
        assert gov() == 2 and gov.changes == []  # too soon to decide
        clock.advance(0.5, 2.0, 0.0)  # idle machine, our own 2 threads busy: others ~0
        assert abs(gov.others(clock.sample())) < 0.05 and gov() == 2
        clock.advance(0.6, 1.2, 0.8)  # a busy process appears
        assert gov() == 1 and torch.get_num_threads() == 1
        clock.advance(0.6, 1.0, 1.0)  # still there: stay at one thread
        assert gov() == 1
        clock.advance(0.6, 1.0, 0.1)  # it stopped
        assert gov() == 2 and torch.get_num_threads() == 2
        assert [n for _, n in gov.changes] == [1, 2]
        clock.advance(0.6, 1.0, 0.4)  # below BUSY_CORES: no change
        assert gov() == 2
    finally:
        torch.set_num_threads(1)


def test_governor_leaves_a_pinned_or_single_thread_count_alone(monkeypatch):
    import torch

    try:
        for threads, fixed in ((2, True), (1, False)):
            clock = _Clock()
            gov = _governor(monkeypatch, clock, threads, fixed)
            clock.advance(1.0, 1.0, 1.0)
            assert gov() == threads and gov.changes == []
        clock = _Clock()
        gov = _governor(monkeypatch, clock, 2)
        torch.set_num_threads(3)  # the caller's own choice becomes the count the governor gives back
        clock.advance(1.0, 1.0, 1.0)
        assert gov() == 1
        clock.advance(1.0, 3.0, 0.0)
        assert gov() == 3
    finally:
        torch.set_num_threads(1)
