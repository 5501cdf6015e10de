"""End to end in a real browser: JupyterLab + headless Chromium driven by Playwright.

* Notebook 03: run all cells (PFDM_PRESET=smoke), move the t0 slider to two positions (typed into its
  readout, then dragged with the mouse), change C, and check that the eps the widget shows after each change
  equals `python -m pfdm_core epsilon` for that t0 and C (both accountants, both units, 2 decimals).
* Notebook 04: its stored results (three tables, six figures) render, with no error in the browser console.

Screenshots go to figures/e2e/ (03_before.png, 03_after_t0.png, 03_after_C.png, 04_rendered.png).

The server runs on 127.0.0.1 with a random token on a free port, on *copies* of the two notebooks in a temp
dir (the repository's notebooks/ are never saved to), with figures and checkpoints sent to that temp dir; it
is always stopped (its process group and every child it started, kernels included). Skipped, with the
reason, when no Chromium or no Playwright is installed (`scripts/install_browser.sh .venv` installs both).

Environment: PFDM_E2E_BROWSER=none pretends no browser is installed (to check the skip) or names the
browser binary; PFDM_E2E_TIMEOUT (s, default 420) bounds the whole module; PFDM_E2E_RUN04=1 also executes
notebook 04 at smoke in the browser (several minutes on 2 shared cores, so off by default);
PFDM_E2E_SHOTS sends the screenshots elsewhere than figures/e2e/.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
SHOTS = Path(os.environ.get("PFDM_E2E_SHOTS") or REPO / "figures" / "e2e")
NB03, NB04 = "03_t0_privacy_mechanism.ipynb", "04_pfdm_digits.ipynb"
BUDGET_S = float(os.environ.get("PFDM_E2E_TIMEOUT") or 420)
INSTALL_HINT = "install it with `scripts/install_browser.sh .venv` (or `make e2e`)"


def find_browser() -> str | None:
    """Chromium's path: $PFDM_E2E_BROWSER ('none' = pretend there is none), else chromium on PATH."""
    choice = os.environ.get("PFDM_E2E_BROWSER", "").strip()
    if choice.lower() == "none":
        return None
    for name in [choice] if choice else ["chromium", "chromium-browser"]:
        path = shutil.which(name)
        if path:
            return path
    return None


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


BROWSER = find_browser()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(BROWSER is None, reason="e2e: no Chromium browser found "
                       f"(PFDM_E2E_BROWSER={os.environ.get('PFDM_E2E_BROWSER', '')!r}, `chromium` not on PATH); "
                       + INSTALL_HINT),
    pytest.mark.skipif(not _has_playwright(), reason=f"e2e: Playwright for Python is not installed in {sys.prefix}; "
                       + INSTALL_HINT),
]

# JupyterLab user settings for the test server: every cell in the DOM (no windowing), no autosave, no news.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}
EPS_CLASSES = {  # span class in explore.eps_text -> extra CLI arguments
    "pfdm-eps-per-image-thm51": [],
    "pfdm-eps-per-image-analytic": ["--accountant", "analytic"],
    "pfdm-eps-per-pixel-thm51": ["--per-pixel"],
    "pfdm-eps-per-pixel-analytic": ["--per-pixel", "--accountant", "analytic"],
}


class Deadline:
    """One time budget for the whole module; every wait takes min(its own cap, what is left)."""

    def __init__(self, seconds: float):
        self.seconds, self.end = seconds, time.monotonic() + seconds

    def left(self, cap: float) -> float:
        rem = self.end - time.monotonic()
        if rem <= 0:
            raise TimeoutError(f"e2e: the module's time budget of {self.seconds:.0f} s (PFDM_E2E_TIMEOUT) is spent")
        return min(cap, rem)

    def ms(self, cap: float) -> float:
        return 1000 * self.left(cap)


