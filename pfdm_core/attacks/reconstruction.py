"""Reconstruction of uploads: denoise x_tilde from t0 back to x_0; l2, SSIM, re-identification, chance."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pfdm_core.attacks.common import EpsFn, _check_batch
from pfdm_core.core.diffusion import ddim_sample
from pfdm_core.core.schedule import Schedule
from pfdm_core.evaluation.metrics import accuracy
from pfdm_core.privacy.mechanism import check_images


@torch.no_grad()
def posterior_mean_x0(model: nn.Module, sched: Schedule, x_tilde: torch.Tensor, t0: int,
                      y: torch.Tensor | None = None) -> torch.Tensor:
    """One-step x0_hat = (x_t0 - sqrt(1 - abar) eps_theta(x_t0, t0, y)) / sqrt(abar), clamped to [-1, 1]."""
    a = float(sched.alpha_bar[sched.check_step(t0, "t0", 1, sched.T - 1)])
    t = torch.full((x_tilde.shape[0],), t0, dtype=torch.long, device=x_tilde.device)
    return ((x_tilde - math.sqrt(1 - a) * model(x_tilde, t, y)) / math.sqrt(a)).clamp(-1, 1)


def reconstruct(model: nn.Module, sched: Schedule, x_tilde: torch.Tensor, t0: int, y: torch.Tensor | None = None,
                num_steps: int = 50) -> torch.Tensor:
    """Deterministic DDIM from x_t0 = x_tilde down to step 0 (the adversary knows t0)."""
    return ddim_sample(model, sched, x_tilde, y, t_hi=t0, t_lo=0, num_steps=num_steps, origin=0)


def l2_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image l2 distance ||a_i - b_i|| over all pixels, shape (B,)."""
    return (a - b).flatten(1).norm(dim=1)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0, win_size: int = 5,
         sigma: float = 1.0) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004), Gaussian window, 'valid' positions only, shape (B,).

    a, b: (B, C, H, W) with values in a range of width `data_range` (2 for [-1, 1]).
    """
    C = a.shape[1]
    g = torch.exp(-((torch.arange(win_size, dtype=a.dtype) - (win_size - 1) / 2) ** 2) / (2 * sigma**2))
    win = (g[:, None] * g[None]) / g.sum() ** 2  # (k, k), sums to 1
    win = win.expand(C, 1, win_size, win_size).to(a.device)
    filt = lambda v: F.conv2d(v, win, groups=C)  # noqa: E731  local weighted mean, (B, C, H', W')
    mu_a, mu_b = filt(a), filt(b)
    var_a, var_b = filt(a * a) - mu_a**2, filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def reid_rate(guesses: torch.Tensor, originals: torch.Tensor, labels: torch.Tensor | None = None) -> float:
    """Fraction of guesses whose nearest original (l2, among all N) is their own (chance: 1/N).

    With labels (public in PFDM), only candidates of the guess's own label are considered.
    """
    d = torch.cdist(guesses.flatten(1).double(), originals.flatten(1).double())  # (N, N)
    if labels is not None:
        d = d.masked_fill(labels[:, None] != labels[None, :], math.inf)
    return (d.argmin(1) == torch.arange(len(guesses))).double().mean().item()


def scores(guess: torch.Tensor, originals: torch.Tensor) -> dict[str, float]:
    """Mean l2 distance, mean SSIM and re-identification rate of guesses against the truth."""
    return dict(l2=l2_distance(guess, originals).mean().item(), ssim=ssim(guess, originals).mean().item(),
                reid=reid_rate(guess, originals))


def chance_scores(originals: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
    """No-information baselines: l2 / SSIM between two different originals and re-id 1/N; with
    labels also '<metric>_label': two different originals of the same class, a random same-class pick."""
    N = len(originals)
    i, j = torch.triu_indices(N, N, 1)  # all pairs i < j
    d, s = l2_distance(originals[i], originals[j]), ssim(originals[i], originals[j])  # (P,) each
    out = dict(l2=d.mean().item(), ssim=s.mean().item(), reid=1 / N)
    if labels is not None:
        same = labels[i] == labels[j]
        out |= dict(l2_label=d[same].mean().item(), ssim_label=s[same].mean().item(),
                    reid_label=(1 / (labels[:, None] == labels[None, :]).sum(1).double()).mean().item())
    return out


# ----------------------------------------------------------------------------- reconstruction
@dataclass(frozen=True)
class Reconstruction:
    x_hat: torch.Tensor  # (N, C, H, W) the adversary's guesses of x_0
    ssim: torch.Tensor  # (N,) SSIM with the truth
    l2: torch.Tensor  # (N,) l2 distance to the truth
    reid: float  # fraction whose nearest candidate (of the N truths) is their own
    accuracy: float | None  # fraction classified as their label (with a classifier and labels)

    def summary(self) -> dict[str, float | None]:
        return dict(ssim=self.ssim.mean().item(), l2=self.l2.mean().item(), reid=self.reid, accuracy=self.accuracy)


def reconstruction_attack(eps_fn: EpsFn, x_tilde: torch.Tensor, t0: int, x_true: torch.Tensor,
                          y: torch.Tensor | None = None, classifier: nn.Module | None = None,
                          num_steps: int = 50) -> Reconstruction:
    """Denoise uploads x_tilde (at step t0) back to x_0 and score against the truth.

    A model owning steps 1..t0 runs deterministic DDIM t0 -> 0 (`reconstruct`); one that
    owns none below t0 (PFDM's shared model) can only make the one-step estimate
    x0_hat = (x_tilde - sqrt(1 - abar_t0) eps_hat) / sqrt(abar_t0) with eps_hat at its first step.
    Labels are public in PFDM: a conditional model gets y. Candidates for re-identification are
    the N true images (chance 1/N). If uploads were clipped, pass clip(x) as x_true.
    """
    _check_batch(x_tilde, y, "x_tilde")
    check_images(x_true, "x_true")
    if x_tilde.shape != x_true.shape:
        raise ValueError(f"x_tilde and x_true must have the same shape, got {tuple(x_tilde.shape)}, {tuple(x_true.shape)}")
    t0 = eps_fn.sched.check_step(t0, "t0", 1, eps_fn.sched.T - 1)
    if eps_fn.t_lo == 1:
        x_hat = reconstruct(eps_fn, eps_fn.sched, x_tilde, t0, y, num_steps)
    else:
        x_hat = posterior_mean_x0(eps_fn, eps_fn.sched, x_tilde, t0, y)
    acc = accuracy(classifier, x_hat, y) if classifier is not None and y is not None else None
    return Reconstruction(x_hat, ssim(x_hat, x_true), l2_distance(x_hat, x_true), reid_rate(x_hat, x_true), acc)


__all__ = ["Reconstruction", "chance_scores", "l2_distance", "posterior_mean_x0", "reconstruct", "reconstruction_attack", "reid_rate", "scores", "ssim"]
