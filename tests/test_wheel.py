"""The package as a Colab user gets it: the built wheel installed in a fresh virtualenv in a temporary folder,
notebooks 03 and 04 executed at `smoke` from outside the repository. Runs and figures must land beside the
notebooks (the working directory), never in site-packages or in the checkout.

The virtualenv reuses this environment's third-party packages (a .pth line to its site-packages: no download),
but not its editable pfdm_core: the wheel is the only pfdm_core it can import.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from pfdm_core.core import paths

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("03_t0_privacy_mechanism.ipynb", "04_pfdm_digits.ipynb")


def test_home_is_the_working_directory_outside_a_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("PFDM_RUNS", raising=False)
    monkeypatch.delenv("PFDM_FIGURES", raising=False)
    assert paths.is_checkout(REPO) and paths.home() == REPO
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "site-packages")  # where a wheel puts the package
    monkeypatch.chdir(tmp_path)
    assert not paths.is_checkout() and paths.home() == tmp_path
    assert paths.runs_dir() == tmp_path / "runs" and paths.figures_dir() == tmp_path / "figures"


def _run(cmd: list[str], cwd: Path, env: dict, timeout: int) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_the_wheel_runs_notebooks_03_and_04_outside_the_repository(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is needed to build from a clean copy of the sources")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PFDM_")}
    env.update(PFDM_PRESET="smoke", PYTHONNOUSERSITE="1")
    # the wheel, built from the tracked files only (what a clone has)
    src = tmp_path / "src"
    _run(["git", "clone", "--quiet", "--depth", "1", f"file://{REPO}", str(src)], tmp_path, env, 120)
    subprocess.run(["git", "-C", str(REPO), "diff", "HEAD", "--binary", "--output", str(tmp_path / "wip.patch")],
                   check=True)
    if (tmp_path / "wip.patch").stat().st_size:  # uncommitted changes of this checkout count too
        _run(["git", "apply", str(tmp_path / "wip.patch")], src, env, 60)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
          str(tmp_path / "dist"), str(src)], tmp_path, env, 300)
    (wheel,) = (tmp_path / "dist").glob("pfdm_core-*.whl")
    # a fresh virtualenv whose third-party packages are this environment's (no download, no editable pfdm_core)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env, 120)
    py = venv / "bin" / "python"
    target = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env,
                       60).strip())
    (target / "parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(target),
          str(wheel)], tmp_path, env, 300)
    where = _run([str(py), "-c", "import pfdm_core; print(pfdm_core.__file__)"], tmp_path, env, 60)
    assert Path(where.strip()).is_relative_to(target), where
    _run([str(py), "-m", "ipykernel", "install", "--prefix", str(venv), "--name", "python3"], tmp_path, env, 120)
    # the notebooks, alone in a folder outside the repository, executed with that kernel
    work = tmp_path / "work"
    work.mkdir()
    for name in NOTEBOOKS:
        shutil.copy(REPO / "notebooks" / name, work / name)
        _run([str(py), "-m", "papermill", name, f"out_{name}", "-k", "python3", "--cwd", str(work)], work,
             {**env, "JUPYTER_PATH": str(venv / "share" / "jupyter")}, 900)
        cells = json.loads((work / f"out_{name}").read_text())["cells"]
        errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, errors[0]
    assert any((work / "figures").glob("03_*.png")) and any((work / "figures").glob("04_*.png"))
    assert (work / "runs").is_dir()
    assert not any(target.glob("figures")) and not any(target.glob("runs"))  # nothing written into site-packages