def cli_eps(t0: int, clip: float) -> dict[str, str]:
    """The four eps of `python -m pfdm_core epsilon` at (t0, C), delta 1e-5, as the widget prints them."""
    procs = {cls: subprocess.Popen([sys.executable, "-m", "pfdm_core", "epsilon", "--t0", str(t0),
                                    *([] if "--per-pixel" in extra else ["--clip", f"{clip:g}"]), *extra],
                                   cwd=REPO, stdout=subprocess.PIPE, text=True)
             for cls, extra in EPS_CLASSES.items()}  # the per-pixel unit takes no C (the CLI refuses one)
    out = {}
    for cls, p in procs.items():
        stdout, _ = p.communicate(timeout=120)
        assert p.returncode == 0, f"CLI failed for {cls} at t0={t0}, C={clip}"
        out[cls] = f"{float(stdout.strip()):.2f}"
    return out


# ----------------------------------------------------------------------------- the server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    def __init__(self, tmp: Path, deadline: Deadline):
        self.tmp, self.deadline = tmp, deadline
        self.root = tmp / "notebooks"
        self.root.mkdir()
        for nb in (NB03, NB04):
            shutil.copy2(NOTEBOOKS / nb, self.root / nb)
        for rel, value in LAB_SETTINGS.items():
            (tmp / "lab-settings" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / "lab-settings" / rel).write_text(json.dumps(value))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PFDM_", "JUPYTER")) and k != "MPLBACKEND"}
        env |= dict(PFDM_PRESET="smoke", PFDM_FIGURES=str(tmp / "figures"), PFDM_RUNS=str(tmp / "runs"),
                    JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
                    JUPYTERLAB_SETTINGS_DIR=str(tmp / "lab-settings"),
                    JUPYTERLAB_WORKSPACES_DIR=str(tmp / "lab-workspaces"))
        self.token, self.port = secrets.token_hex(24), _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "jupyter.log"
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.root}", "--ServerApp.terminals_enabled=False",
               "--LabApp.expose_app_in_browser=True"] + (["--allow-root"] if os.geteuid() == 0 else [])
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self) -> None:
        stop = time.monotonic() + self.deadline.left(120)
        while time.monotonic() < stop:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                req = urllib.request.Request(f"{self.base}/api/status",
                                             headers={"Authorization": f"token {self.token}"})
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"jupyter lab did not answer /api/status:\n{self.log_tail()}")

    def url(self, notebook: str) -> str:
        """The notebook in a workspace of its own (one tab, nothing restored from another page)."""
        return f"{self.base}/lab/workspaces/e2e-{notebook[:2]}/tree/{notebook}?token={self.token}&reset"

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM the server's process group (it shuts its kernels down), SIGKILL what is left, kernels too."""
        try:
            import psutil
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except Exception:  # psutil missing or the server already gone
            psutil, children = None, []
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                pass
        if psutil is not None and children:  # kernels run in their own session: end the ones it left
            _, alive = psutil.wait_procs(children, timeout=10)
            for p in alive:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass


def _alarm(signum, frame):
    raise TimeoutError(f"e2e: hard limit of {BUDGET_S + 60:.0f} s reached")


@pytest.fixture(scope="module")
def deadline():
    """The module's time budget, plus a SIGALRM hard stop 60 s after it (finalizers still run)."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(BUDGET_S) + 60)
    try:
        yield Deadline(BUDGET_S)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, deadline):
    server = Lab(tmp_path_factory.mktemp("e2e"), deadline)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(deadline):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=BROWSER, headless=True, timeout=deadline.ms(60),
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


# ----------------------------------------------------------------------------- page helpers
NOTEBOOK_STATE = """(path) => {
  const app = window.jupyterapp;
  const w = app && app.shell.currentWidget;
  if (!w || !w.content || !w.sessionContext || !w.context || w.context.path !== path || !w.context.isReady) return null;
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  const cells = w.content.widgets.filter(c => c.model.type === 'code' && c.model.sharedModel.getSource().trim());
  const errors = [];
  for (const c of cells) for (const o of c.model.outputs.toJSON())
    if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
  return {kernel: kernel ? kernel.status : null, cells: cells.length, errors,
          executed: cells.filter(c => c.model.executionCount !== null && c.model.executionCount !== undefined).length};
}"""


def open_notebook(browser, lab: Lab, notebook: str):
    """A fresh page on the notebook, with its kernel started and idle; console errors collected in page.errors."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(lab.deadline.ms(60))
    page.errors = []
    page.on("console", lambda m: m.type == "error" and page.errors.append(f"console: {m.text} @ {m.location}"))
    page.on("pageerror", lambda e: page.errors.append(f"pageerror: {e}"))
    page.goto(lab.url(notebook), timeout=lab.deadline.ms(90))
    page.wait_for_function(f"(s => s && s.kernel === 'idle')(({NOTEBOOK_STATE})({json.dumps(notebook)}))",
                           timeout=lab.deadline.ms(180), polling=500)
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")  # more room for the notebook
    return page


