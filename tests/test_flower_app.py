"""The Flower app (pfdm_core.flower_app): task functions (fast), then a real SuperLink and two
SuperNodes on 127.0.0.1 (slow, each bounded to about two minutes, always torn down)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("flwr")

from pfdm_core.core.schedule import Schedule  # noqa: E402
from pfdm_core.flower_app import task  # noqa: E402
from pfdm_core.flower_app.local import LocalFederation  # noqa: E402
from pfdm_core.methods.pfdm import client_upload  # noqa: E402
from pfdm_core.privacy.mechanism import clip  # noqa: E402

RUN = {"method": "pfdm", "preset": "smoke", "num-clients": 2, "seed": 0}


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PFDM_RUNS", str(tmp_path / "runs"))  # classifier cache, default ledgers
    monkeypatch.setenv("PFDM_PRESET", "smoke")


# ----------------------------------------------------------------------------- config
def test_bad_run_config_gives_clear_errors():
    with pytest.raises(ValueError, match="min-clients must be in 1..num-clients=2"):
        task.AppConfig(num_clients=2, min_clients=3)
    with pytest.raises(ValueError, match="t0 must be an integer in 1..999"):
        task.AppConfig(t0=1000)
    with pytest.raises(ValueError, match="t0 must be an integer in 1..999"):
        task.AppConfig(t0=-3)
    with pytest.raises(ValueError, match="unknown run-config key"):
        task.AppConfig.from_run_config({"rounds": 3})
    with pytest.raises(ValueError, match="method must be one of"):
        task.AppConfig(method="fedprox")
    conf = task.AppConfig.from_run_config({"min-clients": 1, "t0": 400, "num-clients": 2})
    assert conf.experiment().privacy.t0s == (400,) and conf.experiment().split.num_clients == 2


def test_client_t0_never_adds_less_noise_than_proposed():
    cfg = task.AppConfig(num_clients=2).experiment()
    assert task.client_t0(400, task.NodeSettings(0), cfg) == 400
    assert task.client_t0(400, task.NodeSettings(0, t0=300), cfg) == 400  # a client cannot ask for less noise
    assert task.client_t0(400, task.NodeSettings(0, t0=500), cfg) == 500
    assert task.client_t0(100, task.NodeSettings(0, eps=10.0), cfg) == 693  # smallest t0 with eps <= 10 (C = 10)
    with pytest.raises(ValueError, match="t0 must be an integer in 1..999"):
        task.client_t0(400, task.NodeSettings(0, t0=1000), cfg)
    with pytest.raises(ValueError, match="partition-id must be in 0..1"):
        task.load_partition(cfg, 0, 2)


# ----------------------------------------------------------------------------- PFDM steps
def test_upload_is_made_once_and_its_ledger_ignores_the_servers_seed(tmp_path):
    cfg = task.AppConfig(num_clients=2).experiment()
    data = task.load_partition(cfg, 0, 1)
    up, repeated = task.upload_once(cfg, data, 693, tmp_path)
    assert not repeated
    again, repeated = task.upload_once(cfg, data, 800, tmp_path)  # a reconnecting client, even asked another t0
    assert repeated and again.t0 == 693 and torch.equal(again.x_tilde, up.x_tilde)  # same release: eps spent once
    fp = task.data_fingerprint(task.load_partition(cfg, 0, 1))[:32]
    ledger = json.loads((tmp_path / f"upload_{fp}.json").read_text())
    assert ledger["eps_spent"] == pytest.approx(up.eps) and ledger["secret_noise"]
    assert task.ledger_eps_total(tmp_path) == pytest.approx(up.eps)  # the repeat released nothing new
    other, repeated = task.upload_once(cfg, task.load_partition(cfg, 0, 0), 693, tmp_path)  # other images: a release
    assert not repeated and task.ledger_eps_total(tmp_path) == pytest.approx(up.eps + other.eps)


def test_insecure_noise_seed_reproduces_notebook04s_upload(tmp_path):
    cfg = task.AppConfig(num_clients=2).experiment()
    up, _ = task.upload_once(cfg, task.load_partition(cfg, 0, 1), 693, tmp_path, noise_seed=0 * 100 + 1)
    ref = client_upload(task.load_partition(cfg, 0, 1), 693, Schedule(cfg.T), cfg.privacy.clip_norm, seed=0 * 100 + 1)
    assert torch.equal(up.x_tilde, ref.x_tilde) and torch.equal(up.y, ref.y)


def _invert(x_tilde: torch.Tensor, t0: int, T: int, seeds) -> torch.Tensor | None:
    """The server's attack: for each candidate seed, regenerate z and subtract it; a hit is an x whose
    pixels all lie in [-1, 1] (digits are in [-1, 1]; with the wrong z about half of them fall outside)."""
    a = float(Schedule(T).alpha_bar[t0])
    for s in seeds:
        z = torch.randn(x_tilde.shape, generator=torch.Generator().manual_seed(int(s)), dtype=x_tilde.dtype)
        x = (x_tilde - (1 - a) ** 0.5 * z) / a**0.5
        if x.abs().max() <= 1 + 1e-3:
            return x
    return None


def test_server_cannot_regenerate_the_upload_noise(tmp_path):
    """Plays the server with everything it holds: the run's seed, the partition ids, the uploads. It tries
    the landed seeding scheme (seed * 100 + partition id) and every seed below 5000. The same attack on a
    deliberately seeded upload recovers the raw images (so this test can fail)."""
    cfg = task.AppConfig(num_clients=2).experiment()
    run_seed, t0 = 0, 693
    candidates = [run_seed * 100 + p for p in range(cfg.split.num_clients)] + list(range(5000))
    for pid in range(cfg.split.num_clients):
        data = task.load_partition(cfg, run_seed, pid)
        raw = clip(data.x, cfg.privacy.clip_norm)
        seeded, _ = task.upload_once(cfg, data, t0, tmp_path / "seeded", noise_seed=run_seed * 100 + pid)
        hit = _invert(seeded.x_tilde, t0, cfg.T, candidates)
        assert hit is not None and (hit - raw).abs().max() < 1e-3  # the control: seeded noise is invertible
        secret, _ = task.upload_once(cfg, data, t0, tmp_path / "secret")
        assert _invert(secret.x_tilde, t0, cfg.T, candidates) is None
        # and the secret release is still the mechanism: x_tilde - sqrt(abar) x ~ N(0, (1 - abar) I)
        a = float(Schedule(cfg.T).alpha_bar[t0])
        z = (secret.x_tilde - a**0.5 * raw) / (1 - a) ** 0.5
        assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05


def test_secret_normal_is_standard_normal_and_never_repeats():
    from pfdm_core.privacy.mechanism import secret_normal

    a, b = secret_normal((200_000,)), secret_normal((200_000,))
    assert not torch.equal(a, b) and a.dtype == torch.float32
    for z in (a, b):
        assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
        assert abs(float(((z - z.mean()) ** 4).mean()) / float(z.var()) ** 2 - 3) < 0.1  # Gaussian kurtosis


def test_harmonize_brings_uploads_to_the_largest_t0():
    cfg = task.AppConfig(num_clients=2).experiment()
    a = client_upload(task.load_partition(cfg, 0, 0), 400, Schedule(cfg.T), cfg.privacy.clip_norm, seed=1)
    b = client_upload(task.load_partition(cfg, 0, 1), 693, Schedule(cfg.T), cfg.privacy.clip_norm, seed=2)
    ha, hb = task.harmonize([a, b], seed=0, T=cfg.T)
    assert ha.t0 == hb.t0 == 693 and hb is b and ha.x_tilde.shape == a.x_tilde.shape
    assert ha.eps == a.eps  # post-processing: the client's eps is unchanged
    # variance of a diffused-further upload matches a direct one: sqrt(abar) x + sqrt(1 - abar) z has std ~ 1
    assert abs(float(ha.x_tilde.std()) - float(hb.x_tilde.std())) < 0.1


def test_raw_image_check_detects_raw_images_and_passes_uploads():
    cfg = task.AppConfig(num_clients=2).experiment()
    data = task.load_partition(cfg, 0, 0)
    raw = clip(data.x, cfg.privacy.clip_norm)
    up = client_upload(data, 693, Schedule(cfg.T), cfg.privacy.clip_norm, seed=0)
    assert task.max_raw_correlation([up.x_tilde.numpy(), up.y.numpy()], raw) < 0.8  # chance level in 64 dims: ~0.5
    # the check WOULD fail on raw images: as they are, rescaled, or one hidden among uploads
    assert task.max_raw_correlation([raw.numpy()], raw) > 0.99
    assert task.max_raw_correlation([3 * raw[:1].numpy() + 1], raw) > 0.99
    mixed = up.x_tilde.clone()
    mixed[5] = raw[17]
    assert task.max_raw_correlation([mixed.numpy()], raw) > 0.99
    # barely noised images (a tiny t0) are caught too
    leaky = client_upload(data, 5, Schedule(cfg.T), cfg.privacy.clip_norm, seed=0)
    assert task.max_raw_correlation([leaky.x_tilde.numpy()], raw) > 0.99


def test_local_federation_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="num_nodes must be >= 1"):
        LocalFederation(0, tmp_path)


# ----------------------------------------------------------------------------- real SuperLink + SuperNodes
def _raw_images(num_clients: int) -> torch.Tensor:
    cfg = task.AppConfig(num_clients=num_clients).experiment()
    return torch.cat([clip(task.load_partition(cfg, 0, k).x, cfg.privacy.clip_norm) for k in range(num_clients)])


@pytest.mark.slow
def test_pfdm_on_superlink_and_two_supernodes_uploads_no_raw_image(tmp_path):
    start = time.monotonic()
    with LocalFederation(2, tmp_path / "fed") as fed:
        result = fed.run({**RUN, "min-clients": 2}, timeout=110)
    assert time.monotonic() - start < 150
    assert sorted(result["clients"]) == ["0", "1"] and result["excluded_nodes"] == []
    for c in result["clients"].values():
        assert c["eps"] == pytest.approx(9.9959, abs=1e-3) and c["t0"] == 693 and np.isfinite(c["fid_avg"])
    # the server-side log of received messages: only uploads, of privatized images and labels
    out = tmp_path / "fed" / "out"
    log = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    assert {row["type"] for row in log} == {"query.upload"} and {row["key"] for row in log} == {"x_tilde", "y"}
    with np.load(out / "audit.npz") as z:
        received = [z[k] for k in z.files]
    raw = _raw_images(2)
    assert len(received) == 4
    assert task.max_raw_correlation(received, raw) < 0.99  # no raw (or barely noised) image reached the server
    assert task.max_raw_correlation(received + [raw[:3].numpy()], raw) > 0.99  # the same check on a leak fails
    hashes = {row["sha256"] for row in log}
    assert not any(__import__("hashlib").sha256(x.numpy().tobytes()).hexdigest() in hashes for x in raw.split(1))


@pytest.mark.slow
def test_run_finishes_when_a_supernode_dies_before_uploading(tmp_path):
    with LocalFederation(2, tmp_path / "fed") as fed:
        out = tmp_path / "fed" / "out"
        proc = fed.submit({**RUN, "min-clients": 1, "upload-timeout": 30.0, "out-dir": str(out)})
        deadline = time.monotonic() + 60
        while not (out / "status.json").exists() or json.loads((out / "status.json").read_text())["phase"] != "uploads-requested":
            assert time.monotonic() < deadline and proc.poll() is None, fed.log("flwr_run")[-2000:]
            time.sleep(0.05)
        fed.kill_node(1)  # drops out before step 1 completes
        deadline = time.monotonic() + 100
        while not (out / "result.json").exists():
            assert time.monotonic() < deadline, fed.log("flwr_run")[-2000:]
            time.sleep(0.2)
        result = json.loads((out / "result.json").read_text())
    assert list(result["clients"]) == ["0"] and len(result["excluded_nodes"]) == 1
    assert np.isfinite(result["clients"]["0"]["fid_avg"])


# ----------------------------------------------------------------------------- the server checks every upload
def _check(x, y, t0, eps, cfg):
    from pfdm_core.methods.server import check_upload
    from pfdm_core.privacy.mechanism import epsilon

    S = Schedule(cfg.T)
    return check_upload(x, y, t0, eps, shape=(1, 8, 8), num_classes=10, sched=S, min_t0=693, clip_norm=cfg.privacy.clip_norm,
                        eps_of=lambda t: epsilon(t, S, cfg.privacy.clip_norm, cfg.privacy.delta))


def test_server_accepts_honest_uploads_and_refuses_bad_ones():
    cfg = task.AppConfig(num_clients=2).experiment()
    data = task.load_partition(cfg, 0, 0)
    for t0 in (693, 800, 999):  # honest clients, the strictest included
        up = client_upload(data, t0, Schedule(cfg.T), cfg.privacy.clip_norm)
        ok = _check(up.x_tilde.numpy(), up.y.numpy(), t0, up.eps, cfg)
        assert ok.t0 == t0 and torch.equal(ok.x_tilde, up.x_tilde)
    up = client_upload(data, 693, Schedule(cfg.T), cfg.privacy.clip_norm)
    x, y, eps = up.x_tilde.numpy(), up.y.numpy(), up.eps
    bad = {
        "mean square": (data.x.numpy(), y, 693, eps),  # raw images claiming t0 = 693
        "mean square ": (x * 1e6, y, 693, eps),  # a rescaled upload
        "NaN": (np.where(np.arange(x.size).reshape(x.shape) == 3, np.nan, x).astype(np.float32), y, 693, eps),
        "float32 of shape": (x[:, :, :4], y, 693, eps),
        "float32 of shape ": (x.astype(np.float64), y, 693, eps),
        "labels must be in": (x, np.full_like(y, 10), 693, eps),
        "int64 of shape": (x, y[:-1], 693, eps),
        "t0 must be an integer in 693..999": (x, y, 500, eps),  # less noise than the server proposed
        "t0 must be an integer in 693..999 ": (x, y, 1000, eps),
        "not the run's eps": (x, y, 693, eps / 2),
    }
    for reason, args in bad.items():
        with pytest.raises(ValueError, match=reason.strip()):
            _check(*args, cfg)


class _Arr:
    def __init__(self, a):
        self.a = a

    def numpy(self):
        return self.a


class _Content(dict):
    array_records: dict = {}


class _Reply:
    def __init__(self, node, content):
        self.metadata, self.content = type("Meta", (), {"src_node_id": node})(), _Content(content)

    def has_error(self):
        return False


class _FakeGrid:
    """Answers run_pfdm's two rounds: the uploads given per node, then metrics for train.personal."""

    def __init__(self, uploads):
        self.uploads, self.personal_asked = uploads, []

    def send_and_receive(self, messages, timeout=None):
        messages = list(messages)
        if messages[0].metadata.message_type == "query.upload":
            return [_Reply(n, c) for n, c in self.uploads.items()]
        self.personal_asked = [m.metadata.dst_node_id for m in messages]
        return [_Reply(m.metadata.dst_node_id, {"metrics": {"fid_minor": 1.0, "partition-id": 0}}) for m in messages]


