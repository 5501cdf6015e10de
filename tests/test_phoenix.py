"""Phoenix strategies (pfdm_core.methods.fedavg): partitions, data sharing, personalization, filtering."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from pfdm_core.core.nets import UNet, UNetConfig
from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig, TrainResult
from pfdm_core.data.partition import (
    cluster_partition,
    dirichlet_partition,
    iid_partition,
    partition,
)
from pfdm_core.data.small import Dataset, load_digits
from pfdm_core.evaluation.metrics import knn_precision_score
from pfdm_core.methods import fedavg as phoenix
from pfdm_core.methods.fedavg import (
    PhoenixConfig,
    personal_keys,
    share_global_subset,
    train_fedavg,
    train_phoenix,
    weighted_average,
)

S = Schedule()


def _data(n, value=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Dataset(torch.rand(n, 1, 8, 8, generator=g) * 0.1 + value, torch.arange(n) % 10)


class _Net(nn.Module):
    """A stand-in model with a 'body' and a 'head' (the personal layer in the tests)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body, self.head = nn.Linear(3, 3), nn.Linear(3, 2)


def _weights(m, prefix=""):
    return torch.cat([p.detach().flatten() for n, p in m.named_parameters() if n.startswith(prefix)])


class _FakeTrain:
    """Stands in for `train`: adds the client's data mean (+ a seed-dependent bit) to every weight,
    tags the model with the rounded data mean (for `_fake_generate`) and records the call."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, sched, x, y, t_lo, t_hi, origin=0, config=None, checkpoint=None, progress=True, desc=""):
        head_in = _weights(model, "head").clone()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(x.mean()) + 1e-6 * config.seed)  # seed = seed + 1000 * round + client
        model.tag = round(float(x.mean()))
        self.calls.append(dict(n=len(x), head_in=head_in, out={k: v.clone() for k, v in model.state_dict().items()},
                               mean=model.tag))
        return TrainResult(model, [])


# ----------------------------------------------------------------------------- partitions
def test_iid_partition_covers_disjoint_balanced():
    parts = iid_partition(103, 4, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(103))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_dirichlet_partition_covers_and_skew_grows_as_alpha_shrinks():
    y = np.repeat(np.arange(10), 100)

    def mean_max_share(alpha):  # average over clients of the largest class fraction
        parts = dirichlet_partition(y, 5, alpha, seed=0)
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))
        return np.mean([np.bincount(y[p], minlength=10).max() / len(p) for p in parts])

    assert mean_max_share(0.1) > mean_max_share(100.0) + 0.3
    assert mean_max_share(100.0) < 0.2  # close to IID: ~0.1 each
    a, b = dirichlet_partition(y, 5, 0.5, seed=3), dirichlet_partition(y, 5, 0.5, seed=3)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))


def test_partition_dispatch_and_errors():
    y = load_digits().y
    assert all(np.array_equal(a, b) for a, b in zip(partition(y, "cluster", 4, seed=2), cluster_partition(y, 4, seed=2)))
    assert len(partition(y, "dirichlet", 3, dirichlet_alpha=1.0)) == 3
    with pytest.raises(ValueError, match="dirichlet alpha must be > 0"):
        partition(y, "dirichlet", 3, dirichlet_alpha=0.0)
    with pytest.raises(ValueError, match="partition kind"):
        partition(y, "shards")
    with pytest.raises(ValueError, match="num_clients"):
        iid_partition(3, 4)


# ----------------------------------------------------------------------------- data sharing
def test_data_sharing_gives_each_client_alpha_of_a_class_balanced_G():
    clients = [_data(50, value=k, seed=k) for k in range(3)]  # 150 images in all
    shared, G = share_global_subset(clients, beta=0.2, alpha=0.5, seed=0)
    assert len(G) == 30 and (np.bincount(G.y.numpy(), minlength=10) == 3).all()  # |G| = beta * total, balanced
    G_rows = G.x.flatten(1)
    for d, s in zip(clients, shared):
        assert len(s) == len(d) + 15  # alpha * |G| shared images ...
        assert torch.equal(s.x[:len(d)], d.x) and torch.equal(s.y[:len(d)], d.y)  # ... appended to local data
        extra = s.x[len(d):].flatten(1)
        assert (extra[:, None] == G_rows[None]).all(-1).any(1).all()  # every one of them is in G
        assert len(torch.unique(extra, dim=0)) == 15  # distinct
    assert not torch.equal(shared[0].x[50:], shared[1].x[50:])  # each client draws its own fraction


def test_data_sharing_from_a_pool_and_errors():
    clients = [_data(20, seed=k) for k in range(2)]
    pool = _data(100, value=5.0, seed=9)
    shared, G = share_global_subset(clients, beta=0.5, alpha=1.0, pool=pool)
    assert len(G) == 20 and (G.x >= 5).all() and all(len(s) == 40 for s in shared)
    for beta, alpha, name in [(1.5, 0.5, "beta"), (-0.1, 0.5, "beta"), (0.2, 1.1, "alpha"), (0.2, -1, "alpha")]:
        with pytest.raises(ValueError, match=name):
            share_global_subset(clients, beta, alpha)
    with pytest.raises(ValueError, match="raise beta"):
        share_global_subset(clients, 0.01, 0.5)  # |G| < number of classes
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        PhoenixConfig(beta=0.1, alpha=2.0)


# ----------------------------------------------------------------------------- aggregation
def test_personal_keys_and_weighted_average():
    keys = list(_Net().state_dict())
    assert personal_keys(keys, ["head"]) == {"head.weight", "head.bias"}
    with pytest.raises(ValueError, match="matches no parameter"):
        personal_keys(keys, ["tail"])
    a, b = {"w": torch.ones(2), "h": torch.zeros(1)}, {"w": 3 * torch.ones(2), "h": torch.ones(1)}
    avg = weighted_average([a, b], [1, 3], exclude={"h"})
    assert set(avg) == {"w"} and torch.allclose(avg["w"], torch.full((2,), 2.5))


def test_personalized_parameters_bit_identical_across_aggregation(monkeypatch):
    fake = _FakeTrain()
    monkeypatch.setattr(phoenix, "train", fake)
    clients = [_data(2, value=1.0), _data(6, value=3.0, seed=1)]
    res = train_phoenix(clients, _Net, S, TrainConfig(steps=4), PhoenixConfig(rounds=2, personal_layers=("head",)),
                        progress=False)
    last = {c["n"]: c for c in fake.calls[2:]}  # round 2, keyed by client size
    for k, d in enumerate(clients):
        mine = res.client_model(k).state_dict()
        for key in ("head.weight", "head.bias"):  # never averaged: exactly what the client trained
            assert torch.equal(mine[key], last[len(d)]["out"][key])
    # round 2 started from each client's own head of round 1, not from an average
    first = {c["n"]: c for c in fake.calls[:2]}
    for n in (2, 6):
        assert torch.equal(last[n]["head_in"], torch.cat([first[n]["out"]["head.weight"].flatten(),
                                                          first[n]["out"]["head.bias"]]))
    # the shared body is the size-weighted average of the round-2 updates
    body = (2 * last[2]["out"]["body.weight"].double() + 6 * last[6]["out"]["body.weight"].double()) / 8
    assert torch.allclose(res.model.state_dict()["body.weight"].double(), body, atol=1e-6)
    assert torch.equal(res.client_model(0).state_dict()["body.weight"], res.client_model(1).state_dict()["body.weight"])
    assert torch.equal(_weights(res.model, "head"), _weights(_Net(), "head"))  # the server never averaged heads


# ----------------------------------------------------------------------------- threshold filtering
def _fake_generate(model, sched, y, shape, *args, **kwargs):
    """Samples equal to the local model's tag (so the score sees which client made them)."""
    return torch.full(shape, float(model.tag))


