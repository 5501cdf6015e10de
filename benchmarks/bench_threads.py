"""Threads: OpenMP's default (idle threads spin) vs idle threads that sleep (OMP_WAIT_POLICY=PASSIVE)
vs a short spin vs one thread vs pfdm_core's governor (N threads, 1 while another process is busy), on the digits and MNIST `cpu` UNets, on the cores as found and with busy neighbours.

Each candidate is a fresh process (the OpenMP policy is fixed when torch loads) that times a few
training steps (forward + backward + Adam); candidates are interleaved and repeated, and each
median is reported as a ratio to OpenMP's default in the same condition. Three conditions: the
machine as found (its load average is recorded), with `--busy` (default 2) processes spinning
on the cores, started by the benchmark, as when other jobs share the machine, and one busy process
that appears halfway through a run (each setting's slowdown after / before it appears). The row "pfdm_core
picks" is what pfdm_core/omp.py runs in that condition: its wait policy for the measured busy cores, governed. Writes
runs/bench/threads.json.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CANDIDATES = {"OpenMP default (N threads, idle ones spin)": {"threads": 0, "policy": None},
              "N threads, OMP_WAIT_POLICY=PASSIVE": {"threads": 0, "policy": "PASSIVE"},
              # a short spin (libgomp's GOMP_SPINCOUNT, default 300000): a candidate policy that is neither
              # catastrophic when a load appears nor slow on idle cores (measured, not yet adopted: benchmarks/README.md)
              "N threads, GOMP_SPINCOUNT=1000": {"threads": 0, "policy": None, "spin": "1000"},
              "1 thread": {"threads": 1, "policy": None},
              # pfdm_core's training loops: N spinning threads that drop to 1 while another process is busy
              # (core.omp.govern, re-decided every 0.25 s between steps); every other candidate pins its count
              "N threads, governed (pfdm_core: 1 while others are busy)": {"threads": 0, "policy": None,
                                                                           "govern": True}}

GOVERNED = "N threads, governed (pfdm_core: 1 while others are busy)"
MIDRUN_STEPS = {"digits": 60, "mnist": 24}  # steps of the mid-run condition (~6 s per half on 2 idle cores)


def spin(n: int) -> list[subprocess.Popen]:
    """n CPU-bound processes (the load of the busy conditions); stop them with `stop`."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop(spinners: list[subprocess.Popen]) -> None:
    for sp in spinners:
        sp.kill()
        sp.wait()


def worker(threads: int, steps: int, batch: int, data: str = "mnist", midrun: int = 0) -> None:
    """Print the median seconds per training step; with `midrun` > 0, that many CPU-bound processes start halfway
    through the steps (a load that appears mid-run) and the medians before and after are printed too."""
    import time

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pfdm_core.core import omp
    from pfdm_core.core.diffusion import diffusion_loss
    from pfdm_core.core.nets import UNet, UNetConfig
    from pfdm_core.core.schedule import Schedule

    if threads:
        torch.set_num_threads(threads)
    # the `cpu` presets' networks (experiment.PRESETS), without importing experiment (seconds of imports)
    net = UNetConfig(28, 1, 32, (1, 2, 2)) if data == "mnist" else UNetConfig(base_channels=32)
    torch.manual_seed(0)
    model, sched = UNet(net), Schedule(1000)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = torch.randn(batch, net.in_channels, net.image_size, net.image_size), torch.randint(0, 10, (batch,))
    times, spinners = [], []
    for i in range(steps + 1):  # the first step warms up
        if midrun and i == steps // 2 + 1:
            spinners = spin(midrun)
        t = time.perf_counter()
        omp.govern()  # as pfdm_core's training loop; a no-op unless PFDM_THREADS=auto (the governed candidate)
        loss = diffusion_loss(model, sched, x, y, 1, 1000)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    stop(spinners)
    out = {"s_per_step": statistics.median(times[1:]), "threads": torch.get_num_threads(),
           "thread_changes": len(omp._governor.changes) if omp._governor else 0}
    if midrun:
        half = steps // 2 + 1
        out.update(s_per_step_before=statistics.median(times[1:half]), s_per_step_after=statistics.median(times[half:]))
    print(json.dumps(out))


