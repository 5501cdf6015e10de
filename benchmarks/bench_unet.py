"""Training throughput of pfdm_core's UNet vs diffusers' UNet2DModel at a matched parameter count.

One training step = forward + backward + Adam step of the eps-loss on a batch at random t,
at the three image sizes of the presets (digits 8x8x1, MNIST 28x28x1, Colorized MNIST /
CIFAR-10 32x32x3; the `cpu` preset's network of each). diffusers' UNet2DModel is configured as
the same DDPM architecture (ResNet blocks, one per level down and two up, mid-block attention,
class embedding with a null label) and its width chosen to match the parameter count; the
counts are printed. Candidates are interleaved and the median images/s compared as a ratio
(pfdm / diffusers: > 1 means pfdm_core is faster). Writes runs/bench/unet.json.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pfdm_core.core.nets import UNet, UNetConfig, count_parameters  # noqa: E402
from pfdm_core.experiment import PRESETS  # noqa: E402

SIZES = {"8x8x1 (digits)": "digits", "28x28x1 (MNIST)": "mnist", "32x32x3 (CMNIST/CIFAR)": "cmnist"}


def diffusers_unet(net: UNetConfig, width: int):
    from diffusers import UNet2DModel

    n = len(net.channel_mults)
    return UNet2DModel(sample_size=net.image_size, in_channels=net.in_channels, out_channels=net.in_channels,
                       layers_per_block=net.num_res_blocks, block_out_channels=tuple(width * m for m in net.channel_mults),
                       down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n, norm_num_groups=16,
                       num_class_embeds=net.num_classes + 1, attention_head_dim=None, dropout=net.dropout)


def matched_diffusers(net: UNetConfig, target: int):
    """diffusers' UNet2DModel of the same layout whose parameter count is nearest to `target`."""
    best = None
    for width in sorted(range(16, 4 * net.base_channels + 1, 16), key=lambda w: abs(w - net.base_channels))[:3]:
        m = diffusers_unet(net, width)
        gap = abs(count_parameters(m) - target)
        if best is None or gap < best[0]:
            best = (gap, width, m)
    return best[2], best[1]


def train_step(model, x, y, opt, call):
    t = torch.randint(1, 1001, (len(x),))
    noise = torch.randn_like(x)
    loss = F.mse_loss(call(model, x + noise, t, y), noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main(argv=None) -> dict:
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    common.setup_threads(args.threads)
    machine = common.machine()
    batch, repeats, inner = (4, 2, 1) if args.quick else (64, 9, 1)
    sizes = dict(list(SIZES.items())[:1]) if args.quick else SIZES
    try:
        import diffusers
        dversion = diffusers.__version__
    except ImportError:
        dversion = None
    rows = []
    for label, data in sizes.items():
        net = PRESETS[data]["cpu"].net
        torch.manual_seed(0)
        ours = UNet(net)
        n_ours = count_parameters(ours)
        x = torch.randn(batch, net.in_channels, net.image_size, net.image_size)
        y = torch.randint(0, net.num_classes, (batch,))
        opt_ours = torch.optim.Adam(ours.parameters(), 1e-4)
        cands = {"pfdm": lambda: [train_step(ours, x, y, opt_ours, lambda m, a, t, c: m(a, t, c)) for _ in range(inner)]}
        n_theirs = width = None
        if dversion:
            theirs, width = matched_diffusers(net, n_ours)
            n_theirs = count_parameters(theirs)
            opt_theirs = torch.optim.Adam(theirs.parameters(), 1e-4)
            cands["diffusers"] = lambda: [train_step(theirs, x, y, opt_theirs, lambda m, a, t, c: m(a, t, class_labels=c).sample)
                                          for _ in range(inner)]
        timing = common.interleaved(cands, repeats)
        ips = {k: batch * inner / v["median_s"] for k, v in timing.items()}
        rows.append({"size": label, "batch": batch, "params_pfdm": n_ours, "params_diffusers": n_theirs,
                     "diffusers_width": width, "img_s_pfdm": ips["pfdm"], "img_s_diffusers": ips.get("diffusers"),
                     "ratio_pfdm_over_diffusers": ips["pfdm"] / ips["diffusers"] if "diffusers" in ips else None,
                     "timing": timing})
    payload = {"benchmark": "unet", "quick": args.quick, "diffusers": dversion,
               "note": None if dversion else "diffusers not installed: no reference, ratio is null (pip install diffusers)",
               "rows": rows, "machine": machine}
    path = common.write("unet", payload, args.out)
    print(common.table(rows, ["size", "params_pfdm", "params_diffusers", "img_s_pfdm", "img_s_diffusers",
                              "ratio_pfdm_over_diffusers"],
                       f"UNet training throughput, forward+backward+Adam, batch {batch} "
                       f"(images/s are this run's medians; compare the ratio) — {common.machine_line(payload['machine'])}"))
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
