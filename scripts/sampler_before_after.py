"""PFDM's numbers before and after the sampler fix: the same trained models, sampled by both chains.

    python scripts/sampler_before_after.py --preset cpu            # notebooks 04, 05 (MNIST) and 10
    python scripts/sampler_before_after.py --preset smoke --parts 04

Before (as first landed): the shared model ran DDIM on its own sub-chain (origin t0), which hands the
personal denoiser an x_t0 with about half its variance at t0 = 693 (`diffusion` module docstring).
After: the shared model drives the full chain (`federated.pfdm_sample` with `diffusion.FullChainEps`).

Everything but the chain is shared: the models (loaded from the checkpoints of notebook 04's
`experiment.run` and notebook 10's `personalization.run_study`, trained here when missing), the seeds,
the samples' starting noise, the metric and its reference. The landed chain is swapped in for the
"before" pass only (`_landed`), so both passes run the notebooks' own evaluation code. Writes
runs/<preset>/sampler_before_after_rows_<part>.csv (one row per seed, chain and setting) and
runs/<preset>/sampler_before_after.csv and .md, the table over every part run so far (mean over seeds;
the paired per-seed difference after - before with its std), and prints the table.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pfdm_core import attacks, experiment  # noqa: E402
from pfdm_core.core.diffusion import generate  # noqa: E402
from pfdm_core.core.paths import runs_dir  # noqa: E402
from pfdm_core.evaluation.compare import markdown  # noqa: E402
from pfdm_core.methods.pfdm import split_steps  # noqa: E402
from pfdm_core.studies import personalization  # noqa: E402

KEYS = ("fid_major", "fid_minor", "kid_minor", "recall_major", "recall_minor", "accuracy_minor")


def landed_pfdm_sample(shared, personal, sched, t0, y, shape, sampler="ddim", num_steps=25, seed=0,
                       batch_size=1000, guidance=0.0, clip_x0=True):
    """The chain as first landed (kept for this comparison only): DDIM on the shared model's sub-chain."""
    n_shared, n_personal = split_steps(t0, sched.T, num_steps)
    x_t0 = generate(shared, sched, y, shape, sampler, n_shared, seed=seed, batch_size=batch_size,
                    t_lo=t0, origin=t0)
    return generate(personal, sched, y, shape, sampler, n_personal, seed=seed + 1, batch_size=batch_size,
                    x_start=x_t0, t_hi=t0, guidance=guidance, clip_x0=clip_x0)


@contextmanager
def _landed():
    """experiment and personalization sample PFDM with the landed chain inside this block."""
    saved = experiment.pfdm_sample, personalization.pfdm_sample
    experiment.pfdm_sample = personalization.pfdm_sample = landed_pfdm_sample
    try:
        yield
    finally:
        experiment.pfdm_sample, personalization.pfdm_sample = saved


def _near_copies(samples: dict, key: tuple, client_x: torch.Tensor, minority: torch.Tensor) -> dict:
    """Near-copies (NN-distance ratio < 1/3) of the client's own images among all and minority samples."""
    fake = samples[key]
    return {"near_copies": attacks.memorization(fake, client_x).count,
            "near_copies_minor": attacks.memorization(fake[minority], client_x).count}


def _both_chains(run) -> dict[str, pd.DataFrame]:
    """run(name) with the landed chain, then with the fixed one: {"landed": df, "fixed": df}."""
    out = {}
    for chain in ("landed", "fixed"):
        with _landed() if chain == "landed" else nullcontext():
            out[chain] = run(f"sampler_{chain}")
    return out


def _experiment_rows(cfg, seeds: list[int], out: Path, notebook: str, what: str, suffix: str = "") -> list[dict]:
    """PFDM of experiment.run over `seeds` and cfg.privacy.t0s with both chains, with near-copies of client cfg.eval.client."""
    y = torch.arange(cfg.net.num_classes).repeat_interleave(cfg.eval.n_per_class)
    rows = []
    for chain, df in _both_chains(lambda name: experiment.run(cfg, ["pfdm"], seeds, out, name=name + suffix)).items():
        samples = torch.load(out / f"sampler_{chain}{suffix}_samples.pt")
        for r in df.to_dict("records"):
            me = experiment.make_split(cfg, r["seed"]).clients[cfg.eval.client]
            rows.append({"notebook": notebook, "what": what, "chain": chain, "seed": r["seed"], "t0": int(r["t0"]),
                         "eps_thm51": r["eps_thm51"], **{k: r[k] for k in KEYS},
                         **_near_copies(samples, (r["seed"], "pfdm", r["t0"]), me.x, y >= 5)})
    return rows


