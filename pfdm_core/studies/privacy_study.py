"""Notebook 07's study: PFDM under attack on digits (membership inference, memorization, reconstruction, audit).

    cfg = study_config("cpu"); split = membership_split(cfg, seed)
    models = train_models(cfg, split, seed, study_folder("cpu", seed))   # cached, resumable
    df, results = attack_table(targets(models, cfg), split, cfg, seed)   # loss / SecMI / PIA

* Data (`membership_split`): members = `num_members` training images (stratified), non-members =
  the held-out test split, public = the rest of the training split (disjoint from both).
* Models (`train_models`, each one call of the one training loop, checkpointed under
  runs/<preset>/attacks/seed<s>/): a non-private DDPM trained long enough to overfit the
  members; PFDM's shared model on the members' uploads at each t0; the personal denoiser at
  one t0; the local-only model on the members at the normal budget; a public model on the
  public data (the reconstruction adversary's best model).
* Attacks: membership inference (`attack_table`), nearest-neighbour memorization
  (`memorization_table`), reconstruction of uploads (`reconstruction_table`) and the audit
  of the upload mechanism (`audit_table`), with one figure helper each.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.lines import Line2D
from sklearn.model_selection import train_test_split
from torch import nn
from tqdm.auto import tqdm

from pfdm_core import attacks
from pfdm_core.attacks import EpsFn, MIAResult, Segment
from pfdm_core.attacks.reconstruction import chance_scores, l2_distance, reid_rate, ssim
from pfdm_core.core.checkpoint import check_config_folder
from pfdm_core.core.diffusion import generate
from pfdm_core.core.nets import UNet, UNetConfig
from pfdm_core.core.paths import runs_dir
from pfdm_core.core.presets import choose
from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig, device
from pfdm_core.data.small import Dataset, digits_split
from pfdm_core.evaluation.metrics import accuracy
from pfdm_core.methods.ddpm import train_full
from pfdm_core.methods.pfdm import (
    client_train_personal,
    client_upload,
    pfdm_sample,
    server_train_shared,
)
from pfdm_core.methods.server import Upload
from pfdm_core.privacy.mechanism import clip, epsilon, epsilon_curve
from pfdm_core.studies.explore import show_rows

# The PFDM paper's reported membership-inference AUC, for orientation only: other data, models, budgets.
PAPER_AUC = {"pfdm": 0.50, "non-private": (0.82, 0.996)}
ATTACK_NAMES = {"loss": "loss threshold", "secmi": "SecMI", "pia": "PIA"}


@dataclass(frozen=True)
class StudyConfig:
    num_members: int = 64  # training images the attacked models see (stratified over classes)
    num_nonmembers: int = 360  # held-out test images (digits: all 360); TPR@1%FPR needs a few hundred
    t0s: tuple[int, ...] = (100, 300, 693)  # PFDM split steps; 693: eps = 10 per image (Thm 5.1, C = 10)
    personal_t0: int = 693  # the one t0 whose personal denoiser is trained (must be in t0s)
    clip_norm: float = 10.0  # per-image clip C (digits have norm <= 8: never clipped)
    delta: float = 1e-5
    T: int = 1000
    net: UNetConfig = UNetConfig(base_channels=32)
    # measured: ~25 steps/s at batch 64 on 2 idle cores -> 2000 steps ~80 s, 800 steps ~32 s
    overfit: TrainConfig = field(default_factory=lambda: TrainConfig(steps=2000, batch_size=64, lr=1e-3))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=800, batch_size=64, lr=1e-3))
    public: TrainConfig = field(default_factory=lambda: TrainConfig(steps=800, batch_size=64, lr=1e-3))
    num_noise: int = 4  # noise draws per step of the loss attack
    num_generated: int = 200  # samples per model for the memorization test
    ddim_steps: int = 25  # sampling
    recon_steps: int = 25  # DDIM steps of the public model's reconstruction t0 -> 0
    audit_t0s: tuple[int, ...] = (100, 200, 300, 400, 500, 600, 693, 800, 900)
    audit_trials: int = 100_000  # per neighbour
    audit_alpha: float = 0.05  # the audit's eps_lb holds with confidence 1 - alpha
    classifier_epochs: int = 30

    def __post_init__(self) -> None:
        sched = Schedule(self.T)
        for t0 in (*self.t0s, *self.audit_t0s, self.personal_t0):
            sched.check_step(t0, "t0", 1, self.T - 1)
        if not self.t0s or self.personal_t0 not in self.t0s:
            raise ValueError(f"personal_t0 must be one of t0s={self.t0s}, got {self.personal_t0}")
        for name in ("num_members", "num_nonmembers", "num_noise", "num_generated", "ddim_steps", "recon_steps",
                     "audit_trials", "classifier_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.audit_alpha < 1:
            raise ValueError(f"audit_alpha must be in (0, 1), got {self.audit_alpha}")


STUDY_PRESETS = {
    "smoke": StudyConfig(num_members=20, num_nonmembers=100, net=UNetConfig(base_channels=16),
                         overfit=TrainConfig(steps=40, batch_size=32, lr=1e-3),
                         train=TrainConfig(steps=20, batch_size=32, lr=1e-3),
                         public=TrainConfig(steps=20, batch_size=32, lr=1e-3), num_noise=1, num_generated=40,
                         ddim_steps=5, recon_steps=5, audit_t0s=(100, 300, 693, 900), audit_trials=20_000,
                         classifier_epochs=3),
    # 2000 + 3 x 800 + 3 x 800 optimiser steps at ~25 steps/s, plus ~30 s of attacks: ~5 min on 2 idle cores
    "cpu": StudyConfig(),
    "paper": StudyConfig(num_members=128, net=UNetConfig(base_channels=64, num_res_blocks=2, attn_resolutions=(4,)),
                         overfit=TrainConfig(steps=30000, batch_size=128, lr=2e-4),
                         train=TrainConfig(steps=20000, batch_size=128, lr=2e-4),
                         public=TrainConfig(steps=20000, batch_size=128, lr=2e-4), num_noise=8,
                         num_generated=1000, ddim_steps=100, recon_steps=100, audit_trials=1_000_000),
}


def study_config(preset: str, **overrides) -> StudyConfig:
    """The named preset (PFDM_PRESET overrides it) with fields replaced, e.g. t0s=(100, 693)."""
    return replace(choose(STUDY_PRESETS, preset), **overrides)


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class MembershipSplit:
    members: Dataset  # what the attacked models are trained on
    nonmembers: Dataset  # held-out test images, never trained on
    public: Dataset  # the rest of the training split: the adversary's public data


def membership_split(cfg: StudyConfig, seed: int = 0) -> MembershipSplit:
    """Members (stratified), non-members (test split) and public data (the rest), from digits_split(seed)."""
    train_set, test = digits_split(seed)
    if cfg.num_members > len(train_set) - 10 or cfg.num_nonmembers > len(test):
        raise ValueError(f"num_members must be <= {len(train_set) - 10} and num_nonmembers <= {len(test)}, "
                         f"got {cfg.num_members}, {cfg.num_nonmembers}")
    idx = np.arange(len(train_set))
    if cfg.num_members >= 10:  # stratified when every class can get one image
        mem, pub = train_test_split(idx, train_size=cfg.num_members, stratify=train_set.y.numpy(), random_state=seed)
    else:
        perm = np.random.default_rng(seed).permutation(idx)
        mem, pub = perm[:cfg.num_members], perm[cfg.num_members:]
    non = np.sort(np.random.default_rng(seed).permutation(len(test))[:cfg.num_nonmembers])
    return MembershipSplit(train_set.subset(np.sort(mem)), test.subset(non), train_set.subset(np.sort(pub)))


def shadow_split(cfg: StudyConfig, split: MembershipSplit, seed: int = 0) -> tuple[Dataset, Dataset]:
    """The adversary's shadow experiment, from public data only: num_members shadow members (a shadow model
    trains on them) and up to num_nonmembers other public images as shadow non-members."""
    perm = np.random.default_rng(seed + 1).permutation(len(split.public))
    if len(perm) < cfg.num_members + 2:
        raise ValueError(f"the public data ({len(perm)} images) is too small for a shadow of {cfg.num_members} members")
    mem, non = perm[:cfg.num_members], perm[cfg.num_members:cfg.num_members + cfg.num_nonmembers]
    return split.public.subset(np.sort(mem)), split.public.subset(np.sort(non))


def member_uploads(cfg: StudyConfig, split: MembershipSplit, t0: int, seed: int = 0) -> Upload:
    """The members' one-time PFDM uploads at t0 (seeded: the same ones the shared model trains on)."""
    return client_upload(split.members, t0, Schedule(cfg.T), cfg.clip_norm, seed=seed * 1000 + t0, delta=cfg.delta)


