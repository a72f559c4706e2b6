"""Keys in a real JupyterLab / Notebook 7: the panel takes them as soon as it appears.

The person runs the cell (Shift+Enter, or Run All) and presses ``3`` without clicking anything:
the focused sample is rated 3 (a row in SQLite) and no notebook cell changes (in command mode
``3`` would turn the active cell into a heading). The panel says whether keys are active, and
clicking the panel's output (after the focus went elsewhere) gives the keys back to it.
"""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

TINY = {"LF_WIDGETS_MODEL": "tiny"}
ARTIFACTS = Path(__file__).parent / "artifacts"
KEYS_STATE = "() => [...document.querySelectorAll('.lfw-keys')].map(el => el.dataset.keys)"
CELLS = """() => window.jupyterapp.shell.currentWidget.content.widgets.map(
    c => [c.model.type, c.model.sharedModel.getSource()])"""


def ratings(db: Path) -> list:
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT sample_id, kind, value, annotator FROM events").fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        con.close()


def rating_notebook(db: Path) -> nbformat.NotebookNode:
    code = textwrap.dedent(f"""\
        import lf_widgets as lfw
        from lf_widgets.store import SampleRecord
        s = lfw.Session(store={str(db)!r}, annotator="browser")
        s.store.add_samples([SampleRecord("first answer", prompt="say something"),
                             SampleRecord("second answer", prompt="say something")])
        panel = s.rate()""")
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(code),
        # what a stray "3" in command mode would change: the cell after the panel's
        nbformat.v4.new_markdown_cell("Some text after the panel."),
        nbformat.v4.new_code_cell("x = 1"),
    ])


@pytest.mark.parametrize("app,how", [("lab", "shift-enter"), ("notebook", "shift-enter"),
                                     ("lab", "run-all")])
def test_a_key_pressed_after_the_panel_appears_rates_and_changes_no_cell(
        open_notebook, tmp_path, app, how):
    db = tmp_path / "keys.sqlite"
    page = open_notebook(rating_notebook(db), app=app, env=TINY, run=how == "run-all")
    if how == "shift-enter":  # as a person does: into the first cell, run it, advance
        page.locator(".jp-Cell").first.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
    page.locator(".lfw-keys[data-keys='active']").wait_for(timeout=120_000)
    assert "keys active" in page.locator(".lfw-keys").inner_text()
    cells = page.evaluate(CELLS)

    page.keyboard.press("3")  # no click first

    page.lfw.wait_for(lambda: ratings(db), timeout_s=60, message="the rating row in SQLite")
    assert ratings(db) == [(1, "rating", "3", "browser")]  # the focused (first) sample
    page.locator("div.widget-label, .widget-html-content", has_text="saved rating 3").first.wait_for()
    assert page.evaluate(CELLS) == cells  # same count, types and text: no cell became a heading
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"keyboard-rating-{app}-{how}.png"), full_page=True)

    # The focus goes elsewhere: the panel says so, and a key goes to the notebook, not the panel.
    page.locator(".jp-MarkdownCell").first.click()
    page.locator(".lfw-keys[data-keys='inactive']").wait_for()
    assert "click the panel to use keys" in page.locator(".lfw-keys").inner_text()
    # A click in the panel's output (its sample text) gives the keys back.
    page.locator(".widget-html-content", has_text="second answer").click()
    page.locator(".lfw-keys[data-keys='active']").wait_for()
    # In a text field keys type text; Esc gives them back to the panel.
    page.locator(".widget-textarea textarea").first.click()
    page.locator(".lfw-keys[data-keys='typing']").wait_for()
    page.keyboard.press("5")
    page.keyboard.press("Escape")
    page.locator(".lfw-keys[data-keys='active']").wait_for()
    assert page.locator(".widget-textarea textarea").first.input_value().endswith("5")
    assert ratings(db) == [(1, "rating", "3", "browser")]  # the "5" typed was no rating
    assert page.evaluate(CELLS) == cells
