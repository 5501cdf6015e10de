"""The Table-1 runner (pfdm_core.experiment) and its command line (`python -m pfdm_core run`).

One shrunk smoke run (seed 0; methods pfdm at two t0 and local) is shared by the module; the
resume test reruns it in the same folder and checks that nothing is trained again.
"""
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch

from pfdm_core import cli, experiment
from pfdm_core.core import train as train_mod
from pfdm_core.core.nets import UNet, UNetConfig
from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig
from pfdm_core.evaluation import classifier as recipes
from pfdm_core.experiment import ExperimentConfig, preset_config, run, summarize, train_method
from pfdm_core.privacy.mechanism import epsilon

METRIC_COLUMNS = [f"{k}_{g}" for k in ("fid", "kid", "precision", "recall", "accuracy")
                  for g in ("major", "minor", "avg")] + [f"{k}_{g}" for k in ("gfid", "gkid", "gkid_se")
                                                         for g in ("major", "minor")]
T0S = (400, 693)


def tiny(**kw) -> ExperimentConfig:
    """The smoke preset, shrunk further (each run job takes about a second on one core)."""
    base = dict(majority_per_class=8, minority_per_class=2, n_per_class=5, classifier_epochs=1, ddim_steps=3,
                net=UNetConfig(base_channels=8), train=TrainConfig(steps=3, batch_size=16, lr=1e-3), t0s=T0S)
    return preset_config("smoke", **{**base, **kw})


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """run() once: seed 0, methods pfdm (two t0) and local. Returns (cfg, out, df, runs_dir)."""
    runs = tmp_path_factory.mktemp("runs")
    out = runs / "table1"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PFDM_RUNS", str(runs))  # the cached feature classifier lands here
        mp.delenv("PFDM_PRESET", raising=False)
        cfg = tiny()
        df = run(cfg, methods=("pfdm", "local"), seeds=(0,), out=out, progress=False)
    return cfg, out, df, runs


def _key(row):
    t0 = row["t0"]
    return int(row["seed"]), row["method"], None if t0 is None or (isinstance(t0, float) and math.isnan(t0)) \
        else int(t0)


# ----------------------------------------------------------------------------- outputs
def test_run_writes_results_with_one_row_per_seed_method_t0(smoke_run):
    cfg, out, df, _ = smoke_run
    expected = {(0, "pfdm", 400), (0, "pfdm", 693), (0, "local", None)}
    for table in (df, pd.read_csv(out / "results.csv")):
        assert len(table) == 3
        assert {_key(r) for _, r in table.iterrows()} == expected
        for col in ["seed", "method", "t0", "eps_thm51", "eps_analytic", "seconds", "train_seconds", *METRIC_COLUMNS]:
            assert col in table.columns, col
    assert np.isfinite(df[METRIC_COLUMNS].to_numpy(float)).all()
    for key in ("precision", "recall", "accuracy"):
        vals = df[[f"{key}_{g}" for g in ("major", "minor", "avg")]].to_numpy(float)
        assert ((0 <= vals) & (vals <= 1)).all()
    assert (df[[c for c in METRIC_COLUMNS if c.startswith("fid")]] > -1e-6).all().all()

    pfdm = df[df.method == "pfdm"].set_index("t0")
    S = Schedule(cfg.T)
    for t0 in T0S:
        assert pfdm.loc[t0, "eps_thm51"] == pytest.approx(epsilon(t0, S, cfg.privacy.clip_norm, cfg.privacy.delta))
        assert pfdm.loc[t0, "eps_analytic"] == pytest.approx(epsilon(t0, S, cfg.privacy.clip_norm, cfg.privacy.delta, "analytic"))
    local = df[df.method == "local"].iloc[0]
    assert pd.isna(local["eps_thm51"]) and pd.isna(local["t0"])  # no privacy claim for local-only

    js = json.loads((out / "results.json").read_text())
    assert js["config"]["t0s"] == list(T0S) and js["config"]["n_per_class"] == 5
    assert [_key(r) for r in js["rows"]] == [_key(r) for _, r in df.iterrows()]
    assert [r["fid_avg"] for r in js["rows"]] == pytest.approx(df["fid_avg"].tolist())


