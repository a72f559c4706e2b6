"""Real-browser test harness: JupyterLab 4 / Notebook 7 driven by headless Chromium.

See /work/shared/TESTING.md (or the project's testing notes) for the background. In short:

* ``jupyter_server`` (session) is a factory: ``jupyter_server(app)`` starts, lazily and at most
  once per test session, one ``python -m jupyter lab`` or ``python -m jupyter notebook`` from
  ``sys.executable``'s environment, with isolated config/runtime/settings/workspaces/data
  directories, a random token and a temporary root directory.
* ``chromium_browser`` (session) is a Playwright Chromium (the Debian ``/usr/bin/chromium``; never
  ``playwright install``). Each test gets its own browser context (fresh storage).
* ``open_notebook`` (function) returns ``open_notebook(nb_or_path, app="lab", env=None, ...)``,
  which writes the notebook into the server root, opens it, runs all cells, waits until every
  code cell has executed and the kernel is idle, and returns the Playwright ``Page``.

Kernel environment: ``env`` is applied per notebook through a throw-away kernelspec (its
``kernel.json`` ``"env"`` field) written to a directory on the server's ``JUPYTER_PATH``; the
notebook's ``kernelspec`` metadata is pointed at it. The kernel also inherits the server's
environment, i.e. the environment of the pytest process at the time the server started.

If Chromium is missing the browser tests are skipped (with a hint to run
``.ci/install-browser.sh``), except when the ``CI`` environment variable is set: then they fail.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

CHROMIUM = os.environ.get("LF_WIDGETS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
APPS = ("lab", "notebook")
SERVER_START_TIMEOUT_S = 120.0
NOTEBOOK_LOAD_TIMEOUT_S = 120.0
DEFAULT_RUN_TIMEOUT_S = 300.0

_STATS: dict[str, float] = {}  # printed in the terminal summary
_PAGE_TIMES: list[tuple[str, float, float]] = []  # (app, load+kernel ready s, run-all s)


# --------------------------------------------------------------------------------------------
# Missing prerequisites: skip locally, fail in CI.
# --------------------------------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"{reason} (run .ci/install-browser.sh to install chromium)")


# --------------------------------------------------------------------------------------------
# Jupyter servers
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


@dataclass
class JupyterServer:
    """One running ``jupyter lab`` / ``jupyter notebook`` server."""

    app: str
    url: str  # "http://127.0.0.1:<port>/" (no token)
    token: str = field(repr=False)
    root_dir: Path  # the server's root: notebooks are written here; kernels' cwd
    kernels_dir: Path  # on the server's JUPYTER_PATH: throw-away kernelspecs go here
    log_path: Path = field(repr=False)
    proc: subprocess.Popen = field(repr=False)
    startup_s: float = 0.0

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """Call the server's REST API (``path`` like ``"api/sessions"``); JSON in, JSON out."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path.lstrip("/"),
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def page_url(self, name: str, workspace: str | None = None) -> str:
        quoted = urllib.parse.quote(name)
        if self.app == "lab":
            # A fresh workspace per page, so tabs from earlier tests are not restored (and
            # their kernels not restarted).
            ws = workspace or f"t{uuid.uuid4().hex[:12]}"
            path = f"lab/workspaces/{ws}/tree/{quoted}"
        else:
            path = f"notebooks/{quoted}"
        return f"{self.url}{path}?token={self.token}"

    def log_tail(self, n: int = 4000) -> str:
        return _tail(self.log_path, n)

    def shutdown_sessions_for(self, name: str) -> None:
        """Shut down the kernel sessions of the notebook ``name`` (best effort)."""
        try:
            for sess in self.api("GET", "api/sessions"):
                if sess.get("path") == name:
                    self.api("DELETE", f"api/sessions/{sess['id']}")
        except (urllib.error.URLError, OSError, ValueError):
            pass

    def stop(self) -> None:
        children = []
        try:
            import psutil

            children = psutil.Process(self.proc.pid).children(recursive=True)
        except Exception:  # psutil missing or process gone
            pass
        # SIGTERM lets the server shut its kernels down (kernels run in their own sessions).
        for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
        for child in children:  # kernels the server could not stop
            try:
                if child.is_running():
                    child.kill()
            except Exception:
                pass


