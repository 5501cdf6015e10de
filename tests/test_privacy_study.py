"""Tests of pfdm_core.studies.privacy_study (notebook 07): the split, cached training, presets, the tables.

Models are tiny (8-channel UNet, 2 optimiser steps): these tests check plumbing, not privacy.
"""
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from pfdm_core import attacks
from pfdm_core.core.nets import UNetConfig
from pfdm_core.core.train import TrainConfig
from pfdm_core.data.small import digits_split
from pfdm_core.studies import privacy_study as ps

TINY_TRAIN = TrainConfig(steps=2, batch_size=8, lr=1e-3)
TINY = replace(ps.STUDY_PRESETS["smoke"], num_members=12, num_nonmembers=20, t0s=(300, 693), personal_t0=693,
               net=UNetConfig(base_channels=8), overfit=TINY_TRAIN, train=TINY_TRAIN, public=TINY_TRAIN,
               num_generated=10, ddim_steps=2, recon_steps=2, audit_t0s=(500, 693), audit_trials=2000)


def _min_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.cdist(a.flatten(1), b.flatten(1)).min().item()  # digits has no duplicate images


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("attacks")
    split = ps.membership_split(TINY, seed=0)
    return split, ps.train_models(TINY, split, 0, folder, progress=False), folder


# ----------------------------------------------------------------------------- split
@pytest.mark.parametrize("preset", ["smoke", "cpu"])
def test_split_is_disjoint_stratified_and_sized(preset):
    cfg = ps.study_config(preset)
    split = ps.membership_split(cfg, seed=0)
    train_set, test = digits_split(0)
    assert len(split.members) == cfg.num_members and len(split.nonmembers) == cfg.num_nonmembers
    assert len(split.members) + len(split.public) == len(train_set)  # public = every other training image
    assert _min_distance(split.members.x, split.public.x) > 0 and _min_distance(split.members.x, split.nonmembers.x) > 0
    assert _min_distance(split.public.x, split.nonmembers.x) > 0
    assert _min_distance(split.nonmembers.x, test.x) == 0 and len(set(split.members.y.tolist())) == 10
    again = ps.membership_split(cfg, seed=0)
    assert torch.equal(again.members.x, split.members.x)
    assert not torch.equal(ps.membership_split(cfg, seed=1).members.x, split.members.x)


def test_cpu_preset_uses_every_test_image_as_a_nonmember():
    assert ps.study_config("cpu").num_nonmembers == len(digits_split(0)[1]) == 360


# ----------------------------------------------------------------------------- models
def test_training_caches_and_a_second_call_does_not_retrain(trained):
    split, models, folder = trained
    files = sorted(folder.glob("*.pt"))
    assert [f.name for f in files] == sorted(["overfit.pt", "local.pt", "public.pt", "shared_t0300.pt",
                                              "shared_t0693.pt", "personal_t0693.pt", "shadow.pt"])
    stamps = {f: f.stat().st_mtime_ns for f in files}
    again = ps.train_models(TINY, split, 0, folder, progress=False)
    assert {f: f.stat().st_mtime_ns for f in files} == stamps  # nothing was written again
    for a, b in zip(models.overfit.state_dict().values(), again.overfit.state_dict().values()):
        assert torch.equal(a, b)
    assert sorted(again.shared) == [300, 693] and again.personal_t0 == 693


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    import pfdm_core.core.train as train_module

    cfg = replace(TINY, overfit=replace(TINY_TRAIN, steps=4))  # checkpoints every 4 // 4 = 1 step
    split, loss, calls = ps.membership_split(cfg, 0), train_module.diffusion_loss, []

    def dies_at_step_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "diffusion_loss", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        ps.train_models(cfg, split, 0, tmp_path / "a", progress=False)
    assert torch.load(tmp_path / "a" / "overfit.pt", weights_only=False)["step"] == 2
    monkeypatch.setattr(train_module, "diffusion_loss", loss)
    resumed = ps.train_models(cfg, split, 0, tmp_path / "a", progress=False)
    straight = ps.train_models(cfg, split, 0, tmp_path / "b", progress=False)
    for a, b in zip(resumed.overfit.state_dict().values(), straight.overfit.state_dict().values()):
        assert torch.equal(a, b)  # resuming reproduces the uninterrupted run exactly


def test_a_folder_of_another_config_is_refused(trained):
    split, _, folder = trained
    with pytest.raises(ValueError, match=r"another config \(differs in \['num_members'\]\)"):
        ps.train_models(replace(TINY, num_members=13), split, 0, folder, progress=False)


def test_uploads_are_seeded_and_what_the_shared_model_trains_on():
    split = ps.membership_split(TINY, 0)
    a, b = ps.member_uploads(TINY, split, 693, 0), ps.member_uploads(TINY, split, 693, 0)
    assert torch.equal(a.x_tilde, b.x_tilde) and a.t0 == 693 and abs(a.eps - 10) < 0.01
    assert not torch.equal(a.x_tilde, ps.member_uploads(TINY, split, 693, 1).x_tilde)


