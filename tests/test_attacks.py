"""Tests of pfdm_core.attacks: membership inference, memorization, reconstruction, audit.

Models: a class-conditional MLP denoiser trained to memorize 16 digits (under a second), the
optimal denoiser of the empirical distribution (a perfect memorizer, closed form), and spies
that record which steps they are asked about.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pfdm_core import attacks
from pfdm_core.attacks import EpsFn, Segment
from pfdm_core.core.nets import MLPDenoiser
from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig, train
from pfdm_core.data.small import load_digits
from pfdm_core.methods.pfdm import pfdm_sample
from pfdm_core.privacy.mechanism import eps_analytic, privatize

S = Schedule()


class ImageMLP(nn.Module):
    """MLPDenoiser on flattened 8x8 images: fast enough to memorize 16 digits in a test."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = MLPDenoiser(dim=64, hidden=128, depth=3, num_classes=10)

    def forward(self, x, t, y=None):
        return self.mlp(x.flatten(1), t, y).view_as(x)


class EmpiricalOptimal(nn.Module):
    """eps_hat = (x_t - sqrt(abar_t) E[x_0 | x_t]) / sqrt(1 - abar_t) for the empirical distribution of `data`."""

    def __init__(self, data: torch.Tensor) -> None:
        super().__init__()
        self.data = data.flatten(1).double()  # (N, D)

    def forward(self, x, t, y=None):
        a = S.alpha_bar[t].view(-1, 1, 1)  # (B, 1, 1)
        xf = x.flatten(1).double()[:, None]  # (B, 1, D)
        d2 = (xf - a.sqrt() * self.data[None]).pow(2).sum(-1)  # (B, N)
        w = torch.softmax(-d2 / (2 * (1 - a[:, :, 0])), dim=1)
        x0 = w @ self.data  # (B, D)
        return ((xf[:, 0] - a[:, 0].sqrt() * x0) / (1 - a[:, 0]).sqrt()).view_as(x).to(x)


class Spy(nn.Module):
    """Returns a constant and records every step it is asked about."""

    def __init__(self, value: float = 0.0) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))  # so that generate() finds a device
        self.value, self.steps = value, set()

    def forward(self, x, t, y=None):
        self.steps |= set(t.tolist())
        return torch.full_like(x, self.value)


