"""The calibration workload: seconds per training step of the digits `cpu` UNet.

Times measured on one machine mean little on another. Every time the project reports (`make run`'s
summary, `make bench`) is therefore also given as a multiple of this workload measured in the same run:

    ratio = seconds of the task / seconds of one calibration step

One calibration step is one training step of notebook 04's digits UNet at its `cpu` batch (forward of
the eps-prediction loss, backward, Adam) on fixed random data, with the threads of the calling
process; the median over `repeats` after `warmup` steps.
"""
from __future__ import annotations

import statistics
import time

WORKLOAD = "one training step of the digits cpu UNet (eps-loss forward + backward + Adam)"
# notebook 04's digits UNet and batch at `cpu` (experiment.PRESETS; tests/test_calibrate.py keeps them equal):
# written here because the core floor does not import the experiment
NET, BATCH, LR, T = dict(image_size=8, in_channels=1, base_channels=32, channel_mults=(1, 2)), 64, 1e-3, 1000


def step_seconds(repeats: int = 15, warmup: int = 3, batch: int | None = None) -> float:
    """Median seconds of one calibration step (see the module docstring)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    import torch

    from pfdm_core.core.diffusion import diffusion_loss
    from pfdm_core.core.nets import UNet, UNetConfig
    from pfdm_core.core.schedule import Schedule

    net = UNetConfig(**NET)
    batch = batch or BATCH
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():  # the caller's random stream is left as it was
        torch.manual_seed(0)
        model, sched = UNet(net), Schedule(T)
        opt = torch.optim.Adam(model.parameters(), LR)
        x = torch.randn(batch, net.in_channels, net.image_size, net.image_size, generator=gen)
        y = torch.randint(0, net.num_classes, (batch,), generator=gen)
        times = []
        for i in range(warmup + repeats):
            start = time.perf_counter()
            loss = diffusion_loss(model, sched, x, y, 1, sched.T, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> dict:
    """What ran it: CPU model, usable cores, torch and Python versions, UTC date."""
    import datetime
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
