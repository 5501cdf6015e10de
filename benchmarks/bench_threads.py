"""Threads: torch's CPU default (one thread per core, OpenMP threads spinning while idle) vs
one thread, and vs idle threads that sleep (OMP_WAIT_POLICY=PASSIVE), on the MNIST `cpu` UNet.

Each candidate is a fresh process (the OpenMP policy is fixed when torch loads) that times a few
training steps (forward + backward + Adam, batch 64); candidates are interleaved and repeated,
and each median is reported as a ratio to torch's default. On an idle machine two threads beat
one; on cores shared with other jobs, spinning threads of one process wait on a descheduled
sibling at every barrier and the default can be many times slower. The load average at the
start says which case the run measured. Writes runs/bench/threads.json.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CANDIDATES = {"default (N threads, spinning)": {"threads": 0, "policy": "ACTIVE"},
              "N threads, OMP_WAIT_POLICY=PASSIVE": {"threads": 0, "policy": "PASSIVE"},
              "1 thread": {"threads": 1, "policy": "ACTIVE"}}


def worker(threads: int, steps: int, batch: int, data: str = "mnist") -> None:
    import time

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pfdm_core.diffusion import diffusion_loss
    from pfdm_core.nets import UNet, UNetConfig
    from pfdm_core.schedule import Schedule

    if threads:
        torch.set_num_threads(threads)
    # the `cpu` presets' networks (experiment.PRESETS), without importing experiment (seconds of imports)
    net = UNetConfig(28, 1, 32, (1, 2, 2)) if data == "mnist" else UNetConfig(base_channels=32)
    torch.manual_seed(0)
    model, sched = UNet(net), Schedule(1000)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = torch.randn(batch, net.in_channels, net.image_size, net.image_size), torch.randint(0, 10, (batch,))
    times = []
    for _ in range(steps + 1):  # the first step warms up
        t = time.perf_counter()
        loss = diffusion_loss(model, sched, x, y, 1, 1000)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    print(json.dumps({"s_per_step": statistics.median(times[1:]), "threads": torch.get_num_threads()}))


def main(argv=None) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common

    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    common.setup_threads(args.threads)
    machine = common.machine()
    repeats, steps, batch, data = (1, 1, 4, "digits") if args.quick else (3, 2, 32, "mnist")
    runs: dict[str, list[float]] = {k: [] for k in CANDIDATES}
    for _ in range(repeats):
        for name, c in CANDIDATES.items():
            env = {**os.environ, "OMP_WAIT_POLICY": c["policy"]}
            env.pop("OMP_NUM_THREADS", None)
            out = subprocess.run([sys.executable, __file__, "--worker", str(c["threads"]), str(steps), str(batch), data],
                                 env=env, capture_output=True, text=True, check=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1])["s_per_step"])
    ref = statistics.median(runs[next(iter(CANDIDATES))])
    rows = [{"setting": k, "median_s_per_step": statistics.median(v), "speedup_vs_default": ref / statistics.median(v),
             "runs_s": v} for k, v in runs.items()]
    payload = {"benchmark": "threads", "quick": args.quick, "data": data, "batch": batch, "steps": steps, "repeats": repeats,
               "rows": rows, "machine": machine}
    path = common.write("threads", payload, args.out)
    print(common.table(rows, ["setting", "median_s_per_step", "speedup_vs_default"],
                       f"Threads, {data} cpu UNet training step, batch {batch} — {common.machine_line(machine)}"))
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*map(int, sys.argv[2:5]), *sys.argv[5:6])
    else:
        main()
