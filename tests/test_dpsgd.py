"""DP-SGD diffusion (pfdm_core.privacy.dpsgd): accountant, noise multiplicity, per-example clipping, resume."""
import pytest
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn

from pfdm_core.core.diffusion import diffusion_loss
from pfdm_core.core.nets import UNet, UNetConfig
from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig
from pfdm_core.data.small import load_digits
from pfdm_core.privacy import dpsgd
from pfdm_core.privacy.dpsgd import (
    DPConfig,
    make_dp_compatible,
    noise_multiplier,
    per_example_grads,
    train_dpsgd,
)

S = Schedule()
DIGITS = load_digits()
# a few steps at a large eps: the best RDP order is Opacus' largest (a looser bound, still valid)
pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")


def _unet():
    torch.manual_seed(0)
    return UNet(UNetConfig(base_channels=8))


def _flat_grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("accountant, eps", [("rdp", 10.0), ("prv", 2.0)])
def test_accountant_reports_eps_within_1pct_of_target(accountant, eps):
    x, y = DIGITS.x[:200], DIGITS.y[:200]
    cfg = TrainConfig(steps=5, batch_size=20, lr=1e-3, p_uncond=0.2, ema_decay=0.5)
    res = train_dpsgd(_unet(), S, x, y, cfg, DPConfig(eps=eps, multiplicity=2, accountant=accountant), progress=False)
    assert abs(res.eps - eps) / eps <= 0.01 and res.eps <= eps * (1 + 1e-9)
    assert res.sample_rate == 0.1 and res.noise_multiplier > 0 and len(res.losses) == 5
    out = res.model(x[:2], torch.tensor([3, 700]), y[:2])
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all() and not res.model.training


def test_smaller_eps_needs_more_noise():
    sigmas = [noise_multiplier(DPConfig(eps=e), 0.05, 100) for e in (1.0, 5.0, 10.0)]
    assert sigmas[0] > sigmas[1] > sigmas[2] > 0


def _autograd_per_example(model, x, y, K, seed):
    """grad of l_i = mean of example i's K draws, with exactly the draws per_example_grads makes."""
    g = torch.Generator().manual_seed(seed)
    draws = torch.stack([diffusion_loss(model, S, x, y, 1, S.T, generator=g, reduction="none") for _ in range(K)])
    loss_i = draws.mean(0)  # (B,)
    grads = []
    for i in range(len(x)):
        model.zero_grad()
        loss_i[i].backward(retain_graph=True)
        grads.append(_flat_grads(model).clone())
    return torch.stack(grads)  # (B, P)


def test_noise_multiplicity_gives_the_gradient_of_the_per_example_mean_loss():
    x, y, K = DIGITS.x[:3], DIGITS.y[:3], 4
    expected = _autograd_per_example(_unet(), x, y, K, seed=5)
    gsm = GradSampleModule(_unet())
    per_example_grads(gsm, S, x, y, K, generator=torch.Generator().manual_seed(5))
    got = torch.cat([p.grad_sample.flatten(1) for p in gsm.parameters()], 1)  # (B, P)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)


def test_per_example_clipping_bounds_each_contribution():
    x, y, K, C = DIGITS.x[:4], DIGITS.y[:4], 2, 1e-2
    g_i = _autograd_per_example(_unet(), x, y, K, seed=1)  # (B, P)
    assert (g_i.norm(dim=1) > 10 * C).all()  # clipping is active for every example
    clipped = g_i * (C / (g_i.norm(dim=1, keepdim=True) + 1e-6)).clamp(max=1)
    assert (clipped.norm(dim=1) <= C * (1 + 1e-5)).all()

    gsm = GradSampleModule(_unet())
    opt = DPOptimizer(torch.optim.SGD(gsm.parameters(), lr=0.0), noise_multiplier=0.0, max_grad_norm=C,
                      expected_batch_size=len(x))
    per_example_grads(gsm, S, x, y, K, generator=torch.Generator().manual_seed(1))
    opt.pre_step()  # clip, sum, (zero) noise, divide by the expected batch size
    total = _flat_grads(gsm) * len(x)
    assert torch.allclose(total, clipped.sum(0), atol=1e-7)
    assert total.norm() <= len(x) * C * (1 + 1e-5)  # the triangle bound: B examples, each <= C


