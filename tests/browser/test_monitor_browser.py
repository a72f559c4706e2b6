"""The training monitor as the browser shows it, in JupyterLab 4 and Notebook 7.

Every check reads the page: the plotly element's own data (``gd.data``), the text in the widget
views, the elements MathJax or an injected tag would create — not the kernel's figure.

The monitor used to stay empty in the page when it was created empty and fed from the training
thread on a loaded machine: plotly's FigureWidget is an anywidget, and anywidget drops every
update to a model whose ~5 MB of JavaScript has not loaded within 2 s. ``SLOW_WIDGET_JS`` makes
the page that slow on purpose (each widget module loaded from a Blob takes 2.5 s more), which
reproduced the defect every time with the old monitor.
"""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

TINY = {"LF_WIDGETS_MODEL": "tiny"}
STEPS = 6
PAYLOAD = r"""$\href{https://example.com}{click}$ <img src=x onerror="document.title='pwned'">"""

# What a loaded 2-core machine did to widget code: a module loaded from a Blob (how anywidget
# loads its JavaScript) is ready only 2.5 s later, past anywidget's 2 s limit.
SLOW_WIDGET_JS = """() => {
  const original = URL.createObjectURL;
  window.__lfwSlowed = 0;
  URL.createObjectURL = function (blob) {
    if (blob instanceof Blob && /javascript/.test(blob.type)) {
      const until = Date.now() + 2500;
      while (Date.now() < until) {}
      window.__lfwSlowed += 1;
    }
    return original.call(this, blob);
  };
}"""

# Per plot in the page: {trace name: number of points}, from plotly's own data on the element.
PLOTS_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(gd =>
  Object.fromEntries((gd.data || []).map(t => [t.name, (t.x || []).length])))"""

# Subplot titles and the toolbar, as boxes in the page.
BOXES_JS = """() => {
  const gd = document.querySelector('.js-plotly-plot');
  const box = (el) => { const r = el.getBoundingClientRect();
    return {x0: r.left, y0: r.top, x1: r.right, y1: r.bottom, text: el.textContent}; };
  return {plot: box(gd), titles: [...gd.querySelectorAll('.annotation-text')].map(box),
          toolbar: [...gd.querySelectorAll('.modebar')].map(box)};
}"""

SETUP = """
    import time
    import lf_widgets as lfw
    from lf_widgets.store import SampleRecord
    s = lfw.Session(store={db!r}, annotator="browser")
    ids = s.store.add_samples([SampleRecord(text, prompt=prompt)
                               for prompt in ("say hi", "say bye")
                               for text in ("a friendly hello to you", "no", "hi there", "meh")])
    for sample_id, rating in zip(ids, [5, 1, 4, 2] * 2):
        s.record_rating(sample_id, rating)
    # each step ends later, as on the default model: a listener on the training thread waits
    _ = s.on("step", lambda m: time.sleep({step_s}))
