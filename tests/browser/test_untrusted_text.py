"""Untrusted text in every channel that reaches the page shows literally: no HTML, no maths.

ipywidgets ``HTML`` sets ``innerHTML`` unsanitised, and JupyterLab's MathJax typesets ``Label``
values and widget descriptions: ``$\\href{https://x}{click}$`` there became a real link. One
payload goes into each channel a person's or a model's text takes to the panels — prompt, sample,
critique, correction, annotator, preference / A-B reason, imported CSV cells, adapter folder
names, an error message in a panel status, the monitor's status, the stepper's tokens and its
status, the A/B reveal — and the page is checked where the browser shows it: the payload's text
is visible, and no link, MathJax output, ``<img>`` element or script effect appears.

Two controls in the same page keep the checks from being blind: a plain ``Label`` holding
``$\\href…$`` must become a MathJax link, and an unescaped ``HTML`` with an ``onerror`` image must
change the title. Screenshots of each panel go to ``tests/browser/artifacts/``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import textwrap
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

PAYLOAD = (r"""$\href{https://example.com}{click}$ <img src=x onerror="document.title='pwned'"> """
           """<a href="https://example.com">link</a> $x^2$""")
CONTROL_MATH = r"$\href{https://example.com/control}{control}$"
CONTROL_HTML = """<img src=control-image onerror="document.title='control-fired'">"""
TINY = {"LF_WIDGETS_MODEL": "tiny"}
ARTIFACTS = Path(__file__).parent / "artifacts"
# The notebook gives each panel the class lfw-test-<name>, so the test finds it in the page.
PANELS = ("rating", "preference", "abtest", "monitor", "stepper-bad", "stepper")


SETUP = """
import csv, pathlib
import ipywidgets as widgets
from IPython.display import display
import lf_widgets as lfw
from lf_widgets.store import SampleRecord

P = {payload!r}
root = pathlib.Path({db!r}).parent
s = lfw.Session(model="tiny", store={db!r}, annotator="browser")
# a prompt and two samples whose text is the payload
s.store.add_samples([SampleRecord(text=P, prompt=P), SampleRecord(text="second answer " + P, prompt=P)])
# an import whose every text cell holds it (the annotator too)
with open(root / "payload.csv", "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["prompt", "text", "rating", "critique", "correction", "annotator"])
    writer.writerow(["imported prompt " + P, "imported answer " + P, "4", "imported critique " + P,
                   "imported correction " + P, P])
imported = s.import_csv(root / "payload.csv")
assert imported.added == 1, imported.message
"""

CELLS = [
    """
    rating = s.rate()  # no prompts: the stored samples, imported ones included
    rating.add_class("lfw-test-rating")
    """,
    """
    preference = s.compare(seed=0)  # the two payload samples of the payload prompt
    preference.add_class("lfw-test-preference")
    """,
    """
    s.train("sft", steps=1).wait()
    # two saved adapter folders whose names hold the payload (its "//" makes them nested)
    ADAPTERS = [str(root / "adapters") + f"/{side} " + P for side in "AB"]
    for folder in ADAPTERS:
        s.save_adapter(folder)
    ab = s.ab_test([P], models=tuple(ADAPTERS), seed=0, max_new_tokens=4).wait()
    ab.add_class("lfw-test-abtest")
    """,
    """
    monitor = s.monitor(objective=P)  # Start fails, and says why, quoting the objective
    monitor.add_class("lfw-test-monitor")
    """,
    """
    sample = s.samples(P)[0]
    bad_step = s.step_by_step(sample, optimizer=P)  # its step fails, and says why
    stepper = s.step_by_step(sample)
    # (a statement, not an expression, last: add_class returns the panel, and a StepperPanel
    # as a cell's value would be shown a second time)
    for name, shown in [("stepper-bad", bad_step), ("stepper", stepper)]:
        shown.add_class("lfw-test-" + name)
    """,
]

# The controls, last: what MathJax does to a Label here, and what an unescaped onerror does.
CONTROLS = """
control_math = widgets.Label({control_math!r})
control_math.add_class("lfw-control")
control_html = widgets.HTML({control_html!r})
control_html.add_class("lfw-control")
display(control_math, control_html)
"""

# What the page must never contain outside the controls: links to the payload's address,
# MathJax output, the payload's <img> element (plotly's SVG links count too).
LEAKS_JS = r"""() => {
  const outside = (el) => !el.closest('.lfw-control');
  const href = (a) => a.getAttribute('href') || a.getAttribute('xlink:href') || '';  // SVG too
  const links = [...document.querySelectorAll('a')]
    .filter((a) => /^https?:\/\/example\.com\/?$/.test(href(a)) && outside(a));
  const maths = [...document.querySelectorAll('mjx-container, .MathJax, .MathJax_Preview, mjx-math')]
    .filter(outside);
  const imgs = [...document.querySelectorAll('img')]
    .filter((i) => outside(i) && (i.getAttribute('src') === 'x' || /onerror/i.test(i.outerHTML)));
  return {links: links.map((a) => a.outerHTML), maths: maths.map((m) => m.outerHTML.slice(0, 200)),
          imgs: imgs.map((i) => i.outerHTML)};
}"""