def test_bad_uploads_exclude_their_clients_and_the_run_goes_on(tmp_path, monkeypatch):
    from flwr.app import ConfigRecord
    from flwr.supercore.task_identity import TaskIdentity

    from pfdm_core.flower_app import server_app

    for key in ("_run_id", "_node_id", "_task_id"):  # what a ServerApp process has set
        monkeypatch.setattr(TaskIdentity, key, 1)
    conf = task.AppConfig(num_clients=2, min_clients=2, out_dir=str(tmp_path))
    cfg = conf.experiment()
    t0 = int(cfg.privacy.t0s[0])

    def reply(pid, x=None, y=None, t0_=t0, eps=None):
        up = client_upload(task.load_partition(cfg, 0, pid), t0, Schedule(cfg.T), cfg.privacy.clip_norm)
        return {"upload": {"x_tilde": _Arr(up.x_tilde.numpy() if x is None else x),
                           "y": _Arr(up.y.numpy() if y is None else y)},
                "metrics": {"t0": t0_, "eps": up.eps if eps is None else eps, "repeated": 0, "partition-id": pid}}

    raw = task.load_partition(cfg, 0, 1).x.numpy()
    honest0, honest1 = reply(0), reply(1)
    nan = reply(1)
    nan["upload"]["x_tilde"].a = np.full_like(nan["upload"]["x_tilde"].a, np.nan)
    grid = _FakeGrid({11: honest0, 12: honest1, 13: reply(1, x=raw), 14: nan, 15: reply(0), 16: {"metrics": {}}})
    result = server_app.run_pfdm(grid, [11, 12, 13, 14, 15, 16], conf, cfg, ConfigRecord({}), tmp_path)
    assert sorted(result["clients"]) == ["0", "1"] and sorted(grid.personal_asked) == [11, 12]
    assert set(result["rejected"]) == {"13", "14", "15", "16"}
    assert "mean square" in result["rejected"]["13"] and "NaN" in result["rejected"]["14"]
    assert "already uploaded" in result["rejected"]["15"] and "KeyError" in result["rejected"]["16"]
    # with too few valid uploads the run stops with the reasons on disk, before any training
    with pytest.raises(RuntimeError, match="min-clients=2"):
        server_app.run_pfdm(_FakeGrid({11: honest0, 13: reply(1, x=raw)}), [11, 13], conf, cfg, ConfigRecord({}), tmp_path)
    assert json.loads((tmp_path / "status.json").read_text())["phase"] == "failed"