def _write_isolated_config(base: Path) -> dict[str, str]:
    """Create the isolated Jupyter directories and config; return the env vars to set."""
    dirs = {
        "JUPYTER_CONFIG_DIR": base / "config",
        "JUPYTER_RUNTIME_DIR": base / "runtime",
        "JUPYTERLAB_SETTINGS_DIR": base / "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": base / "lab-workspaces",
        # The *user* data dir (normally ~/.local/share/jupyter). The venv's share/jupyter
        # (kernelspec, widget and plotly labextensions) stays on the search path.
        "JUPYTER_DATA_DIR": base / "data",
    }
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    cfg = dirs["JUPYTER_CONFIG_DIR"]
    app_cfg = {
        "LabApp": {"expose_app_in_browser": True},
        "JupyterNotebookApp": {"expose_app_in_browser": True},
    }
    # Each app reads its own file; the server-wide file is read by both.
    for fname in ("jupyter_lab_config.json", "jupyter_notebook_config.json"):
        (cfg / fname).write_text(json.dumps(app_cfg, indent=1))
    (cfg / "jupyter_server_config.json").write_text(
        json.dumps(
            {
                "ServerApp": {"terminals_enabled": False},
                **app_cfg,
            },
            indent=1,
        )
    )
    (cfg / "labconfig").mkdir(exist_ok=True)
    (cfg / "labconfig" / "page_config.json").write_text(
        json.dumps(
            {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}},
            indent=1,
        )
    )
    return {k: str(v) for k, v in dirs.items()}


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Linux: SIGTERM the server when pytest dies without teardown (e.g. killed by a timeout)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def start_jupyter_server(app: str, base: Path) -> JupyterServer:
    """Start ``python -m jupyter {lab,notebook}`` isolated under ``base``; wait until it answers."""
    if app not in APPS:
        raise ValueError(f"app must be one of {APPS}, not {app!r}")
    base.mkdir(parents=True, exist_ok=True)
    root = base / "root"
    root.mkdir(exist_ok=True)
    kernels_path = base / "jupyter_path"
    (kernels_path / "kernels").mkdir(parents=True, exist_ok=True)

    env = dict(os.environ)
    env.update(_write_isolated_config(base))
    env["JUPYTER_PATH"] = os.pathsep.join(
        [str(kernels_path)] + ([env["JUPYTER_PATH"]] if env.get("JUPYTER_PATH") else [])
    )
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")

    port = _free_port()
    token = secrets.token_hex(24)
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        app,
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
    ]
    log_path = base / f"jupyter-{app}.log"
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=str(root),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: killed as a whole at teardown
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    url = f"http://127.0.0.1:{port}/"
    server = JupyterServer(app, url, token, root, kernels_path / "kernels", log_path, proc, 0.0)
    deadline = t0 + SERVER_START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"jupyter {app} exited with code {proc.returncode} during startup:\n"
                + server.log_tail()
            )
        try:
            server.api("GET", "api/status", timeout=2)
            break
        except (urllib.error.URLError, OSError, ValueError):
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"jupyter {app} did not answer /api/status within "
                    f"{SERVER_START_TIMEOUT_S:.0f}s:\n" + server.log_tail()
                )
            time.sleep(0.2)
    server.startup_s = time.monotonic() - t0
    _STATS[f"jupyter {app} server startup (s)"] = server.startup_s
    return server


class JupyterServers:
    """Lazily started servers, one per app for the whole test session."""

    def __init__(self, base: Path):
        self._base = base
        self._servers: dict[str, JupyterServer] = {}

    def __call__(self, app: str = "lab") -> JupyterServer:
        if app not in self._servers:
            self._servers[app] = start_jupyter_server(app, self._base / app)
        return self._servers[app]

    def stop_all(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()


@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory) -> JupyterServers:
    """``jupyter_server(app="lab")`` -> the session's :class:`JupyterServer` for ``app``
    (``"lab"`` or ``"notebook"``), started on first request and stopped at session end."""
    servers = JupyterServers(tmp_path_factory.mktemp("jupyter"))
    yield servers
    servers.stop_all()


# --------------------------------------------------------------------------------------------
# Browser
# --------------------------------------------------------------------------------------------

