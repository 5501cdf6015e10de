"""Sampling: DDPM (1000 steps) vs DDIM at 10 / 25 / 50 / 100 steps on the digits DDPM — time and FID.

The model is the cached digits DDPM of notebook 02 (`studies.digits_ddpm`, preset `cpu`; trained
once, about 2.5 min, when runs/checkpoints lacks it) and the classifier FID its cached digits
classifier, against the held-out test digits (all classes pooled). Time: every sampler on the
same batch, interleaved, median of repeats, as a ratio to DDPM's time (the reference). Quality:
FID and classifier accuracy of one larger set of samples per sampler (same noise x_T). The knee
is the fewest DDIM steps whose FID is within 10% of the best FID of all samplers: the step count
worth making the default (ExperimentConfig.eval.ddim_steps). Writes runs/bench/sampling.json.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import torch  # noqa: E402

from pfdm_core.core.diffusion import generate  # noqa: E402
from pfdm_core.data.small import digits_split  # noqa: E402
from pfdm_core.evaluation import metrics
from pfdm_core.evaluation.classifier import digits_classifier  # noqa: E402
from pfdm_core.experiment import ExperimentConfig  # noqa: E402
from pfdm_core.studies.digits_ddpm import digits_ddpm  # noqa: E402

DDIM_STEPS = (10, 25, 50, 100)
KNEE_TOLERANCE = 0.10  # FID within 10% of the best


def knee(rows: list[dict], tolerance: float = KNEE_TOLERANCE) -> int | None:
    """Fewest DDIM steps whose FID <= (1 + tolerance) x the best FID of all samplers."""
    best = min(r["fid"] for r in rows)
    ok = [r["steps"] for r in rows if r["sampler"] == "ddim" and r["fid"] <= (1 + tolerance) * best]
    return min(ok) if ok else None


def main(argv=None) -> dict:
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    common.setup_threads(args.threads)
    machine = common.machine()
    preset = "smoke" if args.quick else "cpu"
    n_per_class, time_batch, repeats = (2, 4, 1) if args.quick else (30, 50, 3)
    model, sched, _ = digits_ddpm(preset, 0, progress=False)
    clf = digits_classifier(0, 1 if args.quick else 30)
    _, test = digits_split(0)
    shape = (1, 8, 8)
    samplers = [("ddpm", sched.T)] + [("ddim", k) for k in DDIM_STEPS]

    def run(sampler: str, steps: int, y: torch.Tensor) -> torch.Tensor:
        return generate(model, sched, y, (len(y), *shape), sampler, steps, seed=0)

    y_time = torch.arange(time_batch) % 10
    timing = common.interleaved({f"{s}{k}": (lambda s=s, k=k: run(s, k, y_time)) for s, k in samplers}, repeats,
                                warmup=0)
    ref = timing[f"ddpm{sched.T}"]["median_s"]
    y = torch.arange(10).repeat_interleave(n_per_class)
    real_features = metrics.embed(clf, test.x)
    rows = []
    for s, k in samplers:
        t = time.perf_counter()
        fake = run(s, k, y)
        wall = time.perf_counter() - t
        ev = metrics.evaluate(clf, test.x, fake, y, real_features=real_features)
        med = timing[f"{s}{k}"]["median_s"]
        rows.append({"sampler": s, "steps": k, "time_ratio_vs_ddpm": med / ref, "speedup_vs_ddpm": ref / med,
                     "fid": ev["fid"], "accuracy": ev["accuracy"], "median_s_timing_batch": med,
                     "wall_s_quality_run": wall})
    # generate() slices the network's batch on CPU (same samples): one batch of 1000 vs the default
    from pfdm_core.core.nets import UNet, UNetConfig
    from pfdm_core.core.schedule import Schedule

    torch.manual_seed(0)
    big = UNet(UNetConfig(28, 1, 32, (1, 2, 2))).eval()  # the MNIST cpu network (random weights: same cost)
    n_big = 40 if args.quick else 1000
    y_big = torch.arange(n_big) % 10
    slicing = {}
    for label, ebs in (("one batch (before)", n_big), ("sliced (default)", None)):
        slicing[label] = lambda ebs=ebs: generate(big, Schedule(1000), y_big, (n_big, 1, 28, 28), "ddim", 2,
                                                  eval_batch_size=ebs)
    st = common.interleaved(slicing, repeats, warmup=0)
    slicing_speedup = st["one batch (before)"]["median_s"] / st["sliced (default)"]["median_s"]
    k_star = knee(rows)
    default = ExperimentConfig().eval.ddim_steps
    payload = {"benchmark": "sampling", "quick": args.quick, "preset": preset, "n_samples": len(y),
               "timing_batch": time_batch, "repeats": repeats, "knee_ddim_steps": k_star,
               "knee_rule": f"fewest DDIM steps with FID <= {1 + KNEE_TOLERANCE:.2f} x best FID of all samplers",
               "default_ddim_steps": default, "default_is_knee": k_star == default, "rows": rows,
               "slicing": {"what": f"DDIM 2 steps, {n_big} samples, MNIST cpu UNet", "speedup_sliced_vs_one_batch":
                           slicing_speedup, "timing": st},
               "machine": machine}
    path = common.write("sampling", payload, args.out)
    print(common.table(rows, ["sampler", "steps", "time_ratio_vs_ddpm", "speedup_vs_ddpm", "fid", "accuracy"],
                       f"Sampling the digits DDPM ({preset}): {len(y)} samples for FID, timing batch {time_batch} — "
                       f"{common.machine_line(payload['machine'])}"))
    print(f"generate(): network in slices vs one batch of {n_big} (28x28): {slicing_speedup:.2f}x faster, same samples")
    print(f"knee: DDIM {k_star} steps ({payload['knee_rule']}); default ddim_steps = {default}")
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
