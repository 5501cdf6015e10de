"""The package's floors, enforced: every module imports only its own floor or the floors below it, nothing
imports a study, and the server side never imports data or privacy code (it only ever sees uploads)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "pfdm_core"
FLOORS = {  # lower number = lower floor; a module may import its own floor and lower ones
    "core": 0, "data": 1, "privacy": 1, "methods": 2, "evaluation": 3, "attacks": 3, "experiment": 4,
    "studies": 5, "cli": 5, "__main__": 5, "flower_app": 5,  # on top: a study may run the experiment
}
# PFDM's server training (the Flower ServerApp imports the accountant only, to check each upload's claimed eps)
SERVER_SIDE = ("methods/server.py",)


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG).with_suffix("").parts
    return ".".join(("pfdm_core", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def floor_of(module: str) -> str | None:
    """The floor of a pfdm_core module ('pfdm_core.methods.fedavg' -> 'methods'); None for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imports(path: Path) -> set[str]:
    """Every pfdm_core module `path` imports (absolute or relative, at any depth of the file)."""
    tree, here, out = ast.parse(path.read_text()), module_name(path), set()
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("pfdm_core")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("pfdm_core"):
                out |= {f"{base}.{a.name}" if base.count(".") == 0 else base for a in node.names}
    return out


MODULES = sorted(p for p in PKG.rglob("*.py"))


def test_every_module_has_a_floor():
    missing = [m for m in map(module_name, MODULES) if m != "pfdm_core" and floor_of(m) not in FLOORS]
    assert not missing, f"modules outside the floors {list(FLOORS)}: {missing}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_no_upward_import(path):
    here = floor_of(module_name(path))
    if here is None:  # pfdm_core/__init__.py: loads names lazily, imports nothing
        return
    bad = [m for m in imports(path) if floor_of(m) is not None and floor_of(m) in FLOORS
           and FLOORS[floor_of(m)] > FLOORS[here]]
    assert not bad, f"{module_name(path)} (floor {here}) imports from a higher floor: {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_nothing_imports_a_study(path):
    if floor_of(module_name(path)) == "studies":
        return
    bad = [m for m in imports(path) if floor_of(m) == "studies"]
    assert not bad, f"{module_name(path)} imports a study: {bad}"


@pytest.mark.parametrize("rel", SERVER_SIDE)
def test_server_side_never_imports_data_or_privacy(rel):
    bad = [m for m in imports(PKG / rel) if floor_of(m) in ("data", "privacy")]
    assert not bad, f"{rel} imports {bad}: the server must only ever see uploads"


def test_the_checker_sees_an_upward_import(tmp_path):
    """Control: a core module importing a method, written both ways, is caught."""
    fake = PKG / "core" / "_layer_probe.py"
    for src in ("from pfdm_core.methods.registry import METHODS\n", "from ..methods import registry\n"):
        fake.write_text(src)
        try:
            assert "pfdm_core.methods.registry" in imports(fake) or "pfdm_core.methods" in imports(fake)
            with pytest.raises(AssertionError, match="higher floor"):
                test_no_upward_import(fake)
        finally:
            fake.unlink()


def test_import_does_no_work():
    """`import pfdm_core` loads no torch and samples no CPU load (the OpenMP policy is an explicit call)."""
    import subprocess
    import sys

    code = "import sys, pfdm_core; import pfdm_core.core.omp as o; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_package_file_is_tracked():
    """A clean clone has the whole package: no module is ignored by .gitignore or left untracked (a root-level
    `data/` rule once hid pfdm_core/data/partition.py, so CI's clone could not import it)."""
    import shutil
    import subprocess
    root = PKG.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--ignored", "--", "pfdm_core"],
                         cwd=root, capture_output=True, text=True, check=True).stdout.split()
    out += subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--", "pfdm_core"],
                          cwd=root, capture_output=True, text=True, check=True).stdout.split()
    stray = sorted(p for p in out if p.endswith((".py", ".toml", ".md")))
    assert not stray, f"package files missing from git: {stray}"
