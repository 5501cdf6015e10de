"""The evaluation's yardsticks, measured: each estimator's bias between real images, and the old and the new
headline metric side by side on notebook 04's `cpu` experiment over five seeds.

    python scripts/metric_table.py                     # digits at cpu: ~25 min on 2 cores (models cached after)
    python scripts/metric_table.py --preset smoke --seeds 0 1 --out /tmp/metric   # seconds, for tests

1. Bias (`metrics.real_vs_real`): two disjoint sets of real digits of client 0's majority classes, drawn
   stratified (the same count of each class), at several sizes; the value each estimator reports when the true
   distance is 0: the old per-class FID (128 features, the reference's ~36 images per class), the pooled FID in
   the full features, the headline group FID (16 PCA dimensions), the i.i.d. KID and the stratified KID.
   -> <out>/metric_bias.csv and figures/metric_bias.png (with --publish).
2. Old and new (`experiment.run`, notebook 04's configuration: PFDM at t0 = 693, local-only, centralized, FedAvg):
   mean ± std over seeds of the old headline (per-class FID averaged over a group) and of the new ones (gfid,
   gkid), and every pairwise comparison on each metric with its paired 95% interval (`evaluation.compare`).
   -> <out>/digits/metric_seeds.csv (the rows), <out>/metric_old_new.csv and .md (the tables).
"""
from __future__ import annotations

import argparse
import sys
from itertools import combinations
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pfdm_core import experiment  # noqa: E402
from pfdm_core.core import paths  # noqa: E402
from pfdm_core.core.checkpoint import write_text  # noqa: E402
from pfdm_core.data.partition import client_classes  # noqa: E402
from pfdm_core.evaluation import metrics  # noqa: E402
from pfdm_core.evaluation.compare import markdown, paired_table  # noqa: E402

METHODS = ("pfdm", "local", "central", "fedavg")
OLD, NEW = ("fid_minor", "fid_major"), ("gfid_minor", "gfid_major", "gkid_minor", "gkid_major")
BIAS_KEYS = {"fid_per_class": "per-class FID (128 features; old headline)", "fid_full": "pooled FID, 128 features",
             "gfid": "group FID, 16 PCA dims (headline)", "kid_iid": "KID, i.i.d. estimator",
             "gkid": "KID, class-stratified (headline)"}


def bias_rows(preset: str, sizes: list[int], repeats: int, seed: int = 0) -> pd.DataFrame:
    """Real-vs-real values of every estimator on the digits features of client 0's majority classes."""
    cfg = experiment.preset_config(preset, "digits")
    split = experiment.make_split(cfg, seed)
    clf = experiment.metric_classifier(cfg, split, seed)
    pca = experiment.metric_pca(clf, split)
    majority, _ = client_classes(0, cfg.split.num_clients, cfg.net.num_classes)
    x = torch.cat([split.train.x, split.test.x])  # every real digit: the sets are disjoint draws from these
    y = torch.cat([split.train.y, split.test.y]).numpy()
    rows = metrics.real_vs_real(metrics.embed(clf, x), y, majority, sizes, pca, repeats, seed)
    return pd.DataFrame(rows)


def plot_bias(df: pd.DataFrame, reference: int) -> None:
    """figures/metric_bias.png: each estimator's value between two sets of real digits, against their size."""
    import matplotlib.pyplot as plt

    from pfdm_core.evaluation.plotting import savefig

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    g = df.groupby("n")
    for key in ("fid_per_class", "fid_full", "gfid"):
        axes[0].errorbar(g[key].mean().index, g[key].mean(), g[key].std(), marker="o", capsize=3, label=BIAS_KEYS[key])
    for key in ("kid_iid", "gkid"):
        axes[1].errorbar(g[key].mean().index, g[key].mean(), g[key].std(), marker="o", capsize=3, label=BIAS_KEYS[key])
    axes[1].axhline(0, color="k", lw=0.8)
    for ax, title in zip(axes, ("FID between two sets of real digits", "KID between two sets of real digits")):
        ax.axvline(reference, color="gray", ls=":", lw=1, label=f"size of the digits reference ({reference})")
        ax.set(xlabel="images per set (a group of 5 classes, stratified)", title=title)
        ax.legend(fontsize=8)
    axes[0].set(ylabel="value when the true distance is 0", yscale="log")
    fig.tight_layout()
    savefig(fig, "metric_bias")


def seed_tables(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """mean ± std over seeds of each metric, and every pairwise paired comparison (a better when gain > 0)."""
    keys = [*OLD, *NEW]
    g = df.groupby("method", sort=False)[keys]
    spread = pd.DataFrame({k: [f"{m:.3f} ± {s:.3f}" for m, s in zip(g.mean()[k], g.std(ddof=1)[k])] for k in keys},
                          index=g.mean().index)
    spread["seeds"] = df.groupby("method", sort=False).size()
    pairs = [(a, b) for a, b in combinations(list(dict.fromkeys(df.method)), 2)]
    comparisons = paired_table(df, pairs, {k: True for k in keys})
    comparisons["metric_kind"] = comparisons.metric.map(lambda k: "old" if k in OLD else "new")
    return spread.reset_index(), comparisons


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--sizes", type=int, nargs="+", default=[60, 120, 180, 300, 420])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None, help="default: <runs>/<preset> (runs/cpu is committed)")
    ap.add_argument("--publish", action="store_true", help="also write figures/metric_bias.png")
    args = ap.parse_args(argv)
    out = args.out or paths.REPO_ROOT / "runs" / args.preset
    out.mkdir(parents=True, exist_ok=True)

    bias = bias_rows(args.preset, args.sizes, args.repeats)
    bias.to_csv(out / "metric_bias.csv", index=False)
    reference = 180  # client 0's majority reference on digits: 5 classes x ~36 held-out images
    if args.publish:
        plot_bias(bias, reference)
    print(bias.groupby("n")[list(BIAS_KEYS)].agg(["mean", "std"]).round(3).to_string())

    cfg = experiment.preset_config(args.preset, "digits", t0s=(693,))
    df = experiment.run(cfg, METHODS, args.seeds, out / "digits", name="metric_seeds")
    spread, comparisons = seed_tables(df)
    spread.to_csv(out / "metric_old_new.csv", index=False)
    comparisons.to_csv(out / "metric_old_new_pairs.csv", index=False)
    text = [f"# Old and new headline metric ({args.preset}, digits, client 0, seeds {args.seeds})", "",
            "mean ± std over seeds:", "", markdown(spread), "",
            "paired comparisons (gain > 0: a is better; 95% t-interval over seeds):", "",
            markdown(comparisons), "",
            "real-vs-real (true distance 0), mean over repeats:", "",
            markdown(bias.groupby("n")[list(BIAS_KEYS)].mean().reset_index())]
    write_text(out / "metric_old_new.md", "\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
