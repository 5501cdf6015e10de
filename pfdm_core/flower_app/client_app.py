"""ClientApp: what runs on a hospital's or phone's SuperNode (PFDM's client side).

    query.upload    privatize the local data once (own t0 / eps), reply x_tilde, labels, eps spent
    train.personal  receive the shared weights, train the personal denoiser, sample, reply metrics
    train           FedAvg: local steps from the global weights, reply the weights
    evaluate        FedAvg: sample the final global model, reply metrics

Node config (flower-supernode --node-config): `task.NodeSettings`. partition-id (required);
data-file (the client's own images, an .npz); t0 or eps and clip (this client's own privacy level: the
server can only ask for more noise); allow-samples; state-dir (the upload ledger; default
$PFDM_RUNS/flower_clients). The upload's noise is secret (drawn from the OS's entropy);
`insecure-noise-seed=<int>` makes it reproducible for simulations that compare with an in-process run
(notebook 09), and voids the guarantee.
"""
from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import torch  # noqa: E402
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

from pfdm_core.core.paths import runs_dir  # noqa: E402
from pfdm_core.flower_app import task  # noqa: E402

app = ClientApp()


def _setup(msg: Message, context: Context):
    """(app config, experiment config, partition id) of this message."""
    records = msg.content.config_records  # the server's view of the run wins over the local run config
    sent = records["app"] if "app" in records else records.get("config")  # FedAvg sends it as its train config
    if sent is not None and "method" in sent:
        conf = task.AppConfig.from_run_config({k: v for k, v in sent.items() if k != "server-round"})
    else:
        conf = task.AppConfig.from_run_config(context.run_config)
    node = task.NodeSettings.from_node_config(context.node_config)
    return conf, conf.experiment(), node


@app.query("upload")
def upload(msg: Message, context: Context) -> Message:
    conf, cfg, node = _setup(msg, context)
    pid, clip_norm = node.partition_id, node.clip_norm(cfg)
    t0 = task.client_t0(int(msg.content["config"]["t0"]), node, cfg, clip_norm)
    state_dir = node.state_dir or runs_dir() / "flower_clients" / f"p{pid}"
    up, repeated = task.upload_once(cfg, task.client_data(cfg, conf.seed, node), t0, state_dir, node.noise_seed,
                                    clip_norm)
    arrays = ArrayRecord({"x_tilde": up.x_tilde, "y": up.y})  # privatized images and labels only
    metrics = MetricRecord({"t0": up.t0, "eps": up.eps, "eps-spent-now": 0.0 if repeated else up.eps,
                            "eps-ledger-total": task.ledger_eps_total(state_dir),
                            "clip": clip_norm, "repeated": int(repeated), "num-examples": len(up.y),
                            "partition-id": pid})
    return Message(RecordDict({"upload": arrays, "metrics": metrics}), reply_to=msg)


@app.train("personal")
def personal(msg: Message, context: Context) -> Message:
    conf, cfg, node = _setup(msg, context)
    t0 = int(msg.content["config"]["t0"])  # the run's t0 (the largest uploaded)
    shared = task.make_model(cfg, conf.seed)
    shared.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    personal = task.train_personal(cfg, conf.seed, task.client_data(cfg, conf.seed, node), t0, node.clip_norm(cfg))
    metrics, fake = task.evaluate(cfg, conf.seed, node.partition_id, "pfdm", {"shared": shared, "personal": personal}, t0)
    return _reply(msg, conf, node, metrics, fake)


@app.train()
def fedavg_train(msg: Message, context: Context) -> Message:
    conf, cfg, node = _setup(msg, context)
    pid = node.partition_id
    state = msg.content["arrays"].to_torch_state_dict()
    rnd = int(msg.content["config"]["server-round"])
    new_state, loss, n = task.fedavg_local(cfg, conf.seed, pid, state, rnd, conf.rounds)
    metrics = MetricRecord({"loss": loss, "num-examples": n})
    return Message(RecordDict({"arrays": ArrayRecord(new_state), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def fedavg_evaluate(msg: Message, context: Context) -> Message:
    conf, cfg, node = _setup(msg, context)
    model = task.make_model(cfg, conf.seed)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    metrics, fake = task.evaluate(cfg, conf.seed, node.partition_id, "fedavg", {"model": model.eval()}, None)
    return _reply(msg, conf, node, metrics, fake)


def _reply(msg: Message, conf: task.AppConfig, node: task.NodeSettings, metrics: dict, fake: torch.Tensor) -> Message:
    content = RecordDict({"metrics": MetricRecord({**metrics, "partition-id": node.partition_id,
                                                   "num-examples": len(fake)})})
    if conf.return_samples and node.allow_samples:  # the run asks AND the client allows it
        content["samples"] = ArrayRecord({"samples": fake})
    return Message(content, reply_to=msg)