"""


def notebook(*cells: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c))
                                           for c in cells])


def setup(db: Path, step_s: float) -> str:
    return SETUP.format(db=str(db), step_s=step_s)


def plots(page) -> list[dict]:
    return page.evaluate(PLOTS_JS)


def loss_points(page, name="DPO loss") -> int | None:
    found = plots(page)
    return found[0].get(name) if len(found) == 1 else None


def monitors(page):
    """The monitor panels in the page: the box holding a plot and a Start button."""
    return (page.locator(".widget-vbox").filter(has=page.locator(".js-plotly-plot"))
            .filter(has=page.locator("button.jupyter-button", has_text="Start")))


def progress_text(page) -> str:
    return monitors(page).locator(".widget-hbox .widget-html-content").first.inner_text()


def stored_steps(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT COUNT(*) FROM train_steps").fetchone()[0]
    finally:
        con.close()


def overlaps(a: dict, b: dict) -> bool:
    return a["x0"] < b["x1"] and b["x0"] < a["x1"] and a["y0"] < b["y1"] and b["y0"] < a["y1"]


def assert_titles_clear_of_the_toolbar(page) -> None:
    monitors(page).locator(".js-plotly-plot").hover()  # the toolbar shows on hover
    page.locator(".js-plotly-plot .modebar").first.wait_for(state="visible")
    boxes = page.evaluate(BOXES_JS)
    assert [t["text"] for t in boxes["titles"]] == [
        "loss (all objectives)", "log p per token: SFT target · DPO chosen",
        "DPO: reward margin · pair accuracy", "KTO: rewards · KL"]
    plot = boxes["plot"]
    for title in boxes["titles"]:
        assert plot["x0"] <= title["x0"] and title["x1"] <= plot["x1"], title  # not clipped
        assert plot["y0"] <= title["y0"], title
        assert not any(overlaps(title, bar) for bar in boxes["toolbar"]), (title, boxes)


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_monitor_created_empty_fills_while_the_kernel_is_busy(open_notebook, tmp_path, app,
                                                               save_artifact):
    db = tmp_path / "monitor.sqlite"
    page = open_notebook(notebook(setup(db, 0.5), """
        m = s.monitor()
        m   # as a cell's last expression too: still one monitor
        """, f"""
        run = s.train("dpo", steps={STEPS}, lr=1e-3)
        run.wait()   # the kernel stays busy while every step arrives
        print("kernel points", m.points)
        """), app=app, env=TINY, run=False)
    page.evaluate(SLOW_WIDGET_JS)
    page.lfw.run_all()
    assert stored_steps(db) == STEPS
    page.get_by_text(f"kernel points {STEPS}").first.wait_for()
    page.lfw.wait_for(lambda: loss_points(page) == STEPS, timeout_s=60,
                      message=f"{STEPS} points on the page's DPO loss curve (got {plots(page)})")
    assert plots(page)[0]["reward margin"] == STEPS
    assert monitors(page).count() == 1
    assert page.locator("button.jupyter-button", has_text="Start").count() == 1
    page.get_by_text(f"done · {STEPS} steps · DPO · loss").first.wait_for()
    assert "ETA" not in progress_text(page)
    assert_titles_clear_of_the_toolbar(page)
    # the capability guard measured at the end of the run: its line is what the person reads
    monitors(page).locator(".widget-html-content", has_text="capability: NLL per token").first.wait_for()
    save_artifact(page, f"monitor-{app}", monitors(page))
    save_artifact(page, f"monitor-{app}-page")


def test_points_grow_during_a_run_started_by_clicking_start(open_notebook, tmp_path,
                                                            save_artifact):
    db = tmp_path / "start.sqlite"
    page = open_notebook(notebook(setup(db, 0.8), """
        m = s.monitor(objective="dpo", steps=40, lr=1e-3, max_epochs=None)
        """), env=TINY)
    page.lfw.wait_for(lambda: loss_points(page) == 0, message="the empty chart")
    page.locator("button.jupyter-button", has_text="Start").click()
    first = page.lfw.wait_for(lambda: loss_points(page), timeout_s=90,
                              message="the first point after Start")
    page.lfw.wait_for(lambda: (loss_points(page) or 0) > first, timeout_s=90,
                      message=f"more than {first} points while the run goes on")
    assert "ETA" in progress_text(page)
    page.locator("button.jupyter-button", has_text="Pause").click()
    page.locator("button.jupyter-button", has_text="Resume").wait_for()
    page.get_by_text("paused after step").first.wait_for()
    save_artifact(page, "monitor-lab-paused", monitors(page))
    page.locator("button.jupyter-button", has_text="Stop").click()
    page.get_by_text("stopped ·").first.wait_for(timeout=90_000)
    taken = stored_steps(db)
    page.lfw.wait_for(lambda: loss_points(page) == taken, timeout_s=30,
                      message=f"all {taken} stored steps on the page")
    assert progress_text(page).startswith(f"stopped · {taken} of 40 steps · DPO")
    # a reload builds new views from the kernel's widget state: every point is in it
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.reload()
    page.lfw.wait_for(lambda: loss_points(page) == taken, timeout_s=90,
                      message=f"all {taken} points after a page reload (got {plots(page)})")


def test_quickstart_shape_shows_exactly_one_monitor(open_notebook, tmp_path):
    db = tmp_path / "quick.sqlite"
    page = open_notebook(notebook(setup(db, 0.3), """
        run = s.train(steps=4, lr=5e-4)
        print(run.objective, "-", run.reason)
        s.monitor()
        """, """
        run.wait()
        """), app="notebook", env=TINY)
    page.lfw.wait_for(lambda: loss_points(page) == 4, timeout_s=60,
                      message=f"4 points on the page's loss curve (got {plots(page)})")
    assert monitors(page).count() == 1 and len(plots(page)) == 1
    assert page.locator("button.jupyter-button", has_text="Pause").count() == 1


def test_untrusted_reason_shows_literally(open_notebook, save_artifact):
    page = open_notebook(notebook(f"""
        import ipywidgets as widgets
        from IPython.display import display
        from lf_widgets.metrics import TrainState
        from lf_widgets.panels import TrainingMonitor

        class Events:  # a session as far as the monitor is concerned
            def __init__(self):
                self.listeners = {{}}
            def on(self, name, callback):
                self.listeners.setdefault(name, []).append(callback)
                return lambda: self.listeners[name].remove(callback)

        events = Events()
        m = TrainingMonitor(events)
        display(m)
        for callback in events.listeners["train_state"]:
            callback(TrainState("r1", "failed", "dpo", {PAYLOAD!r}))
        m.flush()
        # positive control: a Label is typeset by MathJax, so the check below is not blind
        display(widgets.Label({PAYLOAD.split(" <")[0]!r}, layout=widgets.Layout(width="auto")))
        """))
    page.locator("div.widget-label mjx-container, div.widget-label a").first.wait_for()
    status = monitors(page).locator(".widget-html-content", has_text="href")
    status.wait_for()
    assert PAYLOAD in status.inner_text()
    assert status.locator("a, img, mjx-container").count() == 0
    assert "pwned" not in page.lfw.title_history()
    save_artifact(page, "monitor-lab-untrusted-reason", monitors(page))
