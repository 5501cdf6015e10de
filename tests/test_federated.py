"""PFDM's client/server split, FedAvg, and the sampling plumbing (pfdm_core.methods.pfdm, .server, .fedavg).

The central property of PFDM: the server trains on privatized uploads only. The spy
test below records what the server's training loop actually receives during
`experiment.train_method("pfdm", ...)` and checks it against the raw client images; a control
test shows that the same checks reject raw images (so the spy test can fail).
"""
import ast
import inspect
import math

import numpy as np
import pytest
import torch
from torch import nn

from pfdm_core import experiment
from pfdm_core.core.diffusion import ddim_timesteps, generate
from pfdm_core.core.nets import UNet, UNetConfig
from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig, TrainResult
from pfdm_core.data.partition import client_classes
from pfdm_core.data.small import Dataset, union
from pfdm_core.methods import fedavg as fedavg_mod
from pfdm_core.methods import pfdm as federated
from pfdm_core.methods import registry, server
from pfdm_core.methods.fedavg import train_fedavg
from pfdm_core.methods.pfdm import client_upload, pfdm_sample, server_train_shared, split_steps
from pfdm_core.methods.server import Upload
from pfdm_core.privacy.mechanism import clip, epsilon

S = Schedule()


def _cfg(**kw):
    """The smoke preset, shrunk: 4 clients x (5 x 8 + 5 x 2) images, 2 training steps."""
    base = dict(majority_per_class=8, minority_per_class=2, n_per_class=5, classifier_epochs=1, ddim_steps=3,
                net=UNetConfig(base_channels=8), train=TrainConfig(steps=2, batch_size=16, lr=1e-3))
    return experiment.preset_config("smoke", **{**base, **kw})


