import numpy as np
import pytest
import torch

from pfdm_core.core.schedule import Schedule
from pfdm_core.privacy.mechanism import (
    clip,
    epsilon,
    epsilon_curve,
    privatize,
    sigma_of,
    t0_for_epsilon,
)

S = Schedule()


@pytest.mark.parametrize(
    "t0, unit, C, accountant, expected",
    [
        (100, "per-pixel", 1, "thm51", 45.75),
        (400, "per-pixel", 1, "thm51", 5.21),
        (400, "per-image", 10, "thm51", 95.75),
        (690, "per-image", 10, "thm51", 10.24),
        (690, "per-image", 10, "analytic", 8.77),
        (300, "per-pixel", 1, "analytic", 7.74),
        (500, "per-pixel", 1, "analytic", 2.37),
    ],
)
def test_design_reference_eps(t0, unit, C, accountant, expected):
    assert round(epsilon(t0, S, clip_norm=C, delta=1e-5, accountant=accountant, unit=unit), 2) == expected


def test_analytic_per_pixel_t0_100():
    # 41.85 is the value opacus' brentq gives; the exact root is 41.8447.
    assert epsilon(100, S, unit="per-pixel", accountant="analytic") == pytest.approx(41.85, abs=0.01)


@pytest.mark.parametrize("accountant, unit, expected", [("thm51", "per-image", 693), ("analytic", "per-image", 675),
                                                         ("thm51", "per-pixel", 284), ("analytic", "per-pixel", 260)])
def test_t0_inverse(accountant, unit, expected):
    t0 = t0_for_epsilon(10, S, clip_norm=10, accountant=accountant, unit=unit)
    assert t0 == expected
    assert epsilon(t0, S, clip_norm=10, accountant=accountant, unit=unit) <= 10
    assert epsilon(t0 - 1, S, clip_norm=10, accountant=accountant, unit=unit) > 10


def test_analytic_always_below_thm51():
    thm = epsilon_curve(S, unit="per-pixel", accountant="thm51")[::25]
    ana = epsilon_curve(S, unit="per-pixel", accountant="analytic")[::25]
    assert (ana < thm).all() and (np.diff(thm) < 0).all()


def test_analytic_matches_gaussian_delta_by_definition():
    """At the returned eps the privacy profile of N(0,s^2) vs N(2C,s^2) equals delta."""
    from scipy.stats import norm

    sigma, C, d = sigma_of(S, 300), 1.0, 1e-5
    eps = epsilon(300, S, unit="per-pixel", accountant="analytic", delta=d)
    mu = 2 * C / sigma
    delta = norm.cdf(mu / 2 - eps / mu) - np.exp(eps) * norm.cdf(-mu / 2 - eps / mu)
    assert delta == pytest.approx(d, rel=1e-4)


def test_group_privacy_grows_with_pixels():
    e1 = epsilon(300, S, unit="per-pixel", pixels=1)
    e4 = epsilon(300, S, unit="per-pixel", pixels=4)
    assert e4 == pytest.approx(epsilon(300, S, unit="per-image", clip_norm=2.0))
    assert e4 > 2 * e1


def test_clip_norms():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 8, 8, generator=g) * torch.linspace(0.01, 5, 16).view(-1, 1, 1, 1)
    xc = clip(x, 3.0)
    n, nc = x.flatten(1).norm(dim=1), xc.flatten(1).norm(dim=1)
    assert torch.all(nc <= 3.0 + 1e-5)
    assert torch.allclose(xc[n <= 3], x[n <= 3])  # small images untouched
    assert torch.allclose(nc[n > 3], torch.full_like(nc[n > 3], 3.0))  # big ones land on the sphere


def test_privatize_law_and_determinism():
    x = torch.full((20_000, 4), 0.5)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    up = privatize(x, 400, S, clip_norm=None, generator=g1)
    assert torch.equal(up, privatize(x, 400, S, generator=g2))
    a = S.alpha_bar[400].item()
    assert up.mean().item() == pytest.approx(a**0.5 * 0.5, abs=0.01)
    assert up.var().item() == pytest.approx(1 - a, abs=0.01)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(t0=0), "t0 must be an integer in 1..999"),
        (dict(t0=1000), "t0 must be an integer in 1..999"),
        (dict(t0=2.5), "t0 must be an integer"),
        (dict(delta=0.0), "delta must be in the open interval"),
        (dict(delta=1.0), "delta must be in the open interval"),
        (dict(clip_norm=-1.0), "clip_norm must be"),
        (dict(accountant="rdp"), "accountant must be one of"),
        (dict(unit="per-row"), "unit must be one of"),
    ],
)
def test_bad_accountant_inputs(kwargs, match):
    args = dict(t0=300, sched=S, clip_norm=10.0, delta=1e-5, accountant="thm51", unit="per-image") | kwargs
    with pytest.raises(ValueError, match=match):
        epsilon(**args)


def test_bad_targets_and_images():
    with pytest.raises(ValueError, match="epsilon must be"):
        t0_for_epsilon(0.0, S)
    with pytest.raises(ValueError, match="not reachable"):
        t0_for_epsilon(1e-3, S)
    with pytest.raises(ValueError, match="NaN"):
        privatize(torch.tensor([[float("nan"), 0.0]]), 10, S)
    with pytest.raises(ValueError, match="batch tensor"):
        privatize(torch.zeros(4), 10, S)
    with pytest.raises(ValueError, match="t0 must be"):
        privatize(torch.zeros(2, 3), 1000, S)


def test_clip_refuses_nan():
    with pytest.raises(ValueError, match="NaN or infinite"):
        clip(torch.tensor([[float("nan"), 0.0]]), 1.0)