# ----------------------------------------------------------------------------- models
@dataclass
class Models:
    overfit: nn.Module  # (a) non-private DDPM on the members, trained to overfit
    shared: dict[int, nn.Module]  # (b) PFDM's shared model, per t0 (steps t0+1..T)
    personal: nn.Module  # (b) the members' personal denoiser at personal_t0 (steps 1..t0), never published
    personal_t0: int
    local: nn.Module  # (c) local-only DDPM on the members, the normal step budget
    public: nn.Module  # (d) DDPM on the public data: the reconstruction adversary
    shadow: nn.Module | None = None  # (e) the overfit recipe on shadow members (public): fixes each attack's direction


_TRAINED_BY = ("num_members", "clip_norm", "T", "net", "overfit", "train", "public")  # fields that change the weights


def study_folder(preset: str, seed: int = 0) -> Path:
    """runs/<preset>/attacks/seed<s>/ (or under $PFDM_RUNS)."""
    return runs_dir() / preset / "attacks" / f"seed{seed}"


def check_study_folder(folder: Path, cfg: StudyConfig) -> None:
    """Refuse checkpoints in `folder` trained under another config; record the config otherwise."""
    check_config_folder(folder, json.loads(json.dumps({k: asdict(cfg)[k] for k in _TRAINED_BY})))