# Runs in every page before its own scripts: records every value document.title takes and every
# alert/confirm/prompt, so tests can assert that injected script never ran.
_INIT_SCRIPT = r"""
(() => {
  window.__lfwTitles = [];
  window.__lfwDialogs = [];
  const desc = Object.getOwnPropertyDescriptor(Document.prototype, 'title');
  Object.defineProperty(Document.prototype, 'title', {
    configurable: true,
    enumerable: desc.enumerable,
    get() { return desc.get.call(this); },
    set(v) { window.__lfwTitles.push(String(v)); return desc.set.call(this, v); },
  });
  for (const name of ['alert', 'confirm', 'prompt']) {
    const orig = window[name];
    window[name] = function (...args) {
      window.__lfwDialogs.push([name, args.map(String)]);
      return orig ? orig.apply(this, args) : undefined;
    };
  }
})();
"""


@pytest.fixture(scope="session")
def chromium_browser():
    """A headless Debian Chromium driven by Playwright (one per test session)."""
    if not os.path.exists(CHROMIUM):
        _unavailable(f"{CHROMIUM} not found")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"playwright is not importable ({exc})")
    t0 = time.monotonic()
    pw = sync_playwright().start()
    try:
        # launch() gives every browser a fresh temporary user-data dir.
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    except Exception:
        pw.stop()
        raise
    _STATS["chromium launch (s)"] = time.monotonic() - t0
    yield browser
    try:
        browser.close()
    finally:
        pw.stop()


# --------------------------------------------------------------------------------------------
# Notebooks
# --------------------------------------------------------------------------------------------

@dataclass
class OpenedNotebook:
    """What ``open_notebook`` did; also available as ``page.lfw`` (set on the page object)."""

    server: JupyterServer = field(repr=False)
    name: str  # file name in server.root_dir
    path: Path  # absolute path of the notebook on disk
    run: dict  # result of the run: {"ok", "cells", "errors", "seconds"}
    page: Any = field(default=None, repr=False)
    kernelspec_dir: Path | None = field(default=None, repr=False)  # the env kernelspec, if any
    console: list = field(default_factory=list, repr=False)  # browser console lines
    page_errors: list = field(default_factory=list, repr=False)  # uncaught exceptions

    # Helpers, so tests need not import this conftest (a module named ``conftest`` is ambiguous
    # once other test folders have one).
    def title(self) -> str:
        return page_title(self.page)

    def title_history(self) -> list[str]:
        return title_history(self.page)

    def dialogs(self) -> list:
        return js_dialogs(self.page)

    def screenshot(self, path, full_page: bool = True) -> Path:
        return screenshot(self.page, path, full_page=full_page)

    def run_all(self, **kwargs) -> dict:
        self.run.update(run_all_cells(self.page, **kwargs))
        return self.run

    wait_for = staticmethod(lambda *a, **k: wait_for(*a, **k))


def _safe_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "nb"


def _load_notebook(nb_or_path) -> Any:
    import nbformat

    if isinstance(nb_or_path, (str, os.PathLike)):
        return nbformat.read(os.fspath(nb_or_path), as_version=4)
    return copy.deepcopy(nb_or_path)


def _write_kernelspec(server: JupyterServer, env: dict[str, str]) -> str:
    name = f"lfw-{uuid.uuid4().hex[:10]}"
    spec_dir = server.kernels_dir / name
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
                "env": {str(k): str(v) for k, v in env.items()},
                "metadata": {"debugger": False},
            },
            indent=1,
        )
    )
    return name


# Waits until the app, the notebook panel for `name`, its context and its kernel are ready. A
# Jupyter dialog (e.g. the kernel picker) appearing instead is reported as an error.
_WAIT_READY_JS = r"""
async ([name, timeoutMs]) => {
  const deadline = Date.now() + timeoutMs;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  let panel = null;
  for (;;) {
    const app = window.jupyterapp;
    const w = app && app.shell && app.shell.currentWidget;
    if (w && w.context && w.context.path === name && w.sessionContext) { panel = w; break; }
    const dlg = document.querySelector('.jp-Dialog');
    if (dlg) throw new Error('dialog while opening notebook: ' + dlg.innerText);
    if (Date.now() > deadline) throw new Error('notebook panel for ' + name + ' never became current'
        + ' (jupyterapp=' + !!app + ', current=' + (w && w.context ? w.context.path : w) + ')');
    await sleep(100);
  }
  // A Jupyter dialog (e.g. the kernel picker, which appears when the notebook's kernelspec is
  // ambiguous or unknown) would block these promises for ever: watch for one, and the deadline.
  const guard = (promise, what) => new Promise((resolve, reject) => {
    let done = false;
    const tick = () => {
      if (done) return;
      const dlg = document.querySelector('.jp-Dialog');
      if (dlg) { done = true; reject(new Error('dialog while waiting for ' + what + ': ' + dlg.innerText)); return; }
      if (Date.now() > deadline) { done = true; reject(new Error('timed out waiting for ' + what)); return; }
      setTimeout(tick, 100);
    };
    promise.then((v) => { done = true; resolve(v); }, (e) => { done = true; reject(e); });
    tick();
  });
  await guard(panel.context.ready, 'the notebook to load');
  await guard(panel.sessionContext.ready, 'the kernel session');
  for (;;) {
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    if (kernel && kernel.connectionStatus === 'connected' &&
        (kernel.status === 'idle' || kernel.status === 'busy')) break;
    const dlg = document.querySelector('.jp-Dialog');
    if (dlg) throw new Error('dialog while starting kernel: ' + dlg.innerText);
    if (Date.now() > deadline) throw new Error('kernel never connected: '
        + (kernel ? kernel.connectionStatus + '/' + kernel.status : 'no kernel'));
    await sleep(100);
  }
  return panel.sessionContext.session.kernel.name;
}
"""

