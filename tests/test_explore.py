"""Tests of pfdm_core.studies.explore: uploads, eps tables, the t0 widget, and the reconstruction scores."""
import re
import time

import matplotlib.pyplot as plt  # the Agg backend is set in conftest.py
import pytest
import torch

from pfdm_core import cli
from pfdm_core.attacks import reconstruction as recon
from pfdm_core.core.nets import UNet, UNetConfig
from pfdm_core.core.schedule import Schedule
from pfdm_core.privacy.mechanism import privatize
from pfdm_core.studies import explore

SCHED = Schedule()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def cli_eps(capsys, t0: int, clip: float, delta: float, accountant: str, per_pixel: bool = False) -> str:
    args = ["epsilon", "--t0", str(t0), "--delta", str(delta), "--accountant", accountant]
    cli.main(args + (["--per-pixel"] if per_pixel else ["--clip", str(clip)]))  # the per-pixel unit takes no C
    return capsys.readouterr().out.strip()


def spans(html: str) -> dict[str, str]:
    return dict(re.findall(r'class="pfdm-eps-([a-z0-9-]+)">([^<]+)<', html))


def test_uploads_equal_privatize_and_raw_at_t0_zero(x):
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    up, rescaled = explore.uploads(x, [0, 100, 690], SCHED, z, clip_norm=4.0)
    assert up.shape == (3, *x.shape)
    x_clipped = explore.clip(x, 4.0)
    assert torch.allclose(up[0], x_clipped) and torch.allclose(rescaled[0], x_clipped)
    for k, t0 in ((1, 100), (2, 690)):
        expected = privatize(x, t0, SCHED, 4.0, torch.Generator().manual_seed(3))
        assert torch.allclose(up[k], expected, atol=1e-6)
        a = float(SCHED.alpha_bar[t0])
        assert torch.allclose(rescaled[k], x_clipped + (1 / a - 1) ** 0.5 * z, atol=1e-4)


def test_eps_table_reference_values_and_analytic_below_thm51():
    table = explore.eps_table([100, 690], SCHED)
    assert round(table.loc[100, "per-pixel thm51"], 2) == 45.75
    assert abs(table.loc[100, "per-pixel analytic"] - 41.85) < 0.01
    assert round(table.loc[690, "per-image thm51"], 2) == 10.24
    assert round(table.loc[690, "per-image analytic"], 2) == 8.77
    curves = explore.eps_curves(SCHED)
    assert len(curves) == SCHED.T - 1
    for unit in ("per-image", "per-pixel"):
        assert (curves[f"{unit} analytic"] < curves[f"{unit} thm51"]).all()


def test_widget_update_shows_cli_eps(x, capsys):
    box = explore.upload_widget(x, SCHED, t0=690, clip_norm=10.0, delta=1e-5)
    c = box.controls
    assert c["t0"].description == "t0" and "pfdm-eps" in c["eps"]._dom_classes
    for t0, clip, delta in ((100, 10.0, 1e-5), (690, 10.0, 1e-5), (400, 4.0, 1e-3)):
        start = time.perf_counter()
        html = box.update(t0=t0, clip_norm=clip, delta=delta)
        assert time.perf_counter() - start < 1.0
        assert html == c["eps"].value
        got = spans(html)
        for acc in ("thm51", "analytic"):
            assert got[f"per-image-{acc}"] == cli_eps(capsys, t0, clip, delta, acc)
            assert got[f"per-pixel-{acc}"] == cli_eps(capsys, t0, clip, delta, acc, per_pixel=True)
    c["t0"].value = 693  # moving the slider itself refreshes the label and the image
    assert spans(c["eps"].value)["per-image-thm51"] == cli_eps(capsys, 693, 4.0, 1e-3, "thm51")
    assert c["image"].value[:4] == b"\x89PNG"


def test_scores_trivial_cases(x):
    s = recon.scores(x, x)
    assert s["l2"] == pytest.approx(0.0, abs=1e-6)
    assert s["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert s["reid"] == 1.0
    assert recon.reid_rate(x.roll(1, 0), x) == 0.0  # every guess is someone else's image
    noisy = x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    assert (recon.ssim(noisy, x) < 1).all()
    assert torch.allclose(recon.ssim(noisy, x), recon.ssim(x, noisy))
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    chance = recon.chance_scores(x, labels)
    assert chance["reid"] == pytest.approx(1 / len(x)) and chance["l2"] > 0
    assert chance["reid_label"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 3 * 3 + 1) / 6)
    same = [(0, 1), (2, 3), (2, 4), (3, 4)]  # the pairs that share a label
    assert chance["l2_label"] == pytest.approx(sum(float((x[a] - x[b]).norm()) for a, b in same) / 4, rel=1e-5)
    # with labels, a guess can only match candidates of its own class
    assert recon.reid_rate(x[[1, 0, 2, 3, 4, 5]], x, labels) == pytest.approx(4 / 6)


def test_reconstruction_sweep_tiny_model(x):
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=8)).eval()
    y = torch.arange(len(x)) % 10
    df, images = explore.reconstruction_sweep(model, SCHED, x, y, [10, 500], seed=0, num_steps=2)
    assert len(df) == 2 * (len(explore.RECONSTRUCTIONS) + len(explore.ML_TESTS))
    assert df["reid"].between(0, 1).all() and df.dropna()["l2"].ge(0).all()
    for t0 in (10, 500):
        for method in explore.RECONSTRUCTIONS:
            guess = images[t0][method]
            assert guess.shape == x.shape and guess.abs().max() <= 1
    # at t0 = 10 the upload barely differs from the image: the ML tests re-identify all
    assert (df.query("t0 == 10 and method in @explore.ML_TESTS").reid == 1.0).all()


def test_tile_and_figures(x):
    assert explore.tile(torch.zeros(2, 3, 1, 8, 8)).shape == (2 * 9 + 1, 3 * 9 + 1)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    figs = [explore.plot_upload_grid(x, [0, 100], SCHED, z), explore.plot_static_fallback(x, SCHED, z),
            explore.plot_eps_curves(explore.eps_curves(Schedule(50)), [(10, 5.0, "ref", (5, 5))])]
    assert all(isinstance(f, plt.Figure) for f in figs)
    plt.close("all")
