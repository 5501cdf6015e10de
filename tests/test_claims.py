"""The claims of docs/results.md about the committed `cpu` runs, checked against the committed result files: a claim the
committed numbers stop supporting fails `make test`.

runs/cpu/metric_bias.csv       scripts/metric_table.py: each estimator between two sets of real digits
runs/cpu/metric_old_new*.csv   scripts/metric_table.py: notebook 04's experiment over five seeds, old and new metric
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

RUNS = Path(__file__).resolve().parent.parent / "runs" / "cpu"
REFERENCE = 180  # client 0's majority reference on digits: 5 classes x ~36 held-out images


def _read(name: str) -> pd.DataFrame:
    path = RUNS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `python scripts/metric_table.py --publish` and commit its outputs")
    return pd.read_csv(path)


def test_per_class_fid_is_mostly_bias_at_the_reference_size():
    """docs/results.md: between two sets of real digits of one distribution, at the reference's size, the per-class FID
    (the old headline) reports several times what the group FID reports; every FID's bias falls with n."""
    b = _read("metric_bias.csv")
    m = b.groupby("n")[["fid_per_class", "fid_full", "gfid"]].mean()
    assert m.loc[REFERENCE, "fid_per_class"] > 3 * m.loc[REFERENCE, "gfid"]
    assert (m.diff().dropna() < 0).all().all()  # smaller with more images, for each estimator


def test_stratified_kid_is_unbiased_and_the_iid_one_is_not():
    """docs/results.md: on stratified sets the class-stratified KID averages 0 (within 3 standard errors of the mean at
    every size) while the i.i.d. KID is negative by more than 5 standard errors at every size."""
    b = _read("metric_bias.csv")
    for n, g in b.groupby("n"):
        se = lambda s: s.std(ddof=1) / math.sqrt(len(s))  # noqa: E731
        assert abs(g.gkid.mean()) < 3 * se(g.gkid), (n, g.gkid.mean())
        assert g.kid_iid.mean() < -5 * se(g.kid_iid), (n, g.kid_iid.mean())


def _pairs() -> pd.DataFrame:
    return _read("metric_old_new_pairs.csv").set_index(["a", "b", "metric"])


def test_pfdm_beats_local_only_on_minority_classes_by_every_metric():
    """docs/results.md: over five seeds PFDM's minority gain over local-only has a paired 95% interval above 0
    and wins in every seed, by the old FID, the group FID and the stratified KID."""
    p = _pairs()
    for metric in ("fid_minor", "gfid_minor", "gkid_minor"):
        r = p.loc[("pfdm", "local", metric)]
        assert r.lo > 0 and r.wins == "5/5", (metric, r.lo, r.wins)


def test_pfdm_stays_behind_centralized_and_fedavg_on_minority_classes():
    p = _pairs()
    for b in ("central", "fedavg"):
        for metric in ("fid_minor", "gfid_minor", "gkid_minor"):
            assert p.loc[("pfdm", b, metric)].hi < 0, (b, metric)


def test_old_and_new_fid_agree_on_every_verdict():
    """docs/results.md: the old and the new FID agree on which paired differences exclude 0 (12 of 12)."""
    p = _pairs().reset_index()
    for (a, b), g in p.groupby(["a", "b"]):
        g = g.set_index("metric")
        for group in ("minor", "major"):
            assert g.loc[f"fid_{group}", "excludes_0"] == g.loc[f"gfid_{group}", "excludes_0"], (a, b, group)
    assert p.groupby(["a", "b"]).ngroups * 2 == 12


def test_five_seeds_behind_the_old_new_table():
    rows = _read("digits/metric_seeds.csv")
    assert rows.groupby("method").seed.nunique().min() >= 5


# ----------------------------------------------------------------------------- notebook 07 (runs/cpu/attacks/)
def _mia() -> pd.Series:
    return _read("attacks/mia_seed0.csv").set_index(["model", "attack"]).auc