def _tiny_data(n=6, seed=0, value=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1 if value is None else torch.full((n, 1, 8, 8), float(value))
    return Dataset(x, torch.arange(n) % 10)


# ----------------------------------------------------------------------------- the server sees only uploads
def _flat(x):
    return x.detach().double().flatten(1)


def assert_privatized(received: torch.Tensor, raw: torch.Tensor, t0: int, clip_norm: float | None,
                      rows_per_client: list[int]) -> None:
    """`received` (row-aligned with `raw`) is sqrt(abar) clip(raw) + sqrt(1 - abar) z, z ~ N(0, I) fresh per client.

    Raises AssertionError when raw images (or a noiseless / non-fresh-noise version) are received.
    """
    a = float(S.alpha_bar[t0])
    xr = _flat(clip(raw, clip_norm) if clip_norm is not None else raw)
    xt = _flat(received)
    assert xt.shape == xr.shape, "the server must receive one privatized row per client image"
    # 1. no received row equals, or is nearly, any raw client image
    dist = torch.cdist(xt, _flat(raw))  # (N, N)
    assert dist.min() > 1.0, f"a received tensor is within {float(dist.min()):.3g} of a raw image"
    xt_c, raw_c = xt - xt.mean(1, keepdim=True), _flat(raw) - _flat(raw).mean(1, keepdim=True)
    corr = (xt_c / xt_c.norm(dim=1, keepdim=True)) @ (raw_c / raw_c.norm(dim=1, keepdim=True).clamp_min(1e-12)).T
    assert corr.max() < 0.99, f"a received tensor is a rescaled raw image (correlation {float(corr.max()):.4f})"
    # 2. the mechanism's statistics: slope sqrt(abar) on the (clipped) truth, residual N(0, 1 - abar), independent
    u, v = xr.flatten() - xr.mean(), xt.flatten() - xt.mean()
    slope = float((u * v).sum() / (u * u).sum())
    se = math.sqrt(1 - a) / (math.sqrt(len(u)) * float(u.std()))
    assert abs(slope - math.sqrt(a)) < max(5 * se, 0.02), f"slope {slope:.4f} != sqrt(abar_t0) = {math.sqrt(a):.4f}"
    resid = xt - math.sqrt(a) * xr
    assert float(resid.std()) == pytest.approx(math.sqrt(1 - a), rel=0.05), "noise std != sqrt(1 - abar_t0)"
    assert abs(float(resid.mean())) < 0.05
    # 3. every client draws fresh noise (no shared seed between clients)
    bounds = np.cumsum([0] + list(rows_per_client))
    r0, r1 = resid[bounds[0]:bounds[1]].flatten(), resid[bounds[1]:bounds[2]].flatten()
    k = min(len(r0), len(r1))
    assert abs(float(torch.corrcoef(torch.stack([r0[:k], r1[:k]]))[0, 1])) < 0.1, "clients reuse the same noise"


def _spy_on_server_and_personal(monkeypatch):
    """Replace the server's training loop by a recorder (no training); wrap the personal one."""
    calls = {"server": [], "personal": []}

    def server_spy(model, sched, x, y, t_lo, t_hi, origin=0, config=None, checkpoint=None, progress=True, desc=""):
        calls["server"].append(dict(x=x.clone(), y=y.clone(), t_lo=t_lo, t_hi=t_hi, origin=origin))
        return TrainResult(model.eval(), [])

    real_train = federated.train

    def personal_spy(model, sched, x, y, t_lo, t_hi, origin=0, **kw):
        calls["personal"].append(dict(x=x.clone(), t_lo=t_lo, t_hi=t_hi, origin=origin))
        return real_train(model, sched, x, y, t_lo, t_hi, origin, **kw)

    uploads = []
    real_server_train_shared = registry.server_train_shared

    def upload_spy(ups, *a, **kw):
        uploads.extend(ups)
        return real_server_train_shared(ups, *a, **kw)

    monkeypatch.setattr(server, "train", server_spy)
    monkeypatch.setattr(federated, "train", personal_spy)
    monkeypatch.setattr(registry, "server_train_shared", upload_spy)
    return calls, uploads


@pytest.mark.parametrize("t0, clip_norm", [(300, 10.0), (693, 3.0)])
def test_server_receives_only_privatized_tensors(monkeypatch, tmp_path, t0, clip_norm):
    cfg = _cfg(t0s=(t0,), clip_norm=clip_norm)
    split = experiment.make_split(cfg, seed=0)
    calls, uploads = _spy_on_server_and_personal(monkeypatch)
    models = experiment.train_method("pfdm", cfg, split, 0, t0, tmp_path, progress=False)
    assert set(models) == {"shared", "personal"}

    assert len(calls["server"]) == 1, "the server trains exactly one shared model"
    rec = calls["server"][0]
    raw = union(split.clients)
    assert_privatized(rec["x"], raw.x, t0, clip_norm, [len(d) for d in split.clients])
    assert torch.equal(rec["y"], raw.y)  # labels travel in the clear
    assert (rec["t_lo"], rec["t_hi"], rec["origin"]) == (t0 + 1, S.T, t0)  # steps t0+1..T, x_tilde as x_t0

    # every client uploaded once, with the eps of the accountant
    assert len(uploads) == cfg.split.num_clients and all(isinstance(u, Upload) for u in uploads)
    for u in uploads:
        assert u.t0 == t0
        assert u.eps == pytest.approx(epsilon(t0, S, clip_norm=clip_norm, delta=cfg.privacy.delta))

    # the personal model: client 0's clean data, clipped exactly as uploaded, steps 1..t0
    assert len(calls["personal"]) == 1
    p = calls["personal"][0]
    assert torch.allclose(p["x"], clip(split.clients[cfg.eval.client].x, clip_norm))
    assert (p["t_lo"], p["t_hi"], p["origin"]) == (1, t0, 0)


def test_privatization_check_rejects_raw_images():
    """Control: the checks of the spy test fail on what a leaky server would receive."""
    g = torch.Generator().manual_seed(0)
    raw = torch.rand(200, 1, 8, 8, generator=g) * 2 - 1
    a = float(S.alpha_bar[300])
    with pytest.raises(AssertionError):
        assert_privatized(raw, raw, 300, None, [100, 100])  # raw images
    with pytest.raises(AssertionError):
        assert_privatized(math.sqrt(a) * raw, raw, 300, None, [100, 100])  # scaled, no noise
    z = torch.randn(100, 1, 8, 8, generator=g)
    with pytest.raises(AssertionError):  # same noise for both clients
        assert_privatized(math.sqrt(a) * raw + math.sqrt(1 - a) * torch.cat([z, z]), raw, 300, None, [100, 100])
    noisy = math.sqrt(a) * raw + math.sqrt(1 - a) * torch.randn(raw.shape, generator=g)
    assert_privatized(noisy, raw, 300, None, [100, 100])  # the real mechanism passes


def _factory():
    return nn.Linear(1, 1)


@pytest.mark.parametrize("bad", [
    pytest.param(lambda: torch.randn(4, 1, 8, 8), id="raw-tensor"),
    pytest.param(lambda: _tiny_data(), id="dataset"),
    pytest.param(lambda: [_tiny_data()], id="list-of-datasets"),
    pytest.param(lambda: [torch.randn(4, 1, 8, 8)], id="list-of-tensors"),
    pytest.param(lambda: [], id="empty"),
])
def test_server_rejects_non_uploads_with_type_error(bad, monkeypatch):
    monkeypatch.setattr(server, "train", lambda *a, **k: pytest.fail("server trained on a non-Upload input"))
    with pytest.raises(TypeError, match="Upload"):
        server_train_shared(bad(), _factory, S, TrainConfig(steps=1), progress=False)


def test_upload_fields_and_eps():
    d = _tiny_data(8)
    u = client_upload(d, 693, S, clip_norm=10.0, seed=3, delta=1e-5)
    assert isinstance(u, Upload) and u.t0 == 693
    assert u.x_tilde.shape == d.x.shape and not torch.allclose(u.x_tilde, d.x)
    assert torch.equal(u.y, d.y)
    assert u.eps == pytest.approx(epsilon(693, S, clip_norm=10.0, delta=1e-5)) and u.eps < 10
    ua = client_upload(d, 693, S, clip_norm=10.0, seed=3, delta=1e-5, accountant="analytic")
    assert ua.eps == pytest.approx(epsilon(693, S, clip_norm=10.0, delta=1e-5, accountant="analytic"))
    assert ua.eps < u.eps
    assert torch.equal(ua.x_tilde, u.x_tilde)  # same seed, same upload
    assert not torch.equal(client_upload(d, 693, S, 10.0, seed=4).x_tilde, u.x_tilde)


def test_uploads_with_different_t0_rejected(monkeypatch):
    monkeypatch.setattr(server, "train", lambda *a, **k: pytest.fail("trained on mixed-t0 uploads"))
    d = _tiny_data()
    ups = [client_upload(d, 300, S, 10.0), client_upload(d, 400, S, 10.0, seed=1)]
    with pytest.raises(ValueError, match="share one t0"):
        server_train_shared(ups, _factory, S, TrainConfig(steps=1), progress=False)


def test_server_module_never_imports_data_or_privacy():
    tree = ast.parse(inspect.getsource(server))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m.split(".")[-1] in ("data", "privacy")}, imported