def state(page, notebook: str) -> dict:
    return page.evaluate(NOTEBOOK_STATE, notebook)


def run_all(page, lab: Lab, notebook: str, cap: float) -> float:
    """Clear outputs, run all cells, wait for every code cell to have run and the kernel to be idle."""
    start = time.monotonic()
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    assert state(page, notebook)["executed"] == 0
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    stop = time.monotonic() + lab.deadline.left(cap)
    while True:
        s = state(page, notebook)
        assert not s["errors"], f"{notebook} raised in the browser: {s['errors']}"
        if s["executed"] == s["cells"] and s["kernel"] == "idle":
            return time.monotonic() - start
        if time.monotonic() > stop:
            raise TimeoutError(f"{notebook}: {s['executed']}/{s['cells']} cells ran in {cap:.0f} s "
                               f"(kernel {s['kernel']})\n{lab.log_tail()}")
        time.sleep(1)


def screenshot(page, target, name: str, block: str = "center") -> Path:
    """A viewport screenshot with `target` scrolled into view (retried: JupyterLab may restore its scroll)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = page.viewport_size["height"]
    for _ in range(10):
        target.evaluate(f"el => el.scrollIntoView({{block: '{block}'}})")
        page.wait_for_timeout(500)  # let it settle and images paint
        box = target.bounding_box()
        if box and 0 <= box["y"] < height - 100:
            break
    page.screenshot(path=str(SHOTS / name))
    return SHOTS / name


# ----------------------------------------------------------------------------- the tests
def test_03_slider_eps_matches_cli(lab, browser):
    page = open_notebook(browser, lab, NB03)
    try:
        seconds = run_all(page, lab, NB03, cap=300)
        print(f"notebook 03 ran all cells in the browser in {seconds:.1f} s")
        box = page.locator(".jupyter-widgets.widget-vbox:has(> .pfdm-eps)")
        box.wait_for(state="visible", timeout=lab.deadline.ms(30))
        assert box.count() == 1

        def slider(label: str):
            return box.locator(".widget-hslider").filter(
                has=page.locator(".widget-label", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$")))

        t0_slider, c_slider = slider("t0"), slider("C (l2 clip)")

        def shown() -> tuple[str, str, dict[str, str]]:
            """(t0 readout, C readout, the eps spans) as displayed."""
            return (t0_slider.locator(".widget-readout").inner_text().strip(),
                    c_slider.locator(".widget-readout").inner_text().strip(),
                    box.locator(".pfdm-eps").evaluate(
                        "el => Object.fromEntries([...el.querySelectorAll('[class^=\"pfdm-eps-\"]')]"
                        ".map(s => [s.className, s.textContent.trim()]))"))

        def check(t0: int, clip: float, cap: float = 30) -> dict[str, str]:
            """The eps displayed for (t0, C) once the kernel has answered equals the CLI's, to 2 decimals."""
            want = cli_eps(t0, clip)
            stop = time.monotonic() + lab.deadline.left(cap)
            while True:
                t_shown, c_shown, eps = shown()
                label = box.locator(".pfdm-eps").inner_text()
                ok = int(t_shown) == t0 and float(c_shown) == clip and f"C = {clip:g})" in label
                if ok and eps == want:
                    return eps
                if time.monotonic() > stop:
                    raise AssertionError(f"t0={t0}, C={clip:g}: widget shows t0={t_shown}, C={c_shown}, eps={eps}; "
                                         f"`python -m pfdm_core epsilon` gives {want}")
                page.wait_for_timeout(250)

        def type_into(sl, text: str) -> None:
            readout = sl.locator(".widget-readout")
            readout.click()
            page.keyboard.press("ControlOrMeta+A")
            page.keyboard.type(text)
            page.keyboard.press("Enter")

        # as left by the notebook: t0 = 690, C = 10
        before = check(690, 10.0)
        screenshot(page, box, "03_before.png")
        # position 1: the value typed into the slider's readout
        type_into(t0_slider, "400")
        at400 = check(400, 10.0)
        # position 2: drag the handle to about a fifth of the track with the mouse
        handle = t0_slider.locator(".noUi-handle").bounding_box()
        track = t0_slider.locator(".noUi-target").bounding_box()
        y = handle["y"] + handle["height"] / 2
        page.mouse.move(handle["x"] + handle["width"] / 2, y)
        page.mouse.down()
        page.mouse.move(track["x"] + 0.2 * track["width"], y, steps=12)
        page.mouse.up()
        page.wait_for_timeout(500)
        dragged = int(shown()[0])
        assert 100 < dragged < 320, f"dragging to 20% of the track gave t0={dragged}"
        at_drag = check(dragged, 10.0)
        screenshot(page, box, "03_after_t0.png")
        # C: 10 -> 4 (clips now); per-image eps changes, per-pixel does not
        type_into(c_slider, "4")
        at_c4 = check(dragged, 4.0)
        screenshot(page, box, "03_after_C.png")
        assert len({before["pfdm-eps-per-image-thm51"], at400["pfdm-eps-per-image-thm51"],
                    at_drag["pfdm-eps-per-image-thm51"], at_c4["pfdm-eps-per-image-thm51"]}) == 4
        assert at_c4["pfdm-eps-per-pixel-thm51"] == at_drag["pfdm-eps-per-pixel-thm51"]
        print(f"eps per image (Thm 5.1): t0=690 C=10 {before['pfdm-eps-per-image-thm51']}, t0=400 "
              f"{at400['pfdm-eps-per-image-thm51']}, t0={dragged} (dragged) {at_drag['pfdm-eps-per-image-thm51']}, "
              f"C=4 {at_c4['pfdm-eps-per-image-thm51']}")
        assert not state(page, NB03)["errors"]
        assert not page.errors, "browser console errors on notebook 03:\n" + "\n".join(page.errors)
    finally:
        page.context.close()


