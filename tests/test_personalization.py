"""The personalization study (pfdm_core.personalization): training never reads the test reference,
recipes train and select, shifts augment, the study runs end to end and reports the gap closed."""
import numpy as np
import pytest
import torch

from pfdm_core.core.nets import UNetConfig
from pfdm_core.core.schedule import Schedule
from pfdm_core.core.train import TrainConfig
from pfdm_core.experiment import preset_config
from pfdm_core.methods import selection
from pfdm_core.studies import personalization as pz


class Forbidden:
    """Stands in for the test reference: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"model selection read the test reference (.{name})")

    def __len__(self):
        raise AssertionError("model selection read the test reference (len)")


def tiny(**kw):
    base = dict(majority_per_class=8, minority_per_class=3, n_per_class=4, classifier_epochs=1, ddim_steps=4,
                net=UNetConfig(base_channels=8), train=TrainConfig(steps=4, batch_size=8, lr=1e-3))
    return preset_config("smoke", **{**base, **kw})


def test_training_and_selection_never_read_the_test_reference(tmp_path):
    cfg = tiny()
    ss = pz.make_study_split(cfg, seed=0)
    ss.test = Forbidden()
    r = pz.Recipe(budget=2, select=True)  # 8 steps, validated every 4 // 8 -> 1 step
    model, used, vloss = pz.train_client_model(cfg, ss.clients[0], ss.vals[0], 400, r, 0, tmp_path / "p.pt",
                                               progress=False)
    assert 1 <= used <= 8 and not model.training and vloss > 0
    pz.train_central(cfg, ss, r, 0, tmp_path, progress=False)
    pz.train_shared(cfg, ss, 400, 0, tmp_path, progress=False)
    with pytest.raises(AssertionError, match="test reference"):  # the sentinel works: evaluation does read it
        pz.evaluate(cfg, ss, None, torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.long), None)


def test_study_split_holds_out_every_class_of_every_client():
    ss = pz.make_study_split(tiny(), seed=0)
    for tr, va in zip(ss.clients, ss.vals):
        assert set(va.y.tolist()) == set(tr.y.tolist()) == set(range(10))
        assert not {tuple(x.flatten().tolist()) for x in tr.x} & {tuple(x.flatten().tolist()) for x in va.x}


def test_shift_augment_gives_nine_shifted_copies():
    x = torch.full((2, 1, 8, 8), -1.0)
    x[:, :, 3, 4] = 1.0
    aug = pz.shift_augment(pz.Dataset(x, torch.tensor([3, 7])))
    assert aug.x.shape == (18, 1, 8, 8) and aug.y.tolist() == [3, 7] * 9
    assert torch.equal(aug.x[8:10], x)  # the middle shift (0, 0) is the original
    peaks = {tuple((img[0] == 1).nonzero()[0].tolist()) for img in aug.x}
    assert peaks == {(3 + dy, 4 + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}


def test_early_stopping_stops_and_a_rerun_does_not_train(tmp_path, monkeypatch):
    sched = Schedule(1000)
    ss = pz.make_study_split(tiny(), seed=0)
    val = selection.ValidationLoss(sched, ss.vals[0].x, ss.vals[0].y, 1, 1000, draws=2)
    del val  # a scripted validation loss instead: best at the 2nd evaluation, then worse
    calls = iter([1.0, 0.5, 0.6, 0.7, 0.8, 0.9])
    fake = lambda m: next(calls)
    cfg = TrainConfig(steps=12, batch_size=8, checkpoint_every=2)
    from pfdm_core.core.nets import UNet

    res = selection.train_selected(UNet(UNetConfig(base_channels=8)), sched, ss.clients[0].x, ss.clients[0].y, 1,
                                   1000, fake, config=cfg, every=2, patience=2, checkpoint=tmp_path / "m.pt",
                                   progress=False)
    assert res.best_step == 4 and [s for s, _ in res.curve] == [2, 4, 6, 8]  # stopped 2 evaluations after the best
    boom = lambda m: (_ for _ in ()).throw(AssertionError("trained again"))
    again = selection.train_selected(UNet(UNetConfig(base_channels=8)), sched, ss.clients[0].x, ss.clients[0].y, 1,
                                     1000, boom, config=cfg, every=2, patience=2, checkpoint=tmp_path / "m.pt",
                                     progress=False)
    assert again.best_step == 4
    for a, b in zip(res.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)


def test_run_study_end_to_end_tuned_and_gap_closed(tmp_path, monkeypatch):
    """Equal tuning: by default every method trains every recipe; `tuned` keeps, per method, seed and t0, the
    recipe of lowest validation loss on the method's own hold-out; the gap is measured between tuned methods."""
    monkeypatch.setenv("PFDM_RUNS", str(tmp_path / "runs"))
    cfg = tiny()
    df = pz.run_study(cfg, seeds=[0, 1], t0s=[400], recipes=["paper", "selected"], out=tmp_path / "study",
                      progress=False)
    assert set(zip(df.method, df.recipe)) == {(m, r) for m in ("local", "central", "pfdm") for r in ("paper", "selected")}
    assert len(df) == 12 and df.fid_minor.notna().all() and (df.validation_loss > 0).all()
    assert (tmp_path / "study" / "study.csv").exists() and (tmp_path / "study" / "study_samples.pt").exists()
    t = pz.tuned(df)
    assert len(t) == 6 and (t.tuned_from == 2).all()
    for _, row in t.iterrows():
        same = df[(df.seed == row.seed) & (df.method == row.method)]
        assert row.validation_loss == same.validation_loss.min() and row.recipe in set(same.recipe)
    gap = pz.gap_closed(df)
    assert len(gap) == 2 and (gap.seeds == 2).all()
    by = lambda d, m, s: d[(d.method == m) & (d.seed == s)].fid_minor.item()  # noqa: E731
    per_seed = [(by(t, "local", s) - df[(df.method == "pfdm") & (df.recipe == "paper") & (df.seed == s)].fid_minor.item())
                / (by(t, "local", s) - by(t, "central", s)) for s in (0, 1)]
    assert gap[gap.recipe == "paper"].gap_closed_mean.item() == pytest.approx(np.mean(per_seed))
    fixed = pz.gap_closed(df, local="paper")  # a named local-only recipe against the tuned centralized model
    assert not np.allclose(fixed.gap_closed_mean, gap.gap_closed_mean) or (t[t.method == "local"].recipe == "paper").all()
    with pytest.raises(ValueError, match="no local-only rows of recipe 'nope'"):
        pz.gap_closed(df, local="nope")
    vt = pz.validation_table(cfg, tmp_path / "study", 0, 400, ["paper", "selected"])
    assert list(vt.columns) == ["recipe", "validation_loss", "steps_used", "budget"]
    assert vt.validation_loss.is_monotonic_increasing
    assert set(vt.recipe) == {"paper", "selected"} and vt[vt.recipe == "paper"].steps_used.item() == cfg.train.steps
    with pytest.raises(FileNotFoundError, match="run_study"):
        pz.validation_table(cfg, tmp_path / "study", 0, 401, ["paper"])
    with pytest.raises(ValueError, match="unknown recipe"):
        pz.run_study(cfg, [0], [400], ["nope"], tmp_path / "x", progress=False)