# ----------------------------------------------------------------------------- partition -> clients
def test_make_split_gives_per_client_datasets():
    cfg = _cfg()
    split = experiment.make_split(cfg, seed=0)
    assert len(split.clients) == cfg.split.num_clients
    train_rows = _flat(split.train.x)
    for m, d in enumerate(split.clients):
        assert d.x.shape == (5 * 8 + 5 * 2, 1, 8, 8) and d.y.shape == (50,)
        counts = np.bincount(d.y.numpy(), minlength=10)
        maj, mino = client_classes(m, cfg.split.num_clients)
        assert (counts[maj] == 8).all() and (counts[mino] == 2).all()
        assert torch.cdist(_flat(d.x), train_rows).min(1).values.max() == 0  # every image is a training image
    assert len(split.test) == 360 and len(split.train) == 1437


# ----------------------------------------------------------------------------- sampling
class _RecordingZeroEps(nn.Module):
    """eps_theta = 0; records the steps it is called at."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))
        self.steps = []

    def forward(self, x, t, y=None):
        self.steps.append(int(t[0]))
        return torch.zeros_like(x)


@pytest.mark.parametrize("t0, num_steps", [(693, 10), (300, 7)])
def test_pfdm_sample_chains_shared_then_personal(t0, num_steps):
    shared, personal = _RecordingZeroEps(), _RecordingZeroEps()
    y = torch.arange(5)
    out = pfdm_sample(shared, personal, S, t0, y, (5, 1, 8, 8), "ddim", num_steps, seed=0)
    assert out.shape == (5, 1, 8, 8) and torch.isfinite(out).all()
    n_shared, n_personal = split_steps(t0, S.T, num_steps)
    assert shared.steps == ddim_timesteps(t0, S.T, n_shared)[:-1]  # T .. t0+1 only
    assert personal.steps == ddim_timesteps(0, t0, n_personal)[:-1]  # t0 .. 1 only
    assert min(shared.steps) > t0 and max(shared.steps) == S.T
    assert max(personal.steps) == t0 and min(personal.steps) >= 1


def test_pfdm_sample_and_generate_shapes_with_unet():
    torch.manual_seed(0)
    shared, personal = UNet(UNetConfig(base_channels=8)).eval(), UNet(UNetConfig(base_channels=8)).eval()
    y = torch.tensor([0, 3, 5, 9, 1])
    out = pfdm_sample(shared, personal, S, 693, y, (5, 1, 8, 8), num_steps=4, seed=1)
    assert out.shape == (5, 1, 8, 8) and torch.isfinite(out).all()
    chunked = pfdm_sample(shared, personal, S, 693, y, (5, 1, 8, 8), num_steps=4, seed=1, batch_size=2)
    assert torch.allclose(out, chunked, atol=1e-4)  # batching does not change deterministic DDIM samples
    full = generate(shared, S, y, (5, 1, 8, 8), "ddim", 3, seed=0)
    assert full.shape == (5, 1, 8, 8) and torch.isfinite(full).all()


def test_split_steps_sum_and_bounds():
    bad = []
    for t0 in (1, 10, 100, 500, 693, 900, 990, 999):
        for num_steps in (2, 3, 10, 25, 100):
            n_shared, n_personal = split_steps(t0, 1000, num_steps)
            ok = (n_shared >= 1 and n_personal >= 1
                  and n_shared + n_personal == num_steps  # the DDIM budget is split, not exceeded
                  and abs(n_shared - num_steps * (1000 - t0) / 1000) <= 1)  # proportional up to rounding
            if not ok:
                bad.append((t0, num_steps, (n_shared, n_personal)))
    assert not bad, f"(t0, num_steps, split) violating 1 <= parts, sum == num_steps, proportionality: {bad}"


def test_split_steps_examples():
    assert split_steps(500, 1000, 25) == (12, 13)
    assert split_steps(693, 1000, 10) == (3, 7)
    assert split_steps(999, 1000, 25) == (1, 24)


# ----------------------------------------------------------------------------- FedAvg
class _FakeLocalTraining:
    """Stands in for `train` in train_fedavg: adds the client's data mean to every weight."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, sched, x, y, t_lo, t_hi, origin=0, config=None, checkpoint=None, progress=True,
                 desc=""):
        self.calls.append(dict(n=len(x), steps=config.steps, seed=config.seed, t=(t_lo, t_hi, origin)))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(x.mean()))
        return TrainResult(model, [])


