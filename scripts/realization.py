"""Why two trainings of one recipe and seed differ (another machine, another thread count), measured.

A convolution's float rounding depends on the machine and the thread count (`core.omp`), so a model trained again
elsewhere starts from the same weights and drifts by rounding. This script trains the digits UNet twice on client
0's training part (notebook 10's split), the second time from weights that differ by rounding (each times
1 + 1e-7 z), under four optimiser settings, and follows the two weight vectors apart:

* `adam`: torch's Adam, no weight decay (the paper's recipe, `selected`);
* `adam_l2`: Adam with weight_decay 1e-4, as the study's regularised recipes use it (`TrainConfig.weight_decay`):
  torch's Adam adds wd * theta to the gradient and then normalizes, so a weight whose loss gradient is small moves
  toward zero by about lr per step whatever its size;
* `adamw`: decoupled weight decay (AdamW, 1e-2: a shrink of lr * wd per step), a common setting, for reference;
* `adamw_strong`: AdamW at 0.5, decay strong enough to shrink the weights about as much as the L2 term does.

Written to runs/<preset>/realization/sensitivity.csv: per setting and snapshot step, the two runs' relative weight
distance, the weight norm, the fraction of weights within lr of zero, and each run's validation loss at the end.

    python scripts/realization.py                  # preset cpu, 1600 steps (the ablation's 3x recipes train 1100-2400)
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SETTINGS = ("adam", "adam_l2", "adamw", "adamw_strong")
ADAMW = {"adamw": 1e-2, "adamw_strong": 0.5}  # decoupled weight decay of the AdamW settings


def run(preset: str, steps: int, settings: tuple[str, ...] = SETTINGS, seed: int = 0, progress: bool = True):
    """Rows (setting, step, rel_distance, weight_norm, near_zero, val_loss_a, val_loss_b) of the two trainings."""
    import contextlib
    from unittest import mock

    import pandas as pd
    import torch

    from pfdm_core.core.schedule import Schedule
    from pfdm_core.core.train import train
    from pfdm_core.experiment import preset_config
    from pfdm_core.methods.selection import ValidationLoss
    from pfdm_core.studies import personalization as pz

    cfg = preset_config(preset, "digits")
    ss, sched = pz.make_study_split(cfg, seed), Schedule(cfg.T)
    data, val = ss.clients[0], ss.vals[0]
    vl = ValidationLoss(sched, val.x, val.y, 1, cfg.T, draws=32, seed=seed)
    marks = sorted({min(steps, 100 * 2 ** k) for k in range(12)} | {steps})
    rows = []
    for setting in settings:
        runs = []
        for perturbed in (False, True):
            model = pz._model(cfg, pz.Recipe(), seed)
            if perturbed:
                g = torch.Generator().manual_seed(seed + 1)
                with torch.no_grad():
                    for p in model.parameters():
                        p.mul_(1 + 1e-7 * torch.randn(p.shape, generator=g))
            snaps: dict[int, torch.Tensor] = {}

            def on_step(step: int, m: torch.nn.Module, snaps: dict = snaps) -> None:
                if step + 1 in marks:
                    snaps[step + 1] = torch.cat([q.detach().flatten() for q in m.parameters()]).clone()

            tc = replace(cfg.train, steps=steps, seed=seed, checkpoint_every=0,
                         weight_decay=1e-4 if setting == "adam_l2" else 0.0)
            adamw = lambda params, lr, weight_decay: torch.optim.AdamW(params, lr=lr, weight_decay=ADAMW[setting])  # noqa: E731,B023
            with mock.patch("torch.optim.Adam", adamw) if setting in ADAMW else contextlib.nullcontext():
                train(model, sched, data.x, data.y, 1, cfg.T, config=tc, progress=progress, on_step=on_step,
                      desc=f"{setting}, {'perturbed' if perturbed else 'first'} run")
            runs.append((snaps, vl(model.eval())))
        (a, loss_a), (b, loss_b) = runs
        for step in marks:
            w = a[step]
            rows.append({"setting": setting, "step": step, "rel_distance": float((w - b[step]).norm() / w.norm()),
                         "weight_norm": float(w.norm()), "near_zero": float((w.abs() < cfg.train.lr).float().mean()),
                         "val_loss_a": loss_a, "val_loss_b": loss_b})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu", help="smoke | cpu")
    p.add_argument("--steps", type=int, default=1600)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    p.add_argument("--out", default=None, help="folder (default runs/<preset>/realization)")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps must be an integer >= 1, got {args.steps}")
    from pfdm_core.core import omp, paths, presets

    omp.apply()
    try:
        preset = presets.resolve(args.preset)
    except ValueError as e:
        p.error(str(e))
    import torch

    from pfdm_core.core.checkpoint import write_text

    torch.set_num_threads(1)  # one thread: the two runs differ only by the perturbation
    df = run(preset, args.steps, tuple(args.settings))
    out = Path(args.out or paths.runs_dir() / preset / "realization")
    write_text(out / "sensitivity.csv", df.to_csv(index=False))
    print(df.to_string(index=False))
    print(f"realization: {out / 'sensitivity.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