def test_run_config_and_node_config_are_type_checked():
    with pytest.raises(ValueError, match="run-config seed must be int, got '../..'"):
        task.AppConfig(seed="../..")
    with pytest.raises(ValueError, match="run-config return-samples must be bool, got 'false'"):
        task.AppConfig.from_run_config({"return-samples": "false"})
    with pytest.raises(ValueError, match="no partition-id"):
        task.NodeSettings.from_node_config({})
    with pytest.raises(ValueError, match="unknown node-config key"):
        task.NodeSettings.from_node_config({"partition-id": 0, "seed": 3})
    with pytest.raises(ValueError, match="node-config clip must be float"):
        task.NodeSettings.from_node_config({"partition-id": 0, "clip": "10"})
    node = task.NodeSettings.from_node_config({"partition-id": 1, "clip": 4.0, "allow-samples": True})
    cfg = task.AppConfig(num_clients=2).experiment()
    assert node.clip_norm(cfg) == 4.0 and node.noise_seed is None
    assert task.NodeSettings(0, clip=50.0).clip_norm(cfg) == cfg.privacy.clip_norm  # never softer than the run
    # the client's own, stricter clip norm sets its t0 for a requested eps
    assert task.client_t0(100, task.NodeSettings(0, eps=10.0), cfg, 4.0) < task.client_t0(100, task.NodeSettings(0, eps=10.0), cfg)