def train_models(cfg: StudyConfig, split: MembershipSplit, seed: int = 0, folder: Path | None = None,
                 progress: bool = True) -> Models:
    """Train (or load from `folder`) every attacked model; each run checkpoints 4 times and resumes."""
    sched = Schedule(cfg.T)
    if folder is not None:
        check_study_folder(folder, cfg)
    ckpt = (lambda name: folder / f"{name}.pt") if folder is not None else (lambda name: None)
    tc = lambda c: replace(c, seed=seed, checkpoint_every=max(1, c.steps // 4))  # noqa: E731

    def make() -> nn.Module:
        torch.manual_seed(seed)  # the initial weights, so a retrain reproduces the cached model
        return UNet(cfg.net).to(device())

    overfit = train_full(split.members, make, sched, tc(cfg.overfit), ckpt("overfit"), progress, "non-private (overfit)")
    local = train_full(split.members, make, sched, tc(cfg.train), ckpt("local"), progress, "local-only")
    public = train_full(split.public, make, sched, tc(cfg.public), ckpt("public"), progress, "public model")
    shared = {t0: server_train_shared([member_uploads(cfg, split, t0, seed)], make, sched, tc(cfg.train),
                                      ckpt(f"shared_t0{t0}"), progress) for t0 in cfg.t0s}
    personal = client_train_personal(split.members, cfg.personal_t0, make, sched, tc(cfg.train), cfg.clip_norm,
                                     ckpt(f"personal_t0{cfg.personal_t0}"), progress)
    shadow = train_full(shadow_split(cfg, split, seed)[0], make, sched, tc(cfg.overfit), ckpt("shadow"), progress,
                        "shadow (public)")
    return Models(overfit, shared, personal, cfg.personal_t0, local, public, shadow)


# ----------------------------------------------------------------------------- membership inference
@dataclass(frozen=True)
class Target:
    """A model as the membership-inference adversary queries it."""

    name: str
    kind: str  # "non-private", "local-only", "PFDM shared", "personal (if published)"
    eps_fn: EpsFn
    t0: int | None = None


def targets(models: Models, cfg: StudyConfig) -> list[Target]:
    """The attacked models: (a), (b) at each t0 (its own steps only), (c), the personal denoiser, and the controls:
    (a) and (c) queried at the shared model's steps t0+1..T only, so that "the shared model is near chance" is
    measured against models that were not private but are attacked where the shared model is."""
    sched, pt0 = Schedule(cfg.T), models.personal_t0
    out = [Target("non-private (overfit)", "non-private", EpsFn.of(models.overfit, sched)),
           Target("local-only", "local-only", EpsFn.of(models.local, sched))]
    out += [Target(f"PFDM shared, t0={t0}", "PFDM shared", EpsFn.shared(m, sched, t0), t0)
            for t0, m in sorted(models.shared.items())]
    for t0 in sorted(models.shared):
        out += [Target(f"{name}, steps > {t0} (control)", f"control: {kind}", EpsFn(sched, Segment(m, t0 + 1, cfg.T)), t0)
                for name, kind, m in (("non-private (overfit)", "non-private", models.overfit),
                                      ("local-only", "local-only", models.local))]
    out.append(Target(f"personal, t0={pt0} (if published)", "personal (if published)",
                      EpsFn(sched, Segment(models.personal, 1, pt0)), pt0))
    return out


def _attack(attack: str, eps_fn: EpsFn, members: Dataset, nonmembers: Dataset, cfg: StudyConfig, seed: int,
            sign: int = 1) -> MIAResult:
    kw = dict(num_noise=cfg.num_noise, seed=seed) if attack == "loss" else {}
    res = attacks.membership_inference(attack, eps_fn, members.x, nonmembers.x, members.y, nonmembers.y, **kw)
    return res if sign == 1 else attacks.roc_metrics(-res.member, -res.nonmember)


def attack_directions(models: Models, split: MembershipSplit, cfg: StudyConfig, seed: int = 0) -> pd.DataFrame:
    """Each attack's score direction, fixed before any target is attacked, on public data only: the shadow model
    (the overfit recipe on shadow members) attacked with shadow members against shadow non-members. Direction
    +1: a lower score means "member" (as the attacks are written); -1: a higher score does."""
    if models.shadow is None:
        raise ValueError("models.shadow is None: train_models trains it (older Models objects have none)")
    members, nonmembers = shadow_split(cfg, split, seed)
    rows = []
    for attack in attacks.ATTACKS:
        auc = _attack(attack, EpsFn.of(models.shadow, Schedule(cfg.T)), members, nonmembers, cfg, seed).auc
        rows.append(dict(attack=attack, shadow_auc=auc, direction=1 if auc >= 0.5 else -1))
    return pd.DataFrame(rows).set_index("attack")


def attack_table(targets: list[Target], split: MembershipSplit, cfg: StudyConfig, seed: int = 0,
                 progress: bool = True, directions: pd.DataFrame | None = None,
                 ) -> tuple[pd.DataFrame, dict[tuple[str, str], MIAResult]]:
    """Every attack on every target: one row per (model, attack) with AUC and TPR at 1% / 0.1% FPR.

    `directions` (`attack_directions`): each attack's scores are read in the direction fixed on public data, so
    an AUC below 0.5 is a failure of the attack, not a signal read after the fact; None: lower = member."""
    rows, results = [], {}
    for tg, attack in tqdm([(tg, a) for tg in targets for a in attacks.ATTACKS], desc="attacks", disable=not progress):
        sign = 1 if directions is None else int(directions.loc[attack, "direction"])
        res = _attack(attack, tg.eps_fn, split.members, split.nonmembers, cfg, seed, sign)
        results[tg.name, attack] = res
        eps = epsilon(tg.t0, Schedule(cfg.T), cfg.clip_norm, cfg.delta) if tg.kind == "PFDM shared" else np.inf
        rows.append(dict(model=tg.name, kind=tg.kind, t0=tg.t0, eps_thm51=eps, attack=attack, direction=sign,
                         **res.summary()))
    return pd.DataFrame(rows), results


def plot_rocs(results: dict[tuple[str, str], MIAResult], ncols: int = 3) -> plt.Figure:
    """One log-log ROC panel per model, one curve per attack (AUC in the legend)."""
    names = list(dict.fromkeys(k[0] for k in results))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False, layout="constrained")
    for ax, name in zip(axes.flat, names):
        r0 = results[name, "loss"]
        fmin, tmin = 0.5 / len(r0.nonmember), 0.5 / len(r0.member)  # half the smallest non-zero rate
        for attack in attacks.ATTACKS:
            r = results[name, attack]
            ax.plot(np.maximum(r.fpr, fmin), np.maximum(r.tpr, tmin), label=f"{ATTACK_NAMES[attack]} ({r.auc:.2f})")
        ax.plot([fmin, 1], [fmin, 1], color="grey", ls="--", lw=1)
        ax.set(xscale="log", yscale="log", xlim=(fmin, 1), ylim=(tmin, 1.05), title=name,
               xlabel="false positive rate", ylabel="true positive rate")
        ax.legend(title="attack (AUC)", fontsize=8, title_fontsize=8, loc="lower right")
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    return fig


def plot_vs_t0(df: pd.DataFrame, cfg: StudyConfig) -> plt.Figure:
    """AUC and TPR@1%FPR of PFDM's shared model versus t0 (eps on top), its control (the non-private model
    attacked at the same steps t0+1..T) as crosses, the reference models attacked at all steps as lines."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), layout="constrained")
    colours = dict(zip(attacks.ATTACKS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    shared = df[df.kind == "PFDM shared"].sort_values("t0")
    t0s = sorted(shared.t0.unique().astype(int))
    for ax, metric, chance in zip(axes, ("auc", "tpr_1pct"), (0.5, 0.01)):
        for attack, c in colours.items():
            s = shared[shared.attack == attack]
            ax.plot(s.t0, s[metric], "o-", color=c)
            ctrl = df[(df.kind == "control: non-private") & (df.attack == attack)].sort_values("t0")
            ax.plot(ctrl.t0, ctrl[metric], "x--", color=c, lw=1, ms=7)  # the same steps, no privacy
            for kind, ls, lw in (("non-private", "--", 2.4), ("local-only", ":", 1.2)):  # both visible when equal
                ax.axhline(df[(df.kind == kind) & (df.attack == attack)][metric].iloc[0], color=c, ls=ls, lw=lw)
        ax.axhline(chance, color="k", lw=0.8)
        if metric == "auc":
            lo, hi = PAPER_AUC["non-private"]
            ax.axhspan(lo, hi, color="tab:red", alpha=0.08)
            ax.axhline(PAPER_AUC["pfdm"], color="tab:green", lw=6, alpha=0.25)
        ax.set(xlabel="t0 of the upload", xticks=t0s, ylim=(0, 1.02 if metric == "auc" else None),
               ylabel={"auc": "ROC AUC (0.5 = chance)", "tpr_1pct": "TPR at 1% FPR (0.01 = chance)"}[metric])
        top = ax.secondary_xaxis("top")
        eps = [epsilon(t, Schedule(cfg.T), cfg.clip_norm, cfg.delta) for t in t0s]
        top.set_xticks(t0s, [f"{e:.0f}" if e >= 10 else f"{e:.2g}" for e in eps])
        top.set_xlabel(f"eps per image (Thm 5.1, C={cfg.clip_norm:g}, delta={cfg.delta:g})")
    handles = [Line2D([], [], color=c, label=ATTACK_NAMES[a]) for a, c in colours.items()]
    handles += [Line2D([], [], color="grey", marker="o", label="PFDM shared model (this run)"),
                Line2D([], [], color="grey", marker="x", ls="--", lw=1,
                       label="control: non-private model\nattacked at the same steps > t0"),
                Line2D([], [], color="grey", ls="--", lw=2.4, label="non-private, overfit (this run)"),
                Line2D([], [], color="grey", ls=":", label="local-only (this run)"),
                Line2D([], [], color="k", lw=0.8, label="chance"),
                plt.Rectangle((0, 0), 1, 1, color="tab:red", alpha=0.15, label="paper's reported AUC,\nnon-private: 82-99.6%"),
                Line2D([], [], color="tab:green", lw=6, alpha=0.3, label="paper's reported AUC,\nPFDM: ~50%")]
    axes[1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=9)
    axes[1].set_title("(the paper reports AUC only)", fontsize=9)
    return fig


# ----------------------------------------------------------------------------- memorization
def generate_samples(models: Models, cfg: StudyConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """num_generated samples (labels cycling 0..9) of the non-private, local-only and chained PFDM models."""
    sched, pt0 = Schedule(cfg.T), models.personal_t0
    y = torch.arange(cfg.num_generated) % 10
    shape = (len(y), cfg.net.in_channels, cfg.net.image_size, cfg.net.image_size)
    gen = lambda m: generate(m, sched, y, shape, "ddim", cfg.ddim_steps, seed=seed)  # noqa: E731
    return {"non-private (overfit)": gen(models.overfit), "local-only": gen(models.local),
            f"PFDM t0={pt0} (shared + personal)": pfdm_sample(models.shared[pt0], models.personal, sched, pt0, y,
                                                              shape, "ddim", cfg.ddim_steps, seed)}


def memorization_table(samples: dict[str, torch.Tensor], split: MembershipSplit,
                       threshold: float = 1 / 3) -> tuple[pd.DataFrame, dict[str, attacks.Memorization]]:
    """Nearest-neighbour ratio test of each model's samples against the members, with held-out real
    digits as the reference (real images that were never trained on)."""
    sets = {**samples, "held-out real digits (reference)": split.nonmembers.x}
    res = {k: attacks.memorization(x, split.members.x, threshold) for k, x in sets.items()}
    df = pd.DataFrame([dict(source=k, n=len(r.ratio), below_threshold=r.count, min_ratio=r.ratio.min(),
                            median_ratio=np.median(r.ratio), median_d1=np.median(r.d1)) for k, r in res.items()])
    return df, res


def plot_memorization(res: dict[str, attacks.Memorization], samples: dict[str, torch.Tensor], split: MembershipSplit,
                      k: int = 8) -> plt.Figure:
    """Left: the distribution (ECDF) of the ratio per source; right: each model's k closest pairs."""
    fig = plt.figure(figsize=(13, 1.3 * len(samples) + 1.2), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1, 1.1])
    ax = left.subplots()
    for name, r in res.items():
        ax.ecdf(r.ratio, label=name, ls=":" if "reference" in name else "-")
    ax.axvline(next(iter(res.values())).threshold, color="k", ls="--", lw=1, label="threshold 1/3 (a copy)")
    ax.set(xlim=(0, 1), xlabel="d(x, NN1) / d(x, NN2), nearest members", ylabel="fraction of images below")
    ax.legend(fontsize=8, loc="upper left")
    axes = right.subplots(len(samples), 1)
    for a, (name, x) in zip(np.atleast_1d(axes), samples.items()):
        pairs = attacks.pair_images(res[name], x, split.members.x, k)  # (2, k, C, H, W)
        show_rows(a, pairs, ["generated", "nearest member"], f"{name}: {k} smallest ratios")
    return fig