# Runs code in the notebook's kernel (a method twin, as a later cell would); its output.
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


def rows(db: Path, sql: str, *args) -> list:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def notebook(db: Path) -> nbformat.NotebookNode:
    cells = [SETUP.format(payload=PAYLOAD, db=str(db)), *map(textwrap.dedent, CELLS),
             CONTROLS.format(control_math=CONTROL_MATH, control_html=CONTROL_HTML)]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c.strip()) for c in cells])


def execute(page, code: str) -> str:
    result = page.evaluate(EXECUTE_JS, textwrap.dedent(code))
    assert result["status"] == "ok", result["output"]
    return result["output"]


def panel(page, name: str):
    return page.locator(f".lfw-test-{name}")


def shown_text(locator) -> str:
    """What the browser shows of ``locator`` (innerText), scrolled into view first: the
    notebook may skip laying out cells off screen."""
    locator.scroll_into_view_if_needed()
    return locator.inner_text()


def judgements(db: Path, kind: str) -> list:
    """(value, annotator) of every ``kind`` event in the log, oldest first."""
    return [(json.loads(value), who) for value, who in
            rows(db, "SELECT value, annotator FROM events WHERE kind = ? ORDER BY id", kind)]


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_payload_shows_literally_in_every_channel(open_notebook, tmp_path, app):
    db = tmp_path / "untrusted.sqlite"
    page = open_notebook(notebook(db), app=app, env=TINY, timeout_s=400)
    # Cells are laid out lazily (content-visibility: auto), and Chromium then reports an empty
    # innerText for some that are on screen; lay them all out, so innerText is what is shown.
    page.add_style_tag(content=".jp-Cell { content-visibility: visible !important; }")
    page.set_viewport_size({"width": 1280, "height": 1800})  # whole panels in the screenshots

    # The controls: MathJax does typeset a Label here, and an unescaped onerror does run.
    control_link = page.locator('.lfw-control a[href="https://example.com/control"]')
    page.lfw.wait_for(lambda: control_link.count() == 1, timeout_s=60,
                      message="MathJax to typeset the control")
    page.lfw.wait_for(lambda: "control-fired" in page.lfw.title_history(),
                      message="the HTML control to fire")

    for check in (check_rating, check_imported, check_preference, check_abtest, check_monitor,
                  check_steppers):
        check(page, db)
        leaks(page, f"{app}-{check.__name__}")

    # A new control value typeset now proves MathJax was still running after the clicks.
    execute(page, "control_math.value = r'$\\href{https://example.com/control-again}{again}$'")
    again = page.locator('.lfw-control a[href="https://example.com/control-again"]')
    page.lfw.wait_for(lambda: again.count() == 1, timeout_s=60,
                      message="MathJax to typeset the control's new value")
    leaks(page, f"{app}-end")
    assert "pwned" not in page.lfw.title_history()
    assert page.lfw.dialogs() == []
    for name in PANELS:
        screenshot(panel(page, name), f"untrusted-{app}-{name}")


def check_rating(page, db: Path) -> None:
    """Prompt and samples shown; critique, correction and annotator typed in; an error status."""
    rating, wait = panel(page, "rating"), page.lfw.wait_for
    assert PAYLOAD in shown_text(html_with(rating, "Prompt 1 of 2"))
    assert shown_text(html_with(rating, "second answer")) == "second answer " + PAYLOAD
    rating.locator("textarea").nth(0).fill(PAYLOAD)
    rating.locator("button.jupyter-button", has_text="Save critique").first.click()
    wait(lambda: judgements(db, "critique")[-1:] == [(PAYLOAD, "browser")],
         message="the typed critique in SQLite")
    rating.locator("textarea").nth(1).fill("corrected " + PAYLOAD)
    rating.locator("button.jupyter-button", has_text="Save correction").first.click()
    wait(lambda: judgements(db, "correction")[-1:] == [("corrected " + PAYLOAD, "browser")],
         message="the typed correction in SQLite")
    rating.locator(".widget-text input").first.fill(PAYLOAD)  # the annotator box
    # the cards are drawn again for the new annotator, who has judged nothing on this page
    wait(lambda: html_with(rating, "not rated yet").count() == 2,
         message="the cards of the typed annotator")
    rating.locator("button.jupyter-button").filter(has_text=re.compile(r"^4$")).nth(1).click()
    wait(lambda: judgements(db, "rating")[-1:] == [(4, PAYLOAD)],
         message="the rating by the typed annotator in SQLite")
    html_with(rating, "✓ saved rating 4").wait_for()
    # An error in a card's status, quoting the bad value a caller passed (the method twin).
    execute(page, "rating.rate(0, P)")
    error = html_with(rating, "not saved")
    error.wait_for()
    assert "rating must be an integer" in shown_text(error) and r"\href" in shown_text(error)
    screenshot(rating, f"untrusted-{page.lfw.server.app}-rating-page-1")


