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