# ----------------------------------------------------------------------------- reconstruction
def reconstruction_table(models: Models, split: MembershipSplit, cfg: StudyConfig, classifier: nn.Module,
                         seed: int = 0) -> tuple[pd.DataFrame, dict[int, dict[str, torch.Tensor]]]:
    """The members' uploads at each t0 denoised by the shared model (one step: it owns no step <= t0),
    by the public model (DDIM t0 -> 0) and by no model (x_tilde / sqrt(abar), clamped); labels are public."""
    sched, x, y = Schedule(cfg.T), clip(split.members.x, cfg.clip_norm), split.members.y
    rows, images = [], {}
    for t0 in cfg.t0s:
        up = member_uploads(cfg, split, t0, seed)
        guesses = {"shared model": attacks.reconstruction_attack(EpsFn.shared(models.shared[t0], sched, t0), up.x_tilde,
                                                                 t0, x, y, classifier).x_hat,
                   "public model": attacks.reconstruction_attack(EpsFn.of(models.public, sched), up.x_tilde, t0, x, y,
                                                                 classifier, cfg.recon_steps).x_hat,
                   "no model": (up.x_tilde / float(sched.alpha_bar[t0]) ** 0.5).clamp(-1, 1)}
        images[t0] = {"upload": up.x_tilde, **guesses}
        rows += [dict(t0=t0, adversary=k, ssim=ssim(g, x).mean().item(), l2=l2_distance(g, x).mean().item(),
                      reid=reid_rate(g, x), accuracy=accuracy(classifier, g, y)) for k, g in guesses.items()]
    chance = chance_scores(x)
    rows.append(dict(t0=None, adversary="chance (another member; 1/N)", ssim=chance["ssim"], l2=chance["l2"],
                     reid=chance["reid"], accuracy=0.1))
    return pd.DataFrame(rows), images


