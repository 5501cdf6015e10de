"""ServerApp: PFDM's four server-side steps (below) or Flower's FedAvg of a full DDPM.

PFDM: (1) ask every connected client for its upload (query.upload); clients that have not
replied within upload-timeout are excluded, and the run goes on if at least min-clients did;
(2) train the shared denoiser on the pooled uploads (server_train_shared: Upload objects only);
(3) send the shared weights to the clients that uploaded (train.personal); (4) collect their
metrics. FedAvg: flwr.serverapp.strategy.FedAvg, then one evaluate message with the final model.

Every message goes through `AuditGrid`, which counts the bytes sent to and received from each
node and (run-config audit = true) keeps every received array: `audit.npz` + `audit.jsonl` in
out-dir are the server-side log of what it saw; tests check that no raw image is in it.
"""
from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import dataclasses  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from pfdm_core.core.checkpoint import atomic_write, write_json  # noqa: E402
from pfdm_core.core.schedule import Schedule  # noqa: E402
from pfdm_core.flower_app import task  # noqa: E402
from pfdm_core.methods.server import Upload, check_upload  # noqa: E402
from pfdm_core.privacy.mechanism import epsilon  # noqa: E402

app = ServerApp()


class AuditGrid:
    """A Grid that counts payload bytes per node and keeps every received array (the audit log)."""

    def __init__(self, grid: Grid, audit: bool, out: Path | None = None) -> None:
        self.grid, self.audit, self.out = grid, audit, out
        self.sent: dict[int, int] = defaultdict(int)  # node id -> bytes the server sent it
        self.received: dict[int, int] = defaultdict(int)  # node id -> bytes it sent the server
        self.log: list[dict] = []
        self.arrays: list[np.ndarray] = []

    def __getattr__(self, name: str):  # get_node_ids, create_message, run, ...
        return getattr(self.grid, name)

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        for m in messages:
            self.sent[m.metadata.dst_node_id] += sum(task.array_bytes(r) for r in m.content.array_records.values())
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        for r in replies:
            if r.has_error():
                continue
            node = r.metadata.src_node_id
            for rec_name, rec in r.content.array_records.items():
                for key, arr in rec.items():
                    a = arr.numpy()
                    self.received[node] += a.nbytes
                    self.log.append({"node": node, "type": r.metadata.message_type, "record": rec_name, "key": key,
                                     "shape": list(a.shape), "dtype": str(a.dtype),
                                     "sha256": hashlib.sha256(a.tobytes()).hexdigest()})
                    if self.audit:
                        self.arrays.append(a)
        if self.out is not None:  # on disk as soon as the replies are in: a crash later loses nothing
            self.save(self.out)
        return replies

    def save(self, out: Path) -> None:
        """audit.jsonl and audit.npz, each replaced atomically (written to a temporary file, fsynced, renamed)."""
        atomic_write(out / "audit.jsonl", lambda f: f.write("".join(json.dumps(row) + "\n" for row in self.log).encode()))
        if self.audit:
            atomic_write(out / "audit.npz", lambda f: np.savez(f, *self.arrays))



@app.main()
def main(grid: Grid, context: Context) -> None:
    conf = task.AppConfig.from_run_config(context.run_config)
    cfg = conf.experiment()
    out = conf.out()
    out.mkdir(parents=True, exist_ok=True)
    status(out, "waiting-for-nodes")
    audit = AuditGrid(grid, conf.audit, out)
    nodes = wait_for_nodes(grid, conf.min_clients, conf.connect_timeout)
    app_record = ConfigRecord({k.replace("_", "-"): v for k, v in dataclasses.asdict(conf).items()})
    start = time.perf_counter()
    run = run_pfdm if conf.method == "pfdm" else run_fedavg
    result = run(audit, nodes, conf, cfg, app_record, out)
    result.update(method=conf.method, preset=conf.preset, seed=conf.seed, seconds=time.perf_counter() - start,
                  bytes_sent={str(k): v for k, v in audit.sent.items()},
                  bytes_received={str(k): v for k, v in audit.received.items()},
                  model_bytes=task.array_bytes(task.make_model(cfg, conf.seed).state_dict()))
    audit.save(out)
    write_json(out / "result.json", result)
    status(out, "done")


def status(out: Path, phase: str, **info) -> None:
    """Write out/status.json: where the run is (tests and the notebook watch it)."""
    write_json(out / "status.json", {"phase": phase, "time": time.time(), **info})


def wait_for_nodes(grid: Grid, min_clients: int, timeout: float) -> list[int]:
    """The connected node ids once at least min_clients are there (get_node_ids starts empty)."""
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < min_clients:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} SuperNode(s) connected within connect-timeout={timeout:g} s, "
                               f"but min-clients={min_clients}; start more SuperNodes or lower min-clients")
        time.sleep(0.5)
    time.sleep(1.0)  # let the other nodes that are starting now connect too
    return list(grid.get_node_ids())


