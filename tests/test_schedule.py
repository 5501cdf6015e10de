import pytest
import torch

from pfdm_core.core.schedule import Schedule, q_sample, q_sample_from


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_alpha_bar_monotone_float64(kind):
    s = Schedule(1000, kind)
    assert s.alpha_bar.dtype == torch.float64 and s.alpha_bar.shape == (1001,)
    assert s.alpha_bar[0] == 1.0
    assert (s.alpha_bar[1:] < s.alpha_bar[:-1]).all()
    assert 0 < s.alpha_bar[-1] < 1e-3


def test_linear_matches_design_indexing():
    s = Schedule()
    assert s.betas[1].item() == pytest.approx(1e-4) and s.betas[1000].item() == pytest.approx(0.02)
    assert s.alpha_bar[1].item() == pytest.approx(1 - 1e-4)
    assert s.alpha_bar[2].item() == pytest.approx((1 - 1e-4) * (1 - s.betas[2].item()))


def test_q_sample_mean_and_variance_monte_carlo():
    s, t = Schedule(), 300
    x0 = torch.full((200_000, 1), 0.7)
    g = torch.Generator().manual_seed(0)
    xt = q_sample(s, x0, t, torch.randn(x0.shape, generator=g))
    a = s.alpha_bar[t].item()
    assert xt.mean().item() == pytest.approx(a**0.5 * 0.7, abs=5e-3)
    assert xt.var().item() == pytest.approx(1 - a, abs=5e-3)


def test_two_step_q_sample_agrees_with_one_step():
    """q(x_t | x_0) and q(x_t | x_s) q(x_s | x_0) have the same law (mean, variance)."""
    sch, s, t = Schedule(), 200, 700
    x0 = torch.full((200_000, 1), -0.4)
    g = torch.Generator().manual_seed(1)
    one = q_sample(sch, x0, t, torch.randn(x0.shape, generator=g))
    two = q_sample_from(sch, q_sample(sch, x0, s, torch.randn(x0.shape, generator=g)), s, t,
                        torch.randn(x0.shape, generator=g))
    assert one.mean().item() == pytest.approx(two.mean().item(), abs=6e-3)
    assert one.var().item() == pytest.approx(two.var().item(), abs=6e-3)


def test_q_sample_per_sample_steps_broadcast():
    s = Schedule()
    x0, noise = torch.ones(3, 1, 2, 2), torch.zeros(3, 1, 2, 2)
    xt = q_sample(s, x0, torch.tensor([0, 10, 999]), noise)
    expect = s.alpha_bar[[0, 10, 999]].sqrt().float()
    assert torch.allclose(xt[:, 0, 0, 0], expect)


def test_bad_inputs():
    with pytest.raises(ValueError, match="kind"):
        Schedule(1000, "quadratic")
    with pytest.raises(ValueError, match="T must"):
        Schedule(1)
    with pytest.raises(ValueError, match="s <= t"):
        q_sample_from(Schedule(), torch.zeros(1, 1), 500, 100)