def test_warm_start_starts_from_the_shared_weights_and_is_pfdm_only(tmp_path):
    """The warm-started personal denoiser begins at the shared model's weights (a cold one does not); a warm-start
    recipe without a shared model, or as a local-only / centralized recipe, is refused."""
    cfg = tiny()
    ss = pz.make_study_split(cfg, seed=0)
    shared = pz.train_shared(cfg, ss, 400, 0, tmp_path, progress=False)
    start = {}
    orig = selection.train_selected

    def spy(model, *a, **k):
        start[k["checkpoint"].stem] = {n: p.detach().clone() for n, p in model.state_dict().items()}
        return orig(model, *a, **k)

    warm, cold = pz.Recipe(warm_start=True), pz.Recipe()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pz, "train_selected", spy)
        pz.train_client_model(cfg, ss.clients[0], ss.vals[0], 400, warm, 0, tmp_path / "warm.pt", False, init=shared)
        pz.train_client_model(cfg, ss.clients[0], ss.vals[0], 400, cold, 0, tmp_path / "cold.pt", False)
    ref = shared.state_dict()
    assert all(torch.equal(start["warm"][n], ref[n]) for n in ref)
    assert not all(torch.equal(start["cold"][n], ref[n]) for n in ref)
    with pytest.raises(ValueError, match="needs init"):
        pz.train_client_model(cfg, ss.clients[0], ss.vals[0], 400, warm, 0, tmp_path / "w2.pt", False)
    frozen = pz.Recipe(warm_start=True, freeze=("embed", "stem", "down", "mid"))
    m, _, _ = pz.train_client_model(cfg, ss.clients[0], ss.vals[0], 400, frozen, 0, tmp_path / "frozen.pt", False,
                                     init=shared)
    after = m.state_dict()
    kept = [n for n in ref if n.split(".")[0] in frozen.freeze]
    assert kept and all(torch.equal(after[n], ref[n]) for n in kept)  # the shared encoder, unchanged
    assert not all(torch.equal(after[n], ref[n]) for n in ref if n.startswith("up."))  # the decoder trained
    with pytest.raises(ValueError, match="freeze must name blocks"):
        pz.train_client_model(cfg, ss.clients[0], ss.vals[0], 400, pz.Recipe(freeze=("down",)), 0,
                              tmp_path / "f2.pt", False)
    with pytest.raises(ValueError, match="freeze must name blocks"):
        pz.train_client_model(cfg, ss.clients[0], ss.vals[0], 400, pz.Recipe(warm_start=True, freeze=("encoder",)),
                              0, tmp_path / "f3.pt", False, init=shared)
    with pytest.raises(ValueError, match="not a centralized recipe"):
        pz.train_central(cfg, ss, warm, 0, tmp_path, progress=False)
    with pytest.raises(ValueError, match="not a local-only recipe"):
        pz.run_study(cfg, [0], [400], ["paper"], tmp_path / "s", local_recipes=[pz.WARM_RECIPE], progress=False)


def test_validation_table_breaks_an_exact_tie_towards_the_larger_budget(tmp_path):
    """Two budgets of one recipe follow one trajectory: a tie is the same model, and the larger budget is kept."""
    cfg = preset_config("smoke")
    small, large = "selected + EMA + dropout + weight decay", pz.OUR_RECIPE
    assert pz.RECIPES[large].budget > pz.RECIPES[small].budget
    (tmp_path / "seed0").mkdir()
    for name, loss in ((small, 0.1), (large, 0.1), ("paper", 0.2)):
        torch.save({"loss": loss, "step": 10}, tmp_path / "seed0" / f"{pz._personal_name(cfg, 400, name)}.best.pt")
    for order in ([small, large, "paper"], [large, small, "paper"], ["paper", small, large]):
        assert pz.validation_table(cfg, tmp_path, 0, 400, order).recipe.tolist() == [large, small, "paper"]
