"""The frontier study (pfdm_core.studies.frontier): a point trains tuned baselines and PFDM's recipes at the t0 of
its eps, rows carry near-copies, `collect` adds PFDM's tuned row, `table` computes the gap and the paired interval."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pfdm_core.core.nets import UNetConfig
from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig
from pfdm_core.experiment import preset_config, t0_for
from pfdm_core.studies import frontier as fr
from pfdm_core.studies import personalization as pz


def tiny():
    return preset_config("smoke", majority_per_class=8, minority_per_class=3, n_per_class=4, classifier_epochs=1,
                         ddim_steps=4, net=UNetConfig(base_channels=8), train=TrainConfig(steps=4, batch_size=8, lr=1e-3))


def test_point_and_collect(tmp_path, monkeypatch):
    monkeypatch.setenv("PFDM_RUNS", str(tmp_path / "runs"))
    cfg = tiny()
    df = fr.run_point(cfg, 0, 10, tmp_path / "f", progress=False)
    assert fr.t0_of(cfg, 10) == t0_for(10, cfg, "analytic") == int(df[df.method == "pfdm"].t0.iloc[0])
    assert set(zip(df.method, df.recipe)) == ({("pfdm", r) for r in fr.PFDM_RECIPES}
                                              | {(m, r) for m in ("local", "central") for r in fr.TUNE_RECIPES})
    assert (df.near_copies_minor >= 0).all() and (df.n_minor_samples == 5 * cfg.eval.n_per_class).all()
    assert (df.steps_trained >= df.steps_used).all() and (df.steps_trained >= 1).all()
    assert (tmp_path / "f" / "point_seed0_eps10.csv").exists()
    rows = fr.collect(tmp_path / "f")
    tuned = rows[rows.method == "pfdm tuned"]
    pf = df[df.method == "pfdm"]
    assert len(tuned) == 1 and tuned.validation_loss.item() == pf.validation_loss.min()
    assert rows[rows.method == "local"].eps.isna().all() and len(rows[rows.method == "local"]) == 1
    loc = rows[rows.method == "local"].iloc[0]
    assert loc.recipe == "tuned" and loc.chosen_recipe in fr.TUNE_RECIPES
    assert loc.validation_loss == df[df.method == "local"].validation_loss.min()
    assert tuned.recipe.item() == "tuned" and tuned.chosen_recipe.item() in fr.PFDM_RECIPES
    with pytest.raises(FileNotFoundError, match="no frontier points"):
        fr.collect(tmp_path / "empty")
    mia = fr.membership(cfg, 0, 10, tmp_path / "f")  # loads the point's models
    assert set(zip(mia.method, mia.recipe)) == ({("pfdm", r) for r in fr.PFDM_RECIPES}
                                                | {("local", r) for r in fr.TUNE_RECIPES})
    assert mia.mia_auc.between(0, 1).all() and mia.mia_tpr_1pct.between(0, 1).all()
    assert (tmp_path / "f" / "membership_seed0_eps10.csv").exists()
    assert fr.collect_membership(tmp_path / "empty").empty
    mt = fr.membership_table(fr.collect_membership(tmp_path / "f"))
    assert len(mt) == len(mia) and (mt.seeds == 1).all()
    assert np.allclose(mt.mia_auc_mean.to_numpy(), mia.mia_auc.to_numpy())


def test_matched_members_have_equal_class_counts():
    import torch

    from pfdm_core.data.small import Dataset

    m = Dataset(torch.zeros(13, 1, 2, 2), torch.tensor([0] * 10 + [1] * 3))
    n = Dataset(torch.ones(9, 1, 2, 2), torch.tensor([0] * 4 + [1] * 5))
    a, b = fr.matched_members(m, n, seed=0)
    assert a.y.bincount().tolist() == b.y.bincount().tolist() == [4, 3]
    assert (a.x == 0).all() and (b.x == 1).all()


def test_table_gap_and_paired_interval():
    """Known numbers: local 10, central 4 in every seed; a method at 7 +- 1 closes half the gap."""
    rows = []
    for s, v in zip(range(3), (6.0, 7.0, 8.0)):
        rows += [dict(seed=s, method="local", recipe="a", eps=np.nan, t0=np.nan, gfid_minor=10.0, gfid_major=1.0,
                      near_copies_minor=1, steps_used=10),
                 dict(seed=s, method="central", recipe="a", eps=np.nan, t0=np.nan, gfid_minor=4.0, gfid_major=1.0,
                      near_copies_minor=0, steps_used=10),
                 dict(seed=s, method="pfdm", recipe="b", eps=10.0, t0=675, gfid_minor=v, gfid_major=1.0,
                      near_copies_minor=s, steps_used=10)]
    t = fr.table(pd.DataFrame(rows)).set_index("method")
    p = t.loc["pfdm"]
    assert p.gfid_minor_mean == pytest.approx(7.0) and p.gap_closed_mean == pytest.approx(0.5)
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert (p.local_minus_lo, p.local_minus_hi) == pytest.approx((3 - half, 3 + half))
    assert (p.gap_closed_lo, p.gap_closed_hi) == pytest.approx(((3 - half) / 6, (3 + half) / 6))
    assert t.loc["local"].gap_closed_mean == 0 and t.loc["central"].gap_closed_mean == 1
    assert p.near_copies_minor_mean == 1 and p.seeds == 3


def test_recipes_are_known():
    assert set(fr.PFDM_RECIPES) | set(fr.TUNE_RECIPES) <= set(pz.RECIPES)
    assert pz.RECIPES[pz.WARM_RECIPE].warm_start and not any(pz.RECIPES[r].warm_start for r in fr.TUNE_RECIPES)


def test_first_win_is_where_the_tuned_pfdm_starts_to_beat_local_for_good():
    t = pd.DataFrame({"method": ["pfdm tuned"] * 4 + ["pfdm"], "eps": [1.0, 10.0, 50.0, 200.0, 1.0],
                      "local_minus_lo": [0.5, -0.2, 0.1, 0.3, 9.0]})
    assert fr.first_win(t) == 50.0  # eps 1's win is not "from there on": eps 10 loses
    assert fr.first_win(t.assign(local_minus_lo=[0.1, 0.2, 0.3, 0.4, -1.0])) == 1.0
    assert fr.first_win(t.assign(local_minus_lo=[1.0, 1.0, 1.0, -0.1, 1.0])) is None  # not at the largest eps


def test_strict_verdict_answers_at_the_largest_eps_up_to_ten():
    def rows(eps, lo, hi, seeds=3, diff_hi=(1.0, 1.0, 1.0)):
        return pd.DataFrame({"method": ["pfdm tuned", "pfdm", "pfdm"], "recipe": ["tuned", "paper", pz.FROZEN_RECIPE],
                             "eps": [eps] * 3, "gap_closed_mean": [0.1, 0.0, 0.2], "gap_closed_lo": lo,
                             "gap_closed_hi": hi, "local_minus_hi": list(diff_hi), "seeds": [seeds] * 3})
    strict = rows(10.0, [-0.2, -0.3, 0.0], [0.4, 0.3, 0.45])
    loose = rows(200.0, [0.6, 0.6, 0.6], [0.9, 0.9, 0.9])  # above eps_max: never read
    v = fr.strict_verdict(pd.concat([rows(5.0, [0.6] * 3, [0.9] * 3), strict, loose], ignore_index=True))
    assert v["eps"] == 10.0 and v["verdict"] == "no"  # eps 5 is measured, but the answer is at the largest eps <= 10
    assert v["best"].recipe == pz.FROZEN_RECIPE and v["tuned"].recipe == "tuned"  # best: a fixed recipe, not the tuned row
    assert fr.strict_verdict(rows(10.0, [0.5, 0.0, 0.1], [0.9, 0.3, 0.4]))["verdict"] == "yes"
    assert fr.strict_verdict(rows(10.0, [0.0, 0.0, 0.1], [0.6, 0.3, 0.4]))["verdict"] == "unsettled"
    # a variant worse than local-only (paired interval below zero) closes no part of the gap, whatever its ratio's
    # interval (wide when a seed's local -> centralized gap is small)
    assert fr.strict_verdict(rows(10.0, [0.0, -9.0, 0.1], [0.4, 2.0, 0.4], diff_hi=(1, -3, 1)))["verdict"] == "no"
    assert fr.strict_verdict(rows(10.0, [0.0, -9.0, 0.1], [0.4, 2.0, 0.4], diff_hi=(1, 3, 1)))["verdict"] == "unsettled"
    assert fr.strict_verdict(rows(10.0, [0.0] * 3, [0.1] * 3, seeds=1))["verdict"] == "one seed"
    assert fr.strict_verdict(loose) is None
    assert fr.label("pfdm tuned", "tuned") == "PFDM, tuned (validation)" and fr.label("x", "y") == "x, y"


def test_plot_names_its_curves_as_the_tables_do():
    import matplotlib

    matplotlib.use("Agg")
    rows = [{"method": "pfdm", "recipe": r, "eps": e, "seed": s, fr.KEY: 1.0 + s}
            for r in ("paper", pz.OUR_RECIPE) for e in (10, 200) for s in (0, 1)]
    rows += [{"method": m, "recipe": "tuned", "eps": math.nan, "seed": s, fr.KEY: 2.0} for m in ("local", "central")
             for s in (0, 1)]
    ax = fr.plot(pd.DataFrame(rows), tiny())
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(names) == sorted([fr.label("pfdm", "paper"), fr.label("pfdm", pz.OUR_RECIPE),
                                    fr.label("local", "tuned") + ", 2 seeds", fr.label("central", "tuned") + ", 2 seeds"])


def test_rivals_join_the_frontier_and_keep_earlier_eps(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("PFDM_RUNS", str(tmp_path / "runs"))
    cfg, out = tiny(), tmp_path / "f"
    fr.run_point(cfg, 0, 10, out, progress=False)
    first = fr.run_rivals(cfg, 0, out, [10], progress=False)
    assert set(zip(first.method, first.eps.fillna(-1))) == {("fedavg", -1), ("dpsgd", 10)}
    assert (first.recipe == "budget").all() and first.dp_eps_spent.dropna().le(10 + 1e-6).all()
    both = fr.run_rivals(cfg, 0, out, [5], progress=False)  # a second call at another eps keeps eps 10's row
    assert sorted(both[both.method == "dpsgd"].eps) == [5, 10] and (both.method == "fedavg").sum() == 1
    assert both[both.eps == 10].gfid_minor.item() == first[first.eps == 10].gfid_minor.item()
    rows = fr.collect(out)
    assert {"fedavg", "dpsgd"} <= set(rows.method) and len(rows[rows.method == "dpsgd"]) == 2
    t = fr.table(rows)
    dp = t[(t.method == "dpsgd") & (t.eps == 10)].iloc[0]
    loc = rows[rows.method == "local"].iloc[0]
    assert math.isclose(dp.local_minus_mean, loc.gfid_minor - both[both.eps == 10].gfid_minor.item())
    names = [x.get_text() for x in fr.plot(rows, cfg).get_legend().get_texts()]
    assert fr.label("dpsgd", "budget") + " (central eps)" in names
    assert any(n.startswith("FedAvg (no formal privacy)") for n in names)


def test_ambient_rows_join_the_frontier_outside_the_tuned_search(tmp_path, monkeypatch):
    monkeypatch.setenv("PFDM_RUNS", str(tmp_path / "runs"))
    cfg, out = tiny(), tmp_path / "f"
    point = fr.run_point(cfg, 0, 10, out, progress=False)
    amb = fr.run_ambient(cfg, 0, 10, out, progress=False)
    assert set(zip(amb.method, amb.recipe)) == {("pfdm", pz.AMBIENT_RECIPE), ("shared only", "uploads only")}
    assert (amb.t0 == fr.t0_of(cfg, 10)).all() and (amb.near_copies_minor >= 0).all() and (amb.eps == 10).all()
    assert (out / "seed0" / f"shared_ambient_t0{fr.t0_of(cfg, 10)}.pt").exists()
    assert (amb.warm_start_validation_loss > 0).all() and (amb.random_init_validation_loss > 0).all()
    assert (amb.paper_shared_loss_above_t0 > 0).all() and (amb.ambient_shared_loss_above_t0 > 0).all()
    assert (out / "seed0" / f"shared_t0{fr.t0_of(cfg, 10)}.pt").exists()  # the chain's steps above t0
    assert sorted(p.name for p in out.glob("*ambient*")) == ["ambient_seed0_eps10.csv", "ambient_seed0_eps10_samples.pt",
                                                             "membership_seed0_eps10_ambient.csv"]
    rows = fr.collect(out)
    tuned = rows[rows.method == "pfdm tuned"]  # still the point's own recipes
    assert tuned.validation_loss.item() == point[point.method == "pfdm"].validation_loss.min()
    assert len(rows[rows.recipe == pz.AMBIENT_RECIPE]) == 1 and len(rows[rows.method == "shared only"]) == 1
    t = fr.table(rows)
    assert pz.AMBIENT_RECIPE in set(t[t.method == "pfdm"].recipe)  # a variant of the strict verdict
    # the tuned search had it been offered the ambient warm start: every PFDM row of the seed, its own method
    rt = fr.retuned(rows, 10)
    every = rows[(rows.method == "pfdm") & (rows.eps == 10)]
    assert len(rt) == 1 and rt.validation_loss.item() == every.validation_loss.min()
    assert rt.chosen_recipe.item() == every.loc[every.validation_loss.idxmin()].recipe
    assert fr.retuned(rows[rows.recipe != pz.AMBIENT_RECIPE], 10).empty  # a seed without the offer is left out
    t2 = fr.table(pd.concat([rows, rt], ignore_index=True))
    assert len(t2[t2.method == "pfdm retuned"]) == 1 and fr.first_win(t2) == fr.first_win(t)
    assert fr.label("pfdm retuned", "tuned, ambient offered").startswith("PFDM, tuned (validation), the ambient")
    mia = fr.collect_membership(out)
    assert {("pfdm", pz.AMBIENT_RECIPE), ("shared only", "uploads only")} <= set(zip(mia.method, mia.recipe))
    assert (mia.method != "local").all()  # the ambient attack file adds no local-only rows
    # the scaled kind (consistency weight abar_t0): its own model, files and rows beside the first ones
    sc = fr.run_ambient(cfg, 0, 10, out, progress=False, kind="ambient_scaled")
    assert set(zip(sc.method, sc.recipe)) == {("pfdm", pz.SCALED_AMBIENT_RECIPE), ("shared only", "uploads only, scaled")}
    assert (out / "seed0" / f"shared_ambient_scaled_t0{fr.t0_of(cfg, 10)}.pt").exists()
    assert (out / "ambient_scaled_seed0_eps10.csv").exists() and (out / "membership_seed0_eps10_ambient_scaled.csv").exists()
    rows2 = fr.collect(out)
    assert len(rows2) == len(rows) + 2 and len(rows2[rows2.method == "shared only"]) == 2
    assert rows2[rows2.method == "pfdm tuned"].validation_loss.item() == tuned.validation_loss.item()
    assert {("pfdm", pz.SCALED_AMBIENT_RECIPE), ("shared only", "uploads only, scaled")} <= set(
        zip(*(lambda m: (m.method, m.recipe))(fr.collect_membership(out))))
    sched = Schedule(cfg.T)
    assert pz.ambient_weight("ambient", sched, 675) == 1 and pz.ambient_weight("ambient_scaled", sched, 675) == \
        float(sched.alpha_bar[675])
    with pytest.raises(ValueError, match="kind"):
        fr.run_ambient(cfg, 0, 10, out, progress=False, kind="scaled")
    with pytest.raises(ValueError, match="kind"):
        pz.ambient_weight("paper", sched, 675)


def test_a_point_stopped_before_its_table_leaves_no_file_collect_reads(tmp_path, monkeypatch):
    """The table is written once, complete, with its samples beside it: a stop between training and the near-copies
    count leaves nothing `collect` would read half-made; the rerun finds the models and finishes."""
    monkeypatch.setenv("PFDM_RUNS", str(tmp_path / "runs"))
    cfg, out = tiny(), tmp_path / "f"
    near_copies = fr._near_copies

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fr, "_near_copies", stop)
    with pytest.raises(KeyboardInterrupt):
        fr.run_point(cfg, 0, 10, out, progress=False)
    assert not list(out.glob("*.csv")) and not list(out.glob("*.pt")) and list((out / "seed0").glob("*.pt"))
    with pytest.raises(FileNotFoundError, match="no frontier points"):
        fr.collect(out)
    monkeypatch.setattr(fr, "_near_copies", near_copies)
    df = fr.run_point(cfg, 0, 10, out, progress=False)
    assert "near_copies_minor" in pd.read_csv(out / "point_seed0_eps10.csv") and (df.eps == 10).all()
    assert (out / "point_seed0_eps10_samples.pt").exists()


SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "frontier.py"


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--preset", "smoke", *args], capture_output=True, text=True)


def test_script_checks_its_inputs_before_writing_and_reports_failed_jobs(tmp_path):
    r = _script("--eps", "10", "1e-9", "--out", str(tmp_path / "never"))
    assert r.returncode == 2 and "--eps: epsilon=1e-09 is not reachable" in r.stderr
    r = _script("--jobs", "0", "--out", str(tmp_path / "never"))
    assert r.returncode == 2 and "--jobs must be an integer >= 1, got 0" in r.stderr
    assert not (tmp_path / "never").exists()
    out = tmp_path / "f"
    out.mkdir()
    for s in (0, 1):  # each seed's cache folder is a file: both workers fail at their first write
        (out / f"seed{s}").write_text("")
    r = _script("--seeds", "0", "1", "--eps", "10", "--jobs", "2", "--out", str(out))
    assert r.returncode == 1, r.stderr
    assert "seed 0 failed (exit 1): FileExistsError" in r.stdout and "seed 1 failed" in r.stdout
    assert "seeds [0, 1] failed" in r.stderr and not (out / "frontier_table.csv").exists()
    assert "FileExistsError" in (out / "logs" / "seed1.log").read_text()


@pytest.mark.slow
def test_parallel_jobs_give_the_serial_runs_numbers(tmp_path):
    """--jobs 2: one process per seed on one thread each; the points equal those of this process (one thread; eps
    a float, as the command line parses it)."""
    out = tmp_path / "par"
    r = _script("--seeds", "0", "1", "--eps", "10", "--jobs", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "frontier_table.csv").exists() and set(fr.collect(out).seed) == {0, 1}
    assert (out / "logs" / "seed1.log").read_text().count("frontier: done seed 1, eps 10") == 1
    serial = fr.run_point(preset_config("smoke"), 1, 10.0, tmp_path / "serial", progress=False)
    pd.testing.assert_frame_equal(pd.read_csv(out / "point_seed1_eps10.csv"),
                                  pd.read_csv(tmp_path / "serial" / "point_seed1_eps10.csv"))
    assert len(serial) == len(pd.read_csv(out / "point_seed1_eps10.csv"))
