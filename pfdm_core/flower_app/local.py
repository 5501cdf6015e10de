"""A real SuperLink and SuperNodes on 127.0.0.1, as subprocesses (Flower's Deployment Engine).

The same commands as on separate hosts (README.md), on free local ports, without Ray, without
`uv sync` (runtime dependency installation off: every process uses this Python environment):

    with LocalFederation(num_nodes=4, workdir="/tmp/fed") as fed:
        result = fed.run({"method": "pfdm", "preset": "smoke"})   # `flwr run <app> <link> --stream`

Every process is killed on exit (with its children), whatever happened.
"""
from __future__ import annotations

import atexit
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Mapping

from . import APP_DIR

BIN = Path(sys.executable).parent  # flower-superlink, flower-supernode, flwr of this environment
CONNECTION = "pfdm-local"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(v: Any) -> str:
    return json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else repr(v)


class LocalFederation:
    """A SuperLink plus num_nodes SuperNodes (partition-id 0..num_nodes-1) under workdir."""

    def __init__(self, num_nodes: int, workdir: str | os.PathLike, node_config: Mapping[int, dict] | None = None,
                 startup_timeout: float = 60.0) -> None:
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
        self.num_nodes, self.workdir = num_nodes, Path(workdir).resolve()
        self.node_config, self.startup_timeout = dict(node_config or {}), startup_timeout
        self.port = 0
        self.superlink: subprocess.Popen | None = None
        self.nodes: dict[int, subprocess.Popen] = {}
        self.runs: list[subprocess.Popen] = []  # `flwr run` clients
        self.env = {**os.environ, "FLWR_HOME": str(self.workdir / "flwr_home"), "FLWR_TELEMETRY_ENABLED": "0",
                    "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}

    # ------------------------------------------------------------------ processes
    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")
        return subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=log, stderr=subprocess.STDOUT,
                                env=self.env, cwd=self.workdir, start_new_session=True)

    def start(self) -> LocalFederation:
        self.workdir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.close)  # a notebook kernel that exits still stops its federation
        self.port = free_port()
        self.superlink = self._spawn("superlink", ["flower-superlink", "--insecure", "--host", "127.0.0.1",
                                                   "--port", str(self.port), "--disable-runtime-dependency-installation"])
        self._wait(lambda: self._healthy(), "the SuperLink to answer /health")
        for k in range(self.num_nodes):
            self.start_node(k)
        self._wait(lambda: all("SuperNode ID" in self.log(f"supernode{k}") for k in self.nodes),
                   "the SuperNodes to register")
        home = Path(self.env["FLWR_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                                          f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')
        return self

    def start_node(self, k: int) -> None:
        conf = {"partition-id": k, "state-dir": str(self.workdir / f"client{k}"), **self.node_config.get(k, {})}
        node_config = " ".join(f"{key}={toml_value(v)}" for key, v in conf.items())
        self.nodes[k] = self._spawn(f"supernode{k}", ["flower-supernode", "--insecure", "--superlink",
                                                      f"127.0.0.1:{self.port}", "--port", str(free_port()),
                                                      "--node-config", node_config])

    def kill_node(self, k: int) -> None:
        """Kill SuperNode k at once (a client that drops out)."""
        _kill_tree(self.nodes.pop(k))

    def close(self) -> None:
        for proc in self.runs:
            _kill_tree(proc)
        for k in list(self.nodes):
            self.kill_node(k)
        if self.superlink is not None:
            _kill_tree(self.superlink)
            self.superlink = None

    def __enter__(self) -> LocalFederation:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ runs
    def submit(self, run_config: Mapping[str, Any]) -> subprocess.Popen:
        """`flwr run <app> pfdm-local --run-config ... --stream` in the background (log: flwr_run.log)."""
        pairs = " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())
        cmd = ["flwr", "run", str(APP_DIR), CONNECTION, "--run-config", pairs, "--stream"]
        (self.workdir / "flwr_run.cmd").write_text(shlex.join(cmd) + "\n")
        self.runs.append(self._spawn("flwr_run", cmd))
        return self.runs[-1]

    def run(self, run_config: Mapping[str, Any], timeout: float = 600.0) -> dict:
        """Submit a run, wait for it and return the server's result.json (out-dir under workdir)."""
        run_config = {"out-dir": str(self.workdir / "out"), **run_config}
        out = Path(run_config["out-dir"])
        (out / "result.json").unlink(missing_ok=True)
        proc = self.submit(run_config)
        try:
            self._wait(lambda: (out / "result.json").exists() or proc.poll() is not None, "the run", timeout)
        finally:
            _kill_tree(proc)
        if not (out / "result.json").exists():
            raise RuntimeError(f"the run ended without a result; see {self.workdir}/*.log:\n{self.log('flwr_run')[-3000:]}")
        return json.loads((out / "result.json").read_text())

    # ------------------------------------------------------------------ helpers
    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def _wait(self, ready, what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        while not ready():
            if self.superlink is not None and self.superlink.poll() is not None:
                raise RuntimeError(f"the SuperLink exited while waiting for {what}:\n{self.log('superlink')[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}; logs in {self.workdir}")
            time.sleep(0.2)


def _descendants(pid: int) -> list[int]:
    """All processes below pid (psutil when installed; else only the process group is killed)."""
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except Exception:
        return []


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL proc, its process group and every descendant (Flower detaches its SuperExec)."""
    pids = _descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait(timeout=10)
