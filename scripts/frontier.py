"""Privacy-utility frontier: papermill runs of notebook 04 over a grid of eps and heterogeneity.

    python scripts/frontier.py                                   # digits, cpu preset, ~1 h on 2 cores
    python scripts/frontier.py --eps 5 10 20 50 --minority 2 5 --preset cpu --seed 0

Each grid point executes notebooks/04_pfdm_digits.ipynb with papermill (parameters target_epsilon,
minority_per_class, methods, seeds=[seed], no t0 sweep) into <out>/nb/, its models cached under
<out>/runs/ (so local-only, which does not depend on eps, is trained once per heterogeneity).
The rows of every run are gathered in <out>/frontier.csv, and one figure, <out>/frontier.png
(also figures/frontier_digits.png with --publish), shows client 0's minority classifier FID
against per-image eps for PFDM, local-only and central DP-SGD (DPDM, `pfdm_core.privacy.dpsgd`: its eps is
Opacus' add/remove-one accounting at the same target, as DPDM reports it; PFDM's is replace-one).
DP-SGD dominates the time (~7 min per eps point at cpu); `--methods pfdm local` leaves it out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
NOTEBOOK = REPO / "notebooks" / "04_pfdm_digits.ipynb"


def run_grid(eps_grid: list[float], minority_grid: list[int], preset: str, seed: int, out: Path,
             methods: list[str]) -> pd.DataFrame:
    import papermill as pm

    from pfdm_core.experiment import preset_config

    (out / "nb").mkdir(parents=True, exist_ok=True)
    default_minority = preset_config(preset).split.minority_per_class
    os.environ.update(PFDM_RUNS=str((out / "runs").resolve()), PFDM_FIGURES=str((out / "figures").resolve()),
                      PFDM_PRESET=preset)
    rows = []
    for minority in minority_grid:
        for eps in eps_grid:
            name = f"04_eps{eps:g}_minority{minority}.ipynb"
            print(f"frontier: eps={eps:g} minority_per_class={minority}", flush=True)
            pm.execute_notebook(NOTEBOOK, out / "nb" / name, cwd=REPO / "notebooks", progress_bar=False,
                                parameters=dict(preset=preset, seed=seed, seeds=[seed], methods=methods,
                                                target_epsilon=eps, sweep_t0s=[], minority_per_class=minority))
            folder = out / "runs" / preset / ("digits" if minority == default_minority else f"digits_minority{minority}")
            for r in json.loads((folder / "results.json").read_text())["rows"]:
                rows.append({**r, "target_eps": eps, "minority_per_class": minority})
    df = pd.DataFrame(rows)
    df.to_csv(out / "frontier.csv", index=False)
    return df


def plot(df, path: Path, preset: str, seed: int):
    import matplotlib.pyplot as plt

    from pfdm_core.evaluation import plotting

    plotting.set_style()
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (minority, d) in enumerate(df.groupby("minority_per_class")):
        color = f"C{i}"
        pf = d[d.method == "pfdm"].sort_values("target_eps")
        ax.plot(pf.eps_thm51, pf.fid_minor, "o-", color=color, label=f"PFDM, {minority} per minority class")
        loc = d[d.method == "local"].fid_minor.mean()
        ax.axhline(loc, ls=":", color=color, label=f"local-only, {minority} per minority class")
        for method, marker in (("dpsgd", "s--"),):
            dp = d[d.method == method].sort_values("target_eps")
            if len(dp):
                ax.plot(dp.target_eps, dp.fid_minor, marker, color=color, label=f"DP-SGD, {minority} per minority class")
    ax.set(xscale="log", xlabel="per-image eps (Theorem 5.1, C = 10, delta = 1e-5)",
           ylabel="minority classifier FID, client 0 (lower is better)",
           title=f"Privacy-utility frontier on digits (preset {preset}, seed {seed})")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.savefig(path, bbox_inches="tight")
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--eps", type=float, nargs="+", default=[5, 10, 20, 50], help="per-image eps grid (> 0)")
    p.add_argument("--minority", type=int, nargs="+", default=[2, 5], help="images per minority class per client")
    p.add_argument("--preset", default="cpu", help="smoke | cpu | paper")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=["pfdm", "local", "dpsgd"])
    p.add_argument("--out", default=None, help="output folder (default runs/frontier_<preset>)")
    p.add_argument("--publish", action="store_true", help="also write figures/frontier_digits.png")
    args = p.parse_args(argv)
    if min(args.eps) <= 0 or min(args.minority) < 1:
        p.error(f"--eps must be > 0 and --minority >= 1, got {args.eps} and {args.minority}")
    out = Path(args.out or REPO / "runs" / f"frontier_{args.preset}")
    df = run_grid(args.eps, args.minority, args.preset, args.seed, out, args.methods)
    plot(df, out / "frontier.png", args.preset, args.seed)
    if args.publish:
        plot(df, REPO / "figures" / "frontier_digits.png", args.preset, args.seed)
    cols = ["minority_per_class", "target_eps", "method", "t0", "eps_thm51", "fid_minor", "fid_major"]
    print(df[cols].round(2).to_string(index=False))
    print(f"frontier: {out / 'frontier.csv'}, {out / 'frontier.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
