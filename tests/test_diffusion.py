import pytest
import torch
from torch import nn

from pfdm_core.core.diffusion import (
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    diffusion_loss,
    sample,
)
from pfdm_core.core.nets import UNet, UNetConfig
from pfdm_core.core.schedule import Schedule

S = Schedule()


class GaussianOracle(nn.Module):
    """The exact eps-predictor of data N(m, v I) on the sub-chain from `origin` (1-D per pixel)."""

    def __init__(self, m: float, v: float, origin: int = 0) -> None:
        super().__init__()
        self.m, self.v, self.origin = m, v, origin

    def forward(self, x, t, y=None):
        r = (S.alpha_bar[t] / S.alpha_bar[self.origin]).float().view(-1, *[1] * (x.dim() - 1))
        return (1 - r).sqrt() * (x - r.sqrt() * self.m) / (r * self.v + 1 - r)


def _tiny():
    torch.manual_seed(0)
    return UNet(UNetConfig(base_channels=8)).eval()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_shapes_and_determinism(sampler):
    m, x = _tiny(), torch.randn(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    a = sample(m, S, x, sampler, num_steps=5, y=y, t_hi=60, t_lo=20, generator=torch.Generator().manual_seed(1))
    b = sample(m, S, x, sampler, num_steps=5, y=y, t_hi=60, t_lo=20, generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)


@pytest.mark.parametrize("sampler, kw", [("ddpm", {}), ("ddim", {"num_steps": 250})])
def test_samplers_recover_gaussian_law(sampler, kw):
    """With the exact denoiser of N(0.5, 0.04), sampling from pure noise gives that law.

    Deterministic DDIM shrinks the variance with few steps (0.030 at 50 steps, 0.038 at 200),
    a discretisation error of the probability-flow ODE; hence 250 steps here.
    """
    x = torch.randn(20_000, 1, generator=torch.Generator().manual_seed(0))
    out = sample(GaussianOracle(0.5, 0.04), S, x, sampler, clip_x0=False,
                 generator=torch.Generator().manual_seed(1), **kw)
    assert out.mean().item() == pytest.approx(0.5, abs=0.01)
    assert out.var().item() == pytest.approx(0.04, rel=0.08)


def test_loss_range_and_per_sample():
    m = _tiny()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,))
    per = diffusion_loss(m, S, x, y, 1, 10, reduction="none", generator=g)
    assert per.shape == (5,)
    seen = []
    m.forward = lambda x, t, y=None: (seen.append(t.clone()), torch.zeros_like(x))[1]
    diffusion_loss(m, S, torch.randn(512, 1, 8, 8), None, 1, 1000, origin=600, generator=g)
    assert seen[0].min() >= 601 and seen[0].max() <= 1000


def test_ddim_timesteps():
    assert ddim_timesteps(0, 1000, 10) == [1000, 900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert ddim_timesteps(690, 1000, 1000) == list(range(1000, 689, -1))


def test_bad_sampler_inputs():
    m, x = _tiny(), torch.randn(1, 1, 8, 8)
    with pytest.raises(ValueError, match="t_hi must be an integer in 51..1000"):
        ddpm_sample(m, S, x, t_hi=50, t_lo=50)
    with pytest.raises(ValueError, match="t_lo must be an integer in 300..999"):
        ddim_sample(m, S, x, t_lo=100, origin=300)
    with pytest.raises(ValueError, match="sampler"):
        sample(m, S, x, "euler")
    with pytest.raises(ValueError, match="num_steps"):
        ddim_sample(m, S, x, num_steps=0)
