"""Model FLOPs utilisation (MFU) of UNet training, and what bounds it.

    MFU = (model FLOPs of one training step / measured seconds per step) / (fp32 matmul FLOP/s of this machine)

* Model FLOPs per step: `torch.utils.flop_counter.FlopCounterMode` over one forward + backward of the
  eps-loss (convolutions, matmuls, attention; elementwise ops, normalisation and Adam count 0, as in
  the usual definition of MFU).
* Seconds per step: the median of interleaved repeats of forward + backward + Adam at the preset's
  batch (the same step as `bench_unet`).
* The machine's rate: the median of fp32 `torch.mm` of two n x n matrices (2 n^3 FLOPs), measured in
  the same process and threads, so that MFU is a ratio of two measurements of one run.
* What bounds it: `torch.profiler` over a few steps, self CPU time grouped into convolution, matmul,
  normalisation, elementwise / activation, optimiser and the rest; "framework overhead" is the wall
  time no operator accounts for. The run also times the project's calibration workload
  (`pfdm_core.core.calibrate`: seconds per digits training step), the unit of every other time.

Writes runs/bench/mfu.json.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_unet import train_step  # noqa: E402  (the one timed step of the benchmarks)
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from pfdm_core.core import calibrate  # noqa: E402
from pfdm_core.core.nets import UNet, count_parameters  # noqa: E402
from pfdm_core.experiment import PRESETS  # noqa: E402

DATASETS = {"digits": "8x8x1", "mnist": "28x28x1"}
CATEGORIES = {  # operator name fragments -> category (first match wins)
    "convolution": ("conv", "mkldnn_convolution", "slow_conv"),
    "matmul": ("addmm", "::mm", "bmm", "matmul", "linear", "baddbmm", "scaled_dot_product"),
    "normalisation": ("group_norm", "native_group_norm", "layer_norm", "batch_norm"),
    "optimiser": ("_foreach", "adam", "lerp", "addcdiv", "addcmul", "sqrt"),
    "elementwise": ("add", "mul", "silu", "sigmoid", "div", "sub", "cat", "copy", "fill", "zero", "mse", "pow",
                    "sum", "mean", "exp", "sin", "cos", "neg", "clone", "upsample", "embedding", "index"),
}


def matmul_rate(n: int, repeats: int) -> float:
    """fp32 FLOP/s of an n x n matmul on this process's threads (median of `repeats`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    timing = common.interleaved({"mm": lambda: torch.mm(a, b)}, repeats, warmup=2)
    return 2 * n ** 3 / timing["mm"]["median_s"]


def model_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one forward + backward of the eps-loss (FlopCounterMode)."""
    with FlopCounterMode(display=False) as counter:
        t = torch.randint(1, 1001, (len(x),))
        F.mse_loss(model(x, t, y), torch.zeros_like(x)).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def breakdown(step, n: int) -> dict[str, float]:
    """Share of the wall time of `n` steps per operator category (self CPU time), plus the unaccounted rest."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(n):
            step()
        wall = time.perf_counter() - start
    shares = {k: 0.0 for k in [*CATEGORIES, "other operators"]}
    for ev in prof.key_averages():
        name = ev.key.lower()
        if not name.startswith("aten::"):
            continue
        cat = next((c for c, frags in CATEGORIES.items() if any(f in name for f in frags)), "other operators")
        shares[cat] += ev.self_cpu_time_total / 1e6
    shares = {k: v / wall for k, v in shares.items()}  # an operator's self time includes its intra-op threads' work
    shares["framework overhead (unaccounted)"] = max(0.0, 1 - sum(shares.values()))
    return {"wall_s": wall, **{k: round(v, 4) for k, v in shares.items()}}


def main(argv=None) -> dict:
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    common.setup_threads(args.threads)
    machine = common.machine()
    n_mm, mm_repeats, repeats, prof_steps = (256, 3, 2, 1) if args.quick else (1024, 9, 9, 5)
    peak = matmul_rate(n_mm, mm_repeats)
    rows = []
    for data in (["digits"] if args.quick else DATASETS):
        cfg = PRESETS[data]["cpu"]
        batch = 4 if args.quick else cfg.train.batch_size
        torch.manual_seed(0)
        model = UNet(cfg.net)
        x = torch.randn(batch, cfg.net.in_channels, cfg.net.image_size, cfg.net.image_size)
        y = torch.randint(0, cfg.net.num_classes, (batch,))
        opt = torch.optim.Adam(model.parameters(), 1e-4)
        step = lambda m=model, x=x, y=y, o=opt: train_step(m, x, y, o, lambda n, a, t, c: n(a, t, c))  # noqa: E731
        flops = model_flops(model, x, y)
        sec = common.interleaved({"step": step}, repeats, warmup=2)["step"]["median_s"]
        achieved = flops / sec
        rows.append({"data": data, "image": DATASETS[data], "params": count_parameters(model), "batch": batch,
                     "gflop_per_step": flops / 1e9, "s_per_step": sec, "gflop_s": achieved / 1e9,
                     "matmul_gflop_s": peak / 1e9, "mfu": achieved / peak, "breakdown": breakdown(step, prof_steps)})
    calib = calibrate.step_seconds(3, 1, batch=4) if args.quick else calibrate.step_seconds()
    payload = {"benchmark": "mfu", "quick": args.quick, "matmul_n": n_mm, "matmul_gflop_s": peak / 1e9,
               "calibration_digits_step_s": calib, "rows": rows, "machine": machine}
    path = common.write("mfu", payload, args.out)
    print(common.table(rows, ["data", "image", "params", "batch", "gflop_per_step", "s_per_step", "gflop_s",
                              "matmul_gflop_s", "mfu"],
                       f"MFU of UNet training (forward+backward+Adam), fp32 matmul {n_mm}x{n_mm} as the machine's rate "
                       f"— {common.machine_line(payload['machine'])}"))
    cats = [*CATEGORIES, "other operators", "framework overhead (unaccounted)"]
    print(common.table([{"data": r["data"], **{c: r["breakdown"][c] for c in cats}} for r in rows], ["data", *cats],
                       "share of a training step's wall time (torch.profiler, self CPU time)"))
    print(f"calibration workload: {calib:.4f} s per step ({calibrate.WORKLOAD})")
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