def test_threshold_filtering_disconnects_the_always_worst_client(monkeypatch):
    fake = _FakeTrain()
    monkeypatch.setattr(phoenix, "train", fake)
    monkeypatch.setattr(phoenix, "generate", _fake_generate)
    clients = [_data(4, value=0.0), _data(4, value=100.0, seed=1), _data(4, value=1.0, seed=2)]
    score = lambda x, y: -float(x.abs().mean())  # client 1's samples are far off: always the worst
    res = train_phoenix(clients, _Net, S, TrainConfig(steps=4),
                        PhoenixConfig(rounds=4, filter_k=2, filter_threshold=-50), score, progress=False)
    assert res.disconnected == [1]
    assert [h["flagged"] for h in res.history[:2]] == [1, 1]
    assert res.history[0]["disconnected"] == [] and res.history[1]["disconnected"] == [1]
    per_round = [[c["mean"] for c in fake.calls[3 * r:3 * r + 3]] for r in range(2)]
    assert all(100 in r for r in per_round)  # it trained in rounds 1-2 ...
    assert all(c["mean"] != 100 for c in fake.calls[6:]) and len(fake.calls) == 6 + 2 * 2  # ... never after
    # its round-2 update was dropped: the global model is the average of the other two clients only
    assert float(_weights(res.model).abs().max()) < 50
    # without a threshold the worst of every round is flagged: client 2 (worse than client 0) goes next
    res = train_phoenix(clients, _Net, S, TrainConfig(steps=4), PhoenixConfig(rounds=4, filter_k=2), score,
                        progress=False)
    assert res.disconnected == [1, 2]