def test_04_renders_tables_and_figures(lab, browser):
    page = open_notebook(browser, lab, NB04)
    try:
        if os.environ.get("PFDM_E2E_RUN04") == "1":
            print(f"notebook 04 ran all cells in the browser in {run_all(page, lab, NB04, cap=600):.1f} s")
        outputs = ".jp-Notebook .jp-OutputArea-output"
        page.wait_for_function(
            f"""() => document.querySelectorAll('{outputs} table.dataframe').length >= 3 &&
                     [...document.querySelectorAll('{outputs} img')].filter(i => i.complete && i.naturalWidth > 0)
                       .length >= 6""", timeout=lab.deadline.ms(60), polling=500)
        tables = page.locator(f"{outputs} table.dataframe")
        heads = [tables.nth(i).locator("thead").inner_text() for i in range(tables.count())]
        assert any("fid_minor" in h and "method" in h for h in heads), heads
        assert all(tables.nth(i).locator("tbody tr").count() >= 2 for i in range(tables.count()))
        broken = page.evaluate(f"() => [...document.querySelectorAll('{outputs} img')]"
                               ".filter(i => !(i.complete && i.naturalWidth > 0)).length")
        assert broken == 0, f"{broken} images did not decode"
        assert not state(page, NB04)["errors"]
        screenshot(page, tables.nth(1), "04_rendered.png", block="start")  # Table 1 and the FID bars
        assert not page.errors, "browser console errors on notebook 04:\n" + "\n".join(page.errors)
    finally:
        page.context.close()
