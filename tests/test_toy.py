"""Tests of pfdm_core.studies.toy: the Theorem 5.2 Gaussian-mixture toy (closed forms and simulation)."""
import numpy as np
import pytest
import scipy.linalg
import torch

from pfdm_core.core.schedule import Schedule, q_sample_from
from pfdm_core.studies import toy

SCHED = Schedule(1000)


def random_spd(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    A = 0.4 * rng.standard_normal((n, 2, 2))
    return A @ A.transpose(0, 2, 1) + 0.05 * np.eye(2)  # (n, 2, 2)


@pytest.mark.parametrize("origin, t", [(0, 30), (0, 300), (200, 450)])
def test_affine_denoiser_is_conditional_mean_of_eps(origin: int, t: int) -> None:
    """eps_hat(x_t) = E[eps | x_t], by least squares on Monte Carlo samples (jointly Gaussian)."""
    g = torch.Generator().manual_seed(0)
    m, S = np.array([[1.0, -0.5]]), np.array([[[0.3, 0.1], [0.1, 0.05]]])
    z = np.random.default_rng(0).standard_normal((200_000, 2))
    x_s = torch.from_numpy(m + z @ np.linalg.cholesky(S[0]).T)  # (N, 2) ~ N(m, S) at the origin step
    eps = torch.randn(x_s.shape, generator=g, dtype=torch.float64)
    x_t = q_sample_from(SCHED, x_s, origin, t, eps)
    design = torch.cat([x_t, torch.ones(len(x_t), 1, dtype=torch.float64)], 1)  # (N, 3)
    coef = torch.linalg.lstsq(design, eps).solution  # E[eps | x_t] = [x_t, 1] @ coef
    model = toy.AffineDenoiser(m, S, SCHED, origin)
    probe = x_t[:2000]  # points where x_t has mass
    pred = model(probe, torch.full((len(probe),), t), torch.zeros(len(probe), dtype=torch.long))
    assert (pred - design[:2000] @ coef).pow(2).mean().sqrt() < 0.01


def test_w2_closed_form() -> None:
    rng = np.random.default_rng(1)
    S1, S2 = random_spd(rng, 5), random_spd(rng, 5)
    m1, m2 = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    assert np.allclose(toy.gaussian_w2(m1, S1, m1, S1), 0.0, atol=1e-6)
    R2 = [scipy.linalg.sqrtm(s) for s in S2]
    ref = [np.sum((a - b) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(r @ s1 @ r)).real
           for a, b, s1, s2, r in zip(m1, m2, S1, S2, R2)]
    assert np.allclose(toy.gaussian_w2(m1, S1, m2, S2), np.sqrt(ref), atol=1e-8)
    assert np.allclose(toy.sqrtm_psd(S1) @ toy.sqrtm_psd(S1), S1)


def test_flow_map_transports_the_marginal() -> None:
    """The probability flow maps N(sqrt(r) m, r S + (1-r) I) onto N(sqrt(r') m, r' S + (1-r') I)."""
    rng = np.random.default_rng(2)
    m, S = rng.standard_normal(2), random_spd(rng)[0]
    r, r2 = 0.2, 0.9
    F, b = toy.flow_map(m, S, r, r2)
    mean, cov = F @ (np.sqrt(r) * m) + b, F @ (r * S + (1 - r) * np.eye(2)) @ F.T
    assert np.allclose(mean, np.sqrt(r2) * m) and np.allclose(cov, r2 * S + (1 - r2) * np.eye(2))


def test_pfdm_law_limits() -> None:
    """With a shared fit of the pooled law's t0 marginal: t0 -> 1 gives the pooled law, t0 -> T-1
    local-only; a shared fit equal to the client's own t0 marginal gives local-only at every t0."""
    rng = np.random.default_rng(3)
    m_c, S_c = rng.standard_normal(2), random_spd(rng)[0]  # the client's fit
    m_p, S_p = rng.standard_normal(2), random_spd(rng)[0]  # the pooled law

    def pfdm(m, S, t0):  # PFDM law when the shared model is fitted on the t0 marginal of N(m, S)
        a0 = float(SCHED.alpha_bar[t0])
        m_u, S_u = np.sqrt(a0) * m, a0 * S + (1 - a0) * np.eye(2)
        return toy.law(*toy.pfdm_map(m_c, S_c, m_u, S_u, SCHED, t0))

    local = toy.law(*toy.local_map(m_c, S_c, SCHED))
    assert toy.gaussian_w2(*local, m_c, S_c) < 0.02  # x_T ~ N(0, I) is not exactly the T marginal
    assert toy.gaussian_w2(*pfdm(m_p, S_p, 1), m_p, S_p) < 0.02
    assert toy.gaussian_w2(*pfdm(m_p, S_p, 999), *local) < 0.02
    assert toy.gaussian_w2(*pfdm(m_p, S_p, 300), *local) > 0.1  # in between it differs
    for t0 in (10, 300, 700):
        assert toy.gaussian_w2(*pfdm(m_c, S_c, t0), *local) < 1e-6


def test_simulation_agrees_with_closed_form() -> None:
    cfg = toy.ToyConfig(n_maj=50, n_min=5)
    data, parts = toy.client_split(cfg, seed=0)
    shared, personal = toy.fit_denoisers(cfg, data, parts, t0=100, seed=0)
    rows = toy.w2_table(cfg, shared, personal, 100, n=400, seed=0)
    assert len(rows) == 2 * cfg.K
    assert max(r["w2_sim_vs_closed"] for r in rows) < 0.02
    assert max(r["rms_path_err"] for r in rows) < 0.02


def test_run_trials_seeded_and_minority_gain() -> None:
    cfg = toy.ToyConfig(n_maj=100, n_min=5)
    a, b = (toy.run_trials(cfg, [1, 999], reps=30, seed=0) for _ in range(2))
    assert a.w2_pfdm.shape == (2, 30, cfg.K) and np.array_equal(a.w2_pfdm, b.w2_pfdm)
    pfdm, _ = a.mean_std("pfdm", cfg.minority())
    local, _ = a.mean_std("local", cfg.minority())
    assert pfdm[0] < 0.5 * local and abs(pfdm[1] - local) < 0.01


@pytest.mark.parametrize("t0", [0, 1000, 2.5])
def test_bad_t0_raises(t0) -> None:
    cfg = toy.ToyConfig()
    with pytest.raises(ValueError, match="t0"):
        toy.pfdm_map(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), SCHED, t0)
    with pytest.raises(ValueError, match="t0"):
        toy.run_trials(cfg, [100, t0], reps=2)
    data, parts = toy.client_split(cfg)
    with pytest.raises(ValueError, match="t0"):
        toy.fit_denoisers(cfg, data, parts, t0)


def test_bad_config_raises() -> None:
    with pytest.raises(ValueError, match="n_min"):
        toy.ToyConfig(n_min=1)
    with pytest.raises(ValueError, match="K"):
        toy.ToyConfig(K=3)