def test_a_client_serves_its_own_images(tmp_path):
    cfg = task.AppConfig(num_clients=2).experiment()
    x = (torch.rand(30, 1, 8, 8) * 2 - 1).numpy()
    y = np.arange(30) % 10
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    node = task.NodeSettings(0, data_file=str(tmp_path / "mine.npz"))
    data = task.client_data(cfg, 0, node)
    assert torch.equal(data.x, torch.from_numpy(x)) and data.y.tolist() == y.tolist()
    up, _ = task.upload_once(cfg, data, 693, tmp_path / "ledger")
    assert up.x_tilde.shape == (30, 1, 8, 8)
    with pytest.raises(FileNotFoundError, match="data-file"):
        task.client_data(cfg, 0, task.NodeSettings(0, data_file=str(tmp_path / "none.npz")))
    np.savez(tmp_path / "bad.npz", x=x * 3, y=y)
    with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
        task.load_own_data(tmp_path / "bad.npz", cfg)
    np.savez(tmp_path / "bad.npz", x=x[:, :, :4], y=y)
    with pytest.raises(ValueError, match="shape"):
        task.load_own_data(tmp_path / "bad.npz", cfg)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not an .npz"):
        task.load_own_data(tmp_path / "junk.npz", cfg)


@pytest.mark.slow
def test_a_node_with_its_own_images_and_eps_half_completes(tmp_path):
    """Real SuperLink + SuperNodes: node 0 serves an .npz of its own images and asks eps = 0.5 per image, which
    at the run's C = 10 no t0 reaches (t0 = 999 gives 0.62), so it also clips harder (its own C = 5): t0 = 951,
    which the server checks against that C; node 1 is a simulation partition, harmonized to t0 = 951."""
    cfg = task.AppConfig(num_clients=2).experiment()
    own = task.load_partition(cfg, 0, 0)
    np.savez(tmp_path / "own.npz", x=own.x.numpy(), y=own.y.numpy())
    nodes = {0: {"data-file": str(tmp_path / "own.npz"), "eps": 0.5, "clip": 5.0}}
    with LocalFederation(2, tmp_path / "fed", node_config=nodes) as fed:
        result = fed.run({**RUN, "min-clients": 2}, timeout=110)
    assert sorted(result["clients"]) == ["0", "1"] and result["rejected"] == {}
    assert result["t0"] == 951 and result["clients"]["0"]["t0"] == 951 and result["clients"]["0"]["eps"] <= 0.5


