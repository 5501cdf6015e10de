"""The privacy-utility frontier (`pfdm_core.studies.frontier`): train the points, then gather, tabulate and plot.

    python scripts/frontier.py                                   # digits, cpu: seeds 0-4, eps 1 5 10 50 200
    python scripts/frontier.py --seeds 0 --eps 10 --rivals      # one point with FedAvg and DP-SGD at eps 10
    python scripts/frontier.py --jobs 5                          # the same, one seed per process (5 cores)
    python scripts/frontier.py --seeds 0 1 2 --eps 10 --ambient  # the ambient shared model's rows (beyond the paper)
    python scripts/frontier.py --collect-only --publish          # table + figure from the finished points

Points run in the order of --eps for each seed (eps outer), so a stopped serial run has every seed at the first eps;
each point's CSV is written when it finishes and the models are cached under <out>/seed<s>/, so rerunning resumes.
With --jobs N the seeds run in N processes at once, one seed per process (a seed's points share its cached
baselines, so no two processes touch one seed's folder), each on one torch thread unless --threads says otherwise,
logging to <out>/logs/seed<s>.log (seed outer: a seed waits for a free process); the table and figure are made
once all have finished. One seed's points are about 2 h of one core at cpu (digits), so on N >= 5 free cores the
default grid takes about that long.
--rivals adds FedAvg (once per seed) and DP-SGD at each of --dpsgd-eps (default: the --eps grid). The figure goes
to <out>/frontier.png (and figures/frontier_<data>.png with --publish), the table to <out>/frontier_table.csv.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DONE = "frontier: done"  # printed after each finished point (and a seed's rivals); a --jobs parent counts them


def main(argv: list[str] | None = None) -> int:
    from pfdm_core.core import omp

    omp.apply()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits", help="digits | mnist")
    p.add_argument("--preset", default="cpu", help="smoke | cpu | paper")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--eps", type=float, nargs="+", default=None, help="per-image eps grid (default 1 5 10 50 200)")
    p.add_argument("--rivals", action="store_true", help="also FedAvg and DP-SGD (at --dpsgd-eps)")
    p.add_argument("--dpsgd-eps", type=float, nargs="*", default=None,
                   help="DP-SGD's eps values (with --rivals; default: the --eps grid)")
    p.add_argument("--ambient", action="store_true",
                   help="only the ambient shared model's rows (run_ambient, with the attack) at each seed and --eps")
    p.add_argument("--ambient-kind", default="ambient", choices=["ambient", "ambient_scaled"],
                   help="with --ambient: the consistency weight, 1 (ambient) or abar_t0 (ambient_scaled)")
    p.add_argument("--membership", action="store_true",
                   help="also the loss attack on the published models of each point (after training it)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default; 1 with --jobs > 1)")
    p.add_argument("--jobs", type=int, default=1, help="seeds trained at once, one process each (<= cores)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a --jobs process: train, no table
    p.add_argument("--out", default=None, help="folder (default runs/<preset>/frontier_<data>)")
    p.add_argument("--collect-only", action="store_true", help="no training: table and figure of what is there")
    p.add_argument("--publish", action="store_true", help="also write figures/frontier_<data>.png")
    args = p.parse_args(argv)

    from pfdm_core.core import presets

    try:
        preset = presets.resolve(args.preset)
    except ValueError as e:
        p.error(str(e))
    from pfdm_core.studies import frontier as fr

    eps_grid = args.eps or list(fr.EPSILONS)
    if args.dpsgd_eps is None:
        args.dpsgd_eps = eps_grid if args.rivals else []
    if min(eps_grid) <= 0 or any(e <= 0 for e in args.dpsgd_eps) or min(args.seeds) < 0 or args.threads < 0:
        p.error(f"--eps and --dpsgd-eps must be > 0, --seeds and --threads >= 0; got {eps_grid}, {args.dpsgd_eps}, "
                f"{args.seeds}, {args.threads}")
    if args.jobs < 1:
        p.error(f"--jobs must be an integer >= 1, got {args.jobs}")
    if args.jobs > (os.cpu_count() or 1):
        print(f"frontier: --jobs {args.jobs} > {os.cpu_count()} cores: the processes will share cores", file=sys.stderr)
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds must be distinct, got {args.seeds}")
    import pandas as pd
    import torch

    from pfdm_core import experiment
    from pfdm_core.core import paths
    from pfdm_core.core.checkpoint import write_text

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = experiment.preset_config(preset, args.data)
    out = Path(args.out or paths.runs_dir() / preset / f"frontier_{args.data}")
    try:  # every eps reachable at this preset's T and clip norm, before anything is trained or written
        [fr.t0_of(cfg, e) for e in eps_grid]
    except ValueError as e:
        p.error(f"--eps: {e}")
    progress = not args.worker  # a worker's bars would fill its log; the parent shows one bar for all
    if args.jobs > 1 and len(args.seeds) > 1 and not args.collect_only:
        failed = run_jobs(args, preset, eps_grid, out)
        if failed:
            print(f"frontier: seeds {failed} failed (logs under {out / 'logs'}); no table written", file=sys.stderr)
            return 1
    elif args.ambient and not args.collect_only:
        for eps in eps_grid:
            for seed in args.seeds:
                print(f"frontier: {args.ambient_kind}, seed {seed}, eps {eps:g} (t0 = {fr.t0_of(cfg, eps)})",
                      flush=True)
                fr.run_ambient(cfg, seed, eps, out, progress=progress, kind=args.ambient_kind)
                print(f"{DONE} seed {seed}, eps {eps:g}", flush=True)
    elif not args.collect_only:
        for eps in eps_grid:
            for seed in args.seeds:
                print(f"frontier: seed {seed}, eps {eps:g} (t0 = {fr.t0_of(cfg, eps)})", flush=True)
                fr.run_point(cfg, seed, eps, out, progress=progress)
                if args.membership:
                    fr.membership(cfg, seed, eps, out)
                print(f"{DONE} seed {seed}, eps {eps:g}", flush=True)
        if args.rivals:
            for seed in args.seeds:
                fr.run_rivals(cfg, seed, out, args.dpsgd_eps, progress=progress)
                print(f"{DONE} seed {seed}, rivals", flush=True)
    if args.worker:
        return 0
    df = fr.collect(out)
    t = fr.table(df)
    write_text(out / "frontier_rows.csv", df.to_csv(index=False))
    write_text(out / "frontier_table.csv", t.to_csv(index=False))
    import matplotlib

    matplotlib.use("Agg")
    from pfdm_core.evaluation import plotting

    plotting.set_style()
    ax = fr.plot(df, cfg)
    ax.set_title(f"{args.data}, preset {preset}, seeds {sorted(df.seed.unique().tolist())}")
    ax.figure.savefig(out / "frontier.png", bbox_inches="tight")
    if args.publish:
        ax.figure.savefig(REPO / "figures" / f"frontier_{args.data}.png", bbox_inches="tight")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(t.drop(columns=["gfid_major_mean"]).round(2).to_string(index=False))
    print(f"frontier: {out / 'frontier_table.csv'}, {out / 'frontier.png'}")
    return 0


def run_jobs(args: argparse.Namespace, preset: str, eps_grid: list[float], out: Path) -> list[int]:
    """Each seed in its own process (this script with --worker), at most args.jobs at once; one progress bar over
    every seed's points (the workers print DONE after each). Returns the seeds whose process failed."""
    import subprocess
    import time

    from tqdm.auto import tqdm

    flags = [*(["--rivals", "--dpsgd-eps", *map(str, args.dpsgd_eps)] if args.rivals else []),
             *(["--ambient", "--ambient-kind", args.ambient_kind] if args.ambient else []),
             *(["--membership"] if args.membership else [])]
    threads = str(args.threads or 1)
    base = [sys.executable, str(Path(__file__).resolve()), "--worker", "--data", args.data, "--preset", preset,
            "--eps", *map(str, eps_grid), "--threads", threads, "--out", str(out), *flags]
    # each keeps its thread count (torch's, OpenMP's and BLAS's), untouched by the governor (core.omp.govern)
    env = {**os.environ, "PFDM_THREADS": "fixed", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    todo, running, failed = list(args.seeds), {}, []
    per_seed = len(eps_grid) + (args.rivals and not args.ambient)
    bar = tqdm(total=per_seed * len(todo), desc=f"frontier ({args.jobs} jobs)", unit="point")
    try:
        while todo or running:
            while todo and len(running) < args.jobs:
                seed = todo.pop(0)
                log = open(logs / f"seed{seed}.log", "w")
                running[seed] = (subprocess.Popen([*base, "--seeds", str(seed)], stdout=log, stderr=subprocess.STDOUT,
                                                  env=env), log)
            time.sleep(2)
            for seed, (proc, log) in list(running.items()):
                if proc.poll() is not None:
                    log.close()
                    del running[seed]
                    if proc.returncode:
                        failed.append(seed)
                        tail = (logs / f"seed{seed}.log").read_text().strip().splitlines()[-1:]
                        tqdm.write(f"frontier: seed {seed} failed (exit {proc.returncode}): {' '.join(tail)}")
            started = [s for s in args.seeds if s not in todo]
            bar.n = sum((logs / f"seed{s}.log").read_text().count(DONE) for s in started)
            bar.refresh()
    finally:
        for proc, log in running.values():  # interrupted: stop the workers (their finished points are kept)
            proc.terminate()
            log.close()
        bar.close()
    return sorted(failed)


if __name__ == "__main__":
    sys.exit(main())
