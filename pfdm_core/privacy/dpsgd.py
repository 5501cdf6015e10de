"""DP-SGD diffusion: DPDM (Dockhorn et al. 2023, https://arxiv.org/abs/2210.09929) with Opacus.

PFDM's fair rival at the same (eps, delta), as in the PFDM paper. One step of DP-SGD (Abadi et al. 2016)
with DPDM's noise multiplicity K:

    batch B: each of the N examples joins independently with probability q = batch_size / N (Poisson)
    l_i = (1/K) sum_k || eps_k - eps_theta(x_{t_k}, t_k, y_i) ||^2,  K fresh (t_k, eps_k) per example
    g   = ( sum_{i in B} grad l_i * min(1, C / ||grad l_i||)  +  N(0, sigma^2 C^2 I) ) / (q N)

C = `clip_norm` bounds each example's contribution; the noise multiplier sigma is the smallest
that keeps the accountant's eps(sigma, q, steps) at delta within the target (Opacus'
`get_noise_multiplier`, "rdp" as in DPDM or the tighter "prv"). Averaging the K draws inside
l_i, *before* clipping, lowers the variance of the gradient at no privacy cost (DPDM Sec. 3.2).

Stock Opacus lacks DPDM's patched `noise_multiplicity`; the equivalent here makes K forward/
backward passes over the batch, each with fresh (t, eps) per example, and averages Opacus'
per-example gradients over the K passes before the optimizer clips.

Comparing with PFDM "at equal eps": DP-SGD protects pixels and labels (both are in l_i), PFDM
only pixels. Opacus' accountants use add/remove-one neighbours (Poisson sampling), PFDM's
Theorem 5.1 replace-one (Delta = 2C); by group privacy an add/remove (eps, delta) guarantee
gives replace-one (2 eps, (1 + e^eps) delta). The noise uses torch's PRNG (Opacus'
`secure_mode` is off: fine for research, not for a deployment).
"""
from __future__ import annotations

import copy
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm.auto import tqdm

from pfdm_core.core import checkpoint as ckpt
from pfdm_core.core import omp
from pfdm_core.core.checkpoint import data_fingerprint
from pfdm_core.core.diffusion import diffusion_loss
from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig, ema_update
from pfdm_core.privacy.mechanism import check_delta, check_positive

if TYPE_CHECKING:  # Opacus is imported where it is used: it pulls torch.distributed and sympy (seconds per process)
    from opacus import GradSampleModule

ACCOUNTANTS = ("rdp", "prv", "gdp")


@dataclass(frozen=True)
class DPConfig:
    eps: float = 10.0  # target epsilon after TrainConfig.steps steps
    delta: float = 1e-5
    clip_norm: float = 1.0  # C: per-example gradient norm bound (DPDM: 1)
    multiplicity: int = 4  # K: noise draws per example per step (DPDM MNIST: 32)
    accountant: str = "rdp"  # Opacus accountant: "rdp" (DPDM), "prv" (tighter), "gdp"

    def __post_init__(self) -> None:
        check_positive(self.eps, "eps")
        check_delta(self.delta)
        check_positive(self.clip_norm, "clip_norm")
        if int(self.multiplicity) != self.multiplicity or self.multiplicity < 1:
            raise ValueError(f"multiplicity must be an integer >= 1, got {self.multiplicity!r}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")


@dataclass
class DPResult:
    model: nn.Module  # the EMA weights when ema_decay > 0 (post-processing: same guarantee)
    eps: float  # spent, as the accountant reports it at dp.delta
    noise_multiplier: float  # sigma
    sample_rate: float  # q
    losses: list[float] = field(default_factory=list)


def make_dp_compatible(model: nn.Module) -> nn.Module:
    """`model` if Opacus accepts it, else `ModuleValidator.fix(model)` (e.g. BatchNorm -> GroupNorm)."""
    from opacus.validators import ModuleValidator

    if not ModuleValidator.validate(model, strict=False):
        return model
    fixed = ModuleValidator.fix(model)
    errors = ModuleValidator.validate(fixed, strict=False)
    if errors:
        raise ValueError(f"Opacus cannot train this model even after ModuleValidator.fix: {errors}")
    return fixed


def noise_multiplier(dp: DPConfig, sample_rate: float, steps: int) -> float:
    """The smallest sigma with eps(sigma, q, steps) <= dp.eps, to 0.1% of dp.eps (Opacus' search)."""
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    from opacus.accountants.utils import get_noise_multiplier

    return get_noise_multiplier(target_epsilon=dp.eps, target_delta=dp.delta, sample_rate=sample_rate,
                                steps=int(steps), accountant=dp.accountant, epsilon_tolerance=1e-3 * dp.eps)


