"""Bad input, interrupted runs and damaged files: a clean one-line error or a valid result, never a traceback
from inside a dependency, never a silent wrong answer, never lost work (core.checkpoint, core.paths)."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import FrozenInstanceError, replace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pfdm_core import cli
from pfdm_core.core import checkpoint as ckpt
from pfdm_core.core import paths
from pfdm_core.core.nets import UNet, UNetConfig
from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig, train
from pfdm_core.data import images
from pfdm_core.data.small import Dataset
from pfdm_core.evaluation import classifier
from pfdm_core.experiment import FLAT, ExperimentConfig
from pfdm_core.privacy.mechanism import clip, epsilon

S = Schedule(100)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ANY = st.one_of(st.integers(-10**9, 10**9), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                st.text(max_size=6), st.none())
NUMBER_TEXT = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                        st.sampled_from(["", "nan", "inf", "-inf", "1e200", "1e-300", "abc", "0x10", "1,2"]))


# ----------------------------------------------------------------------------- property tests
def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@FAST
@given(t0=NUMBER_TEXT, c=NUMBER_TEXT, delta=NUMBER_TEXT, T=st.integers(-5, 5000).map(str))
def test_cli_epsilon_any_argument(capsys, t0, c, delta, T):
    """`epsilon` prints one non-negative number, or one error line with status 2."""
    code, out, err = _cli(["epsilon", "--t0", t0, "--clip", c, "--delta", delta, "--T", T], capsys)
    if code == 0:
        assert float(out) >= 0 and not err
    else:
        assert code == 2 and err.startswith("pfdm_core: error: ") and err.count("\n") == 1 and not out


@FAST
@given(eps=NUMBER_TEXT, c=NUMBER_TEXT, pixels=NUMBER_TEXT, per_pixel=st.booleans())
def test_cli_t0_any_argument(capsys, eps, c, pixels, per_pixel):
    argv = ["t0", "--epsilon", eps, "--pixels", pixels] + (["--per-pixel"] if per_pixel else ["--clip", c])
    code, out, err = _cli(argv, capsys)
    if code == 0:
        assert 1 <= int(out) <= 999 and not err
    else:
        assert code == 2 and err.startswith("pfdm_core: error: ") and err.count("\n") == 1


NUMERIC_FIELDS = [name for name in FLAT if name not in ("t0s", "partition", "dp_accountant")] + ["T"]


@FAST
@given(name=st.sampled_from(NUMERIC_FIELDS), value=ANY)
def test_experiment_config_any_value(name, value):
    """A config field takes a valid value or refuses it in one line that names the field (ValueError)."""
    try:
        cfg = ExperimentConfig().override(**{name: value})
    except ValueError as e:
        assert name.split("_")[0] in str(e) or name in str(e), str(e)
        assert "\n" not in str(e)
        return
    v = cfg.flat()[name]
    assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@FAST
@given(t0s=st.lists(st.one_of(st.integers(-10, 2000), st.floats(allow_nan=True)), min_size=1, max_size=3))
def test_experiment_config_t0s(t0s):
    try:
        cfg = ExperimentConfig().override(t0s=tuple(t0s))
    except ValueError as e:
        assert "t0" in str(e)
        return
    assert all(1 <= t <= cfg.T - 1 and int(t) == t for t in cfg.privacy.t0s)


@FAST
@given(t0=ANY, c=ANY, delta=ANY)
def test_epsilon_api_any_argument(t0, c, delta):
    try:
        e = epsilon(t0, S, clip_norm=c, delta=delta)
    except ValueError as err:
        assert "\n" not in str(err)
        return
    assert math.isfinite(e) and e >= 0


@FAST
@given(c=ANY, bad=st.sampled_from([None, float("nan"), float("inf")]))
def test_clip_api(c, bad):
    x = torch.randn(4, 1, 8, 8) * 5
    if bad is not None:
        x[1, 0, 0, 0] = bad
    try:
        out = clip(x, c)
    except ValueError as err:
        assert "\n" not in str(err)
        return
    assert bad is None and torch.isfinite(out).all()
    # measured in float64: in float32 the squares of tiny entries (c ~ 1e-21) underflow and the norm reads high
    assert (out.double().flatten(1).norm(dim=1) <= float(c) * (1 + 1e-5)).all()


# ----------------------------------------------------------------------------- checkpoints
def _data(n=32):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=g) * 2 - 1, torch.arange(n) % 10


def _model():
    torch.manual_seed(0)
    return UNet(UNetConfig(base_channels=8))


def test_kill_and_resume_at_a_random_step(tmp_path):
    """SIGKILL a training process at a random step; the resumed run ends with the uninterrupted run's weights."""
    steps = 30
    kill_at = int(torch.randint(3, steps - 3, (1,), generator=torch.Generator().manual_seed(os.getpid())))
    path = tmp_path / "m.pt"
    script = textwrap.dedent(f"""
        import os, signal, sys, torch
        torch.set_num_threads(1)  # as this process (conftest.py): the same arithmetic
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_robustness import _data, _model, S
        from pfdm_core.core.train import TrainConfig, train
        x, y = _data()
        def on_step(step, model):
            if step == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)
        train(_model(), S, x, y, 1, S.T, config=TrainConfig(steps={steps}, batch_size=8, lr=1e-3, checkpoint_every=1),
              checkpoint={str(path)!r}, progress=False, on_step=on_step)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    saved = ckpt.load_checkpoint(path)["step"]
    assert kill_at - 1 <= saved <= kill_at  # checkpoint_every=1: at most one step lost
    x, y = _data()
    cfg = TrainConfig(steps=steps, batch_size=8, lr=1e-3, checkpoint_every=1)
    resumed = train(_model(), S, x, y, 1, S.T, config=cfg, checkpoint=path, progress=False)
    straight = train(_model(), S, x, y, 1, S.T, config=cfg, progress=False)
    for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(a, b)
    assert resumed.losses == straight.losses


def test_checkpoints_are_written_by_time(tmp_path, monkeypatch):
    """No step cadence, but a clock that moves 61 s per step: every step is saved."""
    clock = iter(range(0, 10_000, 61))
    monkeypatch.setattr(ckpt.time, "monotonic", lambda: next(clock))
    saves = []
    real = ckpt.atomic_save
    monkeypatch.setattr(ckpt, "atomic_save", lambda obj, p: (saves.append(obj["step"]), real(obj, p)))
    x, y = _data()
    train(_model(), S, x, y, 1, S.T, config=TrainConfig(steps=4, batch_size=8), checkpoint=tmp_path / "m.pt",
          progress=False)
    assert saves[:4] == [1, 2, 3, 4]


class _Stop(Exception):
    pass


def _stop_at(k):
    def on_step(step, model):
        if step == k:
            raise _Stop
    return on_step


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    """Garbage optimiser moments make the next update write NaN weights: training stops with one line and the
    checkpoint on disk is the last good one (never the NaN weights, never silently trained on)."""
    x, y = _data()
    path, cfg = tmp_path / "m.pt", TrainConfig(steps=6, batch_size=8, checkpoint_every=1)
    with pytest.raises(_Stop):
        train(_model(), S, x, y, 1, S.T, config=cfg, checkpoint=path, progress=False, on_step=_stop_at(4))
    state = ckpt.load_checkpoint(path)
    assert state["step"] == 3
    for s in state["opt"]["state"].values():
        s["exp_avg"].fill_(float("nan"))
    ckpt.atomic_save(state, path)
    damaged = path.read_bytes()
    with pytest.raises(FloatingPointError, match="diverged: .* at step 4; the last good checkpoint"):
        train(_model(), S, x, y, 1, S.T, config=cfg, checkpoint=path, progress=False)
    assert path.read_bytes() == damaged


def test_nan_loss_stops_training():
    x, y = _data()
    model = _model()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="diverged: loss nan at step 1"):
        train(model, S, x, y, 1, S.T, config=TrainConfig(steps=3, batch_size=8), progress=False)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"not a checkpoint"])
def test_damaged_checkpoint_is_named(tmp_path, content):
    path = tmp_path / "m.pt"
    path.write_bytes(content)
    x, y = _data()
    with pytest.raises(ValueError, match=rf"checkpoint {path} cannot be read .*delete it"):
        train(_model(), S, x, y, 1, S.T, config=TrainConfig(steps=2, batch_size=8), checkpoint=path, progress=False)


def test_checkpoint_of_other_data_is_refused(tmp_path):
    x, y = _data()
    path = tmp_path / "m.pt"
    cfg = TrainConfig(steps=2, batch_size=8)
    train(_model(), S, x, y, 1, S.T, config=cfg, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match="another configuration or data"):
        train(_model(), S, x.flip(0), y, 1, S.T, config=cfg, checkpoint=path, progress=False)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "r.json"
    ckpt.write_text(path, "good")

    def boom(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        ckpt.atomic_write(path, boom)
    assert path.read_text() == "good" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_damaged_config_json_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json cannot be read"):
        ckpt.check_config_folder(tmp_path, {"a": 1})


def test_a_field_added_later_reads_as_its_default_in_nested_sections(tmp_path):
    """A folder written before a config field existed (here eval.reference_per_class) is still accepted when the
    field has its default, and refused when it does not."""
    ckpt.check_config_folder(tmp_path, {"eval": {"n": 1}, "seed": 0})  # the old code wrote this
    defaults = {"eval": {"n": 1, "added": 0}, "seed": 0}
    ckpt.check_config_folder(tmp_path, {"eval": {"n": 1, "added": 0}, "seed": 0}, defaults=defaults)
    with pytest.raises(ValueError, match=r"differs in \['eval'\]"):
        ckpt.check_config_folder(tmp_path, {"eval": {"n": 1, "added": 5}, "seed": 0}, defaults=defaults)


# ----------------------------------------------------------------------------- caches and data roots
def test_classifier_cache_is_keyed_by_its_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PFDM_RUNS", str(tmp_path))
    x, y = _data(40)
    a = classifier.cached_classifier("c", Dataset(x, y), 1, 0)
    b = classifier.cached_classifier("c", Dataset(x, (y + 1) % 10), 1, 0)  # other labels: a new cache entry
    assert len(list(paths.cache_dir().glob("c-*.pt"))) == 2
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    corrupt = 201 * torch.ones_like(y)  # corrupt labels (a 202-class classifier) never poison the good entry
    classifier.cached_classifier("c", Dataset(x, corrupt), 1, 0)
    again = classifier.cached_classifier("c", Dataset(x, y), 1, 0)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), again.parameters()))


def test_damaged_classifier_cache_is_retrained(tmp_path, monkeypatch):
    monkeypatch.setenv("PFDM_RUNS", str(tmp_path))
    x, y = _data(40)
    classifier.cached_classifier("c", Dataset(x, y), 1, 0)
    (entry,) = paths.cache_dir().glob("c-*.pt")
    entry.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="cannot be read"):
        classifier.cached_classifier("c", Dataset(x, y), 1, 0)
    torch.load(entry)  # replaced by a good one


@pytest.fixture
def isolated_roots(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PFDM_DATA", raising=False)
    images._mnist.cache_clear()
    yield tmp_path
    images._mnist.cache_clear()


def _fake_mnist(root, truncate: str | None = None):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, size in images.MNIST_FILES.items():
        with open(raw / name, "wb") as f:
            f.truncate(size - 100 if name == truncate else size)
    return raw


def test_empty_folder_left_by_a_failed_download_does_not_shadow(isolated_roots):
    (isolated_roots / "data" / "MNIST" / "raw").mkdir(parents=True)  # ./data: empty
    good = isolated_roots.parent / "shared" / "data"  # ../shared/data: the files
    _fake_mnist(good)
    assert paths.data_root("MNIST/raw") == good


def test_pfdm_data_named_on_purpose_is_the_only_root(isolated_roots, monkeypatch):
    _fake_mnist(isolated_roots / "data")
    monkeypatch.setenv("PFDM_DATA", str(isolated_roots / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        paths.data_root("MNIST/raw")
    monkeypatch.setenv("PFDM_DATA", "")  # empty counts as unset
    assert paths.data_root("MNIST/raw") == isolated_roots / "data"


def test_truncated_mnist_file_is_named(isolated_roots):
    raw = _fake_mnist(isolated_roots / "data", truncate="train-labels-idx1-ubyte")
    with pytest.raises(ValueError) as e:
        images.load_mnist()
    assert str(raw / "train-labels-idx1-ubyte") in str(e.value) and "59908 bytes, expected 60008" in str(e.value)


def test_failed_download_leaves_nothing(isolated_roots, monkeypatch):
    import torchvision.datasets

    class Offline:  # torchvision's MNIST offline: creates its folder, then fails
        def __init__(self, root, train=True, download=False):
            os.makedirs(os.path.join(root, "MNIST", "raw"), exist_ok=True)
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    with pytest.raises(OSError, match="download of mnist failed .*nothing was left"):
        images.download("mnist")
    assert not (isolated_roots / "data" / "MNIST").exists()


def test_cli_download_failure_is_one_line(isolated_roots, monkeypatch, capsys):
    monkeypatch.setattr(images, "download", lambda name: (_ for _ in ()).throw(OSError(f"download of {name} failed")))
    code, out, err = _cli(["download", "mnist"], capsys)
    assert code == 2 and err == "pfdm_core: error: download of mnist failed\n"


def test_frozen_configs():
    with pytest.raises(FrozenInstanceError):
        TrainConfig().steps = 5  # type: ignore[misc]
    assert replace(TrainConfig(), steps=5).steps == 5


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0,0"], "seeds must list distinct integers >= 0"),
    (["--seeds", "-1"], "seeds must list distinct integers >= 0"),
    (["--clip", "nan"], "clip_norm must be a finite number"),
    (["--clip", "1e200"], "clip_norm must be a finite number in (0, 1e+06]"),
    (["--methods", ""], "methods must list at least one"),
    (["--clients", "0"], "num_clients must be an integer in [2, ∞)"),
    (["--accountant", "analytic"], "--accountant only applies with --epsilon"),
    (["--t0", "0"], "t0 must be an integer in 1..999"),
    (["--clients", "20"], "too few images"),  # an impossible split: refused before config.json is written
])
def test_cli_run_probes_refused_before_anything_is_written(tmp_path, capsys, argv, message):
    """The probes of a hostile but fair user: one line, status 2, and the run folder is not even created."""
    out = tmp_path / "run"
    code, stdout, err = _cli(["run", "--preset", "smoke", "--out", str(out), *argv], capsys)
    assert code == 2 and err.startswith("pfdm_core: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_unreadable_cifar10_names_its_files(isolated_roots):
    batches = isolated_roots / "data" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        (batches / name).write_bytes(b"truncated")
    with pytest.raises(ValueError) as e:
        images.load_cifar10()
    msg = str(e.value)
    assert "CIFAR-10 under" in msg and str(batches / "data_batch_1") in msg and "download cifar10" in msg


def test_damaged_results_file_is_reported_not_fatal(tmp_path, monkeypatch):
    """scripts/rerun.py's summary reads every results*.json a run wrote: a damaged one is named in the summary."""
    sys.path.insert(0, str(paths.REPO_ROOT / "scripts"))
    import rerun

    monkeypatch.setenv("PFDM_RUNS", str(tmp_path / "runs"))
    for var in ("PFDM_PRESET", "PFDM_FIGURES"):  # rerun sets them for its notebooks: restored after the test
        monkeypatch.setenv(var, os.environ.get(var, ""))
    monkeypatch.setattr(rerun, "notebooks", lambda prefixes: [])
    (tmp_path / "runs" / "smoke" / "digits").mkdir(parents=True)
    report_dir = tmp_path / "out"
    report_dir.mkdir()
    import time as _time

    bad = tmp_path / "runs" / "smoke" / "digits" / "results.json"
    start = _time.time()
    bad.write_text("{truncated")
    os.utime(bad, (start + 3600, start + 3600))  # "written during the run" however slowly rerun starts (a loaded machine)
    report = rerun.rerun("smoke", [], report_dir)
    (key, value), = report["results"].items()
    assert key.endswith("results.json") and value.startswith("unreadable (JSONDecodeError)")
