"""A team's work plan in a real JupyterLab: an annotator's queue shows their pending items only,
a click lands in the log, and "k of m done" follows."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import nbformat
import pytest

from tests.helpers import sqlite_rows

pytestmark = pytest.mark.browser

TINY = {"LF_WIDGETS_MODEL": "tiny"}


rows = sqlite_rows  # the log as a person would find it


def test_queue_shows_only_the_annotators_pending_items(open_notebook, tmp_path):
    db = tmp_path / "team.sqlite"
    page = open_notebook(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        textwrap.dedent(f"""
        import lf_widgets as lfw
        from lf_widgets.store import SampleRecord
        s = lfw.Session(store={str(db)!r}, annotator="ann")
        ids = s.store.add_samples([SampleRecord(f"item-{{i}}", prompt="one question")
                                   for i in range(6)])
        s.assign(ids, ["ann", "bob", "cy"], overlap=2, seed=0)
        s.record_rating(ids[0], 2, annotator="bob")  # others' work is not in ann's queue
        q = s.queue()
        """))]), env=TINY)
    mine = [int(i[2:]) for (i,) in rows(db, "SELECT item FROM assignments WHERE annotator = 'ann'"
                                            " ORDER BY id")]
    page.locator(".widget-html-content", has_text="ann: 0 of 4 done").first.wait_for()
    shown = page.locator(".widget-html-content", has_text=re.compile(r"^item-\d$"))
    texts = [t.strip() for t in shown.all_inner_texts()]
    assert texts == [f"item-{sid - 1}" for sid in mine]  # exactly her items, plan order
    page.locator("button.jupyter-button", has_text="5").first.click()
    ratings = "SELECT sample_id, value, annotator FROM events WHERE annotator = 'ann'"
    page.lfw.wait_for(lambda: rows(db, ratings), message="ann's rating in the log")
    assert rows(db, ratings) == [(mine[0], "5", "ann")]
    page.locator(".widget-html-content", has_text="ann: 1 of 4 done").first.wait_for()
