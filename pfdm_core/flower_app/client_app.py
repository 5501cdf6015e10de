"""ClientApp: what runs on a hospital's or phone's SuperNode (DESIGN.md 2, steps 1, 3, 4).

    query.upload    privatize the local data once (own t0 / eps), reply x_tilde, labels, eps spent
    train.personal  receive the shared weights, train the personal denoiser, sample, reply metrics
    train           FedAvg: local steps from the global weights, reply the weights
    evaluate        FedAvg: sample the final global model, reply metrics

Node config (flower-supernode --node-config): partition-id (required), and optionally t0 or eps
(this client's own privacy level) and state-dir (the upload ledger; default $PFDM_RUNS/flower_clients).
The upload's noise is secret (drawn from the OS's entropy); `insecure-noise-seed=<int>` makes it
reproducible for simulations that compare with an in-process run (notebook 09), and voids the guarantee.
"""
from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import torch  # noqa: E402
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

from pfdm_core.flower_app import task  # noqa: E402
from pfdm_core.recipes import runs_dir  # noqa: E402

app = ClientApp()


def _setup(msg: Message, context: Context):
    """(app config, experiment config, partition id) of this message."""
    records = msg.content.config_records  # the server's view of the run wins over the local run config
    sent = records["app"] if "app" in records else records.get("config")  # FedAvg sends it as its train config
    if sent is not None and "method" in sent:
        conf = task.AppConfig.from_run_config({k: v for k, v in sent.items() if k != "server-round"})
    else:
        conf = task.AppConfig.from_run_config(context.run_config)
    if "partition-id" not in context.node_config:
        raise ValueError("this SuperNode has no partition-id: start it with --node-config 'partition-id=<k>'")
    return conf, conf.experiment(), int(context.node_config["partition-id"])


@app.query("upload")
def upload(msg: Message, context: Context) -> Message:
    conf, cfg, pid = _setup(msg, context)
    t0 = task.client_t0(int(msg.content["config"]["t0"]), context.node_config, cfg)
    state_dir = context.node_config.get("state-dir") or runs_dir() / "flower_clients" / f"p{pid}"
    noise_seed = context.node_config.get("insecure-noise-seed")  # the client's own choice, simulations only
    up, repeated = task.upload_once(cfg, conf.seed, pid, t0, state_dir,
                                    None if noise_seed is None else int(noise_seed))
    arrays = ArrayRecord({"x_tilde": up.x_tilde, "y": up.y})  # privatized images and labels only
    metrics = MetricRecord({"t0": up.t0, "eps": up.eps, "eps-spent-now": 0.0 if repeated else up.eps,
                            "repeated": int(repeated), "num-examples": len(up.y), "partition-id": pid})
    return Message(RecordDict({"upload": arrays, "metrics": metrics}), reply_to=msg)


@app.train("personal")
def personal(msg: Message, context: Context) -> Message:
    conf, cfg, pid = _setup(msg, context)
    t0 = int(msg.content["config"]["t0"])  # the run's t0 (the largest uploaded)
    shared = task.make_model(cfg, conf.seed)
    shared.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    personal = task.train_personal(cfg, conf.seed, pid, t0)
    metrics, fake = task.evaluate(cfg, conf.seed, pid, "pfdm", {"shared": shared, "personal": personal}, t0)
    return _reply(msg, conf, pid, metrics, fake)


@app.train()
def fedavg_train(msg: Message, context: Context) -> Message:
    conf, cfg, pid = _setup(msg, context)
    state = msg.content["arrays"].to_torch_state_dict()
    rnd = int(msg.content["config"]["server-round"])
    new_state, loss, n = task.fedavg_local(cfg, conf.seed, pid, state, rnd, conf.rounds)
    metrics = MetricRecord({"loss": loss, "num-examples": n})
    return Message(RecordDict({"arrays": ArrayRecord(new_state), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def fedavg_evaluate(msg: Message, context: Context) -> Message:
    conf, cfg, pid = _setup(msg, context)
    model = task.make_model(cfg, conf.seed)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    metrics, fake = task.evaluate(cfg, conf.seed, pid, "fedavg", {"model": model.eval()}, None)
    return _reply(msg, conf, pid, metrics, fake)


def _reply(msg: Message, conf: task.AppConfig, pid: int, metrics: dict, fake: torch.Tensor) -> Message:
    content = RecordDict({"metrics": MetricRecord({**metrics, "partition-id": pid, "num-examples": len(fake)})})
    if conf.return_samples:  # only when the run asks for them
        content["samples"] = ArrayRecord({"samples": fake})
    return Message(content, reply_to=msg)
