import pytest
import torch

from pfdm_core.core.nets import UNet, UNetConfig
from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig, train
from pfdm_core.studies.digits_ddpm import digits_ddpm

S = Schedule()


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(64, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, 10, (64,), generator=g)


def _model():
    torch.manual_seed(0)
    return UNet(UNetConfig(base_channels=8))


def test_training_reduces_loss_and_is_deterministic():
    x, y = _data()
    cfg = TrainConfig(steps=60, batch_size=32, lr=2e-3)
    a = train(_model(), S, x, y, 1, 1000, config=cfg, progress=False)
    b = train(_model(), S, x, y, 1, 1000, config=cfg, progress=False)
    assert a.losses == b.losses
    assert sum(a.losses[-10:]) < sum(a.losses[:10])


def test_resume_from_checkpoint_equals_uninterrupted(tmp_path):
    x, y = _data()
    full = train(_model(), S, x, y, 1, 1000, config=TrainConfig(steps=20, batch_size=16), progress=False)
    ck = tmp_path / "run.pt"
    cfg = TrainConfig(steps=20, batch_size=16, checkpoint_every=10)
    part = train(_model(), S, x, y, 1, 1000, config=TrainConfig(steps=10, batch_size=16), progress=False)
    # simulate a kill after step 10: write the checkpoint as the 20-step run would have
    state = torch.load(_checkpoint_after(tmp_path, x, y, cfg), weights_only=False)
    assert state["step"] == 10 and state["losses"] == part.losses
    resumed = train(_model(), S, x, y, 1, 1000, config=cfg, checkpoint=ck, progress=False)
    assert resumed.losses == pytest.approx(full.losses)
    sd_full, sd_res = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(sd_full[k], sd_res[k], atol=1e-6) for k in sd_full)


def _checkpoint_after(tmp_path, x, y, cfg):
    """Run `cfg` but stop after its first checkpoint, keeping what it saved as run.pt."""
    class Stop(Exception):
        pass

    ck = tmp_path / "partial.pt"
    orig = torch.save

    def save_then_stop(obj, f, *a, **k):
        orig(obj, tmp_path / "run.pt", *a, **k)
        raise Stop

    torch.save = save_then_stop
    try:
        train(_model(), S, x, y, 1, 1000, config=cfg, checkpoint=ck, progress=False)
    except Stop:
        pass
    finally:
        torch.save = orig
    assert not ck.exists() and not list(tmp_path.glob(".partial.pt.*"))  # a killed save leaves nothing behind
    return tmp_path / "run.pt"


def test_checkpoint_with_other_config_refused(tmp_path):
    x, y = _data()
    ck = tmp_path / "a.pt"
    train(_model(), S, x, y, 1, 1000, config=TrainConfig(steps=2, batch_size=8), checkpoint=ck, progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        train(_model(), S, x, y, 1, 1000, config=TrainConfig(steps=3, batch_size=8), checkpoint=ck, progress=False)


def test_recipe_caches_model():
    m1, _, l1 = digits_ddpm("smoke", seed=0, progress=False)
    m2, _, l2 = digits_ddpm("smoke", seed=0, progress=False)
    assert l1 == l2 and len(l1) == 40
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_bad_training_inputs():
    x, y = _data()
    with pytest.raises(ValueError, match="NaN"):
        train(_model(), S, x * float("nan"), y, 1, 1000, config=TrainConfig(steps=1), progress=False)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        digits_ddpm("huge")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"not a checkpoint"])
def test_unreadable_checkpoint_is_named_in_one_line(tmp_path, content):
    x, y = _data()
    ck = tmp_path / "broken.pt"
    ck.write_bytes(content)
    with pytest.raises(ValueError, match=r"checkpoint .*broken\.pt cannot be read .*delete it"):
        train(_model(), S, x, y, 1, 1000, config=TrainConfig(steps=2, batch_size=8), checkpoint=ck, progress=False)