def per_example_grads(gsm: GradSampleModule, sched: Schedule, x: torch.Tensor, y: torch.Tensor | None, K: int,
                      p_uncond: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Backward of the K-draw loss; leaves p.grad_sample = grad l_i, shape (B, *p.shape). Returns the loss.

    K passes over the batch, each with fresh (t, eps) per example, summing Opacus' per-example
    grads: the same l_i as one pass over the batch repeated K times, at 1/K of the memory and
    faster on a CPU (backward 1.5x for the 32-channel digits UNet, K = 4: no (B*K, ...) tensors)."""
    params = [p for p in gsm.parameters() if p.requires_grad]
    total, losses = [torch.zeros(len(x), *p.shape, device=p.device) for p in params], []
    for _ in range(K):
        for p in params:
            p.grad_sample = None
        loss = diffusion_loss(gsm, sched, x, y, 1, sched.T, p_uncond=p_uncond, generator=generator)  # mean over B
        with warnings.catch_warnings():  # the first layer's input needs no grad: harmless for Opacus' hooks
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss.backward()  # Opacus rescales by B: grad_sample[i] = grad of example i's loss
        for acc, p in zip(total, params):
            if p.grad_sample is not None:  # None: the parameter took no part in this pass
                acc.add_(p.grad_sample)
        losses.append(loss.detach())
    for acc, p in zip(total, params):
        p.grad_sample = acc.div_(K)  # (B, *p.shape): grad of l_i = mean of its K draws
    return torch.stack(losses).mean()


def train_dpsgd(model: nn.Module, sched: Schedule, x: torch.Tensor, y: torch.Tensor | None,
                config: TrainConfig | None = None, dp: DPConfig | None = None,
                checkpoint: str | os.PathLike | None = None, progress: bool = True, desc: str = "DP-SGD") -> DPResult:
    """DPDM on data (x, y) over all steps 1..T: `config.steps` Poisson batches of expected size
    `config.batch_size`, Adam (lr, weight_decay), EMA and label dropout as in `core.train.train`.
    `config.grad_clip` is ignored: the per-example clip dp.clip_norm replaces it. Checkpoints
    (model, optimizer, accountant, both generators) every `checkpoint_every` steps and resumes.
    The returned model may be a fixed copy of `model` (see `make_dp_compatible`)."""
    config, dp = config or TrainConfig(), dp or DPConfig()
    if not torch.isfinite(x).all():
        raise ValueError("training data x contains NaN or infinite values")
    if y is not None and len(y) != len(x):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    n = len(x)
    if config.batch_size > n:
        raise ValueError(f"batch_size ({config.batch_size}) must be <= the number of examples ({n})")
    q = config.batch_size / n
    sigma = noise_multiplier(dp, q, config.steps)
    model = make_dp_compatible(model)
    dev = next(model.parameters()).device
    x, y = x.to(dev), (y.to(dev) if y is not None else None)
    gen = torch.Generator(device=dev).manual_seed(config.seed)  # batches, steps t, diffusion noise
    noise_gen = torch.Generator(device=dev).manual_seed(config.seed + 1)  # the DP noise
    from opacus import GradSampleModule
    from opacus.accountants import create_accountant
    from opacus.optimizers import DPOptimizer

    gsm = GradSampleModule(model, loss_reduction="mean")
    opt = DPOptimizer(torch.optim.Adam(gsm.parameters(), lr=config.lr, weight_decay=config.weight_decay),
                      noise_multiplier=sigma, max_grad_norm=dp.clip_norm, expected_batch_size=config.batch_size,
                      generator=noise_gen)
    accountant = create_accountant(dp.accountant)
    ema = copy.deepcopy(model).requires_grad_(False) if config.ema_decay > 0 else None
    losses: list[float] = []
    start, path = 0, Path(checkpoint) if checkpoint else None
    fingerprint = dict(config=asdict(config), dp=asdict(dp), n=n, data=data_fingerprint(x, y)) if path else None
    state = ckpt.resume(path, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        accountant.load_state_dict(state["accountant"])
        gen.set_state(state["gen"])
        noise_gen.set_state(state["noise_gen"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start, losses = state["step"], state["losses"]

    def save(step: int) -> None:
        ckpt.check_finite_weights(model, step, path, desc)
        ckpt.save(path, dict(model=model.state_dict(), opt=opt.state_dict(), accountant=accountant.state_dict(),
                             gen=gen.get_state(), noise_gen=noise_gen.get_state(),
                             ema=ema.state_dict() if ema else None, step=step, losses=losses,
                             eps=accountant.get_epsilon(dp.delta) if step else 0.0, sigma=sigma), fingerprint)

    cadence = ckpt.Cadence(config.checkpoint_every)
    gsm.train()
    for step in tqdm(range(start, config.steps), desc=desc, disable=not progress, initial=start, total=config.steps):
        omp.govern()  # one thread while other processes are busy (core.omp)
        idx = (torch.rand(n, generator=gen, device=dev) < q).nonzero().squeeze(1)  # Poisson sampling
        opt.zero_grad(set_to_none=True)
        if len(idx):
            loss = per_example_grads(gsm, sched, x[idx], None if y is None else y[idx], dp.multiplicity,
                                     config.p_uncond, gen)
        else:  # an empty batch is still a step: its update is pure noise
            for p in gsm.parameters():
                p.grad_sample = torch.zeros(0, *p.shape, device=dev)
            loss = torch.tensor(float("nan"))
        opt.step()
        accountant.step(noise_multiplier=sigma, sample_rate=q)
        ema_update(ema, model, config.ema_decay)
        losses.append(loss.item())
        if len(idx):  # an empty Poisson batch has no loss (NaN by convention above)
            ckpt.check_finite(losses[-1], step + 1, path, desc)
        if path and cadence.due(step + 1):
            save(step + 1)
    if start < config.steps:
        save(config.steps)
    model = gsm.to_standard_module().eval()
    eps = accountant.get_epsilon(dp.delta) if len(accountant) else 0.0
    return DPResult(ema.eval() if ema is not None else model, eps, sigma, q, losses)


__all__ = ["ACCOUNTANTS", "DPConfig", "DPResult", "make_dp_compatible", "noise_multiplier", "per_example_grads",
           "train_dpsgd"]
