"""Validation-based model selection (pfdm_core.methods.selection): stratified hold-out, a deterministic
validation loss, and early stopping that returns the weights of the best validation step."""
import pytest
import torch

from pfdm_core.core.nets import UNet, UNetConfig
from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig
from pfdm_core.data.partition import cluster_partition
from pfdm_core.data.small import load_digits
from pfdm_core.methods import selection


@pytest.fixture(scope="module")
def client():
    """Client 0 of the digits cluster split: 20 images of classes 0-4, 5 of classes 5-9."""
    digits = load_digits()
    part = cluster_partition(digits.y, 4, majority_per_class=20, minority_per_class=5, seed=0)[0]
    return digits.subset(part)


def test_holdout_is_stratified_disjoint_and_covers_minority_classes(client):
    tr, va = selection.stratified_holdout(client, 0.2, seed=0)
    assert len(tr) + len(va) == len(client)
    rows = lambda d: {tuple(x.flatten().tolist()) for x in d.x}
    assert not rows(tr) & rows(va) and rows(tr) | rows(va) == rows(client)
    for c in range(10):
        n_tr, n_va = int((tr.y == c).sum()), int((va.y == c).sum())
        assert n_tr >= 1 and n_va >= 1, f"class {c}: {n_tr} train / {n_va} validation"
    assert int((va.y == 0).sum()) == 4 and int((va.y == 9).sum()) == 1  # 20% of 20, and 1 of 5
    tr2, _ = selection.stratified_holdout(client, 0.2, seed=0)
    assert torch.equal(tr.x, tr2.x)  # seeded


def test_holdout_errors_and_single_images(client):
    with pytest.raises(ValueError, match="validation fraction"):
        selection.stratified_holdout(client, 1.0)
    one = client.subset([0])
    tr, va = selection.stratified_holdout(one, 0.5)
    assert len(tr) == 1 and len(va) == 0  # a lone image is never held out


def test_validation_loss_is_deterministic_and_uses_the_models_steps(client):
    sched = Schedule(1000)
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=8))
    v = selection.ValidationLoss(sched, client.x[:10], client.y[:10], 1, 300, draws=4, seed=1)
    assert v(model) == v(model)
    assert v.t.min() >= 1 and v.t.max() <= 300 and len(v.t) == 40
    shared = selection.ValidationLoss(sched, client.x[:10], client.y[:10], 1, 1000, origin=300, seed=1)
    assert shared.t.min() >= 301  # a shared model is validated on its own steps t0+1..T
    with pytest.raises(ValueError, match="empty"):
        selection.ValidationLoss(sched, client.x[:0], client.y[:0], 1, 10)


def test_train_selected_returns_the_best_validation_step(client, tmp_path):
    sched = Schedule(1000)
    tr, va = selection.stratified_holdout(client, 0.2)
    val = selection.ValidationLoss(sched, va.x, va.y, 1, 1000, draws=4)
    torch.manual_seed(0)
    cfg = TrainConfig(steps=12, batch_size=16, lr=3e-3, checkpoint_every=4)
    res = selection.train_selected(UNet(UNetConfig(base_channels=8)), sched, tr.x, tr.y, 1, 1000, val, config=cfg,
                                   every=4, checkpoint=tmp_path / "m.pt", progress=False)
    steps = [s for s, _ in res.curve]
    assert steps == [4, 8, 12]
    best_step, best = min(res.curve, key=lambda c: c[1])
    assert res.best_step == best_step and val(res.model) == pytest.approx(best, rel=1e-6)
    assert (tmp_path / "m.best.pt").exists()
    again = selection.train_selected(UNet(UNetConfig(base_channels=8)), sched, tr.x, tr.y, 1, 1000, val,
                                     config=cfg, every=4, checkpoint=tmp_path / "m.pt", progress=False)
    assert again.best_step == res.best_step and again.curve == res.curve  # loaded, not retrained
    assert val(again.model) == pytest.approx(best, rel=1e-6)