class NearestLabel(nn.Module):
    """A 1-NN classifier on reference images: logits = one-hot of the nearest image's label."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__()
        self.x, self.y = x.flatten(1), y

    def forward(self, x):
        return F.one_hot(self.y[torch.cdist(x.flatten(1), self.x).argmin(1)], 10).float()


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    perm = torch.randperm(len(d), generator=torch.Generator().manual_seed(0))
    return d.subset(perm[:16]), d.subset(perm[16:48])  # members, non-members


@pytest.fixture(scope="module")
def memorizer(digits):
    members, _ = digits
    torch.manual_seed(0)
    cfg = TrainConfig(steps=400, batch_size=16, lr=3e-3, seed=0)
    return train(ImageMLP(), S, members.x, members.y, 1, S.T, config=cfg, progress=False).model


# ----------------------------------------------------------------------------- membership inference
def test_loss_attack_and_pia_find_the_memorized_members(memorizer, digits):
    members, non = digits
    eps_fn = EpsFn.of(memorizer, S)
    loss = attacks.membership_inference("loss", eps_fn, members.x, non.x, members.y, non.y)
    assert loss.auc > 0.9 and loss.member.shape == (16,) and loss.nonmember.shape == (32,)
    assert attacks.membership_inference("pia", eps_fn, members.x, non.x, members.y, non.y).auc > 0.9
    secmi = attacks.secmi(eps_fn, members.x, members.y)
    assert secmi.shape == (16,) and torch.isfinite(secmi).all()


def test_scores_are_seeded_and_independent_of_batch_size(memorizer, digits):
    x, y = digits[0].x, digits[0].y
    eps_fn = EpsFn.of(memorizer, S)
    a = attacks.loss_attack(eps_fn, x, y, seed=1)
    assert torch.equal(a, attacks.loss_attack(eps_fn, x, y, seed=1))
    assert torch.allclose(a, attacks.loss_attack(eps_fn, x, y, seed=1, batch_size=5), atol=1e-6)
    assert not torch.allclose(a, attacks.loss_attack(eps_fn, x, y, seed=2))
    for fn in (attacks.secmi, attacks.pia):
        assert torch.allclose(fn(eps_fn, x, y), fn(eps_fn, x, y, batch_size=3), atol=1e-5)


def test_perfect_memorizer_members_score_zero(digits):
    members, non = digits
    eps_fn = EpsFn.of(EmpiricalOptimal(members.x), S)
    for name in ("loss", "pia"):
        res = attacks.membership_inference(name, eps_fn, members.x, non.x)
        assert res.auc == 1.0 and res.tpr_1pct == 1.0, name
    # its eps_hat is linear around each member, so SecMI's DDIM round trip is exact there
    assert attacks.secmi(eps_fn, members.x).max() < 1e-6


def test_identical_score_distributions_give_auc_one_half():
    g = torch.Generator().manual_seed(0)
    res = attacks.roc_metrics(torch.randn(3000, generator=g), torch.randn(3000, generator=g))
    assert abs(res.auc - 0.5) < 0.03 and res.tpr_1pct < 0.03


def test_roc_metrics_on_separated_and_hand_checked_scores():
    perfect = attacks.roc_metrics(np.arange(10.0), np.arange(10.0) + 100)
    assert perfect.auc == 1.0 and perfect.tpr_1pct == 1.0 and perfect.tpr_01pct == 1.0
    reversed_ = attacks.roc_metrics(np.arange(10.0) + 100, np.arange(10.0))
    assert reversed_.auc == 0.0 and reversed_.tpr_1pct == 0.0
    res = attacks.roc_metrics([1.0, 2.0, 3.0, 4.0], [2.5, 5.0, 6.0, 7.0])  # lower = member
    assert res.auc == 14 / 16 and res.tpr_1pct == 0.5  # at FPR 0: members 1 and 2 only
    assert res.fpr[0] == 0 and res.tpr[-1] == 1 and set(res.summary()) == {"auc", "tpr_1pct", "tpr_01pct"}


# ----------------------------------------------------------------------------- eps_fn
def test_subchain_eps_is_rescaled_to_the_full_chain():
    """Data N(0, I): the optimal eps of the full chain is sqrt(1 - abar_t) x_t, of the chain from
    step s it is sqrt(1 - abar_t/abar_s) x_t; EpsFn must turn the second into the first."""

    class Gauss(nn.Module):
        def __init__(self, origin):
            super().__init__()
            self.origin = origin

        def forward(self, x, t, y=None):
            r = S.alpha_bar[t] / S.alpha_bar[self.origin]
            return (1 - r).sqrt().view(-1, 1, 1, 1).to(x) * x

    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([401, 700, 1000])
    assert torch.allclose(EpsFn.of(Gauss(400), S, origin=400)(x, t), EpsFn.of(Gauss(0), S)(x, t), atol=1e-5)


def test_pfdm_eps_fn_splits_steps_as_pfdm_sample_does():
    t0 = 300
    shared, personal = Spy(2.0), Spy(1.0)
    pfdm_sample(shared, personal, S, t0, torch.zeros(2, dtype=torch.long), (2, 1, 8, 8), num_steps=10)
    assert max(personal.steps) <= t0 < min(shared.steps)  # the personal model owns t0
    shared, personal = Spy(2.0), Spy(1.0)
    eps_fn = EpsFn.pfdm(shared, personal, S, t0)
    out = eps_fn(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, t0, t0 + 1]))
    assert personal.steps == {1, t0} and shared.steps == {t0 + 1}  # step 0 is answered at step 1
    assert (out[:3] == 1).all() and (out[3] > 2).all()  # shared eps' rescaled to the full chain


def test_shared_model_alone_is_only_queried_at_its_steps(digits):
    t0, x = 300, digits[0].x[:4]
    shared = Spy()
    eps_fn = EpsFn.shared(shared, S, t0)
    attacks.loss_attack(eps_fn, x)
    attacks.pia(eps_fn, x)
    attacks.secmi(eps_fn, x)
    x_tilde = privatize(x, t0, S, generator=torch.Generator().manual_seed(0))
    rec = attacks.reconstruction_attack(eps_fn, x_tilde, t0, x)
    assert min(shared.steps) == t0 + 1
    a = float(S.alpha_bar[t0])  # eps_hat = 0: the one-step estimate is the rescaled upload
    assert torch.allclose(rec.x_hat, (x_tilde / math.sqrt(a)).clamp(-1, 1))
    with pytest.raises(ValueError, match=r"steps must be an integer in 301\.\.1000"):
        attacks.loss_attack(eps_fn, x, steps=[100])


# ----------------------------------------------------------------------------- memorization
def test_memorization_flags_an_injected_copy_and_not_fresh_samples():
    x = load_digits().x
    train_x, fresh = x[:200], x[200:260]
    generated = torch.cat([fresh[:30], train_x[7:8], fresh[30:]])  # the copy is generated[30]
    res = attacks.memorization(generated, train_x)
    assert res.count == 1 and res.flagged[30] and res.ratio[30] == 0
    top = res.closest(3)
    assert (top.generated[0], top.train[0], top.d1[0]) == (30, 7, 0.0) and not top.flagged[1:].any()
    pairs = attacks.pair_images(res, generated, train_x, k=3)
    assert pairs.shape == (2, 3, 1, 8, 8) and torch.equal(pairs[0, 0], pairs[1, 0])


# ----------------------------------------------------------------------------- reconstruction
def test_reconstruction_from_a_small_t0_beats_a_large_t0(memorizer, digits):
    members, _ = digits
    eps_fn, clf = EpsFn.of(memorizer, S), NearestLabel(load_digits().x, load_digits().y)
    res = {}
    for t0 in (20, 600):
        x_tilde = privatize(members.x, t0, S, generator=torch.Generator().manual_seed(0))
        res[t0] = attacks.reconstruction_attack(eps_fn, x_tilde, t0, members.x, members.y, clf, num_steps=10)
    assert res[20].ssim.mean() > res[600].ssim.mean() and res[20].l2.mean() < res[600].l2.mean()
    assert res[20].reid == 1.0 and res[20].accuracy == 1.0 and res[600].accuracy <= 1.0
    assert res[20].x_hat.shape == members.x.shape and set(res[20].summary()) == {"ssim", "l2", "reid", "accuracy"}


# ----------------------------------------------------------------------------- audit
def test_audit_of_a_gaussian_mechanism_is_below_its_eps_and_tightens():
    mu = 2.0  # = 2C / sigma with C = 1, sigma = 1
    eps = eps_analytic(1.0, 1.0, 1e-5)
    lbs = []
    for n in (1_000, 100_000):
        g = torch.Generator().manual_seed(n)
        lbs.append(attacks.eps_lower_bound(torch.randn(n, generator=g) + mu, torch.randn(n, generator=g)).eps_lb)
    assert 0 < lbs[0] < lbs[1] < eps
    g = torch.Generator().manual_seed(0)  # identical neighbours: nothing to find
    assert attacks.eps_lower_bound(torch.randn(10_000, generator=g), torch.randn(10_000, generator=g)).eps_lb < 0.1


def test_audit_of_the_upload_stays_below_both_accountants():
    small, big = (attacks.audit_upload(S, t0=500, clip_norm=1.0, num_trials=n) for n in (1_000, 100_000))
    assert 0 < small.eps_lb < big.eps_lb < big.eps_analytic < big.eps_thm51
    assert big.num_trials == 100_000 and 0 <= big.fpr <= 1
    assert big.calibration_trials == 100_000  # the threshold came from trials of its own
    assert big.eps_max == pytest.approx(attacks.max_certifiable_eps(100_000)) and big.can_refute


def test_the_audit_can_fail_a_mechanism_with_too_little_noise():
    """At t0 = 800 (eps <= 3.4 by both accountants) the same audit convicts an upload whose noise is 4x too small,
    and acquits the real one: the small-eps end of the audit is a real test."""
    from pfdm_core.privacy.mechanism import privatize

    def leaky(x, t0, sched, clip_norm, g):
        honest = privatize(x, t0, sched, clip_norm, g)
        a = float(sched.alpha_bar[t0])
        return a ** 0.5 * x + (honest - a ** 0.5 * x) / 4  # the same mean, a quarter of the noise

    real = attacks.audit_upload(S, t0=800, clip_norm=10.0, num_trials=20_000)
    broken = attacks.audit_upload(S, t0=800, clip_norm=10.0, num_trials=20_000, mechanism=leaky)
    assert real.can_refute and broken.can_refute  # 3.3 < eps_max (8.6 at 20,000 trials)
    assert real.eps_lb < real.eps_analytic < broken.eps_lb, (real.eps_lb, real.eps_analytic, broken.eps_lb)


def test_eps_max_is_what_perfect_separation_shows():
    for n in (1_000, 100_000):
        cap = attacks.max_certifiable_eps(n, 1e-5, 0.05)
        assert cap == pytest.approx(math.log(n / math.log(2 / 0.05)), abs=0.01)  # FPR, FNR <= ln(2/alpha)/n
        separated = attacks.eps_lower_bound(np.full(2 * n, 5.0), np.full(2 * n, -5.0))
        assert separated.eps_lb == pytest.approx(cap) and separated.num_trials == n


def test_the_threshold_is_chosen_on_other_trials_than_the_bound():
    """Half the statistics choose the threshold, the other half give the bound; a given threshold uses them all.
    On a null pair (identical distributions, true eps = 0) the bound at 95% exceeds 0 in at most ~5% of audits."""
    g = np.random.default_rng(3)
    given = attacks.eps_lower_bound(g.normal(1, 1, 4000), g.normal(0, 1, 4000), threshold=0.5)
    assert given.calibration_trials == 0 and given.num_trials == 4000 and given.threshold == 0.5
    split = attacks.eps_lower_bound(g.normal(1, 1, 4000), g.normal(0, 1, 4000))
    assert split.calibration_trials == 2000 and split.num_trials == 2000
    false_alarms = sum(attacks.eps_lower_bound(g.normal(size=400), g.normal(size=400)).eps_lb > 0 for _ in range(200))
    assert false_alarms <= 20, false_alarms  # 5% of 200 is 10; the binomial 99.9% bound is about 21


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("call, match", [
    (lambda e, m, x: attacks.membership_inference("loss", e, x, x[:, :, :4]), "same image shape"),
    (lambda e, m, x: attacks.membership_inference("lira", e, x, x), "attack must be one of"),
    (lambda e, m, x: attacks.loss_attack(e, x[:0]), "non-empty batch"),
    (lambda e, m, x: attacks.loss_attack(e, x, torch.zeros(3, dtype=torch.long)), "same length"),
    (lambda e, m, x: attacks.loss_attack(e, x, steps=[0]), "steps must be an integer in 1..1000"),
    (lambda e, m, x: attacks.pia(e, x, t=1001), "t must be an integer"),
    (lambda e, m, x: attacks.secmi(e, x, t_sec=995, k=10), "t_sec \\+ k <= 1000"),
    (lambda e, m, x: attacks.roc_metrics([], [1.0]), "member scores must be a non-empty"),
    (lambda e, m, x: attacks.memorization(x, x[:, :, :4]), "same image shape"),
    (lambda e, m, x: attacks.memorization(x[:0], x), "generated must be a non-empty"),
    (lambda e, m, x: attacks.memorization(x, x[:1]), ">= 2 training images"),
    (lambda e, m, x: attacks.reconstruction_attack(e, x, 100, x[:2]), "same shape"),
    (lambda e, m, x: attacks.reconstruction_attack(e, x, 1000, x), "t0 must be an integer in 1..999"),
    (lambda e, m, x: EpsFn.pfdm(m, m, S, 0), "t0 must be an integer in 1..999"),
    (lambda e, m, x: EpsFn(S, Segment(m, 1, 100), Segment(m, 200, 1000)), "contiguous"),
    (lambda e, m, x: attacks.eps_lower_bound([], [1.0]), "non-empty"),
    (lambda e, m, x: attacks.eps_lower_bound([1.0], [1.0], alpha=2), "alpha must be in"),
    (lambda e, m, x: attacks.audit_upload(S, t0=0), "t0 must be an integer"),
])
def test_bad_inputs_raise_clear_errors(call, match):
    x = torch.zeros(4, 1, 8, 8)
    with pytest.raises(ValueError, match=match):
        call(EpsFn.of(Spy(), S), Spy(), x)