def run_pfdm(grid: AuditGrid, nodes: list[int], conf, cfg, app_record: ConfigRecord, out: Path) -> dict:
    # (1) one upload per client, privatized on the client
    ask = ConfigRecord({"t0": int(cfg.privacy.t0s[0])})
    msgs = [Message(RecordDict({"config": ask, "app": app_record}), dst_node_id=n, message_type="query.upload")
            for n in nodes]
    status(out, "uploads-requested", nodes=nodes)
    replies = [r for r in grid.send_and_receive(msgs, timeout=conf.upload_timeout) if not r.has_error()]
    uploads: dict[int, tuple[int, Upload, dict]] = {}  # partition id -> (node, upload, metrics)
    rejected: dict[str, str] = {}  # node id -> why its reply was refused
    sched, shape = Schedule(cfg.T), (cfg.net.in_channels, cfg.net.image_size, cfg.net.image_size)
    for r in replies:
        node = r.metadata.src_node_id
        try:
            m = dict(r.content["metrics"])
            arrays = r.content["upload"]
            c = float(m.get("clip", cfg.privacy.clip_norm))  # a client may clip harder than the run, never softer
            if not 0 < c <= cfg.privacy.clip_norm:
                raise ValueError(f"clip norm must be in (0, {cfg.privacy.clip_norm:g}], got {c:g}")
            up = check_upload(arrays["x_tilde"].numpy(), arrays["y"].numpy(), m["t0"], float(m["eps"]), shape=shape,
                              num_classes=cfg.net.num_classes, sched=sched, min_t0=int(cfg.privacy.t0s[0]), clip_norm=c,
                              eps_of=lambda t: epsilon(t, sched, c, cfg.privacy.delta))
            pid = int(m["partition-id"])
            if pid in uploads:
                raise ValueError(f"partition-id {pid} was already uploaded by node {uploads[pid][0]}")
        except (KeyError, TypeError, ValueError) as e:  # a bad reply excludes its client, not the run
            rejected[str(node)] = f"{type(e).__name__}: {e}"
            continue
        uploads[pid] = (node, up, m)
    excluded = sorted(set(nodes) - {node for node, _, _ in uploads.values()})
    if rejected:
        status(out, "uploads-checked", rejected=rejected)
    if len(uploads) < conf.min_clients:
        status(out, "failed", reason="too few valid uploads", rejected=rejected)
        raise RuntimeError(f"only {len(uploads)} client(s) uploaded a valid upload within upload-timeout="
                           f"{conf.upload_timeout:g} s, but min-clients={conf.min_clients}; refused: {rejected}")
    # (2) the shared denoiser, on the pooled uploads only
    status(out, "training-shared", clients=sorted(uploads))
    pooled = [uploads[p][1] for p in sorted(uploads)]  # partition order, not arrival order: reproducible
    shared = task.train_shared(pooled, cfg, conf.seed)
    t0 = max(up.t0 for up in pooled)
    torch.save(shared.state_dict(), out / "shared.pt")
    # (3) shared weights to the clients that uploaded; they train their personal denoiser and sample
    status(out, "personal-requested", t0=t0)
    weights, step3 = ArrayRecord(shared.state_dict()), ConfigRecord({"t0": t0})
    msgs = [Message(RecordDict({"arrays": weights, "config": step3, "app": app_record}), dst_node_id=node,
                    message_type="train.personal") for node, _, _ in uploads.values()]
    reports = _metrics(grid.send_and_receive(msgs, timeout=conf.round_timeout), out)
    # (4) the clients' metrics
    clients = {str(p): {"node": node, "t0": int(m["t0"]), "eps": float(m["eps"]), "repeated": int(m["repeated"]),
                        "upload_bytes": task.array_bytes(up_arrays(up)), **reports.get(node, {})}
               for p, (node, up, m) in sorted(uploads.items())}
    return {"t0": t0, "clients": clients, "excluded_nodes": excluded, "rejected": rejected, "nodes": nodes}


def run_fedavg(grid: AuditGrid, nodes: list[int], conf, cfg, app_record: ConfigRecord, out: Path) -> dict:
    strategy = FedAvg(fraction_train=cfg.fedavg.fraction, fraction_evaluate=0.0,
                      min_train_nodes=conf.min_clients, min_available_nodes=conf.min_clients)
    status(out, "fedavg", rounds=conf.rounds)
    res = strategy.start(grid=grid, initial_arrays=ArrayRecord(task.make_model(cfg, conf.seed).state_dict()),
                         num_rounds=conf.rounds, timeout=conf.round_timeout, train_config=app_record)
    torch.save(res.arrays.to_torch_state_dict(), out / "fedavg.pt")
    nodes = list(grid.get_node_ids())
    msgs = [Message(RecordDict({"arrays": res.arrays, "app": app_record}), dst_node_id=n, message_type="evaluate")
            for n in nodes]
    reports = _metrics(grid.send_and_receive(msgs, timeout=conf.round_timeout), out)
    clients = {str(int(r["partition-id"])): {"node": node, **r} for node, r in reports.items()}
    return {"rounds": conf.rounds, "clients": clients, "nodes": nodes,
            "train_loss": {str(k): dict(v) for k, v in res.train_metrics_clientapp.items()}}


def up_arrays(up: Upload) -> dict:
    return {"x_tilde": up.x_tilde.numpy(), "y": up.y.numpy()}


def _metrics(replies, out: Path) -> dict[int, dict]:
    """node id -> its metrics; samples (only when the run asked for them) go to out/samples_p<k>.pt."""
    reports = {}
    for r in replies:
        if r.has_error():
            continue
        m = dict(r.content["metrics"])
        reports[r.metadata.src_node_id] = m
        if "samples" in r.content.array_records:
            torch.save(torch.from_numpy(r.content["samples"]["samples"].numpy()), out / f"samples_p{int(m['partition-id'])}.pt")
    return reports