def test_shared_model_far_below_its_control_at_t0_300_and_level_with_it_at_eps_10():
    """Notebook 07: at t0 = 300 the uploads' noise protects (the non-private model queried at the same steps is
    wide open); at t0 = 693 (eps = 10) the control itself is near chance, so the shared model's ~0.5 is no evidence."""
    auc = _mia()
    for attack in ("loss", "pia"):
        assert auc["non-private (overfit), steps > 300 (control)", attack] - auc["PFDM shared, t0=300", attack] > 0.2
        assert abs(auc["non-private (overfit), steps > 693 (control)", attack] - 0.5) < 0.1
        assert abs(auc["PFDM shared, t0=693", attack] - 0.5) < 0.1
    assert auc["non-private (overfit)", "loss"] > 0.8 and auc["personal, t0=693 (if published)", "loss"] > 0.8


def test_pfdm_samples_copy_more_than_local_only():
    m = _read("attacks/memorization_seed0.csv").set_index("source").below_threshold
    assert m["PFDM t0=693 (shared + personal)"] > m["local-only"] > m["held-out real digits (reference)"] == 0


def test_audit_below_both_accountants_and_a_real_test_from_t0_693():
    a = _read("attacks/audit_seed0.csv")
    assert (a.eps_lb <= a.eps_analytic).all() and (a.eps_analytic <= a.eps_thm51).all()
    assert a[a.t0 >= 693].can_refute.all() and not a[a.t0 <= 600].can_refute.any()


# ----------------------------------------------------------------------------- notebook 08 (runs/cpu/digits/baselines*)
def _rivals() -> pd.DataFrame:
    runs = [_read("digits/baselines.csv")]
    runs += [_read(f"digits/baselines_{v}.csv").assign(method=v) for v in ("dpsgd", "dpsgd_dpdm")]
    return pd.concat(runs, ignore_index=True).set_index("method")


def test_pfdm_beats_both_dp_sgd_variants_and_the_dpdm_recipe_helps():
    """docs/results.md: at eps = 10 PFDM's minority group FID and worst-class downstream accuracy beat both DP-SGD
    variants; the DPDM-like one (K = 4, batch 128) beats DP-SGD at the shared budget; both spend
    the target eps within 1%."""
    r = _rivals()
    assert r.gfid_minor["pfdm"] < min(r.gfid_minor["dpsgd"], r.gfid_minor["dpsgd_dpdm"])
    assert r.gfid_minor["dpsgd_dpdm"] < r.gfid_minor["dpsgd"]
    assert ((r.loc[["dpsgd", "dpsgd_dpdm"], "dp_eps_spent"] - 10).abs() < 0.1).all()
    acc = _read("digits/baselines_downstream_seed0.csv").set_index("method").accuracy_worst
    assert acc["pfdm"] > max(acc["dpsgd"], acc["dpsgd_dpdm"])


def test_phoenix_as_published_is_behind_conditional_fedavg_on_both_splits():
    """docs/results.md: the unconditional Phoenix (and its strategies) is behind the class-conditional FedAvg of
    the same budget on client 0's minority group FID, on the cluster and on the IID split."""
    for name in ("digits/baselines.csv", "digits_iid/baselines.csv"):
        r = _read(name).set_index("method").gfid_minor
        for m in ("phoenix_uncond", "phoenix_uncond_sharing", "phoenix_uncond_filter"):
            assert r[m] > r["fedavg"], (name, m)