def test_threshold_filtering_needs_k_in_a_row(monkeypatch):
    monkeypatch.setattr(phoenix, "train", _FakeTrain())
    monkeypatch.setattr(phoenix, "generate", _fake_generate)
    clients = [_data(4, value=0.0), _data(4, value=100.0, seed=1)]
    calls = []

    def alternating(x, y):  # round r flags client r % 2
        calls.append(float(x.mean()) > 50)
        r = (len(calls) - 1) // 2
        return -1.0 if calls[-1] == (r % 2 == 1) else 1.0

    res = train_phoenix(clients, _Net, S, TrainConfig(steps=6), PhoenixConfig(rounds=6, filter_k=2), alternating,
                        progress=False)
    assert [h["flagged"] for h in res.history] == [0, 1] * 3 and res.disconnected == []
    with pytest.raises(ValueError, match="score_fn"):
        train_phoenix(clients, _Net, S, TrainConfig(steps=2), PhoenixConfig(filter_k=2), progress=False)


def test_knn_precision_score():
    ref = torch.randn(50, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    score = knn_precision_score(ref, k=3)
    assert score(ref[:10], None) == 1.0 and score(ref[:10] + 100, None) == 0.0


# ----------------------------------------------------------------------------- the loop
def test_default_phoenix_is_train_fedavg_bit_for_bit():
    clients = [_data(6, seed=k) for k in range(3)]

    def make():
        torch.manual_seed(0)
        return UNet(UNetConfig(base_channels=8))

    cfg = TrainConfig(steps=2, batch_size=4)
    ref = train_fedavg(clients, make, S, cfg, rounds=2, client_fraction=0.7, progress=False)
    res = train_phoenix(clients, make, S, cfg, PhoenixConfig(rounds=2, client_fraction=0.7), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), res.model.state_dict().values()))


def test_phoenix_checkpoint_resume(monkeypatch, tmp_path):
    clients = [_data(2 + k, value=k, seed=k) for k in range(4)]
    ph = PhoenixConfig(rounds=3, client_fraction=0.5, personal_layers=("head",))
    straight_fake = _FakeTrain()
    monkeypatch.setattr(phoenix, "train", straight_fake)
    straight = train_phoenix(clients, _Net, S, TrainConfig(steps=6), ph, progress=False)

    class Interrupt(Exception):
        pass

    dying = _FakeTrain()

    def die_in_round_2(*a, **k):
        if len(dying.calls) == 2:
            raise Interrupt
        return dying(*a, **k)

    ck = tmp_path / "phoenix.pt"
    monkeypatch.setattr(phoenix, "train", die_in_round_2)
    with pytest.raises(Interrupt):
        train_phoenix(clients, _Net, S, TrainConfig(steps=6), ph, checkpoint=ck, progress=False)
    resumed_fake = _FakeTrain()
    monkeypatch.setattr(phoenix, "train", resumed_fake)
    resumed = train_phoenix(clients, _Net, S, TrainConfig(steps=6), ph, checkpoint=ck, progress=False)
    assert [c["n"] for c in resumed_fake.calls] == [c["n"] for c in straight_fake.calls[2:]]  # rounds 2-3 only
    for k in range(4):
        assert torch.equal(_weights(resumed.client_model(k)), _weights(straight.client_model(k)))
    with pytest.raises(ValueError, match="another configuration"):
        train_phoenix(clients, _Net, S, TrainConfig(steps=6), PhoenixConfig(rounds=3), checkpoint=ck, progress=False)


