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
import ssl
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


def make_pki(folder: str | os.PathLike, nodes: int, host: str = "127.0.0.1") -> dict[str, Path]:
    """Test credentials: a CA, the SuperLink's TLS certificate for `host` signed by it, and one EC (P-384)
    key pair per SuperNode in OpenSSH format (what `flower-supernode --auth-supernode-private-key` and
    `flwr supernode register` read). For tests and trials on one machine; real deployments use their PKI."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    name = lambda cn: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # noqa: E731

    def cert(subject, key, issuer, issuer_key, ca: bool, san=None):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    ca_key, srv_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca = cert(name("pfdm test CA"), ca_key, name("pfdm test CA"), ca_key, True)
    srv = cert(name(host), srv_key, ca.subject, ca_key, False,
               [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")])
    out = {"ca": folder / "ca.crt", "cert": folder / "server.pem", "key": folder / "server.key"}
    out["ca"].write_bytes(ca.public_bytes(pem))
    out["cert"].write_bytes(srv.public_bytes(pem))
    out["key"].write_bytes(srv_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    for k in range(nodes):
        key = ec.generate_private_key(ec.SECP384R1())
        out[f"node{k}"] = folder / f"node{k}"
        out[f"node{k}"].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.OpenSSH,
                                                      serialization.NoEncryption()))
        out[f"node{k}.pub"] = folder / f"node{k}.pub"
        out[f"node{k}.pub"].write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                                       serialization.PublicFormat.OpenSSH))
    return out


class LocalFederation:
    """A SuperLink plus num_nodes SuperNodes (partition-id 0..num_nodes-1) under workdir.

    tls=True: the SuperLink serves TLS with a certificate of a CA made for the run (`make_pki`), requires
    SuperNode authentication (--enable-supernode-auth), and only the num_nodes SuperNodes whose public
    keys were registered with `flwr supernode register` may connect; `flwr run` verifies the certificate."""

    def __init__(self, num_nodes: int, workdir: str | os.PathLike, node_config: Mapping[int, dict] | None = None,
                 startup_timeout: float = 60.0, tls: bool = False, node_env: Mapping[int, dict] | None = None) -> None:
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
        self.tls, self.pki = tls, {}
        self.num_nodes, self.workdir = num_nodes, Path(workdir).resolve()
        self.node_config, self.startup_timeout = dict(node_config or {}), startup_timeout
        self.node_env = dict(node_env or {})  # extra environment of SuperNode k and its ClientApp processes
        self.port = 0
        self.superlink: subprocess.Popen | None = None
        self.nodes: dict[int, subprocess.Popen] = {}
        self.runs: list[subprocess.Popen] = []  # `flwr run` clients
        self.env = {**os.environ, "FLWR_HOME": str(self.workdir / "flwr_home"), "FLWR_TELEMETRY_ENABLED": "0",
                    "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}

    # ------------------------------------------------------------------ processes
    def _spawn(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")
        return subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=log, stderr=subprocess.STDOUT,
                                env={**self.env, **(env or {})}, cwd=self.workdir, start_new_session=True)

    def start(self) -> LocalFederation:
        self.workdir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.close)  # a notebook kernel that exits still stops its federation
        self.port = free_port()
        if self.tls:
            self.pki = make_pki(self.workdir / "pki", self.num_nodes + 1)  # one spare key, never registered
            security = ["--ssl-ca-certfile", str(self.pki["ca"]), "--ssl-certfile", str(self.pki["cert"]),
                        "--ssl-keyfile", str(self.pki["key"]), "--enable-supernode-auth"]
        else:
            security = ["--insecure"]
        self.superlink = self._spawn("superlink", ["flower-superlink", *security, "--host", "127.0.0.1",
                                                   "--port", str(self.port), "--disable-runtime-dependency-installation"])
        self._wait(lambda: self._healthy(), "the SuperLink to answer /health")
        home = Path(self.env["FLWR_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        link = f'root-certificates = "{self.pki["ca"]}"' if self.tls else "insecure = true"
        (home / "config.toml").write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                                          f'address = "127.0.0.1:{self.port}"\n{link}\n')
        for k in range(self.num_nodes):
            if self.tls:
                self.register(k)
            self.start_node(k)
        self._wait(lambda: all("SuperNode ID" in self.log(f"supernode{k}") for k in self.nodes),
                   "the SuperNodes to register")
        return self

    def register(self, k: int) -> None:
        """`flwr supernode register` SuperNode k's public key (tls=True): the SuperLink then lets it in."""
        done = subprocess.run([str(BIN / "flwr"), "supernode", "register", str(self.pki[f"node{k}.pub"]), CONNECTION],
                              env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"flwr supernode register failed for node {k}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")

    def start_node(self, k: int) -> None:
        conf = {"partition-id": k, "state-dir": str(self.workdir / f"client{k}"), **self.node_config.get(k, {})}
        node_config = " ".join(f"{key}={toml_value(v)}" for key, v in conf.items())
        security = (["--root-certificates", str(self.pki["ca"]), "--auth-supernode-private-key",
                     str(self.pki[f"node{k}"])] if self.tls else ["--insecure"])
        self.nodes[k] = self._spawn(f"supernode{k}", ["flower-supernode", *security, "--superlink",
                                                      f"127.0.0.1:{self.port}", "--port", str(free_port()),
                                                      "--node-config", node_config], self.node_env.get(k))

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
        scheme, ctx = ("https", ssl.create_default_context(cafile=str(self.pki["ca"]))) if self.tls else ("http", None)
        try:
            with urllib.request.urlopen(f"{scheme}://127.0.0.1:{self.port}/health", timeout=1, context=ctx) as r:
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