def part04(preset: str, seeds: list[int], sweep: list[int]) -> pd.DataFrame:
    """Notebook 04: PFDM at eps = 10 (Theorem 5.1, t0 = 693 at cpu) over `seeds`, and its t0 sweep (first seed)."""
    cfg0 = experiment.preset_config(preset)
    t0 = experiment.t0_for(10.0, cfg0, "thm51")
    out = runs_dir() / preset / "digits"
    rows = _experiment_rows(cfg0.override(t0s=(t0,)), seeds, out, "04", "table", "_table")
    if sweep:
        rows += _experiment_rows(cfg0.override(t0s=tuple(sweep)), seeds[:1], out, "04", "sweep", "_sweep")
    return pd.DataFrame(rows)


def part05(preset: str, seeds: list[int]) -> pd.DataFrame:
    """Notebook 05's MNIST PFDM rows: t0 for eps = 10 per pixel (284 at cpu) and per image (827, C = 28)."""
    cfg0 = experiment.preset_config(preset, "mnist")
    t0s = (experiment.t0_for(10.0, cfg0, unit="per-pixel"), experiment.t0_for(10.0, cfg0, unit="per-image"))
    return pd.DataFrame(_experiment_rows(cfg0.override(t0s=t0s), seeds, runs_dir() / preset / "mnist", "05", "mnist"))


def part10(preset: str, seeds: list[int]) -> pd.DataFrame:
    """Notebook 10: paper's and our recipe at eps = 10 (analytic, t0 = 675), gap closed against tuned local-only."""
    cfg = experiment.preset_config(preset)
    t0 = experiment.t0_for(10.0, cfg, "analytic")
    out = runs_dir() / preset / "personalization"
    recipes = ["paper", personalization.OUR_RECIPE]
    y = torch.arange(cfg.net.num_classes).repeat_interleave(cfg.eval.n_per_class)
    rows = []
    for chain, df in _both_chains(lambda name: personalization.run_study(cfg, seeds, [t0], recipes, out,
                                                                         name=name)).items():
        samples = torch.load(out / f"sampler_{chain}_samples.pt")
        for r in df[df.method == "pfdm"].to_dict("records"):
            me = personalization.make_study_split(cfg, r["seed"]).clients[cfg.eval.client]
            loc = df[(df.method == "local") & (df.recipe == "selected") & (df.seed == r["seed"])].iloc[0]
            cen = df[(df.method == "central") & (df.seed == r["seed"])].iloc[0]
            rows.append({"notebook": "10", "what": r["recipe"], "chain": chain, "seed": r["seed"], "t0": t0,
                         "eps_analytic": r["eps_analytic"], **{k: r[k] for k in KEYS},
                         "gap_closed": (loc.fid_minor - r["fid_minor"]) / (loc.fid_minor - cen.fid_minor),
                         **_near_copies(samples, (r["seed"], "pfdm", r["recipe"], t0), me.x, y >= 5)})
    return pd.DataFrame(rows)


def table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (notebook, what, t0, metric): mean before, mean after, paired difference ± std, seeds."""
    keys = [k for k in (*KEYS, "gap_closed", "near_copies", "near_copies_minor") if k in df]
    out = []
    for (nb, what, t0), g in df.groupby(["notebook", "what", "t0"], sort=False):
        b = g[g.chain == "landed"].set_index("seed")
        a = g[g.chain == "fixed"].set_index("seed").loc[b.index]
        for k in keys:
            if b[k].isna().all():
                continue
            d = a[k] - b[k]
            out.append({"notebook": nb, "what": what, "t0": t0, "metric": k, "before": b[k].mean(),
                        "after": a[k].mean(), "diff": d.mean(), "diff_std": d.std(ddof=1) if len(d) > 1 else np.nan,
                        "seeds": len(d)})
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--parts", nargs="+", default=["04", "05", "10"], choices=["04", "05", "10"])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--sweep", default="100,300,500", help="notebook 04's extra t0s (first seed); '' skips")
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    sweep = [int(s) for s in a.sweep.split(",") if s]
    dest = runs_dir() / a.preset
    if "04" in a.parts:
        part04(a.preset, seeds, sweep).to_csv(dest / "sampler_before_after_rows_04.csv", index=False)
    if "05" in a.parts:  # MNIST: needs the data under a data root; seed 0 only, as notebook 05
        part05(a.preset, seeds[:1]).to_csv(dest / "sampler_before_after_rows_05.csv", index=False)
    if "10" in a.parts:
        part10(a.preset, seeds).to_csv(dest / "sampler_before_after_rows_10.csv", index=False)
    # the table covers every part run so far (each part's rows are kept in their own file)
    raw = pd.concat([pd.read_csv(f, dtype={"notebook": str}) for f in sorted(dest.glob("sampler_before_after_rows_*.csv"))],
                    ignore_index=True)
    tab = table(raw)
    tab.to_csv(dest / "sampler_before_after.csv", index=False)
    md = tab.assign(diff=[f"{d:+.2f} ± {s:.2f}" for d, s in zip(tab["diff"], tab.diff_std)]).drop(columns="diff_std")
    (dest / "sampler_before_after.md").write_text(markdown(md))
    print(md.to_string(index=False))
    return tab


if __name__ == "__main__":
    main()
