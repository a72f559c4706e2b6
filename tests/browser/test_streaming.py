"""Streaming generation as a person sees it: the panel is there at once, text grows in the first
card while the model writes, the kernel stays free for another cell, and a click on a sample
that has arrived lands in SQLite."""

from __future__ import annotations

import sqlite3
import textwrap
import time

import nbformat
import pytest

pytestmark = pytest.mark.browser

TINY = {"LF_WIDGETS_MODEL": "tiny"}
# Text of the cards still being written (they end with the cursor the panel draws).
WRITING = ("() => [...document.querySelectorAll('.widget-html-content')]"
           ".map(e => e.innerText).filter(t => t.trim().endsWith('▍'))")


def ratings(db) -> list:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT sample_id, value FROM events WHERE kind = 'rating'").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


@pytest.mark.parametrize("app", ["lab"])
def test_rate_streams_into_the_panel_while_the_kernel_is_free(open_notebook, tmp_path, app,
                                                              save_artifact):
    db = tmp_path / "stream.sqlite"
    cells = [
        f"""
        import time
        import lf_widgets as lfw
        s = lfw.Session(store={str(db)!r}, annotator="browser")
        # The tiny model writes in milliseconds; slow each forward pass down so that a person
        # (and this test) can watch the text grow: ~0.15 s a token, 80 tokens.
        s.model.call(lambda: s.model.model.register_forward_pre_hook(lambda *a: time.sleep(0.15)))
        panel = s.rate(["Tell me a story."], n=4, max_new_tokens=80, temperature=1.0)
        """,
        """print("second cell ran while", panel.arrived, "of", panel.total, "samples had arrived")""",
    ]
    page = open_notebook(nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells]), app=app, env=TINY)
    # The second cell ran (the kernel was free) before any sample was finished.
    out = page.locator(".jp-OutputArea-output", has_text="second cell ran").first
    out.wait_for()
    assert "while 0 of 4" in out.inner_text()
    # The first card's text is visible and grows while the model writes.
    first = page.lfw_first = page.evaluate(WRITING)
    deadline = time.monotonic() + 60
    while not first and time.monotonic() < deadline:
        time.sleep(0.1)
        first = page.evaluate(WRITING)
    assert first, "no card showed text being written"
    save_artifact(page, f"streaming-{app}-writing")
    grown = None
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = page.evaluate(WRITING)
        if now and len(now[0]) > len(first[0]):
            grown = now[0]
            break
    assert grown, f"the first card's text did not grow: {first[0]!r}"
    # Once the samples are written, a click on the first card's "4" lands in the log.
    page.locator(".widget-html-content", has_text="not rated yet").first.wait_for(timeout=120_000)
    page.locator("button.jupyter-button:not([disabled])", has_text="4").first.click()
    deadline = time.monotonic() + 60
    while not ratings(db) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [v for _, v in ratings(db)] == ["4"]
    save_artifact(page, f"streaming-{app}-rated")
