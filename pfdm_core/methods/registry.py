"""The methods by name: how each trains client `client`'s models and how it samples from them.

    METHODS["pfdm"].train(ctx)  -> {"shared": w, "personal": theta_m}
    METHODS["pfdm"].sample(models, ctx_or_none, y, shape, num_steps, seed, t0)

`experiment.run`, the Flower app and the studies look a method up here; adding a method is adding
one `Method` (no if-chains elsewhere). A `Context` carries what any method may need for one run
(the clients' data, the model factory, the budget, the folder of checkpoints, ...); a method reads
only its own fields, and its checkpoints' names and fingerprints guard what trained them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from pfdm_core.core.diffusion import generate
from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig
from pfdm_core.data.small import Dataset, union
from pfdm_core.methods.ddpm import train_full
from pfdm_core.methods.fedavg import STRATEGIES, PhoenixConfig, ScoreFn, null_label, train_phoenix
from pfdm_core.methods.pfdm import client_train_personal, client_upload, pfdm_sample
from pfdm_core.methods.server import ModelFactory, server_train_shared
from pfdm_core.privacy.dpsgd import DPConfig, train_dpsgd

Models = dict[str, nn.Module]


@dataclass
class Context:
    """One run of one method for client `client` (models checkpointed under `folder`)."""
    clients: Sequence[Dataset]
    client: int
    make_model: ModelFactory
    sched: Schedule
    train: TrainConfig  # the step budget every method gets (seeded)
    folder: Path
    seed: int = 0
    t0: int | None = None  # PFDM's split step
    clip_norm: float = 10.0  # PFDM's per-image clip C
    delta: float = 1e-5
    fedavg: PhoenixConfig = field(default_factory=PhoenixConfig)  # rounds and client fraction of FedAvg / Phoenix
    dp: DPConfig = field(default_factory=DPConfig)
    dp_train: TrainConfig | None = None  # DP-SGD's own budget (batch, steps); None: `train`
    pool: Dataset | None = None  # public images: Phoenix's shared set G
    score: Callable[[], ScoreFn] | None = None  # builds Phoenix's filter score (public reference)
    progress: bool = True
    info: dict = field(default_factory=dict)  # what a method reports beyond its models (DP-SGD's eps, ...)


@dataclass(frozen=True)
class Method:
    name: str
    train: Callable[[Context], Models]
    uses_t0: bool = False  # one run per t0
    sample: Callable[..., torch.Tensor] | None = None  # default: one full-chain model, `sample_full`
    conditional: bool = True  # False: samples carry no label (the evaluation labels them with a classifier)


def sample_full(models: Models, sched: Schedule, y: torch.Tensor, shape: tuple[int, ...], num_steps: int, seed: int,
                t0: int | None = None) -> torch.Tensor:
    """DDIM samples of the method's one full-chain model."""
    return generate(models["model"], sched, y, shape, "ddim", num_steps, seed=seed)


def sample_unconditional(models: Models, sched: Schedule, y: torch.Tensor, shape: tuple[int, ...], num_steps: int,
                         seed: int, t0: int | None = None) -> torch.Tensor:
    """len(y) DDIM samples of an unconditional model (the null label; y only sets how many)."""
    model = models["model"]
    return generate(model, sched, torch.full_like(y, null_label(model)), shape, "ddim", num_steps, seed=seed)


def sample_pfdm(models: Models, sched: Schedule, y: torch.Tensor, shape: tuple[int, ...], num_steps: int, seed: int,
                t0: int | None = None) -> torch.Tensor:
    """PFDM's two-segment chain: shared w on T..t0+1, personal theta_m on t0..1."""
    return pfdm_sample(models["shared"], models["personal"], sched, t0, y, shape, "ddim", num_steps, seed)


def _pfdm(ctx: Context) -> Models:
    uploads = [client_upload(d, ctx.t0, ctx.sched, ctx.clip_norm, seed=ctx.seed * 100 + m, delta=ctx.delta)
               for m, d in enumerate(ctx.clients)]  # each client privatizes once (seeded: a simulation)
    shared = server_train_shared(uploads, ctx.make_model, ctx.sched, ctx.train,
                                 ctx.folder / f"pfdm_shared_t0{ctx.t0}.pt", ctx.progress)
    personal = client_train_personal(ctx.clients[ctx.client], ctx.t0, ctx.make_model, ctx.sched, ctx.train,
                                     ctx.clip_norm, ctx.folder / f"pfdm_personal_c{ctx.client}_t0{ctx.t0}.pt",
                                     ctx.progress)
    return {"shared": shared, "personal": personal}