def plot_reconstructions(images: dict[int, dict[str, torch.Tensor]], split: MembershipSplit, n: int = 12) -> plt.Figure:
    """Rows: the true members, then per t0 the upload and the shared / public model's reconstructions."""
    rows, labels = [split.members.x[:n]], ["true image"]
    for t0, im in images.items():
        rows += [im["upload"][:n], im["shared model"][:n], im["public model"][:n]]
        labels += [f"t0={t0}: upload x̃", "shared model", "public model"]
    fig, ax = plt.subplots(figsize=(0.5 * n + 2.5, 0.45 * len(rows) + 0.5))
    show_rows(ax, torch.stack(rows), labels)
    return fig


# ----------------------------------------------------------------------------- audit
def audit_table(cfg: StudyConfig, seed: int = 0) -> pd.DataFrame:
    """audit_upload at each audit t0: eps_lb (confidence 1 - alpha) beside both accountants' eps, the most the
    trial count can show (eps_max) and whether the audit could contradict the tighter accountant there."""
    sched = Schedule(cfg.T)
    rows = []
    for t0 in tqdm(cfg.audit_t0s, desc="audit", leave=False):
        a = attacks.audit_upload(sched, t0, cfg.clip_norm, cfg.audit_trials, cfg.delta, cfg.audit_alpha,
                                 (cfg.net.in_channels, cfg.net.image_size, cfg.net.image_size), seed + t0)
        rows.append(dict(t0=t0, eps_lb=a.eps_lb, eps_analytic=a.eps_analytic, eps_thm51=a.eps_thm51,
                         eps_max=a.eps_max, can_refute=a.can_refute, confidence=1 - a.alpha,
                         trials=a.num_trials, calibration_trials=a.calibration_trials, fpr=a.fpr, fnr=a.fnr))
    return pd.DataFrame(rows)


