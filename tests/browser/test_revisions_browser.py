"""Suggested revisions as a person sees them in a real JupyterLab (headless Chromium).

A critique is typed and saved in a rating card, "Suggest revisions" is clicked, and the
candidates appear in the card one by one: a test-defined refiner writes each only when the test
opens its gate (from the kernel, as a later cell would), so the card's DOM is read between two
candidates and the count is seen to grow. The digit ``1`` (the candidate list is open, so it
picks a candidate instead of rating) makes candidate 1 the correction: its row in SQLite carries
the provenance (via, refiner, candidate, critique). A candidate, the critique and the refiner's
name hold ``<b>…</b>``, ``<i>…</i>`` and ``$x^2$``: they show literally — no such element, no
MathJax — while a control Label in the same page proves MathJax is typesetting there.
Screenshots go to ``tests/browser/artifacts/``.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nbformat
import pytest

from tests.helpers import sqlite_rows

pytestmark = pytest.mark.browser

TINY = {"LF_WIDGETS_MODEL": "tiny"}
CANDIDATES = ["<b>bold</b> sail $x^2$ north.", "Kindly sail north.", "Please sail north."]
CRITIQUE = "Be more polite, <i>please</i> $y$."
REFINER = "slow <i>refiner</i> $r$"

SETUP = '''
import threading
import ipywidgets as widgets
from IPython.display import display
import lf_widgets as lfw
from lf_widgets._worker import Worker
from lf_widgets.refine import Refiner
from lf_widgets.store import SampleRecord


class SlowRefiner(Refiner):
    """Writes its texts in turn, each one only after gate.release() (so a test sees them come
    one at a time)."""

    def __init__(self, texts, name):
        self.texts, self.name, self.calls = list(texts), name, 0
        self.gate = threading.Semaphore(0)
        self.worker = Worker("slow-refiner")

    def _submit(self, fn):
        return self.worker.submit(fn, name="refine")

    def _write(self, job, messages, prefix, config):
        while not self.gate.acquire(timeout=0.05):
            job.check()
        text = self.texts[self.calls % len(self.texts)]
        self.calls += 1
        return text, False


s = lfw.Session(store={db!r}, annotator="browser")
s.store.add_samples([SampleRecord("Sail north.", prompt="Where to?"),
                     SampleRecord("The ship is fast.", prompt="Where to?")])
refiner = SlowRefiner({candidates!r}, {refiner!r})
'''

PANEL = '''
panel = s.rate()
panel.refiner = refiner
'''

# MathJax typesets a Label here: the control proves that the panel's "$x^2$" is left alone
# because it is escaped, not because no MathJax runs in this page.
CONTROL = '''
control = widgets.Label("$x^2$ control")
control.add_class("lfw-control")
display(control)
'''

EXECUTE_JS = r"""async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, store_history: false});
  const out = [];
  future.onIOPub = (msg) => {
    const c = msg.content;
    if (msg.header.msg_type === 'stream') out.push(c.text);
    if (msg.header.msg_type === 'error') out.push(c.ename + ': ' + c.evalue);
    if (msg.header.msg_type === 'execute_result') out.push(c.data['text/plain']);
  };
  const reply = await future.done;
  return {status: reply.content.status, output: out.join('')};
}"""

# The candidate texts the first card shows (rows hidden by the panel are not counted).
SHOWN = """() => [...document.querySelectorAll('.lfw-card')][0] ? [...[...document
    .querySelectorAll('.lfw-card')][0].querySelectorAll('.lfw-candidate')]
    .filter((e) => e.offsetParent !== null && e.innerText.trim()).map((e) => e.innerText) : []"""

# Elements the panel must never contain: the payloads' tags, and MathJax output.
LEAKS = """() => {
  const panel = document.querySelector('.lfw-panel');
  return {
    // (a button's icon is an <i class="fa …">: the payloads' <b> and <i> have no class)
    tags: [...panel.querySelectorAll('b, i')].filter((e) => !e.classList.contains('fa'))
      .map((e) => e.outerHTML),
    maths: [...panel.querySelectorAll('mjx-container, .MathJax, mjx-math')].length,
  };
}"""


rows = sqlite_rows  # the log as a person would find it


def execute(page, code: str) -> str:
    result = page.evaluate(EXECUTE_JS, textwrap.dedent(code))
    assert result["status"] == "ok", result["output"]
    return result["output"]


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_suggested_revisions_stream_into_the_card_and_key_1_accepts(open_notebook, tmp_path,
                                                                    app, save_artifact):
    db = tmp_path / "revisions.sqlite"
    cells = [SETUP.format(db=str(db), candidates=CANDIDATES, refiner=REFINER), PANEL, CONTROL]
    page = open_notebook(nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in cells]),
        app=app, env=TINY)
    page.add_style_tag(content=".jp-Cell { content-visibility: visible !important; }")
    page.set_viewport_size({"width": 1280, "height": 1600})
    wait = page.lfw.wait_for
    panel = page.locator(".lfw-panel")
    control = page.locator(".lfw-control mjx-container")
    wait(lambda: control.count() == 1, timeout_s=60, message="MathJax to typeset the control")

    # A critique, typed and saved: "Suggest revisions" becomes available.
    card = page.locator(".lfw-card").first
    suggest = card.locator("button.jupyter-button", has_text="Suggest revisions")
    assert suggest.is_disabled()
    card.locator("textarea").first.fill(CRITIQUE)
    card.locator("button.jupyter-button", has_text="Save critique").click()
    wait(lambda: [json.loads(v) for v, in rows(db, "SELECT value FROM events WHERE kind = "
                                                   "'critique'")] == [CRITIQUE],
         message="the critique in SQLite")
    wait(lambda: suggest.is_enabled(), message="Suggest revisions to be enabled")
    suggest.click()
    header = card.locator(".lfw-candidates .widget-html-content").first
    header.wait_for()
    assert page.evaluate(SHOWN) == []
    # the mode is visible: the digits pick a revision while the list is open
    wait(lambda: "pick a revision" in page.locator(".lfw-keys").inner_text(),
         message="the keys line to say the digits pick a revision")

    # The candidates come one at a time: the card is read after each.
    seen = []
    for n in (1, 2):
        execute(page, "refiner.gate.release()")
        wait(lambda: len(page.evaluate(SHOWN)) == n, message=f"candidate {n} in the card")
        seen.append(page.evaluate(SHOWN))
    assert [len(x) for x in seen] == [1, 2], seen  # it grew, as the refiner wrote
    assert "writing… 2 of 3" in card.inner_text()
    execute(page, "refiner.gate.release()")
    wait(lambda: len(page.evaluate(SHOWN)) == 3, message="the third candidate")
    shown = page.evaluate(SHOWN)
    # Shown literally: the tags and the dollars are text, as written.
    assert shown[0].endswith(CANDIDATES[0]), shown
    assert [t.splitlines()[-1] for t in shown] == CANDIDATES
    assert REFINER in shown[0] and CRITIQUE in header.inner_text()
    assert page.evaluate(LEAKS) == {"tags": [], "maths": 0}
    assert page.locator(".lfw-keys[data-keys='active']").count() == 1
    save_artifact(page, f"revisions-{app}-candidates", panel)

    page.keyboard.press("1")  # candidate 1, not a rating of 1

    wait(lambda: rows(db, "SELECT value FROM events WHERE kind = 'correction'"),
         message="the correction row in SQLite")
    [(sample_id, value, meta)] = rows(
        db, "SELECT sample_id, value, meta FROM events WHERE kind = 'correction'")
    meta = json.loads(meta)
    critique_id = rows(db, "SELECT id FROM events WHERE kind = 'critique'")[0][0]
    assert (sample_id, json.loads(value)) == (1, CANDIDATES[0])
    assert meta["via"] == "revision" and meta["refiner"] == REFINER
    assert (meta["candidate"], meta["candidates"]) == (0, 3)
    assert meta["critique"] == CRITIQUE and meta["critique_event"] == critique_id
    assert rows(db, "SELECT COUNT(*) FROM events WHERE kind = 'rating'") == [(0,)]
    status = card.locator(".widget-html-content", has_text="accepted revision 1")
    status.wait_for()
    assert REFINER in status.inner_text()
    wait(lambda: page.evaluate(SHOWN) == [], message="the candidate list to close")
    assert card.locator("textarea").nth(1).input_value() == CANDIDATES[0]
    assert page.evaluate(LEAKS) == {"tags": [], "maths": 0}
    save_artifact(page, f"revisions-{app}-accepted", panel)

    # The list closed, the keys rate again, and the focus stayed in the panel.
    wait(lambda: "pick a revision" not in page.locator(".lfw-keys").inner_text(),
         message="the keys line back to rating")
    page.keyboard.press("4")
    wait(lambda: rows(db, "SELECT sample_id, value FROM events WHERE kind = 'rating'"),
         message="the rating row")
    assert rows(db, "SELECT sample_id, value FROM events WHERE kind = 'rating'") == [(1, "4")]
    assert page.lfw.dialogs() == []
    save_artifact(page, f"revisions-{app}-rated-after", panel)


PROPAGATE = '''
import lf_widgets as lfw
from lf_widgets.store import SampleRecord

s = lfw.Session(store={db!r}, annotator="browser")
s.store.add_samples([SampleRecord(t, prompt="Where to?") for t in
                     ("Sail north.", "The ship is <b>fast</b>.", "Sails are up.")])
panel = s.rate()
'''


@pytest.mark.parametrize("app", ["lab"])
def test_a_typed_prefix_edit_is_offered_and_taken_by_key_in_the_other_cards(
        open_notebook, tmp_path, app, save_artifact):
    """One typed correction ("Ahoy! " in front), the offer clicked — its button disappears
    under the pointer, and the keys must still reach the panel — then 1 takes the suggestion in
    the next card and x turns down the one after: two rows in SQLite."""
    db = tmp_path / "propagate.sqlite"
    page = open_notebook(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        textwrap.dedent(PROPAGATE.format(db=str(db))).strip())]), app=app, env=TINY)
    page.add_style_tag(content=".jp-Cell { content-visibility: visible !important; }")
    page.set_viewport_size({"width": 1280, "height": 1800})
    wait = page.lfw.wait_for
    panel = page.locator(".lfw-panel")
    first = page.locator(".lfw-card").first
    first.locator("textarea").nth(1).fill("Ahoy! Sail north.")
    first.locator("button.jupyter-button", has_text="Save correction").click()
    offer = first.locator(".lfw-offer")
    offer.wait_for()
    assert "Apply the same edit (add 'Ahoy! ' at the start) to 2 other samples?" in \
        offer.inner_text()
    offer.locator("button.jupyter-button", has_text="Apply to 2 other samples").click()
    second = page.locator(".lfw-card").nth(1)
    suggestion = second.locator(".lfw-candidate")
    suggestion.wait_for()
    assert suggestion.inner_text().splitlines()[-1] == "Ahoy! The ship is <b>fast</b>."
    wait(lambda: "1 use the suggestion" in page.locator(".lfw-keys").inner_text(),
         message="the keys line for the suggestion")
    assert offer.is_hidden()
    assert page.locator(".lfw-keys[data-keys='active']").count() == 1  # focus kept
    save_artifact(page, f"revisions-{app}-propagation-offered", panel)

    page.keyboard.press("1")  # the second card's suggestion
    wait(lambda: len(rows(db, "SELECT id FROM events WHERE kind = 'correction'")) == 2,
         message="the propagated correction in SQLite")
    page.keyboard.press("x")  # the focus moved on to the third card's: turned down
    wait(lambda: rows(db, "SELECT sample_id FROM events WHERE kind = 'rejection'") == [(3,)],
         message="the rejection of the third card's suggestion")
    [(source,)] = rows(db, "SELECT id FROM events WHERE kind = 'correction' AND sample_id = 1")
    [(value, meta)] = rows(db, "SELECT value, meta FROM events WHERE kind = 'correction' "
                               "AND sample_id = 2")
    assert json.loads(value) == "Ahoy! The ship is <b>fast</b>."
    meta = json.loads(meta)
    assert meta["via"] == "propagated" and meta["propagated_from"] == source
    assert rows(db, "SELECT COUNT(*) FROM events WHERE kind = 'rating'") == [(0,)]
    assert page.evaluate(LEAKS) == {"tags": [], "maths": 0}
    save_artifact(page, f"revisions-{app}-propagation-taken", panel)


QUEUE = SETUP + '''
for sid in (1, 2):
    s.record_critique(sid, {critique!r})
queue = s.review_critiques(k=3, refiner=refiner)
'''


@pytest.mark.parametrize("app", ["lab"])
def test_the_critique_queue_by_keys(open_notebook, tmp_path, app, save_artifact):
    """The queue appears with the keys active; its candidates stream in; 2 takes the second
    and moves on to the next item (prefetched), x rejects there; the counts follow."""
    db = tmp_path / "queue.sqlite"
    code = QUEUE.format(db=str(db), candidates=CANDIDATES, refiner=REFINER, critique=CRITIQUE)
    page = open_notebook(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        textwrap.dedent(code).strip())]), app=app, env=TINY)
    page.add_style_tag(content=".jp-Cell { content-visibility: visible !important; }")
    page.set_viewport_size({"width": 1280, "height": 1400})
    wait = page.lfw.wait_for
    queue = page.locator(".lfw-critiques")
    page.locator(".lfw-keys[data-keys='active']").wait_for(timeout=120_000)
    header = queue.locator(".widget-html-content", has_text="turned into training targets")
    assert "0 of 2 turned into training targets · 0 rejected" in header.inner_text()
    assert CRITIQUE in queue.inner_text() and "Item 1 of 2" in queue.inner_text()
    visible = ("() => [...document.querySelectorAll('.lfw-critiques .lfw-candidate')]"
               ".filter((e) => e.offsetParent !== null && e.innerText.trim()).length")
    execute(page, "refiner.gate.release()")
    wait(lambda: page.evaluate(visible) == 1, message="the first candidate")
    execute(page, "refiner.gate.release(5)")  # the rest, and the next item's (prefetched)
    wait(lambda: page.evaluate(visible) == 3, message="three candidates")
    save_artifact(page, f"revisions-{app}-queue", queue)
    page.keyboard.press("2")
    wait(lambda: "Item 2 of 2" in queue.inner_text(), message="the next item")
    wait(lambda: "1 of 2 turned into training targets" in header.inner_text(),
         message="the count")
    wait(lambda: page.evaluate(visible) == 3, message="the next item's candidates")
    page.keyboard.press("x")
    wait(lambda: "· 1 rejected" in header.inner_text(), message="the rejection counted")
    [(sid, value, meta)] = rows(db, "SELECT sample_id, value, meta FROM events "
                                    "WHERE kind = 'correction'")
    assert (sid, json.loads(value), json.loads(meta)["candidate"]) == (1, CANDIDATES[1], 1)
    assert rows(db, "SELECT sample_id FROM events WHERE kind = 'rejection'") == [(2,)]
    assert page.evaluate(LEAKS) == {"tags": [], "maths": 0}
    save_artifact(page, f"revisions-{app}-queue-done", queue)
