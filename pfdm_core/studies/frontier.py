"""The privacy-utility frontier (beyond the paper): client 0's minority-class quality against the eps of its upload.

For each seed and each per-image eps (analytic Gaussian accountant, C and delta of the preset; t0 is the smallest
step that reaches it) one `personalization.run_study` point on the study's split (each client's training part; its
stratified hold-out picks every model's training length):

* local-only and centralized, each TUNED by the same rule as PFDM's recipe (the lowest validation loss among
  `TUNE_RECIPES`): flat lines, they do not depend on eps;
* PFDM with the paper's recipe, with our recipe (`personalization.OUR_RECIPE`), with our recipe warm-started from
  the shared model's weights (`personalization.WARM_RECIPE`, beyond the paper) and with the shared model's encoder
  kept frozen and only its decoder trained on the client's images (`personalization.FROZEN_RECIPE`, beyond the
  paper), and "pfdm tuned": the PFDM recipe with the lowest validation loss at that (seed, eps);
* the rivals on the same training parts (`run_rivals`): FedAvg (no formal privacy, a reference line) and central
  DP-SGD at each eps it is given (its eps is add/remove-one over the pooled images; PFDM's is replace-one per image).

Every row carries the group metrics (`gfid_*`, `gkid_*`) and the near-copies of its minority samples among client 0's
training images (`attacks.memorization`). `table` reduces the rows to mean ± std per (eps, method) with the fraction
of the tuned local -> centralized gap closed and the paired 95% interval of (local - method). Models are cached under
out/seed<s>/ (reruns load them); one CSV per point, so a stopped run keeps what it finished.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from pfdm_core import experiment
from pfdm_core.attacks.common import EpsFn
from pfdm_core.attacks.membership import membership_inference
from pfdm_core.attacks.memorization import memorization
from pfdm_core.core.checkpoint import write_text
from pfdm_core.core.diffusion import generate
from pfdm_core.core.schedule import Schedule
from pfdm_core.data.partition import client_classes
from pfdm_core.data.small import Dataset, union
from pfdm_core.evaluation import metrics
from pfdm_core.evaluation.compare import mean_interval
from pfdm_core.methods.ambient import AmbientEps
from pfdm_core.methods.pfdm import client_upload
from pfdm_core.methods.selection import ValidationLoss
from pfdm_core.privacy.mechanism import epsilon
from pfdm_core.studies import personalization as pz

EPSILONS = (1, 5, 10, 50, 200)  # per image
PFDM_RECIPES = ("paper", pz.OUR_RECIPE, pz.WARM_RECIPE, pz.FROZEN_RECIPE)
TUNE_RECIPES = ("selected", pz.OUR_RECIPE)  # local-only's and centralized's search
LABELS = {"gfid_minor": "minority group FID", "gfid_major": "majority group FID"}
KEY = "gfid_minor"  # the headline: group FID of the minority classes (lower is better)
ACCOUNTANT = "analytic"
STRICT_EPS = 10  # the question: at eps <= 10 per image, does a PFDM variant close half of the tuned gap?
HALF = 0.5
# how the recipes and methods read in tables and text (README, docs/results.md, notebook 10)
RECIPE_NAMES = {"paper": "the paper's recipe", pz.OUR_RECIPE: "our recipe",
                pz.WARM_RECIPE: "our recipe, warm-started from the shared model",
                pz.FROZEN_RECIPE: "shared encoder frozen, decoder by our recipe", "tuned": "tuned (validation)",
                "tuned, ambient offered": "tuned (validation), the ambient warm start offered too",
                pz.AMBIENT_RECIPE: "our recipe, warm-started from the ambient shared model",
                pz.SCALED_AMBIENT_RECIPE: "our recipe, warm-started from the ambient shared model with consistency "
                                          "weight abar_t0",
                "uploads only": "trained on the uploads only",
                "uploads only, scaled": "consistency weight abar_t0, trained on the uploads only",
                "selected": "selected length", "budget": "its budget"}
METHOD_NAMES = {"local": "local-only", "central": "centralized", "pfdm": "PFDM", "pfdm tuned": "PFDM",
                "pfdm retuned": "PFDM",
                "fedavg": "FedAvg", "dpsgd": "DP-SGD", "shared only": "ambient shared model alone"}


def t0_of(cfg: experiment.ExperimentConfig, eps: float) -> int:
    return experiment.t0_for(eps, cfg, ACCOUNTANT)


def _near_copies(samples: dict, df: pd.DataFrame, cfg: experiment.ExperimentConfig, seed: int) -> pd.DataFrame:
    """Near-copies (of client cfg.eval.client's training part) among each row's minority samples (`samples` keyed
    as `pz.study_rows` keys them)."""
    me = pz.make_study_split(cfg, seed).clients[cfg.eval.client]
    minor = _minority_mask(cfg)
    counts = []
    for r in df.itertuples():
        t0 = None if pd.isna(r.t0) else r.t0
        fake = samples[(r.seed, r.method, r.recipe, t0)]
        counts.append(memorization(fake[minor], me.x).count)
    return df.assign(near_copies_minor=counts, n_minor_samples=int(minor.sum()))


def _labels(cfg: experiment.ExperimentConfig) -> torch.Tensor:
    """The labels every row samples: cfg.eval.n_per_class of each class (as `run_study`)."""
    return torch.arange(cfg.net.num_classes).repeat_interleave(cfg.eval.n_per_class)


def _minority_mask(cfg: experiment.ExperimentConfig) -> torch.Tensor:
    """Which of `_labels(cfg)` are client cfg.eval.client's minority classes."""
    _, minority = client_classes(cfg.eval.client, cfg.split.num_clients, cfg.net.num_classes)
    return torch.isin(_labels(cfg), torch.as_tensor(minority))


def run_point(cfg: experiment.ExperimentConfig, seed: int, eps: float, out: Path, progress: bool = True) -> pd.DataFrame:
    """local / central (tuned), PFDM (each recipe) at the t0 of `eps`; written to out/point_seed<s>_eps<e>.csv."""
    t0 = t0_of(cfg, eps)
    name = f"point_seed{seed}_eps{eps:g}"
    df, samples = pz.study_rows(cfg, [seed], [t0], PFDM_RECIPES, out, local_recipes=TUNE_RECIPES,
                                central_recipes=TUNE_RECIPES, progress=progress)
    df = _near_copies(samples, df, cfg, seed).assign(eps=eps)
    pz.write_study(out, name, df, samples)
    return df


def run_rivals(cfg: experiment.ExperimentConfig, seed: int, out: Path, epsilons: Sequence[float] = (),
               progress: bool = True) -> pd.DataFrame:
    """FedAvg (no eps) and DP-SGD at each of `epsilons`, trained on the study's training parts, evaluated as the
    study's rows; written to out/rivals_seed<s>.csv, beside the rows an earlier call wrote for other eps."""
    ss = pz.make_study_split(cfg, seed)
    split = experiment.Split(ss.clients, ss.test, ss.pool)
    folder = Path(out) / f"seed{seed}"
    clf = experiment.metric_classifier(cfg, split, seed)
    ref, pca = metrics.embed(clf, ss.test.x), experiment.metric_pca(clf, split)
    y, minor, me = _labels(cfg), _minority_mask(cfg), ss.clients[cfg.eval.client]
    rows = []
    for method, eps in [("fedavg", None), *[("dpsgd", e) for e in epsilons]]:
        c = cfg if eps is None else cfg.override(dp_eps=float(eps))
        info: dict = {}
        models = experiment.train_method(method, c, split, seed, None, folder, progress, info)
        fake = experiment.sample_method(method, models, c, y, None, seed)
        rows.append({"seed": seed, "method": method, "recipe": "budget", "t0": None, "eps": eps, **info,
                     **pz.evaluate(c, ss, clf, fake, y, ref, pca),
                     "near_copies_minor": memorization(fake[minor], me.x).count, "n_minor_samples": int(minor.sum())})
    df = pd.DataFrame(rows)
    path = Path(out) / f"rivals_seed{seed}.csv"
    if path.exists():  # keep the rows of an earlier call at other eps (the models are cached the same way)
        old = pd.read_csv(path)
        done = set(zip(df.method, df.eps.fillna(-1)))
        old = old[[(m, e) not in done for m, e in zip(old.method, old.eps.fillna(-1))]]
        df = pd.concat([old, df], ignore_index=True).sort_values(["method", "eps"], na_position="first",
                                                                  ignore_index=True)
    write_text(path, df.to_csv(index=False))
    return df


def matched_members(members: Dataset, nonmembers: Dataset, seed: int) -> tuple[Dataset, Dataset]:
    """Members and non-members with the same count per class (min of the two, random subsets): a membership attack
    then cannot win by telling well-learned classes from rare ones."""
    g = torch.Generator().manual_seed(seed)
    idx_m, idx_n = [], []
    for c in sorted(set(members.y.tolist()) & set(nonmembers.y.tolist())):
        im, inn = (members.y == c).nonzero().flatten(), (nonmembers.y == c).nonzero().flatten()
        k = min(len(im), len(inn))
        idx_m.append(im[torch.randperm(len(im), generator=g)[:k]])
        idx_n.append(inn[torch.randperm(len(inn), generator=g)[:k]])
    return members.subset(torch.cat(idx_m)), nonmembers.subset(torch.cat(idx_n))


# the ambient shared models (`pz.train_shared` kinds): the PFDM recipe warm-started from each, the name of the model
# alone (method "shared only") and the prefix of `run_ambient`'s files
AMBIENT_KINDS = {"ambient": (pz.AMBIENT_RECIPE, "uploads only", "ambient"),
                 "ambient_scaled": (pz.SCALED_AMBIENT_RECIPE, "uploads only, scaled", "ambient_scaled")}


def membership(cfg: experiment.ExperimentConfig, seed: int, eps: float, out: Path,
               recipes: Sequence[str] = PFDM_RECIPES, local: bool = True, name: str | None = None,
               ambient_alone: str | None = None) -> pd.DataFrame:
    """The privacy of what client cfg.eval.client publishes: the loss attack (AUC, TPR at 1% FPR) on its
    local-only models (with `local`) and on PFDM's chain (shared + personal, as `pfdm_sample` runs it) of each of
    `recipes`, members = its training part, non-members = held-out test images, matched per class. Loads the
    point's cached models (run `run_point` first); with `ambient_alone` (a kind of `AMBIENT_KINDS`) also that ambient
    shared model alone from T to 0 (method "shared only", cached by `run_ambient`). Written to out/<name>.csv
    (default membership_seed<s>_eps<e>)."""
    ss = pz.make_study_split(cfg, seed)
    members, nonmembers = matched_members(ss.clients[cfg.eval.client], ss.test, seed)
    sched, t0, folder = Schedule(cfg.T), t0_of(cfg, eps), Path(out) / f"seed{seed}"
    shareds = {kind: pz.train_shared(cfg, ss, t0, seed, folder, progress=False, kind=kind)
               for kind in dict.fromkeys(["paper", *(pz.RECIPES[r].shared for r in recipes),
                                          *([ambient_alone] if ambient_alone else [])])}
    rows = []
    for method, names in (("local", TUNE_RECIPES if local else ()), ("pfdm", recipes),
                          ("shared only", [AMBIENT_KINDS[ambient_alone][1]] if ambient_alone else ())):
        for rname in names:
            if method == "shared only":
                fn = EpsFn.of(AmbientEps(shareds[ambient_alone], sched, t0), sched)
            elif method == "local":
                model, _, _ = pz.train_local(cfg, ss, rname, seed, folder, progress=False)
                fn = EpsFn.of(model, sched)
            else:  # the chain as run_study samples it: the paper's shared model above t0
                init = shareds[pz.RECIPES[rname].shared]
                model, _, _ = pz.train_personal(cfg, ss, t0, rname, seed, folder, init, progress=False)
                fn = EpsFn.pfdm(shareds["paper"], model, sched, t0)
            res = membership_inference("loss", fn, members.x, nonmembers.x, members.y, nonmembers.y, seed=seed)
            rows.append({"seed": seed, "eps": eps, "t0": None if method == "local" else t0, "method": method,
                         "recipe": rname, "mia_auc": res.auc, "mia_tpr_1pct": res.tpr_1pct, "n_members": len(members)})
    df = pd.DataFrame(rows)
    write_text(Path(out) / f"{name or f'membership_seed{seed}_eps{eps:g}'}.csv", df.to_csv(index=False))
    return df


def run_ambient(cfg: experiment.ExperimentConfig, seed: int, eps: float, out: Path, progress: bool = True,
                with_membership: bool = True, kind: str = "ambient") -> pd.DataFrame:
    """Beyond the paper: the ambient shared model (`methods.ambient`: the uploads teach it steps 1..t0 too) at the
    t0 of `eps`, two rows: PFDM with the personal denoiser warm-started from it (`pz.AMBIENT_RECIPE`; the chain's
    steps T..t0+1 stay the paper's shared model, which fits them better: both losses are recorded) and the ambient
    shared model alone from T to 0 (method "shared only": no client image after the upload; its samples and the
    attack on it are post-processing of the uploads). `kind` (of `AMBIENT_KINDS`) picks the consistency weight
    (`pz.ambient_weight`). Written to out/<prefix>_seed<s>_eps<e>.csv (and the attack to
    membership_seed<s>_eps<e>_<prefix>.csv); `collect` adds the rows outside `pfdm tuned`'s search, which stays the
    points' own."""
    if kind not in AMBIENT_KINDS:
        raise ValueError(f"kind must be one of {list(AMBIENT_KINDS)}, got {kind!r}")
    recipe, alone_name, prefix = AMBIENT_KINDS[kind]
    t0, name = t0_of(cfg, eps), f"{prefix}_seed{seed}_eps{eps:g}"
    df, samples = pz.study_rows(cfg, [seed], [t0], [recipe], out, local_recipes=[], central_recipes=[],
                                progress=progress)
    ss, sched, folder = pz.make_study_split(cfg, seed), Schedule(cfg.T), Path(out) / f"seed{seed}"
    split = experiment.Split(ss.clients, ss.test, ss.pool)
    net = pz.train_shared(cfg, ss, t0, seed, folder, progress=False, kind=kind)  # cached by study_rows
    y = _labels(cfg)
    alone = AmbientEps(net, sched, t0)
    fake = generate(alone, sched, y, (len(y), cfg.net.in_channels, cfg.net.image_size, cfg.net.image_size), "ddim",
                    cfg.eval.ddim_steps, seed=seed)
    clf = experiment.metric_classifier(cfg, split, seed)
    ref, pca = metrics.embed(clf, ss.test.x), experiment.metric_pca(clf, split)
    row = {"seed": seed, "method": "shared only", "recipe": alone_name, "t0": t0,
           "eps_analytic": epsilon(t0, sched, cfg.privacy.clip_norm, cfg.privacy.delta, "analytic"),
           "eps_thm51": epsilon(t0, sched, cfg.privacy.clip_norm, cfg.privacy.delta),
           **pz.evaluate(cfg, ss, clf, fake, y, ref, pca)}
    df = pd.concat([df, pd.DataFrame([row])], ignore_index=True)
    # where the warm start starts: the ambient model's denoising loss on client 0's hold-out, steps 1..t0, measured as
    # the personal denoiser's selection measures it, beside a freshly initialised network's
    val = ss.vals[cfg.eval.client]
    vl = ValidationLoss(sched, val.x, val.y, 1, t0, draws=32, seed=seed)
    df["warm_start_validation_loss"] = vl(net)
    df["random_init_validation_loss"] = vl(pz._model(cfg, pz.RECIPES[recipe], seed).eval())
    # why the chain keeps the paper's shared model above t0: both models' sub-chain loss there, on the uploads of the
    # clients' hold-outs (privatized as a client would, with a seed of their own)
    up = client_upload(union(ss.vals), t0, sched, cfg.privacy.clip_norm, seed=seed * 100 + 99, delta=cfg.privacy.delta)
    above = ValidationLoss(sched, up.x_tilde, up.y, t0 + 1, cfg.T, origin=t0, draws=32, seed=seed)
    df["paper_shared_loss_above_t0"] = above(pz.train_shared(cfg, ss, t0, seed, folder, progress=False))
    df["ambient_shared_loss_above_t0"] = above(net)
    samples[(seed, "shared only", alone_name, t0)] = fake
    df = _near_copies(samples, df, cfg, seed).assign(eps=eps)
    pz.write_study(out, name, df, samples)
    if with_membership:
        membership(cfg, seed, eps, out, recipes=[recipe], local=False,
                   name=f"membership_seed{seed}_eps{eps:g}_{prefix}", ambient_alone=kind)
    return df


def collect(out: Path, baselines_eps: float = STRICT_EPS) -> pd.DataFrame:
    """Every finished point and rival row under `out`, one frame: local-only and centralized as one tuned row per
    seed (recipe "tuned", the lowest validation loss of `TUNE_RECIPES`; `chosen_recipe` names it), PFDM's rows per
    recipe and its tuned row per (seed, eps) (method "pfdm tuned").

    Every point evaluates the seed's cached baselines again; a baseline retrained on another machine is a
    different realization of the same recipe and seed. The table uses one per seed: the one evaluated in the point
    at `baselines_eps` (default the strict end, so the headline pairs models of one run), else the smallest eps."""
    parts = [pd.read_csv(p) for p in sorted(Path(out).glob("point_seed*_eps*.csv"))]
    if not parts:
        raise FileNotFoundError(f"no frontier points under {out}: run run_point first")
    df = pd.concat(parts, ignore_index=True).sort_values(["seed", "eps"], kind="stable", ignore_index=True)
    p = df[df.method == "pfdm"]
    # a tuned row is recipe "tuned" (the seeds may choose different recipes: `chosen_recipe` says which)
    best = p.loc[p.groupby(["seed", "eps"]).validation_loss.idxmin()]
    best = best.assign(method="pfdm tuned", chosen_recipe=best.recipe, recipe="tuned")
    # local-only and centralized do not depend on eps: one tuned row per seed (the lowest validation loss)
    base = _baseline_rows(df, baselines_eps)
    base = base.loc[base.groupby(["seed", "method"]).validation_loss.idxmin()]
    base = base.assign(eps=np.nan, chosen_recipe=base.recipe, recipe="tuned")
    rivals = [pd.read_csv(p) for p in sorted(Path(out).glob("rivals_seed*.csv"))]
    ambient = [pd.read_csv(p) for prefix in (k[2] for k in AMBIENT_KINDS.values())
               for p in sorted(Path(out).glob(f"{prefix}_seed*_eps*.csv"))]  # outside the tuned search
    return pd.concat([base, p, best, *ambient, *rivals], ignore_index=True)


def _baseline_rows(df: pd.DataFrame, baselines_eps: float) -> pd.DataFrame:
    """The local-only and centralized rows of `df` (sorted by seed, eps), one per (seed, method, recipe): those of
    the point at `baselines_eps`, else of the seed's smallest eps (`collect`'s rule)."""
    base = df[df.method.isin(["local", "central"])]
    base = base.iloc[np.argsort((base.eps != baselines_eps).to_numpy(), kind="stable")]  # that point's first
    return base.drop_duplicates(["seed", "method", "recipe"])


def collect_membership(out: Path, baselines_eps: float = STRICT_EPS) -> pd.DataFrame:
    """Every membership CSV under `out` (`membership`), one frame; empty when none was run. Local-only has no eps:
    its rows are those of the point whose baselines `collect` uses, first."""
    parts = [pd.read_csv(p) for p in sorted(Path(out).glob("membership_seed*_eps*.csv"))]
    if not parts:
        return pd.DataFrame()
    df = pd.concat(parts, ignore_index=True).sort_values(["seed", "eps"], kind="stable", ignore_index=True)
    return pd.concat([_baseline_rows(df, baselines_eps), df[~df.method.isin(["local", "central"])]],
                     ignore_index=True)


def membership_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (eps, method, recipe): mean and std over seeds of the attack's AUC and TPR at 1% FPR."""
    g = df.groupby(["eps", "method", "recipe"], sort=False)
    return pd.DataFrame({"t0": g.t0.first(), "mia_auc_mean": g.mia_auc.mean(), "mia_auc_std": g.mia_auc.std(ddof=1),
                         "mia_tpr_1pct_mean": g.mia_tpr_1pct.mean(), "mia_tpr_1pct_std": g.mia_tpr_1pct.std(ddof=1),
                         "n_members": g.n_members.first(), "seeds": g.size()}).reset_index()


def table(df: pd.DataFrame, key: str = KEY) -> pd.DataFrame:
    """Per (eps, method, recipe): mean ± std of `key` over seeds, the gap closed (local - x) / (local - central)
    with its 95% t-interval over seeds, the paired difference local - x with its interval, near-copies."""
    loc = df[df.method == "local"].set_index("seed")[key]
    cen = df[df.method == "central"].set_index("seed")[key]
    rows = []
    for (eps, method, recipe), g in df.groupby([df.eps.fillna(-1), "method", "recipe"], sort=False):
        s = g.set_index("seed")[key].dropna()
        seeds = s.index.intersection(loc.index).intersection(cen.index)
        diff = (loc[seeds] - s[seeds]).to_numpy()
        gap = ((loc[seeds] - s[seeds]) / (loc[seeds] - cen[seeds])).to_numpy()
        d, dlo, dhi = mean_interval(diff) if len(diff) else (math.nan,) * 3
        gm, glo, ghi = mean_interval(gap) if len(gap) else (math.nan,) * 3
        rows.append({"eps": None if eps == -1 else eps, "method": method, "recipe": recipe,
                     "t0": g.t0.iloc[0] if "t0" in g and not pd.isna(g.t0.iloc[0]) else None,
                     f"{key}_mean": s.mean(), f"{key}_std": s.std(ddof=1), "gfid_major_mean": g.gfid_major.mean(),
                     "local_minus_mean": d, "local_minus_lo": dlo, "local_minus_hi": dhi,
                     "gap_closed_mean": gm, "gap_closed_lo": glo, "gap_closed_hi": ghi,
                     "near_copies_minor_mean": g.near_copies_minor.mean(),
                     "n_minor_samples": g.n_minor_samples.iloc[0] if "n_minor_samples" in g else math.nan,
                     "steps_used_mean": g.steps_used.mean() if "steps_used" in g else math.nan,
                     "steps_trained_mean": g.steps_trained.mean() if "steps_trained" in g else math.nan,
                     "seeds": len(s)})
    return pd.DataFrame(rows)


def first_win(t: pd.DataFrame) -> float | None:
    """The smallest eps from which on (at it and at every larger eps measured) the validation-tuned PFDM beats tuned
    local-only: the 95% interval of the paired difference local - PFDM lies above zero. None: not at the largest eps."""
    tuned = t[t.method == "pfdm tuned"].dropna(subset=["local_minus_lo"]).sort_values("eps", ascending=False)
    first = None
    for r in tuned.itertuples():
        if not r.local_minus_lo > 0:
            break
        first = float(r.eps)
    return first


def retuned(rows: pd.DataFrame, eps: float) -> pd.DataFrame:
    """"PFDM, tuned" at `eps` had its validation search been offered every PFDM row there, the ambient warm start
    included (`collect` keeps that row out of the search): per seed, the PFDM row with the lowest validation loss,
    recipe "tuned, ambient offered", `chosen_recipe` naming it. Only seeds that have the ambient
    row, so that every seed had the same offer. Method "pfdm retuned" (so that `first_win` and `strict_verdict` keep
    reading the points' own search); `table` of `rows` joined with these gives its paired interval."""
    p = rows[(rows.method == "pfdm") & (rows.eps == eps)]
    p = p[p.seed.isin(p[p.recipe == pz.AMBIENT_RECIPE].seed)]  # every PFDM row of those seeds (a scaled one too)
    best = p.loc[p.groupby("seed").validation_loss.idxmin()] if len(p) else p
    return best.assign(method="pfdm retuned", chosen_recipe=best.recipe, recipe="tuned, ambient offered")


def label(method: str, recipe: str) -> str:
    """'PFDM, our recipe': a row's name in tables and text."""
    return f"{METHOD_NAMES.get(method, method)}, {RECIPE_NAMES.get(recipe, recipe)}"


def strict_verdict(t: pd.DataFrame, eps_max: float = STRICT_EPS, half: float = HALF) -> dict | None:
    """The frontier's question at the strict end, answered from `table`'s rows: at the largest measured eps <= eps_max,
    does a PFDM variant close at least `half` of the tuned local -> centralized gap? Returns the tuned PFDM's row
    ("tuned"), the fixed-recipe variant with the largest mean gap closed ("best", picked after seeing the numbers),
    the rows at that eps ("rows") and "verdict": "one seed" (no interval), "yes" (an interval lies above `half`),
    "no" (every variant is below `half`: its interval of the gap closed lies below it, or its paired interval of
    local - variant lies below zero, i.e. it is worse than local-only and closes no part of the gap; the ratio's
    interval alone can reach past `half` when a seed's local -> centralized gap is small) or "unsettled". None when
    no point at eps <= eps_max has finished."""
    pf = t[(t.eps <= eps_max) & t.method.isin(["pfdm", "pfdm tuned"])].dropna(subset=["gap_closed_mean"])
    if pf.empty:
        return None
    strict = pf[pf.eps == pf.eps.max()]
    tuned = strict[strict.method == "pfdm tuned"].iloc[0]
    variants = strict[strict.method == "pfdm"]
    best = variants.loc[variants.gap_closed_mean.idxmax()]
    if strict.seeds.min() < 2:
        verdict = "one seed"
    elif (strict.gap_closed_lo >= half).any():
        verdict = "yes"
    elif ((strict.gap_closed_hi < half) | (strict.local_minus_hi < 0)).all():
        verdict = "no"
    else:
        verdict = "unsettled"
    return {"eps": float(tuned.eps), "rows": strict, "tuned": tuned, "best": best, "verdict": verdict}


def plot(df: pd.DataFrame, cfg: experiment.ExperimentConfig, key: str = KEY, ax=None):
    """`key` against per-image eps (per-pixel eps on the top axis): PFDM's recipes and DP-SGD as curves with the
    std over seeds, tuned local-only, centralized and FedAvg as flat lines."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.2))
    curves = [("pfdm", "paper"), ("pfdm", pz.OUR_RECIPE), ("pfdm", pz.WARM_RECIPE), ("pfdm", pz.FROZEN_RECIPE),
              ("dpsgd", "budget"), ("pfdm", pz.AMBIENT_RECIPE), ("pfdm", pz.SCALED_AMBIENT_RECIPE)]
    for i, (method, recipe) in enumerate(curves):
        d = df[(df.method == method) & (df.recipe == recipe)].groupby("eps")[key].agg(["mean", "std"]).reset_index()
        if len(d):  # curves dodged sideways (by a few percent of eps) so that their error bars do not overlap
            sparse = recipe in (pz.AMBIENT_RECIPE, pz.SCALED_AMBIENT_RECIPE)  # a few eps only: markers, no line
            ax.errorbar(d.eps * 1.05 ** (i - 1.5), d["mean"], yerr=d["std"].fillna(0),
                        fmt=("s" if recipe == pz.AMBIENT_RECIPE else "D") if sparse else "o-", capsize=3,
                        color=("C8" if recipe == pz.AMBIENT_RECIPE else "C9") if sparse else f"C{i}",
                        label=label(method, recipe) + (" (central eps)" if method == "dpsgd" else ""))
    for method, ls in (("local", "--"), ("central", ":"), ("fedavg", "-.")):
        v = df[df.method == method][key]
        if len(v):
            name = label(method, "tuned") if method != "fedavg" else f"{METHOD_NAMES[method]} (no formal privacy)"
            ax.axhline(v.mean(), ls=ls, color="k" if method != "fedavg" else "C7", label=f"{name}, {len(v)} seeds")
    eps = sorted(df.eps.dropna().unique())
    ax.set(xscale="log", xticks=eps, xticklabels=[f"{e:g}" for e in eps],
           xlabel=f"per-image eps of the upload ({ACCOUNTANT} accountant, C = {cfg.privacy.clip_norm:g}, "
                  f"delta = {cfg.privacy.delta:g})", ylabel=LABELS.get(key, key) + ", client 0 (lower is better)")
    if df[key].max() > 10 * df[key].min() > 0:  # e.g. DP-SGD's rows beside the rest: a log axis keeps both readable
        from matplotlib.ticker import LogLocator, StrMethodFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.minorticks_off()
    if len(eps) == 1:
        ax.set_xlim(eps[0] / 1.6, eps[0] * 1.6)
    sched = Schedule(cfg.T)
    top = ax.secondary_xaxis("top")
    top.xaxis.set_minor_locator(NullLocator())
    top.set_xticks(eps, [f"{epsilon(t0_of(cfg, e), sched, delta=cfg.privacy.delta, accountant=ACCOUNTANT, unit='per-pixel'):.2g}"
                         for e in eps])
    top.set_xlabel("the same uploads in the paper's per-pixel unit")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    return ax


__all__ = ["ACCOUNTANT", "EPSILONS", "HALF", "KEY", "METHOD_NAMES", "PFDM_RECIPES", "RECIPE_NAMES", "STRICT_EPS",
           "TUNE_RECIPES", "collect", "collect_membership", "first_win", "label", "matched_members", "membership",
           "membership_table", "plot", "retuned", "run_ambient", "run_point", "run_rivals", "strict_verdict", "t0_of",
           "table"]
