"""Smoke tests of the browser harness (conftest.py) with plain ipywidgets.

They check what the rating panels rely on: a click in the browser reaches the kernel (a file
appears on disk), the keyboard activates a focused button, untrusted text in a ``Label`` (and
escaped text in an ``HTML``) is shown literally and never runs, and ``env`` reaches the kernel.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

PAYLOAD = """<img src=x onerror="document.title='pwned'">"""
# Positive control: the same kind of payload through an *unescaped* ipywidgets.HTML, which
# sets innerHTML. It must be seen by the title recorder, or the "never pwned" check is blind.
CONTROL = """<img src=x onerror="document.title='control-fired'">"""


def _widget_notebook(clicks_file: Path) -> nbformat.NotebookNode:
    code = f"""\
import html, os, pathlib
import ipywidgets as widgets
from IPython.display import display

CLICKS = pathlib.Path({str(clicks_file)!r})
PAYLOAD = {PAYLOAD!r}

def on_click(_button):
    with CLICKS.open("a") as f:
        f.write("click\\n")

button = widgets.Button(description="Save me")
button.on_click(on_click)
display(
    button,
    widgets.HTML(value="<b class='lfw-escaped'>" + html.escape(PAYLOAD) + "</b>"),
    widgets.Label(value=PAYLOAD),
    widgets.HTML(value={CONTROL!r}),
    widgets.Label(value="probe=" + os.environ.get("LFW_HARNESS_PROBE", "<unset>")),
)
"""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# harness smoke test"), nbformat.v4.new_code_cell(code)]
    return nb


def _clicks(path: Path) -> int:
    return path.read_text().count("click\n") if path.exists() else 0


def _wait_clicks(page, path: Path, n: int) -> None:
    page.lfw.wait_for(lambda: _clicks(path) >= n, timeout_s=30, message=f"{n} click(s) recorded in {path}")
    assert _clicks(path) == n


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_click_reaches_kernel_and_untrusted_text_stays_text(open_notebook, tmp_path, app):
    clicks = tmp_path / "clicks.txt"
    probe = secrets.token_hex(4)
    page = open_notebook(_widget_notebook(clicks), app=app, env={"LFW_HARNESS_PROBE": probe})
    assert page.lfw.run["cells"] == 1 and page.lfw.run["errors"] == []

    button = page.locator("button.jupyter-button", has_text="Save me")
    button.wait_for(state="visible")
    labels = page.locator("div.widget-label")
    # The payload label shows the markup as literal text, with no <img> element inside.
    payload_label = labels.filter(has_text="onerror")
    assert payload_label.count() == 1
    assert payload_label.inner_text() == PAYLOAD
    assert payload_label.locator("img").count() == 0
    # Escaped HTML renders as text too.
    escaped = page.locator(".widget-html-content b.lfw-escaped")
    assert escaped.inner_text() == PAYLOAD
    assert escaped.locator("img").count() == 0
    # env reached the kernel.
    assert labels.filter(has_text="probe=").inner_text() == f"probe={probe}"

    assert _clicks(clicks) == 0
    button.click()
    _wait_clicks(page, clicks, 1)  # kernel-side effect of the browser click

    # The positive control ran (so the recorder works), the payload never did.
    page.lfw.wait_for(lambda: "control-fired" in page.lfw.title_history(), timeout_s=10,
             message="the unescaped control payload to set document.title")
    titles = page.lfw.title_history()
    assert "pwned" not in titles
    assert page.lfw.title() != "pwned"
    assert page.lfw.dialogs() == []


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_keyboard_activates_focused_button(open_notebook, tmp_path, app):
    clicks = tmp_path / "clicks.txt"
    page = open_notebook(_widget_notebook(clicks), app=app)
    button = page.locator("button.jupyter-button", has_text="Save me")
    button.focus()
    assert page.evaluate("() => document.activeElement.textContent.trim()") == "Save me"

    page.keyboard.press("Enter")
    _wait_clicks(page, clicks, 1)
    # Focus stays on the button (the notebook did not steal it, e.g. into edit mode).
    assert page.evaluate("() => document.activeElement.textContent.trim()") == "Save me"

    page.keyboard.press(" ")
    _wait_clicks(page, clicks, 2)
    titles = page.lfw.title_history()
    assert "pwned" not in titles


def test_cell_errors_are_reported(open_notebook):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("raise ValueError('boom from the notebook')"),
    ]
    page = open_notebook(nb, allow_errors=True)
    errors = page.lfw.run["errors"]
    assert [(e["cell"], e["ename"], e["evalue"]) for e in errors] == [
        (1, "ValueError", "boom from the notebook")
    ]
    assert page.lfw.run["ok"] is False