# Runs all cells and waits until each non-empty code cell has an execution count, no cell is
# running and the kernel is idle (polled twice in a row). Returns the error outputs.
_RUN_ALL_JS = r"""
async ([name, timeoutMs, doRun]) => {
  const deadline = Date.now() + timeoutMs;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  if (!panel || !panel.context || panel.context.path !== name)
    throw new Error('current widget is not ' + name);
  const t0 = Date.now();
  let ok = null;
  if (doRun) {
    // Resolves when every cell has finished (true: none raised).
    let stop = false;
    const watch = async () => {
      while (!stop) {
        const dlg = document.querySelector('.jp-Dialog');
        if (dlg) throw new Error('dialog during run-all-cells: ' + dlg.innerText);
        if (Date.now() > deadline) throw new Error('notebook:run-all-cells timed out');
        await sleep(100);
      }
    };
    try {
      ok = await Promise.race([app.commands.execute('notebook:run-all-cells'), watch()]);
    } finally {
      stop = true;
    }
  }
  const codeCells = () => panel.content.widgets.filter((c) => c.model.type === 'code');
  const pending = () => codeCells().filter((c) => {
    const m = c.model;
    if (m.executionState === 'running') return true;
    return m.sharedModel.getSource().trim() !== '' && (m.executionCount === null || m.executionCount === undefined);
  }).length;
  let stable = 0;
  for (;;) {
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    const idle = kernel && kernel.status === 'idle';
    const left = pending();
    stable = (idle && left === 0) ? stable + 1 : 0;
    if (stable >= 2) break;
    if (kernel && (kernel.status === 'dead' || kernel.status === 'unknown' && kernel.connectionStatus === 'disconnected'))
      throw new Error('kernel died: ' + kernel.status);
    const dlg = document.querySelector('.jp-Dialog');
    if (dlg) throw new Error('dialog while cells ran: ' + dlg.innerText);
    if (Date.now() > deadline) throw new Error('cells still pending after ' + timeoutMs + ' ms: '
        + left + ' (kernel ' + (kernel ? kernel.status : 'none') + ')');
    await sleep(150);
  }
  const errors = [];
  codeCells().forEach((c, i) => {
    for (const out of c.model.outputs.toJSON()) {
      if (out.output_type === 'error')
        errors.push({cell: panel.content.widgets.indexOf(c), ename: out.ename, evalue: out.evalue,
                     traceback: (out.traceback || []).join('\n')});
    }
  });
  return {ok, errors, cells: codeCells().length, seconds: (Date.now() - t0) / 1000};
}
"""

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def run_all_cells(page, timeout_s: float = DEFAULT_RUN_TIMEOUT_S, allow_errors: bool = False,
                  run: bool = True) -> dict:
    """Run (``run=True``) or just wait for all cells of the page's current notebook.

    Returns ``{"ok", "errors", "cells", "seconds"}``; fails the test if a cell raised and
    ``allow_errors`` is false.
    """
    name = page.lfw.name
    result = page.evaluate(_RUN_ALL_JS, [name, int(timeout_s * 1000), run])
    if result["errors"] and not allow_errors:
        lines = [f"{len(result['errors'])} cell(s) of {name} raised:"]
        for err in result["errors"]:
            lines.append(f"--- cell {err['cell']}: {err['ename']}: {err['evalue']}")
            lines.append(_ANSI.sub("", err["traceback"]))
        pytest.fail("\n".join(lines), pytrace=False)
    return result