def measure(data: str, batch: int, steps: int, repeats: int, midrun: int = 0,
            candidates: dict[str, dict] | None = None) -> dict[str, list]:
    """Seconds per step of each candidate (default CANDIDATES), interleaved over `repeats` rounds of fresh processes;
    with `midrun`, the (before, after) medians of a run during which `midrun` busy processes start halfway."""
    candidates = CANDIDATES if candidates is None else candidates
    runs: dict[str, list] = {k: [] for k in candidates}
    for _ in range(repeats):
        for name, c in candidates.items():
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
            env["PFDM_THREADS"] = "auto" if c.get("govern") else "fixed"
            if c["policy"]:
                env["OMP_WAIT_POLICY"] = c["policy"]
            if c.get("spin"):
                env["GOMP_SPINCOUNT"] = c["spin"]
            out = subprocess.run([sys.executable, __file__, "--worker", str(c["threads"]), str(steps), str(batch), data,
                                  str(midrun)], env=env, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            runs[name].append((r["s_per_step_before"], r["s_per_step_after"]) if midrun else r["s_per_step"])
    return runs


def main(argv=None) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common

    from pfdm_core.core import omp

    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--busy", type=int, default=2, help="spinning processes of the loaded condition (0: skip it)")
    args = p.parse_args(argv)
    common.setup_threads(args.threads)
    machine = common.machine()
    repeats, steps = (1, 1) if args.quick else (2, 3)
    workloads = [("digits", 4)] if args.quick else [("digits", 128), ("mnist", 32)]
    conditions = ["as found"] + ([f"{args.busy} busy processes"] if args.busy and not args.quick else [])
    rows = []
    for condition in conditions:
        spinners = spin(args.busy if condition != "as found" else 0)
        try:
            busy = omp.busy_cores(0.5)
            picks = omp.choose_wait_policy(busy, os.cpu_count() or 1)
            for data, batch in workloads:
                runs = measure(data, batch, steps, repeats)
                ref = statistics.median(runs[next(iter(CANDIDATES))])
                for k, v in runs.items():
                    rows.append({"condition": condition, "busy_cores": round(busy, 2), "data": data, "batch": batch,
                                 "setting": k, "median_s_per_step": statistics.median(v),
                                 "speedup_vs_default": ref / statistics.median(v), "runs_s": v})
                # what pfdm_core runs: its wait policy, governed; PASSIVE is picked under a load, where the
                # governor runs one thread (the "1 thread" candidate)
                picked = GOVERNED if picks is None else "1 thread"
                rows.append({**{k: rows[-1][k] for k in ("condition", "busy_cores", "data", "batch")},
                             "setting": f"pfdm_core picks: {picked}",
                             "median_s_per_step": statistics.median(runs[picked]),
                             "speedup_vs_default": ref / statistics.median(runs[picked])})
        finally:
            stop(spinners)
    if not args.quick and args.busy:  # a load that appears mid-run: the policy was chosen on idle cores
        cond = "1 busy process appears mid-run"
        for data, batch in workloads:
            # long enough halves (MIDRUN_STEPS) that a governor deciding every 0.25 s is measured after it acted
            runs = measure(data, batch, MIDRUN_STEPS[data], repeats, midrun=1)
            for k, v in runs.items():
                before = statistics.median(b for b, _ in v)
                after = statistics.median(a for _, a in v)
                rows.append({"condition": cond, "busy_cores": None, "data": data, "batch": batch, "setting": k,
                             "median_s_per_step": after, "s_per_step_before_load": before,
                             "slowdown_when_load_appears": after / before, "runs_s": v})
    payload = {"benchmark": "threads", "quick": args.quick, "steps": steps, "repeats": repeats,
               "conditions": conditions, "rows": rows, "machine": machine}
    path = common.write("threads", payload, args.out)
    print(common.table(rows, ["condition", "busy_cores", "data", "batch", "setting", "median_s_per_step", "speedup_vs_default",
                              "slowdown_when_load_appears"],
                       f"Threads, cpu UNets' training step — {common.machine_line(machine)}"))
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*map(int, sys.argv[2:5]), *sys.argv[5:6], *map(int, sys.argv[6:7]))
    else:
        main()
