"""Command line: `python -m pfdm_core epsilon|t0 ...` (the privacy accountant of DESIGN.md 2.1).

    python -m pfdm_core epsilon --t0 690 --clip 10 --delta 1e-5            # 10.24 (Theorem 5.1)
    python -m pfdm_core epsilon --t0 690 --clip 10 --accountant analytic   # 8.77  (tight)
    python -m pfdm_core t0 --epsilon 10 --clip 10 --delta 1e-5             # 693
    python -m pfdm_core epsilon --t0 100 --per-pixel                       # 45.75

Invalid arguments print one line `pfdm_core: error: ...` and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

from .privacy import ACCOUNTANTS, epsilon, t0_for_epsilon
from .schedule import SCHEDULES, Schedule


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, exit 2
        sys.stderr.write(f"pfdm_core: error: {message}\n")
        sys.exit(2)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clip", type=float, default=10.0, help="per-image l2 clip norm C (default 10)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    kw = dict(clip_norm=args.clip, delta=args.delta, accountant=args.accountant,
              unit="per-pixel" if args.per_pixel else "per-image", pixels=args.pixels)
    try:
        sched = Schedule(args.T, args.schedule)
        if args.command == "epsilon":
            print(f"{epsilon(args.t0, sched, **kw):.2f}")
        else:
            print(t0_for_epsilon(args.epsilon, sched, **kw))
    except ValueError as err:
        parser.error(str(err).splitlines()[0])
    return 0
