"""Command line: `python -m pfdm_core epsilon|t0 ...` (the upload's privacy accountant).

    python -m pfdm_core epsilon --t0 690 --clip 10 --delta 1e-5            # 10.24 (Theorem 5.1)
    python -m pfdm_core epsilon --t0 690 --clip 10 --accountant analytic   # 8.77  (tight)
    python -m pfdm_core t0 --epsilon 10 --clip 10 --delta 1e-5             # 693
    python -m pfdm_core epsilon --t0 100 --per-pixel                       # 45.75
    python -m pfdm_core run --data mnist --preset cpu --seeds 0            # Table 1 on MNIST
    python -m pfdm_core download mnist                                     # needs internet
    python -m pfdm_core calibrate                                          # s per calibration step here

Invalid arguments print one line `pfdm_core: error: ...` and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

from pfdm_core.core.schedule import SCHEDULES, Schedule
from pfdm_core.privacy.mechanism import ACCOUNTANTS, epsilon, t0_for_epsilon


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, exit 2
        sys.stderr.write(f"pfdm_core: error: {message}\n")
        sys.exit(2)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clip", type=float, default=None, help="per-image l2 clip norm C (default 10; not with --per-pixel)")
    p.add_argument("--delta", type=float, default=1e-5, help="delta in (0, 1) (default 1e-5)")
    p.add_argument("--accountant", choices=ACCOUNTANTS, default="thm51",
                   help="thm51: the paper's Theorem 5.1 (default); analytic: Balle & Wang 2018")
    p.add_argument("--per-pixel", action="store_true", help="per-pixel unit (pixel range [-1, 1]) instead of per-image")
    p.add_argument("--pixels", type=int, default=1, help="with --per-pixel: group privacy for k pixels")
    p.add_argument("--T", type=int, default=1000, help="number of diffusion steps (default 1000)")
    p.add_argument("--schedule", choices=SCHEDULES, default="linear", help="noise schedule (default linear)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pfdm_core", description="Privacy of a PFDM upload at diffusion step t0.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    e = sub.add_parser("epsilon", help="eps of an upload at step t0")
    e.add_argument("--t0", type=int, required=True, help="diffusion step of the upload, 1..T-1")
    _common(e)
    t = sub.add_parser("t0", help="smallest t0 whose upload reaches a target eps")
    t.add_argument("--epsilon", type=float, required=True, help="target eps > 0")
    _common(t)
    r = sub.add_parser("run", help="train and evaluate methods x seeds on a federated split (Table 1)")
    r.add_argument("--data", default="digits", help="digits | mnist | cmnist | cifar10 | celeba")
    r.add_argument("--methods", default="pfdm,local,central,fedavg", help="comma-separated subset of the methods")
    r.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    r.add_argument("--preset", default="cpu", help="smoke | cpu | paper")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--t0", default=None, help="comma-separated PFDM split steps, 1..T-1")
    g.add_argument("--epsilon", type=float, default=None, help="target per-image eps: t0 = smallest step reaching it")
    r.add_argument("--clip", type=float, default=None, help="per-image l2 clip norm C (default: the preset's)")
    r.add_argument("--accountant", choices=ACCOUNTANTS, default=None,
                   help="with --epsilon: the accountant that turns it into t0 (default thm51)")
    r.add_argument("--clients", type=int, default=4, help="number of clients (two clusters)")
    r.add_argument("--out", default=None, help="run folder (default runs/<preset>/<data>)")
    d = sub.add_parser("download", help="fetch MNIST or CIFAR-10 with torchvision into ./data (or $PFDM_DATA)")
    d.add_argument("name", choices=("mnist", "cifar10"))
    sub.add_parser("calibrate", help="seconds of one calibration step on this machine (the unit of the README's times)")
    return parser


def _ints(text: str, name: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {text!r}") from None


def _run(args: argparse.Namespace) -> int:
    """`run`: the Table-1 experiment without Jupyter (resumes from the run folder)."""
    from pfdm_core.core.paths import runs_dir
    from pfdm_core.core.presets import resolve
    from pfdm_core.experiment import preset_config, run, summarize, t0_for

    if args.accountant is not None and args.epsilon is None:
        raise ValueError("--accountant only applies with --epsilon (it turns eps into t0); drop it or add --epsilon")
    preset = resolve(args.preset)
    cfg = preset_config(preset, args.data, num_clients=args.clients)
    if args.clip is not None:
        cfg = cfg.override(clip_norm=args.clip)
    if args.t0:
        cfg = cfg.override(t0s=tuple(_ints(args.t0, "--t0")))
    elif args.epsilon is not None:
        cfg = cfg.override(t0s=(t0_for(args.epsilon, cfg, args.accountant or "thm51"),))
    seeds = _ints(args.seeds, "--seeds")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    out = args.out or runs_dir() / preset / args.data
    df = run(cfg, methods, seeds, out)
    print(summarize(df).to_string(index=False))
    print(f"results: {out}/results.csv")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "download":
            from pfdm_core.data.images import download

            print(f"{args.name} is in {download(args.name)}")
            return 0
        if args.command == "calibrate":
            from pfdm_core.core import calibrate

            step = calibrate.step_seconds()
            print(f"{step:.4f} s per calibration step ({calibrate.WORKLOAD}); a time quoted as N calibration steps "
                  f"takes about N x {step:.4f} s here")
            return 0
        if args.per_pixel and args.clip is not None:
            raise ValueError("--clip has no effect with --per-pixel (the per-pixel unit bounds one pixel in [-1, 1]); "
                             "drop one of them")
        if not args.per_pixel and args.pixels != 1:
            raise ValueError("--pixels only applies with --per-pixel")
        kw = dict(clip_norm=10.0 if args.clip is None else args.clip, delta=args.delta, accountant=args.accountant,
                  unit="per-pixel" if args.per_pixel else "per-image", pixels=args.pixels)
        sched = Schedule(args.T, args.schedule)
        if args.command == "epsilon":
            print(f"{epsilon(args.t0, sched, **kw):.2f}")
        else:
            print(t0_for_epsilon(args.epsilon, sched, **kw))
    except FileNotFoundError as err:  # missing data: the message lists every root it looked in
        parser.error(str(err))
    except (ValueError, OSError, ArithmeticError) as err:  # bad input, failed download, diverged training
        parser.error(str(err).splitlines()[0])
    return 0