def check_imported(page, db: Path) -> None:
    """The imported cells, on the rating panel's second page (their annotator is the one typed
    in, so its critique and correction fill the boxes)."""
    rating = panel(page, "rating")
    rating.locator("button.jupyter-button", has_text="Next ▶").click()
    html_with(rating, "imported answer").wait_for()
    assert shown_text(html_with(rating, "imported answer")) == "imported answer " + PAYLOAD
    assert "imported prompt " + PAYLOAD in shown_text(html_with(rating, "Prompt 2 of 2"))
    boxes = rating.locator("textarea")
    page.lfw.wait_for(lambda: boxes.nth(0).input_value() == "imported critique " + PAYLOAD,
                      message="the imported critique in its box")
    assert boxes.nth(1).input_value() == "imported correction " + PAYLOAD
    assert "in force: rating 4, critique, correction" in shown_text(rating)


def check_preference(page, db: Path) -> None:
    """The item's prompt and both samples; a typed reason."""
    preference = panel(page, "preference")
    assert "Item 1 of 1: " + PAYLOAD in shown_text(preference)
    choose_with_reason(page, db, preference, "preference", "A is better")


def check_abtest(page, db: Path) -> None:
    """A vote with a reason between two adapter folders named with the payload; the reveal."""
    ab = panel(page, "abtest")
    assert "Item 1 of 1: " + PAYLOAD in shown_text(ab)
    choose_with_reason(page, db, ab, "ab_vote", "B is better")
    ab.locator("table").wait_for()
    revealed = shown_text(ab.locator("table"))
    assert revealed.count(PAYLOAD) == 2 and "A " + PAYLOAD in revealed and "B " + PAYLOAD in revealed
    assert PAYLOAD + " wins 1 of 1" in shown_text(html_with(ab, "decided vote"))
    ticks = ab.locator(".js-plotly-plot .xtick")
    page.lfw.wait_for(lambda: ticks.count() == 2 and PAYLOAD in ticks.first.text_content(),
                      message="the contender names on the chart's axis")


def check_monitor(page, db: Path) -> None:
    """Start with a bad objective: the error, quoting it, in the monitor's status."""
    monitor = panel(page, "monitor")
    monitor.locator("button.jupyter-button", has_text="Start").click()
    status = html_with(monitor, "could not start")
    status.wait_for()
    assert r"\href" in shown_text(status) and "<img src=x" in shown_text(status)


def check_steppers(page, db: Path) -> None:
    """The payload sample's tokens; a failing step's message; a real step and its chart."""
    bad = panel(page, "stepper-bad")
    assert "Prompt: " + PAYLOAD in shown_text(bad)
    tokens = bad.locator(".widget-html-content").nth(1)
    assert PAYLOAD in shown_text(tokens).replace("\n", "")  # one span per token, none lost
    bad.locator("button.jupyter-button", has_text="Take one step").click()
    failed = bad.locator(".widget-html-content, .widget-label", has_text="step failed")
    failed.wait_for()
    assert r"\href" in shown_text(failed) and "optimizer must be one of" in shown_text(failed)
    good = panel(page, "stepper")
    good.locator("button.jupyter-button", has_text="Take one step").click()
    good.locator(".widget-html-content, .widget-label", has_text="step 1: L").wait_for()
    page.lfw.wait_for(lambda: good.locator(".js-plotly-plot .xtick").count() > 0,
                      message="the per-token chart after the step")


def choose_with_reason(page, db: Path, pair_panel, kind: str, button: str) -> None:
    reason = f"{kind} reason {PAYLOAD}"
    pair_panel.locator(".widget-text input").fill(reason)
    pair_panel.locator("button.jupyter-button", has_text=button).click()
    page.lfw.wait_for(lambda: rows(db, "SELECT json_extract(value, '$.reason') FROM events "
                                       "WHERE kind = ?", kind) == [(reason,)],
                      message=f"the {kind} and its reason in SQLite")
    html_with(pair_panel, "✓ saved").wait_for()


def html_with(locator, text: str):
    """The HTML widget views inside ``locator`` whose text has ``text``."""
    return locator.locator(".widget-html-content", has_text=text)


def leaks(page, when: str) -> None:
    """No link to the payload's address, MathJax output or payload image outside the controls."""
    found = page.evaluate(LEAKS_JS)
    if any(found.values()):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"untrusted-leak-{when}.png"))
    assert found == {"links": [], "maths": [], "imgs": []}, when


def screenshot(locator, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=str(path))
    return path
