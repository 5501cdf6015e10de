import subprocess
import sys

import pytest

from pfdm_core.cli import main


@pytest.mark.parametrize("argv, out", [
    (["epsilon", "--t0", "690", "--clip", "10", "--delta", "1e-5"], "10.24"),
    (["epsilon", "--t0", "690", "--clip", "10", "--delta", "1e-5", "--accountant", "analytic"], "8.77"),
    (["t0", "--epsilon", "10", "--clip", "10", "--delta", "1e-5"], "693"),
    (["t0", "--epsilon", "10", "--clip", "10", "--accountant", "analytic"], "675"),
    (["epsilon", "--t0", "100", "--per-pixel"], "45.75"),
])
def test_cli_values(argv, out, capsys):
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == out


@pytest.mark.parametrize("argv, msg", [
    (["epsilon", "--t0", "0"], "t0 must be an integer in 1..999"),
    (["epsilon", "--t0", "100", "--delta", "1.5"], "delta must be in the open interval (0, 1)"),
    (["t0", "--epsilon", "-3"], "epsilon must be a finite number > 0"),
    (["epsilon", "--t0", "abc"], "invalid int value"),
    (["epsilon"], "required: --t0"),
    (["epsilon", "--t0", "100", "--per-pixel", "--clip", "5"], "--clip has no effect with --per-pixel"),
    (["epsilon", "--t0", "100", "--pixels", "4"], "--pixels only applies with --per-pixel"),
    (["epsilon", "--t0", "100", "--clip", "nan"], "clip_norm must be a finite number in (0, 1e+06], got nan"),
])
def test_cli_errors_one_line_exit_2(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and msg in err and err.startswith("pfdm_core: error:")


def test_python_dash_m():
    r = subprocess.run([sys.executable, "-m", "pfdm_core", "epsilon", "--t0", "690", "--clip", "10", "--delta", "1e-5"],
                       capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "10.24"


@pytest.mark.slow
def test_run_at_the_last_documented_t0(tmp_path, capsys):
    """--epsilon 0.63 asks t0 = 999 = T - 1 (documented range 1..T-1): it trains and samples."""
    assert main(["run", "--preset", "smoke", "--methods", "pfdm", "--seeds", "0", "--epsilon", "0.63",
                 "--out", str(tmp_path)]) == 0
    assert "pfdm 999" in " ".join(capsys.readouterr().out.split())