# ----------------------------------------------------------------------------- tables
def test_tables_have_one_row_per_case(trained):
    split, models, _ = trained
    tg = ps.targets(models, TINY)
    controls = ["control: non-private", "control: local-only"]
    assert [t.kind for t in tg] == ["non-private", "local-only", "PFDM shared", "PFDM shared", *controls, *controls,
                                    "personal (if published)"]
    assert tg[2].eps_fn.t_lo == 301 and tg[-1].eps_fn.t_hi == 693  # each model only at its own steps
    for shared, control in ((tg[2], tg[4]), (tg[3], tg[6])):  # controls: the shared model's steps, origin x_0
        assert (control.eps_fn.t_lo, control.eps_fn.t_hi) == (shared.eps_fn.t_lo, shared.eps_fn.t_hi)
        assert control.eps_fn.segments[0].origin == 0 and control.eps_fn.segments[0].model is models.overfit
    df, results = ps.attack_table(tg, split, TINY, progress=False)
    assert len(df) == len(results) == 9 * 3 and df.auc.between(0, 1).all() and (df.direction == 1).all()
    assert df[df.kind == "PFDM shared"].eps_thm51.between(9.9, 300).all()
    mdf, _ = ps.memorization_table(ps.generate_samples(models, TINY), split)
    assert mdf.n.tolist() == [10, 10, 10, 20]
    rdf, images = ps.reconstruction_table(models, split, TINY, torch.nn.Flatten(), seed=0)
    assert len(rdf) == 2 * 3 + 1 and sorted(images) == [300, 693]
    assert images[693]["public model"].shape == split.members.x.shape


def test_audit_stays_below_both_accountants():
    df = ps.audit_table(TINY)
    assert (df.eps_lb <= df.eps_analytic).all() and (df.eps_analytic <= df.eps_thm51).all()
    assert df.t0.tolist() == [500, 693] and (df.confidence == 0.95).all()
    assert (df.calibration_trials == df.trials).all() and (df.trials == 2000).all()
    assert not df.can_refute.any() and (df.eps_max < 6.3).all()  # 2000 trials show at most 6.3 < 8.6 (693), 41 (500)


# ----------------------------------------------------------------------------- presets
def test_presets_and_bad_configs_raise_clear_errors(monkeypatch):
    assert ps.study_config("smoke").num_members == 20 and set(ps.STUDY_PRESETS) == {"smoke", "cpu", "paper"}
    assert ps.study_config("smoke", t0s=(693,)).t0s == (693,)
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        ps.study_config("fast")
    monkeypatch.setenv("PFDM_PRESET", "smoke")
    assert ps.study_config("cpu") == ps.STUDY_PRESETS["smoke"]  # the environment variable overrides
    with pytest.raises(ValueError, match="personal_t0 must be one of"):
        ps.StudyConfig(t0s=(100,), personal_t0=693)
    with pytest.raises(ValueError, match="t0 must be an integer in 1..999"):
        ps.StudyConfig(t0s=(1000,))
    with pytest.raises(ValueError, match="num_members must be >= 1"):
        ps.StudyConfig(num_members=0)
    with pytest.raises(ValueError, match="num_nonmembers <= 360"):
        ps.membership_split(ps.StudyConfig(num_nonmembers=361))


def test_shadow_data_is_public_and_fixes_each_attacks_direction(trained):
    """The shadow experiment uses public images only; a direction of -1 reads the scores the other way round
    (AUC -> 1 - AUC), and is chosen from the shadow's AUC before any target is attacked."""
    split, models, _ = trained
    members, nonmembers = ps.shadow_split(TINY, split, 0)
    assert len(members) == TINY.num_members and len(nonmembers) == TINY.num_nonmembers
    for a in (members, nonmembers):
        assert _min_distance(a.x, split.members.x) > 0 and _min_distance(a.x, split.nonmembers.x) > 0
    assert _min_distance(members.x, nonmembers.x) > 0
    directions = ps.attack_directions(models, split, TINY, 0)
    assert list(directions.index) == list(attacks.ATTACKS)
    assert (directions.direction == np.where(directions.shadow_auc >= 0.5, 1, -1)).all()
    tg = ps.targets(models, TINY)[:1]
    flipped = pd.DataFrame({"direction": [-1] * 3, "shadow_auc": [0.0] * 3}, index=list(attacks.ATTACKS))
    plain, _ = ps.attack_table(tg, split, TINY, progress=False)
    reversed_, _ = ps.attack_table(tg, split, TINY, progress=False, directions=flipped)
    assert np.allclose(reversed_.auc, 1 - plain.auc) and (reversed_.direction == -1).all()