@pytest.mark.parametrize("kw, name", [(dict(rounds=0), "rounds"), (dict(client_fraction=0.0), "client_fraction"),
                                      (dict(beta=2.0), "beta"), (dict(alpha=-0.5), "alpha"),
                                      (dict(filter_k=-1), "filter_k")])
def test_phoenix_config_validation(kw, name):
    with pytest.raises(ValueError, match=name):
        PhoenixConfig(**kw)


def test_all_strategies_run_with_a_real_unet():
    digits = load_digits()
    clients = [digits.subset(p) for p in partition(digits.y[:400], "dirichlet", 3, dirichlet_alpha=1.0)]
    make = lambda: UNet(UNetConfig(base_channels=8))
    score = knn_precision_score(digits.x[1000:1100])
    for name, ph in phoenix.STRATEGIES.items():
        ph = replace(ph, rounds=2, filter_samples=4, filter_ddim_steps=2)
        res = train_phoenix(clients, make, S, TrainConfig(steps=2, batch_size=8), ph, score, progress=False)
        assert len(res.history) == 2 and not res.model.training, name
        out = res.client_model(0)(torch.zeros(2, 1, 8, 8), torch.tensor([5, 500]), torch.tensor([0, 1]))
        assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()


# ----------------------------------------------------------------------------- unconditional (as published)
def test_unconditional_phoenix_trains_and_filters_with_the_null_label_only(monkeypatch):
    """Phoenix as published learns p(x): every label it trains on, and every label of its filter's samples, is
    the network's null label; the class-balanced sharing of G still uses the true labels first."""
    seen, generated = [], []

    def fake_train(model, sched, x, y, *args, **kwargs):
        seen.append(y.clone())

    def fake_generate(model, sched, y, shape, *args, **kwargs):
        generated.append(y.clone())
        return torch.zeros(shape)

    monkeypatch.setattr(phoenix, "train", fake_train)
    monkeypatch.setattr(phoenix, "generate", fake_generate)
    make = lambda: UNet(UNetConfig(image_size=8, base_channels=8, channel_mults=(1,), num_res_blocks=1))  # noqa: E731
    clients = [_data(20), _data(20, seed=1)]
    ph = PhoenixConfig(rounds=2, beta=0.5, alpha=1.0, filter_k=5, unconditional=True)
    train_phoenix(clients, make, S, TrainConfig(steps=2), ph, lambda x, y: 0.0, pool=_data(40, seed=2), progress=False)
    assert phoenix.null_label(make()) == 10 and len(seen) == 4 and len(generated) == 4
    assert all((y == 10).all() for y in seen + generated)
    assert all(len(y) == 20 + 20 for y in seen)  # each client got all of G (alpha = 1): 20 images of 10 classes
    seen.clear()
    train_phoenix(clients, make, S, TrainConfig(steps=2), PhoenixConfig(rounds=1), progress=False)
    assert (seen[0] == torch.arange(20) % 10).all()  # the conditional variant keeps the labels


def test_checkpoints_written_before_the_unconditional_option_still_resume(monkeypatch, tmp_path):
    """The fingerprint holds `unconditional` only when it is set: a FedAvg checkpoint written by the code before
    the option existed (its fingerprint without the key) resumes; the unconditional variant's does not mix."""
    monkeypatch.setattr(phoenix, "train", _FakeTrain())
    clients, ck = [_data(4), _data(4, value=1.0, seed=1)], tmp_path / "fedavg.pt"
    train_phoenix(clients, _Net, S, TrainConfig(steps=2), PhoenixConfig(rounds=2), checkpoint=ck, progress=False)
    state = torch.load(ck, weights_only=False)
    assert "unconditional" not in state["fingerprint"]["phoenix"]
    train_phoenix(clients, _Net, S, TrainConfig(steps=2), PhoenixConfig(rounds=2), checkpoint=ck, progress=False)
    class _LabelledNet(_Net):  # what null_label reads
        embed = type("Embed", (), {"num_classes": 10})()

    with pytest.raises(ValueError, match="another configuration"):
        train_phoenix(clients, _LabelledNet, S, TrainConfig(steps=2), PhoenixConfig(rounds=2, unconditional=True),
                      checkpoint=ck, progress=False)