def page_title(page) -> str:
    """The page's current ``document.title``."""
    return page.evaluate("() => document.title")


def title_history(page) -> list[str]:
    """Every value ``document.title`` was set to since the page loaded."""
    return page.evaluate("() => window.__lfwTitles.slice()")


def js_dialogs(page) -> list:
    """Every ``alert``/``confirm``/``prompt`` call since the page loaded: ``[[kind, args]]``."""
    return page.evaluate("() => window.__lfwDialogs.slice()")


def screenshot(page, path: os.PathLike | str, full_page: bool = True) -> Path:
    """Save a PNG of ``page`` to ``path`` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=full_page)
    return path


def wait_for(predicate: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.1,
             message: str = "condition") -> Any:
    """Poll ``predicate()`` until truthy; return its value, or fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {message}", pytrace=False)
        time.sleep(interval_s)


@pytest.fixture
def open_notebook(request, jupyter_server, chromium_browser, tmp_path):
    """Returns ``open_notebook(nb_or_path, app="lab", env=None, *, run=True, timeout_s=300,
    allow_errors=False, name=None) -> playwright Page``.

    * ``nb_or_path``: an ``nbformat`` notebook node or a path to an ``.ipynb``; it is copied into
      the server root (``page.lfw.path``; also the kernel's cwd) under a unique name (or
      ``name``), with a ``python3`` kernelspec in its metadata when it has none or declares one
      the server does not have (``page.lfw.run["kernelspec_replaced"]`` then names it).
    * ``app``: ``"lab"`` (JupyterLab, ``/lab/workspaces/<fresh>/tree/<name>``) or ``"notebook"``
      (Notebook 7, ``/notebooks/<name>``).
    * ``env``: extra environment variables for this notebook's kernel (via a throw-away
      kernelspec, removed at teardown; the test fails if JupyterLab started another kernel);
      the kernel otherwise inherits the server's (= pytest's at server start) environment.
    * ``run``: run all cells and wait until all have executed and the kernel is idle; a cell
      that raised fails the test unless ``allow_errors``. ``page.lfw.run`` has the result.

    Every page gets a fresh browser context. At teardown pages are closed and the notebooks'
    kernels shut down; on failure a screenshot of each page is saved under the test's tmp dir
    and its path (plus browser console errors and the server log tail) added to the report.
    """
    opened: list[tuple[Any, Any, OpenedNotebook]] = []
    request.node._lfw_opened = opened
    counter = [0]

    def _open(nb_or_path, app: str = "lab", env: dict[str, str] | None = None, *,
              run: bool = True, timeout_s: float = DEFAULT_RUN_TIMEOUT_S,
              allow_errors: bool = False, name: str | None = None):
        if app not in APPS:
            raise ValueError(f"app must be one of {APPS}, not {app!r}")
        server = jupyter_server(app)
        nb = _load_notebook(nb_or_path)
        meta = nb.setdefault("metadata", {})
        replaced = None
        spec_dir = None
        if env:
            kname = _write_kernelspec(server, env)
            spec_dir = server.kernels_dir / kname
            meta["kernelspec"] = {"name": kname, "display_name": "Python 3 (ipykernel)",
                                  "language": "python"}
        else:
            declared = meta.get("kernelspec", {}).get("name")
            if declared and declared not in server.api("GET", "api/kernelspecs")["kernelspecs"]:
                replaced = declared  # would bring up JupyterLab's kernel picker
            if not declared or replaced:
                meta["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                      "language": "python"}
        meta.setdefault("language_info", {"name": "python"})
        counter[0] += 1
        if name is None:
            stem = (Path(os.fspath(nb_or_path)).stem
                    if isinstance(nb_or_path, (str, os.PathLike)) else "nb")
            name = f"{_safe_stem(request.node.name)}-{stem}-{app}-{counter[0]}-{uuid.uuid4().hex[:6]}.ipynb"
        import nbformat

        nb_path = server.root_dir / name
        nbformat.write(nb, str(nb_path))

        context = chromium_browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(30_000)
        context.set_default_navigation_timeout(NOTEBOOK_LOAD_TIMEOUT_S * 1000)
        context.add_init_script(_INIT_SCRIPT)
        page = context.new_page()
        info = OpenedNotebook(server=server, name=name, path=nb_path, run={}, page=page,
                              kernelspec_dir=spec_dir)
        page.on("console", lambda msg: info.console.append(f"[{msg.type}] {msg.text}"))
        page.on("pageerror", lambda exc: info.page_errors.append(str(exc)))
        page.on("dialog", lambda dlg: dlg.dismiss())  # never block on alert()
        page.lfw = info
        opened.append((context, page, info))

        t0 = time.monotonic()
        page.goto(server.page_url(name), wait_until="domcontentloaded")
        kernel_name = page.evaluate(_WAIT_READY_JS, [name, int(NOTEBOOK_LOAD_TIMEOUT_S * 1000)])
        info.run = {"load_seconds": time.monotonic() - t0, "kernel_name": kernel_name,
                    "kernelspec_replaced": replaced}
        # JupyterLab silently substitutes a kernel of the same language when the notebook's
        # kernelspec is unknown: the env kernelspec must really be the one running.
        if env and kernel_name != meta["kernelspec"]["name"]:
            pytest.fail(f"kernel {kernel_name!r} started instead of the env kernelspec "
                        f"{meta['kernelspec']['name']!r} (not found on JUPYTER_PATH?)",
                        pytrace=False)
        if run:
            info.run.update(run_all_cells(page, timeout_s=timeout_s, allow_errors=allow_errors))
        _PAGE_TIMES.append((app, info.run["load_seconds"], info.run.get("seconds", 0.0)))
        return page

    yield _open

    for context, page, info in opened:
        try:
            context.close()
        except Exception:
            pass
        info.server.shutdown_sessions_for(info.name)
        if info.kernelspec_dir is not None:
            # Several python kernelspecs left around would make JupyterLab ask which one to
            # use for notebooks whose kernelspec it does not know.
            shutil.rmtree(info.kernelspec_dir, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    opened = getattr(item, "_lfw_opened", None)
    if not opened or not report.failed or report.when not in ("setup", "call"):
        return
    tmp = item.funcargs.get("tmp_path") if hasattr(item, "funcargs") else None
    base = Path(tmp) if tmp else Path(tempfile.mkdtemp(prefix="lfw-browser-"))
    lines = []
    for i, (_, page, info) in enumerate(opened):
        try:
            shot = screenshot(page, base / f"failure-{i}-{info.server.app}.png")
            lines.append(f"screenshot: {shot}")
            print(f"\n[browser] failure screenshot: {shot}", file=sys.stderr)
        except Exception as exc:  # page crashed or closed
            lines.append(f"screenshot failed: {exc}")
        try:
            lines.append(f"title: {page_title(page)!r}  url: {page.url}")
        except Exception:
            pass
        noisy = [c for c in info.console if c.startswith(("[error]", "[warning]"))]
        if noisy:
            lines.append("console errors/warnings (last 20):\n  " + "\n  ".join(noisy[-20:]))
        if info.page_errors:
            lines.append("page errors:\n  " + "\n  ".join(info.page_errors[-10:]))
        lines.append(f"jupyter {info.server.app} log tail:\n" + info.server.log_tail(2000))
    report.sections.append(("browser diagnostics", "\n".join(lines)))


def pytest_terminal_summary(terminalreporter):
    if _STATS:
        terminalreporter.write_sep("-", "browser harness timings")
        for key, value in _STATS.items():
            terminalreporter.write_line(f"{key}: {value:.1f}")
        for app in APPS:
            times = [t for t in _PAGE_TIMES if t[0] == app]
            if times:
                terminalreporter.write_line(
                    f"{app}: {len(times)} notebook(s); open + kernel ready (s) "
                    + ", ".join(f"{t[1]:.1f}" for t in times)
                    + "; run all cells (s) " + ", ".join(f"{t[2]:.1f}" for t in times))


# --------------------------------------------------------------------------------------------
# Artifacts: screenshots a person can look at after the run (git-ignored)
# --------------------------------------------------------------------------------------------

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture
def save_artifact():
    """Returns ``save_artifact(page, name, locator=None) -> Path``: a PNG of the whole page, or
    of one element (``locator``), written to ``tests/browser/artifacts/<name>.png`` (kept after
    the run, unlike failure screenshots, so a person can look at what the browser showed)."""

    def _save(page, name: str, locator=None) -> Path:
        path = ARTIFACTS / f"{_safe_stem(name)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if locator is not None:
            locator.screenshot(path=str(path))
        else:
            page.screenshot(path=str(path), full_page=True)
        return path

    return _save