def test_notebook_04_pfdm_beats_untuned_local_only_in_every_seed():
    """Notebook 04 (runs/cpu/digits/results.csv, seeds 0, 1, 2, eps = 10): with the paper's untuned recipe PFDM's minority
    group FID is below local-only's and its minority samples are recognised more often, in every seed; its majority recall
    stays within 0.1 of local-only's (the handover keeps x_t0's variance)."""
    from pfdm_core.evaluation.compare import paired

    df = _read("digits/results.csv")
    df = df[df.seed.isin([0, 1, 2]) & (df.method.isin(["local"]) | (df.t0 == 693))]
    fid, acc = paired(df, "pfdm", "local", "gfid_minor"), paired(df, "pfdm", "local", "accuracy_minor", False)
    assert (fid.wins, fid.n) == (3, 3) and (acc.wins, acc.n) == (3, 3), (str(fid), str(acc))
    recall = df[df.method == "pfdm"].set_index("seed").recall_major - df[df.method == "local"].set_index("seed").recall_major
    assert (recall.abs() < 0.1).all(), recall.to_dict()


def test_generated_tables_of_docs_results_follow_the_result_files():
    """docs/results.md's generated blocks (scripts/doc_tables.py) equal what the committed result files give."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "doc_tables.py"
    r = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_frontier_at_eps_10_no_variant_closes_half_of_the_tuned_gap():
    """docs/results.md, README and notebook 10 section 4 (runs/cpu/frontier_digits, make frontier): at eps = 10 per
    image, against tuned local-only and centralized, every PFDM variant's gap-closed interval lies below one half (or
    its paired difference from local-only lies below zero), the validation-tuned PFDM's contains zero, the paper's
    recipe closes less than none of it (its gap interval lies below zero, while its paired FID difference's contains
    zero), and our recipe, the warm start and the frozen encoder each close a few percent at most, over five seeds."""
    from pfdm_core import experiment
    from pfdm_core.studies import frontier as fr
    from pfdm_core.studies import personalization as pz

    rows = fr.collect(RUNS / "frontier_digits")
    v = fr.strict_verdict(fr.table(rows))
    strict = v["rows"]
    assert v["eps"] == 10 and (strict[strict.recipe != pz.AMBIENT_RECIPE].seeds == 5).all(), strict.seeds.tolist()
    assert v["verdict"] == "no", strict[["recipe", "gap_closed_lo", "gap_closed_hi"]]
    assert v["tuned"].gap_closed_lo < 0 < v["tuned"].gap_closed_hi
    paper = strict[strict.recipe == "paper"].iloc[0]
    assert paper.gap_closed_hi < 0 and paper.local_minus_lo < 0 < paper.local_minus_hi
    ours = strict[(strict.method == "pfdm") & ~strict.recipe.isin(["paper", pz.AMBIENT_RECIPE, pz.SCALED_AMBIENT_RECIPE])]
    assert len(ours) == 3 and ours.gap_closed_mean.abs().max() < 0.1 and ours.gap_closed_hi.max() < 0.25
    # docs/results.md: the baselines retrained on another machine change neither answer: with the baselines of any
    # point, the strict end says "no" and the tuned PFDM first beats local-only at eps = 200
    for eps in sorted(rows.eps.dropna().unique()):
        t = fr.table(fr.collect(RUNS / "frontier_digits", baselines_eps=eps))
        assert fr.strict_verdict(t)["verdict"] == "no" and fr.first_win(t) == 200, eps
    local = {b: fr.collect(RUNS / "frontier_digits", baselines_eps=b).query("method == 'local'").set_index("seed")
             .gfid_minor for b in (1, 10)}
    # "by 0.1-0.6 per seed": seeds 0-2, whose baselines were retrained on another machine; seeds 3 and 4 have one
    # realization, evaluated again in each point to the same numbers
    assert (local[1] - local[10]).loc[[0, 1, 2]].abs().between(0.1, 0.6).all(), local
    assert (local[1] - local[10]).loc[[3, 4]].abs().max() < 1e-9, local
    # docs/results.md (notebook 10's rule): our recipe's best step at eps = 10 within 3x the paper's budget in four of
    # five seeds, seed 3's at 3.4x
    steps = rows[(rows.eps == 10) & (rows.recipe == pz.OUR_RECIPE)].set_index("seed").steps_used
    budget = experiment.preset_config("cpu", "digits").train.steps
    assert (steps <= 3 * budget).sum() == 4 and round(steps[3] / budget, 1) == 3.4, steps
    mia = fr.collect_membership(RUNS / "frontier_digits")  # local-only's attack: from the same point, once
    assert (mia[mia.method == "local"].eps == 10).all() and not mia.duplicated(["seed", "method", "recipe", "eps"]).any()


def test_frontier_ambient_shared_model_diverges_at_eps_10_and_50_and_misleads_validation_at_200():
    """docs/results.md, "What the ambient shared model did" (runs/cpu/frontier_digits/ambient_seed*_eps*.csv)."""
    from pfdm_core.evaluation.compare import mean_interval
    from pfdm_core.studies import frontier as fr
    from pfdm_core.studies import personalization as pz

    rows = fr.collect(RUNS / "frontier_digits")
    t = fr.table(rows)
    loc = rows[rows.method == "local"].set_index("seed").gfid_minor
    amb, alone = rows[rows.recipe == pz.AMBIENT_RECIPE], rows[rows.recipe == "uploads only"]
    assert sorted(amb[amb.eps == 10].seed) == sorted(amb[amb.eps == 200].seed) == [0, 1, 2, 3, 4]
    assert sorted(amb[amb.eps == 50].seed) == [0, 1, 2]
    # above t0 the ambient model fits the held-out uploads worse than the paper's shared model, every seed and eps
    assert (amb.ambient_shared_loss_above_t0 > amb.paper_shared_loss_above_t0).all()
    assert amb[amb.eps == 10].paper_shared_loss_above_t0.between(0.15, 0.25).all()
    # eps = 10 and 50: diverged (hundreds of thousands to millions below and above t0; a fresh network ~1), the warm
    # start far behind local-only
    for eps in (10, 50):
        a = amb[amb.eps == eps].set_index("seed")
        assert (a.warm_start_validation_loss > 1e5).all() and (a.ambient_shared_loss_above_t0 > 1e5).all()
        assert a.random_init_validation_loss.between(0.5, 2).all()
        assert (a.gfid_minor > loc[a.index]).all()
        assert t[(t.eps == eps) & (t.recipe == pz.AMBIENT_RECIPE)].local_minus_hi.item() < 0
        assert (alone[alone.eps == eps].accuracy_minor < 0.05).all()
    # the scaled version (consistency weight abar_t0), eps = 10, five seeds: no divergence (above t0 within 2% of
    # the paper's shared model), below t0 no better than a fresh network in most seeds, its warm start level with
    # tuned local-only and below half of the gap; alone it draws some minority digits; its attack at chance
    sc = rows[rows.recipe == pz.SCALED_AMBIENT_RECIPE].set_index("seed")
    assert sorted(sc.index) == [0, 1, 2, 3, 4] and (sc.eps == 10).all()
    assert ((sc.ambient_shared_loss_above_t0 / sc.paper_shared_loss_above_t0 - 1).abs() < 0.02).all()
    assert (sc.warm_start_validation_loss > sc.random_init_validation_loss).sum() >= 3
    r = t[(t.eps == 10) & (t.recipe == pz.SCALED_AMBIENT_RECIPE)].iloc[0]
    assert r.local_minus_lo < 0 < r.local_minus_hi and r.gap_closed_hi < fr.HALF
    assert rows[rows.recipe == "uploads only, scaled"].accuracy_minor.between(0.1, 0.3).all()
    # eps = 200: trains (loss below t0 about half a fresh network's); lowest validation loss of all recipes in every
    # seed, samples not shown better than local-only and behind the warm start from the paper's model on average
    a200 = amb[amb.eps == 200].set_index("seed")
    assert (a200.warm_start_validation_loss / a200.random_init_validation_loss).between(0.4, 0.65).all()
    pf200 = rows[(rows.eps == 200) & (rows.method == "pfdm")]
    assert (pf200.loc[pf200.groupby("seed").validation_loss.idxmin()].recipe == pz.AMBIENT_RECIPE).all()
    r200 = t[(t.eps == 200) & (t.method == "pfdm")].set_index("recipe")
    assert r200.loc[pz.AMBIENT_RECIPE].local_minus_lo < 0 < r200.loc[pz.AMBIENT_RECIPE].local_minus_hi
    assert r200.loc[pz.AMBIENT_RECIPE].gfid_minor_mean > r200.loc[pz.WARM_RECIPE].gfid_minor_mean
    # had the tuned search included it, the win at eps = 200 would vanish (the tuned row today: above zero)
    rt = fr.retuned(rows, 200)
    assert len(rt) == 5 and (rt.chosen_recipe == pz.AMBIENT_RECIPE).all()
    diff = (loc[rt.seed].to_numpy() - rt.gfid_minor.to_numpy())
    offered = fr.table(pd.concat([rows, rt], ignore_index=True)).query("method == 'pfdm retuned'").iloc[0]
    assert math.isclose(offered.local_minus_lo, mean_interval(diff)[1])
    assert offered.local_minus_lo < 0 < t[(t.eps == 200) & (t.method == "pfdm tuned")].local_minus_lo.item()
    assert (alone[alone.eps == 200].accuracy_minor < 0.2).all()
    # membership: the ambient model alone at chance; its chain leaks less than the other PFDM chains at eps = 200
    mt = fr.membership_table(fr.collect_membership(RUNS / "frontier_digits"))
    assert mt[mt.method == "shared only"].mia_auc_mean.between(0.45, 0.55).all()
    m200 = mt[(mt.eps == 200) & (mt.method == "pfdm")].set_index("recipe").mia_auc_mean
    assert (m200.drop(pz.AMBIENT_RECIPE) > m200[pz.AMBIENT_RECIPE]).all()



def test_ambient_consistency_term_steers_the_update_where_the_uploads_are_noisiest():
    """docs/results.md ("Why it diverged"): at the ambient shared model's start (seed 0's initial network, its
    uploads, batches of the cpu preset) the consistency term's gradient norm is over 10x the exact loss's at eps = 10
    (t0 = 675), above it at eps = 50 (t0 = 476) and below it at eps = 200 (t0 = 300); weighted by abar_t0, a
    fraction of it at all three."""
    import torch

    from pfdm_core import experiment
    from pfdm_core.core.schedule import Schedule
    from pfdm_core.methods.ambient import AmbientLoss, gradient_norms
    from pfdm_core.methods.pfdm import client_upload
    from pfdm_core.methods.server import pool
    from pfdm_core.studies import personalization as pz

    cfg, seed = experiment.preset_config("cpu", "digits"), 0
    sched, ss = Schedule(cfg.T), pz.make_study_split(cfg, seed)
    ratio = {}
    for t0 in (675, 476, 300):
        ups = [client_upload(d, t0, sched, cfg.privacy.clip_norm, seed=seed * 100 + m, delta=cfg.privacy.delta)
               for m, d in enumerate(ss.clients)]
        x, y, _ = pool(ups)
        for kind in ("ambient", "ambient_scaled"):
            g, net = torch.Generator().manual_seed(1), pz._model(cfg, pz.Recipe(), seed)
            loss, norms = AmbientLoss(t0, weight=pz.ambient_weight(kind, sched, t0)), []
            for _ in range(2):
                i = torch.randint(0, len(x), (cfg.train.batch_size,), generator=g)
                norms.append(gradient_norms(net, loss, sched, x[i], y[i], g))
            ratio[kind, t0] = sum(c for _, c in norms) / sum(e for e, _ in norms)
    assert ratio["ambient", 675] > 10 and 1 < ratio["ambient", 476] < 10 and ratio["ambient", 300] < 1, ratio
    # weighted by abar_t0 (the scaled kind): a fraction of the exact loss's at every t0
    assert all(0.1 < ratio["ambient_scaled", t0] < 0.5 for t0 in (675, 476, 300)), ratio

def test_frontier_rivals_dp_sgd_at_its_budget_is_noise_bound_and_behind_local_only():
    """docs/results.md (the frontier's rivals, runs/cpu/frontier_digits/rivals_seed*.csv): DP-SGD at the shared
    budget (batch 64) spends each eps of the grid within 1%; the norm of its noise on the mean gradient,
    sigma * C * sqrt(d) / B, is several times the clipped gradient's bound C even at eps = 200; at this compute its
    minority group FID is behind tuned local-only's at every eps and seed; FedAvg has one row per seed."""
    import math

    from pfdm_core import experiment
    from pfdm_core.core.nets import UNet
    from pfdm_core.studies import frontier as fr

    rows = fr.collect(RUNS / "frontier_digits")
    dp, loc = rows[rows.method == "dpsgd"], rows[rows.method == "local"].set_index("seed").gfid_minor
    assert set(dp.eps) == set(fr.EPSILONS) and dp.seed.nunique() >= 3, (sorted(set(dp.eps)), dp.seed.unique())
    assert ((dp.dp_eps_spent - dp.eps).abs() <= 0.01 * dp.eps).all()
    cfg = experiment.preset_config("cpu", "digits")
    d = sum(p.numel() for p in UNet(cfg.net).parameters())
    at200 = dp[dp.eps == 200]
    assert (at200.dp_noise_multiplier * cfg.dpsgd.clip_norm * math.sqrt(d) / at200.dp_batch_size > 3).all()
    assert (dp.gfid_minor.to_numpy() > loc[dp.seed].to_numpy()).all()
    fedavg = rows[rows.method == "fedavg"]
    assert len(fedavg) == fedavg.seed.nunique() == dp.seed.nunique()


def test_notebook_09_flower_run_is_the_in_process_run_and_the_server_saw_uploads_only():
    """Notebook 09's checks at cpu (runs/cpu/flower/claims.json, written by the notebook): the Flower app trains the
    same shared model as the in-process loop and gives client 0 the same scores; the server's audit log holds
    privatized uploads and labels only (a raw image would correlate > 0.99); PFDM uploads fewer bytes than FedAvg."""
    c = json.loads((RUNS / "flower" / "claims.json").read_text())
    assert c["preset"] == "cpu" and c["max_shared_weight_difference"] < 1e-3
    for key, v in c["in_process"].items():
        assert abs(c["flower"][key] - v) <= 0.05 * abs(v) + 1.0, (key, v, c["flower"][key])
    assert c["audit_types"] == ["query.upload"] and c["audit_keys"] == ["x_tilde", "y"]
    assert c["max_corr_uploads"] < 0.99 < c["max_corr_with_one_raw_image"]
    assert c["uploaded_per_client"]["PFDM"] < c["uploaded_per_client"]["FedAvg"]


def test_notebook_10_ablation_our_recipe_by_validation_and_what_the_test_reference_says():
    """Notebook 10 section 3 (runs/cpu/personalization/ablation.csv, seed 0, eps = 10): the personal denoiser's recipe
    with the lowest validation loss on client 0's held-out images is pfdm_core's OUR_RECIPE, the recipe the frontier
    runs (in this seed a hair below the same recipe at half the budget); the choice never reads the test
    reference."""
    from pfdm_core.studies import personalization as pz

    df = pd.read_csv(RUNS / "personalization" / "ablation.csv")
    pf = df[df.method == "pfdm"]
    assert len(pf) == 10 and pf.t0.nunique() == 1 and int(pf.t0.iloc[0]) == 675
    best = pf[pf.validation_loss == pf.validation_loss.min()].recipe  # a tie goes to the larger budget (validation_table)
    assert max(best, key=lambda r: pz.RECIPES[r].budget) == pz.OUR_RECIPE, best.tolist()
    # section 3's text: our recipe beats the paper's on the test reference but is not the best there; guidance and
    # shifts are the two worst; local-only and PFDM with our recipe are level in this seed (within half a point)
    fid = pf.set_index("recipe").gfid_minor
    assert fid[pz.OUR_RECIPE] < fid["paper"] and fid.idxmin() != pz.OUR_RECIPE
    assert fid.nlargest(2).index.tolist() == ["selected + guidance -0.3", "selected + shifts"]
    loc = df[df.method == "local"].set_index("recipe").gfid_minor
    assert abs(loc[pz.OUR_RECIPE] - fid[pz.OUR_RECIPE]) < 0.5
    val = pf.set_index("recipe").validation_loss  # "a hair below" the same recipe at half the budget
    assert 0 < val["selected + EMA + dropout + weight decay"] - val[pz.OUR_RECIPE] < 0.001


def test_notebook_05_mnist_one_seed_what_it_shows_and_why_no_verdict():
    """docs/results.md, MNIST (runs/cpu/mnist/results.csv, notebook 05 at cpu, seed 0): PFDM's minority group FID is below
    local-only's at both t0 and centralized is lowest; at t0 = 827 PFDM's minority accuracy is not above local-only's;
    no verdict because local-only's samples fall under the 0.5 floor of compare.learned (and one seed); PFDM at t0 = 827
    keeps a majority recall level with local-only's (within 0.1)."""
    from pfdm_core.evaluation.compare import LEARNED, learned

    df = _read("mnist/results.csv")
    assert df.seed.unique().tolist() == [0] and sorted(df.t0.dropna().astype(int)) == [284, 827]
    by = {(m, 0 if pd.isna(t) else int(t)): r for m, t, r in zip(df.method, df.t0, df.itertuples())}
    local, central = by[("local", 0)], by[("central", 0)]
    for t in (284, 827):
        assert by[("pfdm", t)].gfid_minor < local.gfid_minor
    assert central.gfid_minor == df.gfid_minor.min()
    assert by[("pfdm", 827)].accuracy_minor <= local.accuracy_minor
    assert local.accuracy_avg < LEARNED <= min(by[("pfdm", t)].accuracy_avg for t in (284, 827))
    assert not learned(df[df.method.isin(["pfdm", "local"])])
    assert abs(by[("pfdm", 827)].recall_major - local.recall_major) < 0.1


def test_weight_decay_as_adams_l2_term_parts_two_trainings_apart_by_rounding():
    """docs/results.md, "Why a retrained model is another realization" (runs/cpu/realization/sensitivity.csv,
    scripts/realization.py at cpu, 1600 steps): started 1e-7 apart, two trainings end over 100x farther apart with
    Adam + weight decay 1e-4 (the L2 term) than with Adam alone, whose weights stay within 1e-3, as AdamW's do (1e-2,
    and 0.5, which shrinks the norm below 0.6x Adam alone's); under the L2 term the weight norm ends below half of Adam
    alone's, with over 5x the fraction of weights near zero."""
    df = _read("realization/sensitivity.csv")
    end = df[df.step == df.step.max()].set_index("setting")
    assert df.step.max() == 1600 and set(end.index) == {"adam", "adam_l2", "adamw", "adamw_strong"}
    assert (end.rel_distance.drop("adam_l2") < 1e-3).all()  # decoupled decay too, even where it shrinks as much
    assert end.weight_norm["adamw_strong"] < 0.6 * end.weight_norm["adam"]
    assert end.rel_distance["adam_l2"] > 100 * end.rel_distance["adam"]
    assert end.weight_norm["adam_l2"] < 0.5 * end.weight_norm["adam"]
    assert end.near_zero["adam_l2"] > 5 * end.near_zero["adam"]
    assert (df[df.step == df.step.min()].rel_distance < 1e-4).all()  # they start together