@pytest.mark.slow
def test_tls_with_supernode_authentication(tmp_path):
    """TLS (a CA and certificate made in the test) and --enable-supernode-auth: the registered SuperNodes run
    PFDM to the end, plaintext is refused, and a SuperNode whose key was never registered is kept out."""
    import urllib.request

    with LocalFederation(2, tmp_path / "fed", tls=True) as fed:
        with pytest.raises(Exception):  # the port speaks TLS only
            urllib.request.urlopen(f"http://127.0.0.1:{fed.port}/health", timeout=2)
        fed.start_node(2)  # the spare key of make_pki: not registered
        result = fed.run({**RUN, "min-clients": 2}, timeout=110)
        assert sorted(result["clients"]) == ["0", "1"] and len(result["nodes"]) == 2
        assert "SuperNode ID" not in fed.log("supernode2")


@pytest.mark.slow
def test_malicious_nodes_are_excluded_and_the_honest_ones_finish(tmp_path):
    """Real SuperLink + 6 SuperNodes: 0 and 1 honest; 2 sends a NaN, 3 its raw images claiming the proposed t0,
    4 images of the wrong shape (tests/flower_malicious patches their ClientApp), 5 repeats partition 0."""
    evil = str(Path(__file__).parent / "flower_malicious")
    env = {k: {"PFDM_TEST_MALICIOUS": mode, "PYTHONPATH": os.pathsep.join([evil, os.environ.get("PYTHONPATH", "")])}
           for k, mode in {2: "nan", 3: "raw", 4: "shape"}.items()}
    with LocalFederation(6, tmp_path / "fed", node_config={k: {"partition-id": k % 2} for k in range(2, 6)},
                         node_env=env) as fed:
        result = fed.run({**RUN, "min-clients": 2}, timeout=150)
    reasons = list(result["rejected"].values())
    assert sorted(result["clients"]) == ["0", "1"] and len(result["nodes"]) == 6 and len(reasons) == 4
    for what in ("NaN", "mean square", "float32 of shape", "already uploaded"):
        assert sum(what in r for r in reasons) == 1, (what, reasons)
