"""scripts/realization.py: two trainings apart by rounding, followed under each optimiser setting."""
import importlib.util
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "realization.py"


def _script():
    spec = importlib.util.spec_from_file_location("realization", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_two_trainings_apart_by_rounding_start_close_and_are_written(tmp_path, capsys):
    mod = _script()
    with pytest.raises(SystemExit):
        mod.main(["--preset", "smoke", "--steps", "0", "--out", str(tmp_path / "never")])
    assert "--steps must be an integer >= 1, got 0" in capsys.readouterr().err and not (tmp_path / "never").exists()
    assert mod.main(["--preset", "smoke", "--steps", "3", "--settings", "adam", "adamw", "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "sensitivity.csv")
    assert list(df.setting) == ["adam", "adamw"] and (df.step == 3).all()
    assert df.rel_distance.between(1e-9, 1e-4).all()  # the perturbation (1e-7 relative), a few steps on
    assert df.near_zero.between(0, 1).all() and (df.weight_norm > 0).all()
    adam, adamw = df.set_index("setting").weight_norm
    assert adamw < adam  # decoupled decay shrinks the weights a little more from the same start