def plot_audit(df: pd.DataFrame, cfg: StudyConfig) -> plt.Figure:
    """eps versus t0: both accountants (curves) and the empirical lower bound (points), log scale."""
    sched, t = Schedule(cfg.T), np.arange(1, cfg.T)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for acc, label in (("thm51", "Theorem 5.1 (the paper's accountant)"), ("analytic", "analytic Gaussian (Balle & Wang)")):
        ax.plot(t, epsilon_curve(sched, clip_norm=cfg.clip_norm, delta=cfg.delta, accountant=acc), label=label)
    conf, n = df.confidence.iloc[0], int(df.trials.iloc[0])
    ax.plot(df.t0, df.eps_lb.clip(lower=1e-2), "kv", label=f"empirical lower bound ({conf:.0%} confidence)")
    ax.axhline(df.eps_max.iloc[0], color="grey", ls=":",  # zero errors in n trials: FPR <= ln(2/alpha)/n at best
               label=f"the most {n:,} evidence trials per neighbour can show")
    ax.set(yscale="log", ylim=(1e-2, 1e5), xlim=(0, cfg.T), xlabel="t0 of the upload",
           ylabel=f"per-image eps (C={cfg.clip_norm:g}, delta={cfg.delta:g})")
    ax.legend(loc="upper right", fontsize=9)
    return fig


__all__ = ["PAPER_AUC", "StudyConfig", "STUDY_PRESETS", "study_config", "MembershipSplit", "membership_split", "member_uploads", "Models",
           "shadow_split", "attack_directions",
           "study_folder", "check_study_folder", "train_models", "Target", "targets", "attack_table", "plot_rocs",
           "plot_vs_t0", "generate_samples", "memorization_table", "plot_memorization", "reconstruction_table",
           "plot_reconstructions", "audit_table", "plot_audit"]