def test_noise_std_is_sigma_times_clip_over_batch():
    x, y, C, sigma, B = DIGITS.x[:4], DIGITS.y[:4], 1e-2, 3.0, 4
    grads = []
    for noise in (0.0, sigma):
        gsm = GradSampleModule(_unet())
        opt = DPOptimizer(torch.optim.SGD(gsm.parameters(), lr=0.0), noise_multiplier=noise, max_grad_norm=C,
                          expected_batch_size=B, generator=torch.Generator().manual_seed(0))
        per_example_grads(gsm, S, x, y, 2, generator=torch.Generator().manual_seed(1))
        opt.pre_step()
        grads.append(_flat_grads(gsm))
    std = float((grads[1] - grads[0]).std())
    assert std == pytest.approx(sigma * C / B, rel=0.03)  # ~42k parameters: a tight estimate


def test_make_dp_compatible():
    unet = _unet()
    assert make_dp_compatible(unet) is unet  # GroupNorm + 1x1-conv attention: accepted as is
    bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    fixed = make_dp_compatible(bn)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fixed.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in fixed.modules())


class _Interrupt(Exception):
    pass


def test_checkpoint_resume_matches_straight_run(tmp_path, monkeypatch):
    x, y = DIGITS.x[:100], DIGITS.y[:100]
    cfg, dp = TrainConfig(steps=4, batch_size=10, checkpoint_every=2), DPConfig(eps=5.0, multiplicity=2)
    straight = train_dpsgd(_unet(), S, x, y, cfg, dp, tmp_path / "a.pt", progress=False)
    real, calls = dpsgd.per_example_grads, []

    def die_at_step_3(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise _Interrupt
        return real(*a, **k)

    monkeypatch.setattr(dpsgd, "per_example_grads", die_at_step_3)
    with pytest.raises(_Interrupt):
        train_dpsgd(_unet(), S, x, y, cfg, dp, tmp_path / "b.pt", progress=False)
    assert torch.load(tmp_path / "b.pt", weights_only=False)["step"] == 2
    monkeypatch.setattr(dpsgd, "per_example_grads", real)
    resumed = train_dpsgd(_unet(), S, x, y, cfg, dp, tmp_path / "b.pt", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(straight.model.state_dict().values(),
                                                 resumed.model.state_dict().values()))
    assert resumed.eps == straight.eps and resumed.losses == straight.losses
    saved = torch.load(tmp_path / "b.pt", weights_only=False)
    assert saved["step"] == 4 and saved["eps"] == pytest.approx(straight.eps)
    with pytest.raises(ValueError, match="another configuration or data"):
        train_dpsgd(_unet(), S, x, y, cfg, DPConfig(eps=6.0, multiplicity=2), tmp_path / "b.pt", progress=False)


@pytest.mark.parametrize("kw, name", [(dict(eps=0.0), "eps"), (dict(eps=-1.0), "eps"), (dict(delta=0.0), "delta"),
                                      (dict(delta=1.0), "delta"), (dict(clip_norm=0.0), "clip_norm"),
                                      (dict(multiplicity=0), "multiplicity"), (dict(accountant="moments"), "accountant")])
def test_dp_config_validation(kw, name):
    with pytest.raises(ValueError, match=name):
        DPConfig(**kw)


def test_train_dpsgd_rejects_bad_data():
    x, y = DIGITS.x[:10], DIGITS.y[:10]
    with pytest.raises(ValueError, match="batch_size"):
        train_dpsgd(_unet(), S, x, y, TrainConfig(steps=1, batch_size=20), progress=False)
    with pytest.raises(ValueError, match="same length"):
        train_dpsgd(_unet(), S, x, y[:5], TrainConfig(steps=1, batch_size=5), progress=False)