def test_per_class_rows_match_summary(smoke_run):
    cfg, out, df, _ = smoke_run
    pc = pd.read_csv(out / "results_per_class.csv")
    for col in ("seed", "method", "t0", "class", "group", "fid", "kid", "precision", "recall", "accuracy"):
        assert col in pc.columns, col
    assert len(pc) == 3 * 10
    first = pc[(pc.method == "pfdm") & (pc.t0 == 400)]
    assert first["class"].tolist() == list(range(10))
    assert (first.group == ["majority"] * 5 + ["minority"] * 5).all()  # client 0: majority classes 0-4
    for _, row in df.iterrows():
        sel = pc[(pc.method == row.method) & ((pc.t0 == row.t0) | (pc.t0.isna() & pd.isna(row.t0)))]
        assert len(sel) == 10
        for key in ("fid", "kid", "precision", "recall", "accuracy"):
            assert row[f"{key}_major"] == pytest.approx(sel[sel.group == "majority"][key].mean())
            assert row[f"{key}_minor"] == pytest.approx(sel[sel.group == "minority"][key].mean())
            assert row[f"{key}_avg"] == pytest.approx(sel[key].mean())


def test_group_scores_are_the_pooled_scores_of_the_saved_samples(smoke_run, monkeypatch):
    """The headline columns recomputed from the saved samples: each group's classes pooled, the PCA fitted on the
    classifier's training images (never the reference), KID stratified by class."""
    from pfdm_core import experiment
    from pfdm_core.evaluation import metrics

    cfg, out, df, runs = smoke_run
    monkeypatch.setenv("PFDM_RUNS", str(runs))  # the same cached classifier
    split = experiment.make_split(cfg, 0)
    clf = experiment.metric_classifier(cfg, split, 0)
    pca = experiment.metric_pca(clf, split)
    fake = torch.load(out / "results_samples.pt", weights_only=False)[(0, "local", None)]
    y = torch.arange(10).repeat_interleave(cfg.eval.n_per_class).numpy()
    real, real_y = metrics.embed(clf, split.test.x), split.test.y.numpy()
    row = df[df.method == "local"].iloc[0]
    for group, classes in (("major", range(5)), ("minor", range(5, 10))):
        r, f = np.isin(real_y, list(classes)), np.isin(y, list(classes))
        expect = metrics.group_scores(real[r], metrics.embed(clf, fake)[f], pca, real_y[r], y[f])
        for key, value in expect.items():
            assert row[f"{key}_{group}"] == pytest.approx(value, rel=1e-6), (key, group)
    assert (df[["gkid_se_major", "gkid_se_minor"]] > 0).all().all()


def test_run_saves_checkpoints_and_samples(smoke_run):
    cfg, out, _, _ = smoke_run
    names = {p.name for p in (out / "seed0").iterdir()}
    assert names == {"pfdm_shared_t0400.pt", "pfdm_personal_c0_t0400.pt", "pfdm_shared_t0693.pt",
                     "pfdm_personal_c0_t0693.pt", "local_c0.pt", "config.json"}
    samples = torch.load(out / "results_samples.pt", weights_only=False)
    assert set(samples) == {(0, "pfdm", 400), (0, "pfdm", 693), (0, "local", None)}
    assert all(s.shape == (10 * cfg.eval.n_per_class, 1, 8, 8) and torch.isfinite(s).all() for s in samples.values())


def test_rerun_resumes_without_training(smoke_run, monkeypatch):
    cfg, out, df, runs = smoke_run
    monkeypatch.setenv("PFDM_RUNS", str(runs))  # same cached classifier
    ckpts = sorted((out / "seed0").glob("*.pt"))
    mtimes = {p: p.stat().st_mtime_ns for p in ckpts}
    steps = []
    real_loss = train_mod.diffusion_loss

    def counting_loss(*a, **k):
        steps.append(1)
        return real_loss(*a, **k)

    monkeypatch.setattr(train_mod, "diffusion_loss", counting_loss)
    monkeypatch.setattr(recipes, "train_classifier", lambda *a, **k: pytest.fail("classifier retrained"))
    again = run(cfg, methods=("pfdm", "local"), seeds=(0,), out=out, progress=False)
    assert steps == [], f"{len(steps)} optimiser steps taken on resume"
    assert {p: p.stat().st_mtime_ns for p in ckpts} == mtimes  # no checkpoint rewritten
    # same models, same sampling seeds, same classifier: the same numbers
    np.testing.assert_allclose(again[METRIC_COLUMNS].to_numpy(float), df[METRIC_COLUMNS].to_numpy(float),
                               rtol=1e-5, atol=1e-6)


