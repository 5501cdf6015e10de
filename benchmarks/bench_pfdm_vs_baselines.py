"""PFDM vs its baselines, per client: client-side compute, a smaller personal network, bytes sent.

* Compute: every method's client trains the same UNet (`cfg.net`); PFDM's client trains only the
  personal denoiser (steps t <= t0; a step costs as much as a full-chain step: the network does
  not depend on t), local-only a full DDPM, a FedAvg client the rounds it is drawn for
  (expected rounds x fraction x local steps), a centralized client nothing. The per-step cost of
  each network is measured (interleaved, median) and reported relative to local-only.
* Does a smaller personal network suffice? On digits (client 0, seed 0, t0 = 693) PFDM's
  personal denoiser at base width 32 (the default, 800 steps; notebook 04's checkpoints are
  reused when present), at width 16, and at width 32 with half the steps; classifier FID of the
  chained samples (DDIM 25) on client 0's majority / minority classes.
* Bytes per client (client 0's split, float32 images and weights, int64 labels): PFDM uploads
  its N privatized images once and downloads the shared model once; FedAvg sends the model down
  and up in each round it takes part in (expected rounds x fraction), then downloads the final one;
  centralized uploads raw images. Computed from each dataset's presets. Writes runs/bench/pfdm.json.
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import torch  # noqa: E402

from pfdm_core import experiment  # noqa: E402
from pfdm_core.core.diffusion import diffusion_loss  # noqa: E402
from pfdm_core.core.nets import UNet, count_parameters  # noqa: E402
from pfdm_core.core.paths import REPO_ROOT  # noqa: E402
from pfdm_core.core.schedule import Schedule  # noqa: E402
from pfdm_core.data.partition import client_classes
from pfdm_core.methods.pfdm import (  # noqa: E402
    client_train_personal,
    client_upload,
    pfdm_sample,
    server_train_shared,
)

BYTES_PRESETS = [("digits", "cpu"), ("mnist", "cpu"), ("cmnist", "cpu"), ("mnist", "paper"), ("cifar10", "paper")]


def client_images(cfg: experiment.ExperimentConfig, client: int = 0) -> int:
    majority, minority = client_classes(client, cfg.split.num_clients, cfg.net.num_classes)
    return len(majority) * cfg.split.majority_per_class + len(minority) * cfg.split.minority_per_class


def bytes_per_client(cfg: experiment.ExperimentConfig, params: int) -> dict:
    n, d = client_images(cfg), cfg.net.in_channels * cfg.net.image_size ** 2
    images, model = n * (d * 4 + 8), params * 4
    rounds = cfg.fedavg.rounds * cfg.fedavg.fraction  # expected rounds a client takes part in
    out = {"images": n, "dim": d, "params": params,
           "pfdm_up": images, "pfdm_down": model, "fedavg_up": rounds * model, "fedavg_down": (rounds + 1) * model,
           "central_up": images, "central_down": model, "local_up": 0, "local_down": 0}
    for m in ("pfdm", "fedavg", "central", "local"):
        out[f"{m}_total"] = out[f"{m}_up"] + out[f"{m}_down"]
    out["fedavg_over_pfdm"] = out["fedavg_total"] / out["pfdm_total"]
    out["fedavg_up_over_pfdm_up"] = out["fedavg_up"] / out["pfdm_up"]
    return out


def _copy_finished(src_dir: Path | None, dst_dir: Path, name: str) -> None:
    """Copy checkpoint `name` of notebook 04 (read only) into our folder, so nothing of its is written."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    if src_dir is not None and (src_dir / name).exists() and not (dst_dir / name).exists():
        shutil.copy(src_dir / name, dst_dir / name)


