"""PFDM's two-model chain against analytic Bayes-optimal denoisers, at the step counts the package uses.

With exact denoisers the split must not matter: shared model on T..t0+1 then personal model on
t0..1 has to give the samples one full-chain model gives with the same sampler and the same total
steps, and the x_t0 handed over has to carry the forward marginal's moments. The chain as first
landed (DDIM on the shared model's sub-chain, origin t0) is kept here as a control that fails both.
"""
import numpy as np
import pytest
import torch

from pfdm_core.core.diffusion import FullChainEps, generate, sub_chain_eps_scale
from pfdm_core.core.schedule import Schedule
from pfdm_core.methods.pfdm import pfdm_handover, pfdm_sample, split_steps
from pfdm_core.studies.toy import AffineDenoiser, ToyConfig

S = Schedule()
T0S = (100, 284, 476, 693)
SAMPLERS = (("ddim", 10), ("ddim", 25), ("ddpm", 1000))  # pfdm_sample's default is DDIM 25 (notebook 02's knee)
TOL = 0.05


def _gaussian(d: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """One class: N(m, 0.25 I) with a different mean per coordinate."""
    return np.linspace(-0.6, 0.6, d)[None], 0.25 * np.eye(d)[None]


def _mixture() -> tuple[np.ndarray, np.ndarray]:
    """Notebook 01's mixture: K = 4 classes, each a 2-D Gaussian (class-conditional oracles)."""
    cfg = ToyConfig()
    return cfg.means, cfg.covs


def _oracles(means, covs, t0):
    """(shared oracle on the sub-chain from t0, i.e. of the uploads' law; personal = full-chain oracle)."""
    a0 = float(S.alpha_bar[t0])
    eye = np.eye(means.shape[1])
    shared = AffineDenoiser(a0**0.5 * means, a0 * covs + (1 - a0) * eye, S, origin=t0)
    return shared, AffineDenoiser(means, covs, S)


def _landed_handover(shared, t0, y, shape, sampler, n, seed):
    """The chain as first landed: the shared model's own sub-chain (origin t0). A control, not used."""
    return generate(shared, S, y, shape, sampler, n, seed=seed, t_lo=t0, origin=t0, clip_x0=False)


def _moments(x, y, K):
    return (np.stack([x[y == k].numpy().mean(0) for k in range(K)]),
            np.stack([x[y == k].numpy().var(0) for k in range(K)]))


def _close(x, ref_mean, ref_var, y, K, data_var):
    """Per class: every coordinate's mean within 5% of the data's std, and the spread (the mean of the
    coordinates' variances, tr Cov / d) within 5%."""
    m, v = _moments(x, y, K)
    return bool(np.all(np.abs(m - ref_mean) <= TOL * np.sqrt(data_var))
                and np.all(np.abs(v.mean(1) / np.broadcast_to(ref_var, v.shape).mean(1) - 1) <= TOL))


def _case(kind):
    means, covs = _gaussian() if kind == "gaussian" else _mixture()
    K, d = means.shape
    n = 10_000  # per class: a mean to 1% of the std, a spread to 0.7% (gaussian: d = 4) or 1% (mixture: d = 2)
    y = torch.arange(K).repeat_interleave(n)
    return means, covs, y, (len(y), d), np.stack([np.diag(c) for c in covs])


@pytest.mark.parametrize("kind", ["gaussian", "mixture"])
@pytest.mark.parametrize("sampler, steps", SAMPLERS)
@pytest.mark.parametrize("t0", T0S)
def test_handover_has_forward_marginal(kind, sampler, steps, t0):
    means, covs, y, shape, var = _case(kind)
    shared, personal = _oracles(means, covs, t0)
    n_shared = split_steps(t0, S.T, steps)[0]
    a0 = float(S.alpha_bar[t0])
    ref_mean, ref_var = a0**0.5 * means, a0 * var + 1 - a0
    x_t0 = pfdm_handover(shared, S, t0, y, shape, sampler, n_shared, seed=1, clip_x0=False)
    if sampler == "ddim" and t0 == 100:
        # deterministic DDIM on 9 / 22 steps from T to 100 under-disperses x_100 by 19% / 8% whoever
        # runs it (the probability-flow ODE's discretization): the reference is one full-chain model
        # on the same grid, which the split must reproduce
        one = generate(personal, S, y, shape, sampler, n_shared, seed=1, t_lo=t0, clip_x0=False)
        ref_mean, ref_var = _moments(one, y, len(means))
    assert _close(x_t0, ref_mean, ref_var, y, len(means), a0 * var + 1 - a0)
    if sampler == "ddim":  # the landed sub-chain sampler loses the noise of x_t0 at the package's step counts
        landed = _landed_handover(shared, t0, y, shape, sampler, n_shared, seed=1)
        assert not _close(landed, ref_mean, ref_var, y, len(means), ref_var)


@pytest.mark.parametrize("kind", ["gaussian", "mixture"])
@pytest.mark.parametrize("sampler, steps", SAMPLERS)
@pytest.mark.parametrize("t0", T0S)
def test_pfdm_chain_matches_one_full_chain_model(kind, sampler, steps, t0):
    means, covs, y, shape, var = _case(kind)
    shared, personal = _oracles(means, covs, t0)
    K = len(means)
    # the same x_T for both (common random numbers: deterministic DDIM then differs only by the split)
    full = generate(personal, S, y, shape, sampler, steps, seed=5, clip_x0=False)
    ref_mean, ref_var = _moments(full, y, K)
    x0 = pfdm_sample(shared, personal, S, t0, y, shape, sampler, steps, seed=5, clip_x0=False)
    assert _close(x0, ref_mean, ref_var, y, K, var)
    if sampler == "ddim" and t0 >= 284:  # control: the landed chain is far off (at t0 = 100 it is off by
        n_shared, n_personal = split_steps(t0, S.T, steps)  # ~30%, still caught by the handover test)
        x_t0 = _landed_handover(shared, t0, y, shape, sampler, n_shared, seed=5)
        landed = generate(personal, S, y, shape, sampler, n_personal, seed=6, x_start=x_t0, t_hi=t0, clip_x0=False)
        assert not _close(landed, ref_mean, ref_var, y, K, var)


def test_sub_chain_eps_scale_is_tweedie_ratio():
    """E[eps | x_t] = scale * E[eps' | x_t]: the two exact oracles of the same data agree after scaling."""
    means, covs = _gaussian()
    t0 = 476
    shared, full = _oracles(means, covs, t0)
    x = torch.randn(64, means.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(64, dtype=torch.long)
    for t in (t0 + 1, 600, 1000):
        tt = torch.full((64,), t)
        assert torch.allclose(FullChainEps(shared, S, t0)(x, tt, y), full(x, tt, y), atol=1e-10)
    with pytest.raises(ValueError, match="owns steps > 476"):
        sub_chain_eps_scale(S, torch.tensor([476]), 476)


def test_every_documented_t0_trains_and_samples():
    """t0 = T - 1 (eps ~ 0.6 per image at C = 10): the shared model owns the single step T."""
    from pfdm_core.core.nets import UNet, UNetConfig
    from pfdm_core.core.train import TrainConfig
    from pfdm_core.data.small import Dataset
    from pfdm_core.methods.pfdm import client_upload, server_train_shared

    data = Dataset(torch.rand(8, 1, 8, 8) * 2 - 1, torch.arange(8) % 4)
    make = lambda: UNet(UNetConfig(base_channels=8))  # noqa: E731
    for t0 in (1, S.T - 1):
        up = client_upload(data, t0, S, clip_norm=10.0, seed=0)
        shared = server_train_shared([up], make, S, TrainConfig(steps=2, batch_size=4), progress=False)
        x = pfdm_sample(shared, make(), S, t0, data.y, tuple(data.x.shape), num_steps=4, seed=0)
        assert x.shape == data.x.shape and torch.isfinite(x).all()