def test_counting_spy_sees_training(monkeypatch):
    """Control for the resume test: the diffusion_loss spy does count the steps of a fresh training."""
    calls = []
    real = train_mod.diffusion_loss
    monkeypatch.setattr(train_mod, "diffusion_loss", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    x, y = torch.rand(8, 1, 8, 8) * 2 - 1, torch.arange(8)
    train_mod.train(UNet(UNetConfig(base_channels=8)), Schedule(), x, y, 1, 1000,
                    config=TrainConfig(steps=2, batch_size=4), progress=False)
    assert len(calls) == 2


def test_central_and_fedavg_train_and_checkpoint(tmp_path):
    cfg = tiny(train=TrainConfig(steps=2, batch_size=8, lr=1e-3), fedavg_rounds=2)
    split = experiment.make_split(cfg, seed=0)
    for method, ck in (("central", "central.pt"), ("fedavg", "fedavg.pt")):
        models = train_method(method, cfg, split, 0, None, tmp_path, progress=False)
        assert set(models) == {"model"} and not models["model"].training
        assert (tmp_path / ck).exists()
        fake = experiment.sample_method(method, models, cfg, torch.arange(3), None, seed=0)
        assert fake.shape == (3, 1, 8, 8) and torch.isfinite(fake).all()


# ----------------------------------------------------------------------------- summarize
def test_summarize_mean_std_and_seed_counts():
    rows = [dict(seed=s, method="pfdm", t0=693, fid_major=v, fid_minor=2 * v, fid_avg=1.5 * v)
            for s, v in ((0, 1.0), (1, 3.0))]
    rows += [dict(seed=s, method="local", t0=None, fid_major=v, fid_minor=v, fid_avg=v)
             for s, v in ((0, 2.0), (1, 4.0), (2, 6.0))]
    table = summarize(pd.DataFrame(rows))
    assert list(table.columns) == ["method", "t0", "fid_major", "fid_minor", "fid_avg", "seeds"]
    assert table["method"].tolist() == ["pfdm", "local"]
    pfdm, local = table.iloc[0], table.iloc[1]
    assert pfdm.fid_major == "2.00 ± 1.41" and pfdm.fid_minor == "4.00 ± 2.83" and pfdm.fid_avg == "3.00 ± 2.12"
    assert float(pfdm.t0) == 693 and pfdm.seeds == 2
    assert local.fid_major == "4.00 ± 2.00" and local.t0 == "-" and local.seeds == 3
    one = summarize(pd.DataFrame(rows[:1]))
    assert one.fid_major.iloc[0] == "1.00" and one.seeds.iloc[0] == 1  # one seed: the mean alone, never '± nan'
    custom = summarize(pd.DataFrame(rows), keys=("fid_avg",))
    assert list(custom.columns) == ["method", "t0", "fid_avg", "seeds"]


def test_summarize_of_a_real_run(smoke_run):
    _, _, df, _ = smoke_run
    table = summarize(df)
    assert len(table) == 3 and (table.seeds == 1).all()
    local = table[table.method == "local"].iloc[0]
    assert local.t0 == "-"
    assert local.fid_avg == f"{df[df.method == 'local'].fid_avg.iloc[0]:.2f}"  # one seed: no '± nan'


# ----------------------------------------------------------------------------- bad inputs
def _no_training(monkeypatch):
    monkeypatch.setattr(train_mod, "diffusion_loss", lambda *a, **k: pytest.fail("trained despite a bad input"))
    monkeypatch.setattr(recipes, "train_classifier", lambda *a, **k: pytest.fail("classifier trained on bad input"))


def test_unknown_method(monkeypatch, tmp_path):
    _no_training(monkeypatch)
    with pytest.raises(ValueError, match=r"unknown method.*'foo'.*allowed: pfdm, local, central, fedavg"):
        run(tiny(), methods=("local", "foo"), seeds=(0,), out=tmp_path, progress=False)
    split = experiment.make_split(tiny(), 0)
    with pytest.raises(ValueError, match="unknown method 'foo'; allowed: pfdm, local, central, fedavg"):
        train_method("foo", tiny(), split, 0, None, tmp_path, progress=False)


@pytest.mark.parametrize("t0", [0, 1000, -5, 2.5])
def test_t0_out_of_range(t0):
    with pytest.raises(ValueError, match=r"t0 must be an integer in 1\.\.999"):
        preset_config("smoke", t0s=(693, t0))
    with pytest.raises(ValueError, match=r"t0 must be an integer in 1\.\.999"):
        ExperimentConfig().override(t0s=(t0,))


def test_too_few_images(monkeypatch, tmp_path):
    _no_training(monkeypatch)
    with pytest.raises(ValueError, match="too few images"):
        run(tiny(majority_per_class=1000), methods=("local",), seeds=(0,), out=tmp_path, progress=False)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge'; allowed: smoke, cpu, paper"):
        preset_config("huge")


@pytest.mark.parametrize("client", [4, -1])
def test_client_out_of_range(client):
    with pytest.raises(ValueError, match=r"client must be an integer in \[0, 3\]"):
        preset_config("smoke", client=client)


def test_empty_seeds_and_unknown_data(monkeypatch, tmp_path):
    _no_training(monkeypatch)
    with pytest.raises(ValueError, match="seeds must list at least one seed"):
        run(tiny(), methods=("local",), seeds=(), out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; allowed: digits, mnist"):
        preset_config("smoke", data="cifar")
    with pytest.raises(ValueError, match="data must be one of"):
        ExperimentConfig(data="cifar")


# ----------------------------------------------------------------------------- command line
def test_cli_run_smoke(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(experiment.PRESETS, "smoke", tiny(t0s=(693,)))  # keep the CLI test to a few seconds
    out = tmp_path / "cli"
    code = cli.main(["run", "--preset", "smoke", "--seeds", "0", "--methods", "local", "--out", str(out)])
    assert code == 0
    df = pd.read_csv(out / "results.csv")
    assert df[["seed", "method"]].values.tolist() == [[0, "local"]]
    assert set(METRIC_COLUMNS) <= set(df.columns)
    printed = capsys.readouterr().out
    assert "local" in printed and "fid_avg" in printed and f"results: {out}/results.csv" in printed
    assert (out / "results_per_class.csv").exists() and (out / "results.json").exists()


@pytest.mark.parametrize("argv, msg", [
    (["--methods", "foo"], "unknown method(s) ['foo']; allowed: pfdm, local, central, fedavg"),
    (["--methods", "local", "--seeds", ""], "seeds must list at least one seed"),
    (["--methods", "local", "--seeds", "a,b"], "--seeds must be comma-separated integers"),
    (["--methods", "pfdm", "--t0", "0"], "t0 must be an integer in 1..999"),
    (["--methods", "local", "--preset", "huge"], "unknown preset 'huge'"),
])
def test_cli_run_errors_one_line_exit_2(argv, msg, monkeypatch, tmp_path, capsys):
    _no_training(monkeypatch)
    out = tmp_path / "cli"
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "--preset", "smoke", "--out", str(out), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("pfdm_core: error:") and err.count("\n") == 1 and msg in err, err
    assert not (out / "results.csv").exists()
    assert os.environ.get("PFDM_PRESET") is None


def test_rerun_with_another_training_config_is_refused(smoke_run):
    cfg, out, _, _ = smoke_run
    with pytest.raises(ValueError, match=r"another config \(differs in \['clip_norm'\]\)"):
        experiment.run(cfg.override(clip_norm=1.0), ["local"], [0], out, progress=False)


# ----------------------------------------------------------------------------- the rivals
def test_rivals_train_checkpoint_and_report(tmp_path, monkeypatch):
    """DP-SGD and the Phoenix strategies run as methods: checkpoint, sample, report what they spent."""
    monkeypatch.setenv("PFDM_RUNS", str(tmp_path / "runs"))
    cfg = tiny(train=TrainConfig(steps=4, batch_size=8, lr=1e-3), fedavg_rounds=2, dp_eps=8.0)
    split = experiment.make_split(cfg, seed=0)
    for method, ck in (("dpsgd", "dpsgd_eps8_K1_C1_rdp.pt"), ("phoenix_sharing", "phoenix_sharing.pt"),
                       ("phoenix_personal", "phoenix_personal.pt"), ("phoenix_filter", "phoenix_filter.pt")):
        info = {}
        models = train_method(method, cfg, split, 0, None, tmp_path, progress=False, info=info)
        assert (tmp_path / ck).exists(), method
        fake = experiment.sample_method(method, models, cfg, torch.arange(3), None, seed=0)
        assert fake.shape == (3, 1, 8, 8) and torch.isfinite(fake).all()
        if method == "dpsgd":
            assert info["dp_eps_spent"] == pytest.approx(8.0, rel=0.01) and info["dp_noise_multiplier"] > 0
        else:
            assert info["disconnected"] == []


def test_dpsgd_own_budget_and_the_published_phoenix_filter(tmp_path):
    """DP-SGD's own batch and steps (DPDM trains with large batches) name its checkpoint and reach the
    accountant; the unconditional Phoenix with threshold filtering reports its filter's scores."""
    cfg = tiny(train=TrainConfig(steps=4, batch_size=8, lr=1e-3), fedavg_rounds=2, dp_eps=8.0,
               dp_batch_size=16, dp_steps=3, dp_multiplicity=2)
    split = experiment.make_split(cfg, seed=0)
    info = {}
    train_method("dpsgd", cfg, split, 0, None, tmp_path, progress=False, info=info)
    assert (tmp_path / "dpsgd_eps8_K2_C1_rdp_B16_S3.pt").exists()
    assert (info["dp_batch_size"], info["dp_steps"], info["dp_multiplicity"]) == (16, 3, 2)
    assert info["dp_eps_spent"] == pytest.approx(8.0, rel=0.01)
    info = {}
    models = train_method("phoenix_uncond_filter", cfg, split, 0, None, tmp_path, progress=False, info=info)
    assert (tmp_path / "phoenix_uncond_filter.pt").exists() and info["flagged_rounds"] >= 0
    assert 0 <= info["filter_score_min"] <= info["filter_score_median"] <= 1
    fake = experiment.sample_method("phoenix_uncond_filter", models, cfg, torch.arange(3), None, seed=0)
    assert fake.shape == (3, 1, 8, 8) and torch.isfinite(fake).all()
    with pytest.raises(ValueError, match="dp_batch_size must be an integer"):
        tiny(dp_batch_size=-1)


@pytest.mark.parametrize("kind", ["iid", "dirichlet"])
def test_other_partitions_split_the_same_images(kind):
    cluster = experiment.make_split(tiny(), seed=0)
    other = experiment.make_split(tiny(partition=kind), seed=0)
    key = lambda s: sorted(tuple(x.flatten().tolist()) for d in s.clients for x in d.x)
    assert key(cluster) == key(other)  # the same images, shared out differently
    sizes = [len(d) for d in other.clients]
    if kind == "iid":
        assert max(sizes) - min(sizes) <= 1
        # client 0 holds more of its "minority" classes 5..9 than the cluster split's 2 per class
        assert (other.clients[0].y >= 5).sum() > (cluster.clients[0].y >= 5).sum()
    with pytest.raises(ValueError, match="partition must be one of"):
        tiny(partition="random")


def test_folder_written_before_a_new_field_is_still_reused(smoke_run, tmp_path):
    """A config.json without a field added later (here: partition) reads it as its default."""
    cfg, out, _, _ = smoke_run
    folder = tmp_path / "seed0"
    folder.mkdir()
    old = json.loads((out / "seed0" / "config.json").read_text())
    old.pop("partition")
    (folder / "config.json").write_text(json.dumps(old))
    experiment.check_folder(folder, cfg)  # accepted
    with pytest.raises(ValueError, match="partition"):
        experiment.check_folder(folder, cfg.override(partition="iid"))


@pytest.mark.parametrize("field, value, msg", [
    ("clip_norm", float("nan"), r"clip_norm must be a finite number in \(0, 1e\+06\], got nan"),
    ("clip_norm", 1e200, r"clip_norm must be a finite number in \(0, 1e\+06\]"),
    ("num_clients", 0, r"num_clients must be an integer in \[2, ∞\), got 0"),
    ("n_per_class", 0, r"n_per_class must be an integer in \[3, ∞\)"),
    ("n_per_class", 2, r"n_per_class must be an integer in \[3, ∞\)"),
    ("delta", 1.0, r"delta must be in the open interval \(0, 1\), got 1.0"),
    ("ddim_steps", 2.5, r"ddim_steps must be an integer"),
])
def test_config_fields_are_checked_with_one_line(field, value, msg):
    with pytest.raises(ValueError, match=msg):
        preset_config("smoke", **{field: value})


@pytest.mark.parametrize("methods, seeds, msg", [
    ((), (0,), "methods must list at least one"),
    (("local",), (0, 0), r"seeds must list distinct integers >= 0, got \[0, 0\]"),
    (("local",), (-1,), "seeds must list distinct integers >= 0"),
])
def test_bad_methods_or_seeds_write_nothing(monkeypatch, tmp_path, methods, seeds, msg):
    _no_training(monkeypatch)
    with pytest.raises(ValueError, match=msg):
        run(tiny(), methods=methods, seeds=seeds, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("partition", ["cluster", "iid"])
def test_phoenix_shared_set_and_filter_reference_are_images_no_client_holds(partition, tmp_path):
    """Phoenix's G (data sharing) and its filter's reference come from public data: training images that no
    client holds (the metric classifier's pool, split.train, overlaps the clients' images)."""
    from pfdm_core.data.small import digits_split
    from pfdm_core.methods.fedavg import share_global_subset

    cfg = tiny(partition=partition)
    split = experiment.make_split(cfg, 0)
    held = torch.cat([c.x for c in split.clients]).flatten(1)
    assert len(split.public) + len(held) == len(digits_split(0)[0])
    assert torch.cdist(split.public.x.flatten(1), held).min() > 0  # digits has no duplicate images
    assert torch.cdist(split.train.x.flatten(1), held).min() == 0  # the classifier's pool is not public
    ctx = experiment.context(cfg, split, 0, None, tmp_path)
    assert ctx.pool is split.public
    shared, G = share_global_subset(split.clients, 0.05, 0.5, 0, ctx.pool)
    assert torch.cdist(G.x.flatten(1), held).min() > 0


def test_unconditional_phoenix_is_judged_by_the_classifier(tmp_path, monkeypatch):
    """Phoenix as published (unconditional): its samples are labelled by the metric classifier, the class
    histogram is reported (mode coverage), accuracy is undefined, and the headline group scores are computed."""
    monkeypatch.setenv("PFDM_RUNS", str(tmp_path))
    cfg = tiny(t0s=(693,))
    df = run(cfg, methods=("phoenix_uncond",), seeds=(0,), out=tmp_path / "u", progress=False)
    row = df.iloc[0]
    counts = [int(c) for c in row["class_counts"].split()]
    assert len(counts) == 10 and sum(counts) == 10 * cfg.eval.n_per_class
    assert all(np.isnan(row[f"accuracy_{g}"]) for g in ("major", "minor", "avg"))
    pc = pd.read_csv(tmp_path / "u" / "results_per_class.csv")
    assert pc.n_samples.tolist() == counts
    assert pc[pc.n_samples < 3].fid.isna().all()
    groups = {"major": sum(counts[:5]), "minor": sum(counts[5:])}
    for g, n in groups.items():
        assert np.isfinite(row[f"gfid_{g}"]) == (n >= 3)