def main(argv=None) -> dict:
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    common.setup_threads(args.threads)
    machine = common.machine()
    out = Path(args.out) if args.out else common.default_out()
    preset = "smoke" if args.quick else "cpu"
    cfg = experiment.PRESETS["digits"][preset]
    t0, seed, sched = cfg.privacy.t0s[0], 0, Schedule(cfg.T)
    tc = replace(cfg.train, seed=seed, checkpoint_every=max(1, cfg.train.steps // 4))
    split = experiment.make_split(cfg, seed)
    me = split.clients[cfg.eval.client]
    ckdir = out / f"checkpoints_digits_{preset}"
    reuse_dir = REPO_ROOT / "runs" / preset / "digits" / f"seed{seed}"  # notebook 04's models, read only
    if not args.quick and (reuse_dir / "config.json").exists():
        try:
            experiment.check_folder(reuse_dir, cfg)
        except ValueError:
            reuse_dir = None
    else:
        reuse_dir = None

    def make(base: int):  # the runs' factory at another width
        return experiment.model_factory(cfg.override(net=replace(cfg.net, base_channels=base)), seed)

    uploads = [client_upload(d, t0, sched, cfg.privacy.clip_norm, seed=seed * 100 + m, delta=cfg.privacy.delta)
               for m, d in enumerate(split.clients)]  # as experiment.train_method("pfdm", ...)
    shared_file = f"pfdm_shared_t0{t0}.pt"
    _copy_finished(reuse_dir, ckdir, shared_file)
    shared = server_train_shared(uploads, make(cfg.net.base_channels), sched, tc, ckdir / shared_file, progress=False)
    base = cfg.net.base_channels
    variants = {f"personal w{base}, {tc.steps} steps (default)": (base, tc.steps),
                f"personal w{base // 2}, {tc.steps} steps": (base // 2, tc.steps),
                f"personal w{base}, {tc.steps // 2} steps": (base, tc.steps // 2)}
    majority, _ = client_classes(cfg.eval.client, cfg.split.num_clients, cfg.net.num_classes)
    clf = experiment.metric_classifier(cfg, split, seed)
    ref = experiment.metrics.embed(clf, split.test.x)
    y = torch.arange(cfg.net.num_classes).repeat_interleave(cfg.eval.n_per_class)
    shape = (len(y), cfg.net.in_channels, cfg.net.image_size, cfg.net.image_size)
    quality = {}
    for name, (width, steps) in variants.items():
        ctc = replace(tc, steps=steps, checkpoint_every=max(1, steps // 4))
        file = f"pfdm_personal_c{cfg.eval.client}_t0{t0}" + ("" if (width, steps) == (base, tc.steps) else f"_w{width}_s{steps}")
        _copy_finished(reuse_dir, ckdir, f"{file}.pt")
        personal = client_train_personal(me, t0, make(width), sched, ctc, cfg.privacy.clip_norm, ckdir / f"{file}.pt",
                                         progress=False)
        fake = pfdm_sample(shared, personal, sched, t0, y, shape, "ddim", cfg.eval.ddim_steps, seed)
        summary, _ = experiment.evaluate_client(clf, fake, y, split.test, majority, None, ref)
        quality[name] = {"width": width, "steps": steps, "params": count_parameters(personal), **summary}

    # per-step cost of each client network, interleaved (batch of the preset, steps t <= t0 vs all)
    nets = {"full w%d" % base: (make(base)(), 1, cfg.T), "personal w%d" % base: (make(base)(), 1, t0),
            "personal w%d" % (base // 2): (make(base // 2)(), 1, t0)}
    xb, yb = me.x[: cfg.train.batch_size], me.y[: cfg.train.batch_size]
    opts = {k: torch.optim.Adam(m.parameters(), 1e-3) for k, (m, _, _) in nets.items()}

    def step(k):
        m, lo, hi = nets[k]
        loss = diffusion_loss(m, sched, xb, yb, lo, hi)
        opts[k].zero_grad()
        loss.backward()
        opts[k].step()

    reps, inner = (1, 1) if args.quick else (7, 5)
    timing = common.interleaved({k: (lambda k=k: [step(k) for _ in range(inner)]) for k in nets}, reps)
    full = timing["full w%d" % base]["median_s"]
    step_ratio = {k: v["median_s"] / full for k, v in timing.items()}
    fed_steps = cfg.fedavg.rounds * cfg.fedavg.fraction * max(1, cfg.train.steps // cfg.fedavg.rounds)
    n_params = count_parameters(make(base)())
    b = bytes_per_client(cfg, n_params)
    default_q = quality[next(iter(variants))]
    rows = []
    for name, q in quality.items():
        rows.append({"method": "PFDM " + name, "client_steps": q["steps"],
                     "client_compute_vs_local": q["steps"] / cfg.train.steps * step_ratio["personal w%d" % q["width"]],
                     "bytes_per_client": b["pfdm_total"], "bytes_vs_pfdm": 1.0,
                     "fid_major": q["fid_major"], "fid_minor": q["fid_minor"], "fid_avg": q["fid_avg"],
                     "fid_minor_vs_default": q["fid_minor"] / default_q["fid_minor"]})
    rows += [{"method": "local-only", "client_steps": cfg.train.steps, "client_compute_vs_local": 1.0,
              "bytes_per_client": 0, "bytes_vs_pfdm": 0.0},
             {"method": "FedAvg (expected per client)", "client_steps": fed_steps,
              "client_compute_vs_local": fed_steps / cfg.train.steps, "bytes_per_client": b["fedavg_total"],
              "bytes_vs_pfdm": b["fedavg_over_pfdm"]},
             {"method": "centralized (raw upload)", "client_steps": 0, "client_compute_vs_local": 0.0,
              "bytes_per_client": b["central_total"], "bytes_vs_pfdm": b["central_total"] / b["pfdm_total"]}]
    byte_rows = []
    for data, p in BYTES_PRESETS:
        c = experiment.PRESETS[data][p]
        bb = bytes_per_client(c, count_parameters(UNet(c.net)))
        byte_rows.append({"data": data, "preset": p, **bb})
    payload = {"benchmark": "pfdm_vs_baselines", "quick": args.quick, "preset": preset, "t0": t0, "seed": seed,
               "reused_notebook04_checkpoints": reuse_dir is not None, "step_time_ratio_vs_full": step_ratio,
               "timing": timing, "quality": quality, "rows": rows, "bytes": byte_rows, "machine": machine}
    path = common.write("pfdm", payload, args.out)
    print(common.table(rows, ["method", "client_steps", "client_compute_vs_local", "bytes_per_client", "bytes_vs_pfdm",
                              "fid_major", "fid_minor", "fid_minor_vs_default"],
                       f"Client 0 on digits ({preset}, t0 = {t0}, seed {seed}; compute = steps x measured per-step "
                       f"cost, relative to local-only) — {common.machine_line(payload['machine'])}"))
    print()
    print(common.table(byte_rows, ["data", "preset", "images", "params", "pfdm_total", "fedavg_total",
                                   "fedavg_over_pfdm", "fedavg_up_over_pfdm_up"],
                       "Bytes per client (client 0; PFDM = one upload of N images + one model download)"))
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
