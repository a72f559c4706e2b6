"""The real panels in a real JupyterLab / Notebook 7 with headless Chromium.

Each test acts as a person would (click, key press) and then checks the kernel-side effect: the
row in the SQLite feedback log, not only the page.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import nbformat
import pytest

from tests.helpers import sqlite_rows

pytestmark = pytest.mark.browser

PAYLOAD = """<img src=x onerror="document.title='pwned'">"""
NOTEBOOKS = Path(__file__).parents[2] / "notebooks"
TINY = {"LF_WIDGETS_MODEL": "tiny"}


rows = sqlite_rows  # the log as a person would find it


def notebook(*cells: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c))
                                           for c in cells])


def n_cells(page) -> int:
    return page.evaluate("() => window.jupyterapp.shell.currentWidget.content.widgets.length")


def test_rating_click_lands_in_sqlite_and_html_is_inert(open_notebook, tmp_path):
    db = tmp_path / "ratings.sqlite"
    page = open_notebook(notebook(f"""
        import lf_widgets as lfw
        from lf_widgets.store import SampleRecord
        s = lfw.Session(store={str(db)!r}, annotator="browser")
        s.store.add_samples([SampleRecord("a harmless sample", prompt="say something"),
                             SampleRecord({PAYLOAD!r}, prompt="say something")])
        panel = s.rate()
        """), env=TINY)
    page.locator("button.jupyter-button", has_text="4").first.click()
    page.lfw.wait_for(lambda: rows(db, "SELECT sample_id, kind, value, annotator FROM events"),
                      message="the rating row in SQLite")
    assert rows(db, "SELECT sample_id, kind, value, annotator FROM events") == [
        (1, "rating", "4", "browser")]
    page.locator(".widget-html-content", has_text="✓ saved rating 4").first.wait_for()
    shown = page.locator(".widget-html-content", has_text="onerror").first
    assert PAYLOAD in shown.inner_text()  # shown as text ...
    assert "pwned" not in page.lfw.title_history()  # ... and never run
    assert page.locator(".widget-html-content img").count() == 0


def ab_notebook(db: Path, prompts: str, wait: bool = False) -> nbformat.NotebookNode:
    """A session on the tiny model, a 2-step DPO adapter, then an A/B test of ``prompts`` (code)."""
    return notebook(f"""
        import lf_widgets as lfw
        s = lfw.Session(store={str(db)!r}, annotator="browser")
        for i, x in enumerate(s.generate(["hello", "world"], n=4, max_new_tokens=6, seed=0,
                                         progress=False)):
            s.record_rating(x.sample_id, [5, 1, 4, 2][i % 4])
        s.train("dpo", steps=2, lr=1e-2).wait()
        ab = s.ab_test({prompts}, seed=0, max_new_tokens=4)
        """ + ("ab.wait()\n" if wait else ""))


def test_ab_vote_by_click_and_by_keyboard(open_notebook, tmp_path):
    db = tmp_path / "ab.sqlite"
    page = open_notebook(ab_notebook(db, '["q1", "q2", "q3"]'), env=TINY)
    votes = "SELECT json_extract(value, '$.choice') FROM events WHERE kind = 'ab_vote'"
    cells = n_cells(page)
    page.locator("button.jupyter-button", has_text="A is better").click()
    page.lfw.wait_for(lambda: rows(db, votes) == [("a",)], message="the click vote")
    page.locator(".widget-html-content", has_text="Item 2 of 3").click()  # focus the panel
    page.keyboard.press("b")
    page.lfw.wait_for(lambda: len(rows(db, votes)) == 2, message="the keyboard vote")
    assert rows(db, votes) == [("a",), ("b",)]
    page.keyboard.press("t")
    page.lfw.wait_for(lambda: len(rows(db, votes)) == 3, message="the last vote")
    # the keys went to the panel, not to JupyterLab's command mode ("b" inserts a cell there)
    assert n_cells(page) == cells
    # every item voted: the panel reveals who was who and the statistics
    page.locator(".widget-html-content", has_text="decided vote").first.wait_for()
    page.locator(".js-plotly-plot").first.wait_for()


def test_ab_reveal_shows_side_bias_and_length_controlled_rate_next_to_the_raw_rate(
        open_notebook, tmp_path, save_artifact):
    """Issue 11: the honest-A/B lines are what the person sees after the last vote."""
    db = tmp_path / "ab_checks.sqlite"
    # every item written first: a key on the last arrived item must not wait for the next
    page = open_notebook(ab_notebook(db, '[f"q{i}" for i in range(10)]', wait=True), env=TINY)
    votes = "SELECT COUNT(*) FROM events WHERE kind = 'ab_vote'"
    page.locator(".widget-html-content", has_text="Item 1 of 10").click()  # focus the panel
    for k, key in enumerate("abaabbabta"):
        page.keyboard.press(key)
        page.lfw.wait_for(lambda: rows(db, votes)[0][0] == k + 1, message=f"vote {k + 1}")
        if k < 9:  # the next key is for the next item: wait until the page shows it
            page.locator(".widget-html-content", has_text=f"Item {k + 2} of 10").first.wait_for()
    html = lambda text: page.locator(".widget-html-content", has_text=text).first  # noqa: E731
    lc, side, raw = (html("length-controlled win rate of"), html("side: the left answer (A) won"),
                     html("decided vote"))
    lc.wait_for()
    assert re.search(r"side: the left answer \(A\) won \d+ of \d+ votes that picked a side",
                     side.inner_text())
    # 9 compared votes (>= MIN_VOTES_FOR_LC): the regression's rate and interval, not a note
    assert re.search(r"length-controlled win rate of tuned: \d+% \[\d+%, \d+%\]",
                     lc.inner_text()), lc.inner_text()
    y = [el.bounding_box()["y"] for el in (raw, side, lc)]
    assert y == sorted(y), y  # right below the raw rate, in the order the reveal reads
    print(save_artifact(page, "ab-reveal-checks-lab"))


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_quickstart_runs_and_its_panels_work(open_notebook, app):
    page = open_notebook(NOTEBOOKS / "01_quickstart.ipynb", app=app, env=TINY, run=False)
    root = page.lfw.path.parent
    shutil.copytree(NOTEBOOKS / "data", root / "data", dirs_exist_ok=True)
    result = page.lfw.run_all()
    assert result["ok"], result["errors"]
    db = root / "lf_feedback.sqlite"
    before = rows(db, "SELECT COUNT(*) FROM events WHERE kind = 'rating'")[0][0]
    page.locator("button.jupyter-button", has_text="3").first.click()
    page.lfw.wait_for(lambda: rows(db, "SELECT COUNT(*) FROM events WHERE kind = 'rating'")[0][0]
                      == before + 1, message="the new rating in SQLite")
    points = ("() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => (gd.data || [])"
              ".reduce((n, t) => n + (t.x ? t.x.length : 0), 0))")
    page.lfw.wait_for(lambda: any(n > 0 for n in page.evaluate(points)),
                      message="the monitor's plot to show training points")
