"""Real-dataset loaders: roots and messages, Colorized MNIST, a fake CelebA folder, paper presets, rerun."""
import json
import os
import subprocess
import sys

import matplotlib.colors as mcolors
import numpy as np
import pytest
import torch
from PIL import Image

from pfdm_core import experiment
from pfdm_core.core import paths as data_mod
from pfdm_core.core.diffusion import diffusion_loss
from pfdm_core.core.nets import UNet, count_parameters
from pfdm_core.core.paths import REPO_ROOT
from pfdm_core.core.schedule import Schedule
from pfdm_core.data import images as datasets
from pfdm_core.data.partition import cluster_partition
from pfdm_core.data.small import Dataset


def _mnist_or_skip():
    try:
        return datasets.load_mnist(False)
    except FileNotFoundError:
        pytest.skip("MNIST is not in any data root ($PFDM_DATA, ./data, ../shared/data)")


# ----------------------------------------------------------------------------- roots and messages
@pytest.fixture
def no_roots(tmp_path, monkeypatch):
    """Only $PFDM_DATA = an empty folder is a candidate root."""
    monkeypatch.setattr(data_mod, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PFDM_DATA", str(empty))
    return empty


@pytest.mark.parametrize("loader, folder, command", [
    (lambda: datasets.load_mnist(), "MNIST/raw", "download mnist"),
    (lambda: datasets.load_cifar10(), "cifar-10-batches-py", "download cifar10"),
])
def test_missing_data_names_the_folder_roots_and_download_command(no_roots, loader, folder, command):
    datasets._mnist.cache_clear()
    with pytest.raises(FileNotFoundError) as e:
        loader()
    msg = str(e.value)
    assert folder in msg and str(no_roots) in msg and "PFDM_DATA" in msg and f"python -m pfdm_core {command}" in msg
    assert not datasets.cifar10_available()


def test_root_order_env_then_cwd(tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "REPO_ROOT", tmp_path / "repo")
    env, cwd = tmp_path / "env", tmp_path / "cwd"
    for base in (env, cwd / "data"):
        (base / "MNIST" / "raw").mkdir(parents=True)
        (base / "MNIST" / "raw" / "train-images-idx3-ubyte").touch()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("PFDM_DATA", str(env))
    assert data_mod.data_root("MNIST/raw") == env
    monkeypatch.delenv("PFDM_DATA")
    assert data_mod.data_root("MNIST/raw") == cwd / "data"


def test_mnist_shapes_range_and_padding():
    test = _mnist_or_skip()
    assert test.x.shape == (10000, 1, 28, 28) and test.x.dtype == torch.float32
    assert test.x.min() == -1 and test.x.max() == 1 and torch.bincount(test.y).min() > 800
    padded = datasets.load_mnist(False, image_size=32)
    assert padded.x.shape == (10000, 1, 32, 32)
    assert torch.equal(padded.x[:, :, 2:30, 2:30], test.x) and (padded.x[:, :, :2] == -1).all()
    with pytest.raises(ValueError, match="image_size for MNIST must be 28 or 32"):
        datasets.load_mnist(False, image_size=30)


# ----------------------------------------------------------------------------- Colorized MNIST
def test_hsv_matches_matplotlib():
    g = torch.Generator().manual_seed(0)
    h, s, v = torch.rand(3, 500, generator=g)
    ours = datasets.hsv_to_rgb(h, s, v).numpy()
    ref = mcolors.hsv_to_rgb(torch.stack([h, s, v], 1).numpy())
    assert np.allclose(ours, ref, atol=1e-6)


def _grey_digits(n=40):
    from pfdm_core.data.small import load_digits

    return load_digits().subset(range(n))


def test_colorize_is_reproducible_and_cluster_coloured():
    d = _grey_digits()
    a, b = datasets.colorize_cluster(d, 0, seed=3), datasets.colorize_cluster(d, 0, seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, d.y) and a.x.shape == (40, 3, 8, 8)
    assert not torch.equal(a.x, datasets.colorize_cluster(d, 0, seed=4).x)
    assert a.x.min() >= -1 and a.x.max() <= 1
    assert torch.equal(a.x[:, :1] < -0.999, a.x[:, 1:2] < -0.999)  # the ground stays black in every channel
    warm, cool = datasets.stroke_hue(a.x), datasets.stroke_hue(datasets.colorize_cluster(d, 1, 3).x)
    assert datasets.in_band(warm, 0).all() and datasets.in_band(cool, 1).all()
    assert not datasets.in_band(warm, 1).any() and not datasets.in_band(cool, 0).any()


def test_colorize_errors():
    d = _grey_digits(4)
    with pytest.raises(ValueError, match="grey images"):
        datasets.colorize(torch.zeros(4, 3, 8, 8), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"rgb must have shape \(4, 3\)"):
        datasets.colorize(d.x, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="cluster must be one of"):
        datasets.cluster_colors(4, 2, 0)


def test_cmnist_split_is_deterministic_and_per_cluster():
    _mnist_or_skip()
    cfg = experiment.preset_config("smoke", "cmnist")
    a, b = experiment.make_split(cfg, 0), experiment.make_split(cfg, 0)
    for da, db in zip(a.clients + [a.test], b.clients + [b.test]):
        assert torch.equal(da.x, db.x) and torch.equal(da.y, db.y)
    assert a.clients[0].x.shape[1:] == (3, 32, 32)
    hue = lambda d: datasets.stroke_hue(d.x)
    assert datasets.in_band(hue(a.clients[0]), 0).all() and datasets.in_band(hue(a.clients[-1]), 1).all()
    assert datasets.in_band(hue(a.test), 0).all()  # client 0's reference is painted in its colours
    assert not torch.equal(experiment.make_split(cfg, 1).clients[0].x[:5], a.clients[0].x[:5])


# ----------------------------------------------------------------------------- CelebA
ATTRS = ["5_o_Clock_Shadow", "Male", "Smiling", "Young"]


def _fake_celeba(root, n=12):
    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, parts = [], []
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(base / "img_align_celeba" / name)
        male, smiling = i % 2, (i // 2) % 2
        vals = [-1, 2 * male - 1, 2 * smiling - 1, 1]
        rows.append(name + "  " + " ".join(f"{v:2d}" for v in vals))
        parts.append(f"{name} {0 if i < 8 else 2}")
    (base / "list_attr_celeba.txt").write_text(f"{n}\n" + " ".join(ATTRS) + " \n" + "\n".join(rows) + "\n")
    (base / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")


def test_celeba_fake_folder(tmp_path, monkeypatch):
    _fake_celeba(tmp_path)
    monkeypatch.setenv("PFDM_DATA", str(tmp_path))
    train = datasets.load_celeba("train", ("Male", "Smiling"), image_size=16)
    assert train.x.shape == (8, 3, 16, 16) and train.x.min() >= -1 and train.x.max() <= 1
    assert train.y.tolist() == [2 * (i % 2) + (i // 2) % 2 for i in range(8)]  # label = 2 * Male + Smiling
    test = datasets.load_celeba("test", ("Smiling",), image_size=8, root=tmp_path)
    assert test.x.shape == (4, 3, 8, 8) and test.y.tolist() == [0, 0, 1, 1]
    assert len(datasets.load_celeba("all", ("Male",), 8, limit=5)) == 5
    with pytest.raises(ValueError, match="unknown CelebA attribute.*'Bald'"):
        datasets.load_celeba("train", ("Bald",), 8)
    with pytest.raises(ValueError, match="split must be one of"):
        datasets.load_celeba("val", ("Male",), 8)


def test_celeba_missing_names_the_layout(no_roots):
    with pytest.raises(FileNotFoundError, match="celeba/list_attr_celeba.txt"):
        datasets.load_celeba()


# ----------------------------------------------------------------------------- presets
@pytest.mark.parametrize("data, channels", [("cifar10", 3), ("mnist", 1)])
def test_paper_preset_two_tiny_training_steps(data, channels):
    cfg = experiment.preset_config("paper", data)
    assert (cfg.split.majority_per_class, cfg.split.minority_per_class) == ((4950 if data == "cifar10" else 5000), 50)
    assert (cfg.net.in_channels, cfg.net.image_size, cfg.T) == (channels, 32, 1000)
    torch.manual_seed(0)
    model = UNet(cfg.net)
    assert 35.7e6 < count_parameters(model) < 35.8e6
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    x, y = torch.rand(2, channels, 32, 32) * 2 - 1, torch.tensor([0, 7])
    before = model.stem.weight.detach().clone()
    for _ in range(2):
        loss = diffusion_loss(model, Schedule(cfg.T), x, y, 1, cfg.T)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.stem.weight)


def _train_labels(data: str, seed: int) -> np.ndarray:
    """Labels of the training pool with the dataset's real per-class counts (no image is loaded)."""
    if data == "digits":  # bundled: the real split of the seed
        return datasets.load_split("digits", seed)[0].y.numpy()
    return np.repeat(np.arange(10), datasets.TRAIN_CLASS_COUNTS[data])


@pytest.mark.parametrize("data, preset", [(d, p) for d in experiment.PRESETS for p in experiment.PRESETS[d]])
def test_every_preset_builds_its_split(data, preset):
    """The index split of every (dataset, preset), the paper's scale included, from the per-class counts."""
    if data == "celeba":
        pytest.skip("CelebA's per-class counts depend on the attributes and need list_attr_celeba.txt (not here)")
    cfg = experiment.preset_config(preset, data)
    for seed in (0, 1, 2):
        labels = _train_labels(data, seed)
        parts = cluster_partition(labels, cfg.split.num_clients, cfg.split.majority_per_class, cfg.split.minority_per_class, seed)
        assert len(parts) == cfg.split.num_clients and not set(parts[0]) & set(parts[-1])
        counts = np.bincount(labels[parts[0]], minlength=10)
        assert sorted(set(counts.tolist())) == sorted({cfg.split.majority_per_class, cfg.split.minority_per_class})


def test_four_clients_at_the_paper_scale_do_not_fit():
    """The control: the split as first landed (4 clients x 5000) asks for 10,100 images of a class."""
    with pytest.raises(ValueError, match="too few images"):
        cluster_partition(_train_labels("mnist", 0), 4, 5000, 50, 0)


def test_every_dataset_has_three_presets_and_matching_nets():
    for data, table in experiment.PRESETS.items():
        assert set(table) == {"smoke", "cpu", "paper"}, data
        assert all(cfg.data == data for cfg in table.values()), data
    assert experiment.preset_config("cpu", "celeba").net.num_classes == 4
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        experiment.preset_config("cpu", "svhn")


def test_split_refuses_a_net_of_the_wrong_shape(monkeypatch):
    monkeypatch.setattr(datasets, "load_split", lambda *a: (Dataset(torch.zeros(1000, 1, 8, 8), torch.arange(1000) % 10),) * 2)
    cfg = experiment.preset_config("smoke", "cifar10")
    with pytest.raises(ValueError, match=r"images \(1, 8, 8\) but the net expects \(3, 32, 32\)"):
        experiment.make_split(cfg, 0)


# ----------------------------------------------------------------------------- rerun.py
def test_rerun_smoke_collects_a_summary(tmp_path):
    out = tmp_path / "rerun"
    env = {**__import__("os").environ, "PFDM_RUNS": str(tmp_path / "runs")}
    env.pop("PFDM_PRESET", None)
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "rerun.py"), "--preset", "smoke", "-n", "01",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "smoke"
    assert [n["notebook"] for n in summary["notebooks"]] == ["01_gaussian_mixture_toy.ipynb"]
    assert summary["notebooks"][0]["status"] == "ok"
    nb = json.loads((out / "01_gaussian_mixture_toy.ipynb").read_text())
    assert nb["metadata"]["papermill"]["parameters"] == {"preset": "smoke"}
    assert list((out / "figures").glob("01_*.png"))  # figures beside the run, not in figures/


def test_the_tour_covers_every_notebook_at_a_cheap_preset():
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import rerun

    names = [p.name for p in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
    params = [rerun.tour_parameters(n) for n in names]  # a notebook without an entry raises
    assert all(p["preset"] in ("smoke", "cpu") for p in params)
    assert rerun.tour_parameters("04_pfdm_digits.ipynb")["seeds"] == [0]
    with pytest.raises(SystemExit, match="no entry in the tour"):
        rerun.tour_parameters("99_new.ipynb")
    # its lanes run every notebook once, and a notebook that reuses another's cache after it, in its lane
    assert sorted(p for lane in rerun.LANES for p in lane) == sorted(rerun.TOUR) == sorted(n[:2] for n in names)
    env = rerun.lane_env(len(rerun.LANES))  # the cores shared out, pinned: two lanes never oversubscribe them
    assert env["PFDM_THREADS"] == "fixed" and int(env["OMP_NUM_THREADS"]) == max(1, len(os.sched_getaffinity(0)) // 2)
    for first, then in (("02", "03"), ("08", "09")):
        lane, = [lane for lane in rerun.LANES if then in lane]
        assert first in lane and lane.index(first) < lane.index(then)


def test_the_tour_never_writes_into_the_committed_runs(tmp_path, monkeypatch):
    """Without PFDM_RUNS, the tour's models and results go under its --out folder, and PFDM_PRESET is cleared."""
    import os
    from pathlib import Path

    import papermill

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import rerun

    for var in ("PFDM_RUNS", "PFDM_PRESET", "PFDM_FIGURES"):  # recorded, so that the test restores them
        monkeypatch.setenv(var, "x")
        monkeypatch.delenv(var)
    monkeypatch.setenv("PFDM_PRESET", "smoke")  # would override every notebook's preset if left set
    seen = []

    def execute(nb, out, parameters, **kw):  # records what papermill was asked, and writes the copy as it would
        seen.append((Path(nb).name, parameters, os.environ.get("PFDM_RUNS"), os.environ.get("PFDM_PRESET")))
        Path(out).write_text(Path(nb).read_text())

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    out = tmp_path / "tour"
    pair = ["01", "03"]  # in one lane: executed in its order in this process, where papermill is replaced
    assert any(set(pair) <= set(lane) for lane in rerun.LANES)
    report = rerun.rerun(None, pair, out)
    assert sorted(s[0] for s in seen) == ["01_gaussian_mixture_toy.ipynb", "03_t0_privacy_mechanism.ipynb"]
    assert all(s[1] == rerun.TOUR[s[0][:2]] for s in seen)
    assert {s[2] for s in seen} == {str(out.resolve())} and {s[3] for s in seen} == {None}
    assert report["preset"] == "tour" and [n["status"] for n in report["notebooks"]] == ["ok", "ok"]


def test_the_tour_cli_runs_a_notebook_at_its_parameters(tmp_path):
    """`--tour` passes each notebook its TOUR parameters, in its lane (01 and 07 are in different lanes: two worker
    processes side by side); figures and summary go beside the executed copies."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import rerun

    out = tmp_path / "tour"
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("PFDM_RUNS", "PFDM_PRESET")}
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "rerun.py"), "--tour", "-n", "01", "07",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "tour" and summary["total_seconds"] > 0
    first, seventh = summary["notebooks"]
    assert first["parameters"] == {"preset": "cpu"} and first["status"] == "ok" == seventh["status"]
    assert [first["lane"], seventh["lane"]] == [i for p in ("01", "07") for i, lane in enumerate(rerun.LANES) if p in lane]
    assert first["lane"] != seventh["lane"]
    nb = json.loads((out / "01_gaussian_mixture_toy.ipynb").read_text())
    assert nb["metadata"]["papermill"]["parameters"] == {"preset": "cpu"}
    assert list((out / "figures").glob("01_*.png"))
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "rerun.py"), "--tour", "--preset", "cpu"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0 and "drop --preset" in proc.stderr


def test_rerun_unknown_notebook_or_preset(tmp_path):
    for argv, msg in [(["--preset", "huge"], "unknown preset 'huge'"), (["-n", "99"], "no notebook matches")]:
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "rerun.py"), "--out", str(tmp_path), *argv],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and msg in proc.stderr + proc.stdout