def _linear_factory():
    torch.manual_seed(0)
    return nn.Linear(3, 2)


def _weights(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_fedavg_one_round_is_size_weighted_average(monkeypatch):
    fake = _FakeLocalTraining()
    monkeypatch.setattr(fedavg_mod, "train", fake)
    clients = [_tiny_data(2, value=1.0), _tiny_data(6, value=3.0)]
    w0 = _weights(_linear_factory())
    model = train_fedavg(clients, _linear_factory, S, TrainConfig(steps=4, seed=7), rounds=1, progress=False)
    # (2 * (w0 + 1) + 6 * (w0 + 3)) / 8 = w0 + 2.5; an unweighted mean would give w0 + 2
    assert torch.allclose(_weights(model), w0 + 2.5, atol=1e-6)
    assert sorted(c["n"] for c in fake.calls) == [2, 6]
    assert all(c["steps"] == 4 and c["t"] == (1, S.T, 0) for c in fake.calls)
    assert not model.training


def test_fedavg_identical_clients_average_is_the_local_model(monkeypatch):
    monkeypatch.setattr(fedavg_mod, "train", _FakeLocalTraining())
    same = _tiny_data(4, value=0.5)
    model = train_fedavg([same, same, same], _linear_factory, S, TrainConfig(steps=3), rounds=1, progress=False)
    assert torch.allclose(_weights(model), _weights(_linear_factory()) + 0.5, atol=1e-6)


def test_fedavg_rounds_start_from_global_weights(monkeypatch):
    fake = _FakeLocalTraining()
    monkeypatch.setattr(fedavg_mod, "train", fake)
    clients = [_tiny_data(2, value=1.0), _tiny_data(6, value=3.0)]
    model = train_fedavg(clients, _linear_factory, S, TrainConfig(steps=10, seed=7), rounds=2, progress=False)
    assert torch.allclose(_weights(model), _weights(_linear_factory()) + 5.0, atol=1e-6)  # two rounds of +2.5
    assert [c["steps"] for c in fake.calls] == [5] * 4  # rounds x local_steps = steps
    assert len({c["seed"] for c in fake.calls}) == 4  # a distinct seed per (round, client)


def test_fedavg_client_fraction(monkeypatch):
    fake = _FakeLocalTraining()
    monkeypatch.setattr(fedavg_mod, "train", fake)
    clients = [_tiny_data(2 + k, value=k) for k in range(4)]
    train_fedavg(clients, _linear_factory, S, TrainConfig(steps=6), rounds=3, client_fraction=0.5, progress=False)
    assert len(fake.calls) == 3 * 2
    for r in range(3):
        chosen = [c["n"] for c in fake.calls[2 * r:2 * r + 2]]
        assert len(set(chosen)) == 2  # two distinct clients per round


class _Interrupt(Exception):
    pass


def test_fedavg_checkpoint_resume(monkeypatch, tmp_path):
    clients = [_tiny_data(2 + k, value=k) for k in range(4)]
    kw = dict(rounds=3, client_fraction=0.5, progress=False)
    straight_fake = _FakeLocalTraining()
    monkeypatch.setattr(fedavg_mod, "train", straight_fake)
    straight = train_fedavg(clients, _linear_factory, S, TrainConfig(steps=6), **kw)

    # the same run killed in round 2 (after round 1's checkpoint), then resumed
    ck = tmp_path / "fedavg.pt"
    dying = _FakeLocalTraining()

    def die_in_round_2(*a, **k):
        if len(dying.calls) == 2:
            raise _Interrupt
        return dying(*a, **k)

    monkeypatch.setattr(fedavg_mod, "train", die_in_round_2)
    with pytest.raises(_Interrupt):
        train_fedavg(clients, _linear_factory, S, TrainConfig(steps=6), checkpoint=ck, **kw)
    assert torch.load(ck, weights_only=False)["round"] == 1
    resumed_fake = _FakeLocalTraining()
    monkeypatch.setattr(fedavg_mod, "train", resumed_fake)
    resumed = train_fedavg(clients, _linear_factory, S, TrainConfig(steps=6), checkpoint=ck, **kw)
    # rounds 2 and 3 only, with the clients (and seeds) the uninterrupted run drew
    assert resumed_fake.calls == straight_fake.calls[2:]
    assert torch.allclose(_weights(resumed), _weights(straight), atol=1e-6)
    assert torch.load(ck, weights_only=False)["round"] == 3

    resumed_fake.calls.clear()  # finished: a rerun trains nothing and returns the same model
    again = train_fedavg(clients, _linear_factory, S, TrainConfig(steps=6), checkpoint=ck, **kw)
    assert resumed_fake.calls == [] and torch.equal(_weights(again), _weights(resumed))


@pytest.mark.parametrize("rounds, fraction, name", [(0, 1.0, "rounds"), (-1, 1.0, "rounds"),
                                                    (2, 0.0, "client_fraction"), (2, 1.5, "client_fraction")])
def test_fedavg_validation(rounds, fraction, name, monkeypatch):
    monkeypatch.setattr(fedavg_mod, "train", lambda *a, **k: pytest.fail("trained despite invalid arguments"))
    with pytest.raises(ValueError, match=name):
        train_fedavg([_tiny_data()], _linear_factory, S, TrainConfig(steps=2), rounds, fraction, progress=False)


def test_fedavg_with_real_training_runs():
    torch.manual_seed(0)
    clients = [_tiny_data(6, seed=k) for k in range(2)]
    make = lambda: UNet(UNetConfig(base_channels=8))  # noqa: E731
    model = train_fedavg(clients, make, S, TrainConfig(steps=2, batch_size=4), rounds=2, progress=False)
    assert isinstance(model, UNet) and not model.training
    assert not torch.equal(_weights(model), _weights(make()))


def test_union_concatenates_in_client_order():
    a, b = _tiny_data(2, seed=0), _tiny_data(3, seed=1)
    u = union([a, b])
    assert len(u) == 5 and torch.equal(u.x[:2], a.x) and torch.equal(u.y[2:], b.y)


def test_pfdm_sample_refuses_fewer_than_two_steps():
    m = UNet(UNetConfig(base_channels=8))
    with pytest.raises(ValueError, match="num_steps must be an integer >= 2"):
        pfdm_sample(m, m, S, 693, torch.zeros(2, dtype=torch.long), (2, 1, 8, 8), num_steps=0)