def _local(ctx: Context) -> Models:
    return {"model": train_full(ctx.clients[ctx.client], ctx.make_model, ctx.sched, ctx.train,
                                ctx.folder / f"local_c{ctx.client}.pt", ctx.progress, "local-only")}


def _central(ctx: Context) -> Models:
    return {"model": train_full(union(ctx.clients), ctx.make_model, ctx.sched, ctx.train, ctx.folder / "central.pt",
                                ctx.progress, "centralized")}


def _dpsgd(ctx: Context) -> Models:
    dp, pooled, tc = ctx.dp, union(ctx.clients), ctx.dp_train or ctx.train
    name = f"dpsgd_eps{dp.eps:g}_K{dp.multiplicity}_C{dp.clip_norm:g}_{dp.accountant}"
    if (tc.batch_size, tc.steps) != (ctx.train.batch_size, ctx.train.steps):  # its own budget: in the name too
        name += f"_B{tc.batch_size}_S{tc.steps}"
    res = train_dpsgd(ctx.make_model(), ctx.sched, pooled.x, pooled.y, tc, dp, ctx.folder / f"{name}.pt",
                      ctx.progress, desc=f"DP-SGD (eps={dp.eps:g}, K={dp.multiplicity}, B={tc.batch_size})")
    ctx.info.update(dp_eps_spent=res.eps, dp_noise_multiplier=res.noise_multiplier, dp_sample_rate=res.sample_rate,
                    dp_batch_size=tc.batch_size, dp_steps=tc.steps, dp_multiplicity=dp.multiplicity)
    return {"model": res.model}


def _fedavg_family(name: str, strategy: str) -> Callable[[Context], Models]:
    """FedAvg (strategy "fedavg") and the Phoenix strategies: one loop, `fedavg.train_phoenix`."""
    def run(ctx: Context) -> Models:
        ph = replace(STRATEGIES[strategy], rounds=ctx.fedavg.rounds, client_fraction=ctx.fedavg.client_fraction)
        score = ctx.score() if ph.filter_k else None
        res = train_phoenix(ctx.clients, ctx.make_model, ctx.sched, ctx.train, ph, score, pool=ctx.pool,
                            checkpoint=ctx.folder / f"{name}.pt", progress=ctx.progress)
        if strategy != "fedavg":
            ctx.info.update(disconnected=res.disconnected)
        if ph.filter_k:  # how often the threshold let the round's worst client be flagged, and the scores seen
            scores = [v for h in res.history for v in h["scores"].values()]
            ctx.info.update(flagged_rounds=sum(h["flagged"] is not None for h in res.history),
                            filter_score_min=min(scores), filter_score_median=float(sorted(scores)[len(scores) // 2]))
        return {"model": res.client_model(ctx.client)}
    return run


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("pfdm", _pfdm, uses_t0=True, sample=sample_pfdm),
    Method("local", _local),
    Method("central", _central),
    Method("fedavg", _fedavg_family("fedavg", "fedavg")),
    Method("dpsgd", _dpsgd),  # central DP-SGD diffusion (DPDM) on the union of the clients
    Method("phoenix_sharing", _fedavg_family("phoenix_sharing", "sharing")),
    Method("phoenix_personal", _fedavg_family("phoenix_personal", "personal")),
    Method("phoenix_filter", _fedavg_family("phoenix_filter", "personal_filter")),
    # Phoenix as published: unconditional DDPMs (the three above are its class-conditional variants)
    Method("phoenix_uncond", _fedavg_family("phoenix_uncond", "unconditional"), sample=sample_unconditional,
           conditional=False),
    Method("phoenix_uncond_sharing", _fedavg_family("phoenix_uncond_sharing", "unconditional_sharing"),
           sample=sample_unconditional, conditional=False),
    Method("phoenix_uncond_filter", _fedavg_family("phoenix_uncond_filter", "unconditional_personal_filter"),
           sample=sample_unconditional, conditional=False),
]}
TABLE1 = ("pfdm", "local", "central", "fedavg")  # the paper's Table 1


def get(name: str) -> Method:
    """METHODS[name], or one line listing the methods."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name]


def sample(name: str, models: Models, sched: Schedule, y: torch.Tensor, shape: tuple[int, ...], num_steps: int,
           seed: int, t0: int | None = None) -> torch.Tensor:
    """Samples of method `name`'s trained models (its own sampler, DDIM with `num_steps`)."""
    return (get(name).sample or sample_full)(models, sched, y, shape, num_steps, seed, t0)


__all__ = ["METHODS", "TABLE1", "Context", "Method", "get", "sample", "sample_full", "sample_pfdm"]
