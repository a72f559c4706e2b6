"""Suggested revisions in the panels, driven headlessly through their real widgets and keys.

The rating card's "Suggest revisions" (button, key ``s``, ``panel.suggest``), the candidate keys
(1..k use, e edit, x reject, Esc close) and their twins, edit propagation, and the critique
queue. A scripted refiner (a :class:`lf_widgets.refine.Refiner` on a thread of its own) writes
known candidates, one each time the test opens its gate, so streaming is observed candidate by
candidate; one test uses the session's own (tiny) model. Assertions read SQLite.
"""

import json
import queue
import sqlite3
import threading

import ipywidgets as widgets
import pytest

from lf_widgets._worker import Worker
from lf_widgets.panels import CritiqueQueuePanel, RatingPanel
from lf_widgets.panels.rating import RATING_KEYS
from lf_widgets.refine import Refiner
from lf_widgets.store import SampleRecord

CRITIQUE = "Be more polite."  # no quoted phrase, no length: the refiner's texts are kept as such
TEXTS = ["Please sail north.", "<b>bold</b> and $x^2$ kindly.", "Kindly sail north, friend."]
TIMEOUT = 30


class ScriptedRefiner(Refiner):
    """Writes ``texts`` in turn; with ``gated``, each candidate waits for :meth:`release`."""

    name = "scripted"

    def __init__(self, texts=TEXTS, *, gated=False, fail=None):
        self.texts, self.fail, self.calls = list(texts), fail, 0
        self.gate = threading.Semaphore(0) if gated else None
        self.worker = Worker("scripted-refiner")

    def release(self, n=1):
        for _ in range(n):
            self.gate.release()

    def _submit(self, fn):
        return self.worker.submit(fn, name="refine")

    def _write(self, job, messages, prefix, config):
        if self.gate is not None:
            while not self.gate.acquire(timeout=0.05):
                job.check()  # a cancelled request stops waiting
        if self.fail is not None:
            raise self.fail
        # Candidate i of a request samples at the i-th temperature: it gets the i-th text, so
        # every request writes the same list, whichever came first.
        i = list(self.temperatures).index(config.temperature)
        self.calls += 1
        return self.texts[i % len(self.texts)], False

    def close(self):
        self.worker.close()


@pytest.fixture
def samples(session):
    session.store.add_samples([SampleRecord("Sail north.", prompt="Where to?"),
                               SampleRecord("The ship is fast.", prompt="Where to?"),
                               SampleRecord("Sails are up.", prompt="Where to?")])
    return session.samples()


@pytest.fixture
def refiner():
    r = ScriptedRefiner()
    yield r
    r.close()


@pytest.fixture
def gated():
    r = ScriptedRefiner(gated=True)
    yield r
    r.release(10)
    r.close()


def rows(session, sql, *args):
    con = sqlite3.connect(session.store.path)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def corrections(session):
    """(sample_id, text, meta) of every correction in the log, oldest first."""
    return [(sid, json.loads(v), json.loads(m) if m else None) for sid, v, m in
            rows(session, "SELECT sample_id, value, meta FROM events WHERE kind = 'correction' "
                          "ORDER BY id")]


def rejections(session):
    return [(sid, json.loads(v)) for sid, v in
            rows(session, "SELECT sample_id, value FROM events WHERE kind = 'rejection' "
                          "ORDER BY id")]


def listen(session, name):
    """A queue that receives every ``name`` event (after the panels' listeners, which were
    subscribed first: once an event is in the queue, the panel has drawn it)."""
    q = queue.Queue()
    session.on(name, q.put)
    return q


def critiqued_panel(session, samples, refiner, critique=CRITIQUE):
    panel = RatingPanel(session, samples, refiner=refiner)
    assert panel.critique(0, critique)
    return panel


def wait_done(panel, i=0):
    state = panel._state(panel.cards[i])
    state.request.wait(TIMEOUT)
    return state


def candidate_html(card):
    return [row[0].value for row in card.candidates.rows if row[3].layout.display != "none"]


def test_suggest_is_offered_once_a_critique_is_saved(session, samples, refiner):
    panel = RatingPanel(session, samples, refiner=refiner)
    card = panel.cards[0]
    assert card.suggest_button.disabled and "s" not in panel.keyboard.bound_keys
    assert panel.suggest(0) is False and "save a critique first" in card.status.value
    card.critique.value = CRITIQUE
    card.save_critique.click()
    assert not card.suggest_button.disabled
    assert panel.keyboard.bound_keys == [*RATING_KEYS, "s"]
    assert "s suggest revisions" in panel.keyboard.hint
    assert panel.cards[1].suggest_button.disabled  # no critique there


def test_candidates_stream_into_the_card_and_key_2_accepts_with_provenance(session, samples,
                                                                           gated):
    panel = critiqued_panel(session, samples, gated)
    card, arrived = panel.cards[0], listen(session, "revision")
    panel.keyboard.press("s")  # the path a real key takes
    assert card.candidates.layout.display != "none" and card.candidates.shown == 0
    assert "writing… 0 of 3" in card.candidates.footer.value
    for n in (1, 2):  # one candidate at a time, drawn as it arrives
        gated.release()
        arrived.get(timeout=TIMEOUT)
        assert card.candidates.shown == n
        assert f"writing… {n} of 3" in card.candidates.footer.value
    assert "Please sail north." in candidate_html(card)[0]
    # the mode is visible: digits pick a revision now, and the hint says so
    assert "1–2 pick a revision · e edit · x reject all · Esc back to rating" in \
        panel.keyboard.hint
    assert {"1", "2", "3", "e", "x", "Escape"} <= set(panel.keyboard.bound_keys)
    assert "keys 1–2 pick a revision" in card.candidates.header.value
    assert "Be more polite." in card.candidates.header.value
    gated.release()
    state = wait_done(panel)
    assert card.candidates.shown == 3 and "3 candidates" in card.candidates.footer.value

    panel.keyboard.press("2")  # a candidate, not a rating
    [(sid, text, meta)] = corrections(session)
    assert (sid, text) == (samples[0].sample_id, TEXTS[1])
    critique_id = rows(session, "SELECT id FROM events WHERE kind = 'critique'")[0][0]
    assert meta["via"] == "revision" and meta["refiner"] == "scripted"
    assert (meta["candidate"], meta["candidates"]) == (1, 3)
    assert meta["critique"] == CRITIQUE and meta["critique_event"] == critique_id
    assert meta["strategy"] == "prompted" and meta["edit_distance"] > 0
    assert rows(session, "SELECT COUNT(*) FROM events WHERE kind = 'rating'") == [(0,)]
    assert not state.open and card.candidates.layout.display == "none"
    assert card.correction.value == TEXTS[1]
    assert "accepted revision 2 from scripted" in card.status.value
    assert panel.keyboard.bound_keys == [*RATING_KEYS, "s"]  # back to rating mode
    panel.keyboard.press("4")
    assert rows(session, "SELECT value FROM events WHERE kind = 'rating'") == [("4",)]


def test_buttons_and_twins_take_the_path_the_keys_take(session, samples, refiner):
    panel = RatingPanel(session, samples, refiner=refiner)
    for i in range(3):
        panel.critique(i, CRITIQUE)
    panel.cards[0].suggest_button.click()  # button
    panel.suggest(1, k=2)  # twin
    panel.cursor = 2
    panel.keyboard.press("s")  # key
    for i in range(3):
        wait_done(panel, i)
    assert [c.candidates.shown for c in panel.cards] == [3, 2, 3]
    panel.cards[0].candidates.rows[0][1].click()  # "Use 1"
    assert panel.accept(1, 2)  # twin
    panel.cursor = 2
    panel.keyboard.press("3")  # key
    got = corrections(session)
    assert [(sid, text) for sid, text, _ in got] == [
        (samples[0].sample_id, TEXTS[0]), (samples[1].sample_id, TEXTS[1]),
        (samples[2].sample_id, TEXTS[2])]
    keys = {k for k in got[0][2] if k not in ("edit_distance", "edit_ratio")}
    for _, _, meta in got:
        assert meta["via"] == "revision" and meta["refiner"] == "scripted"
        assert {k for k in meta if k not in ("edit_distance", "edit_ratio")} == keys
    assert [m["candidate"] for _, _, m in got] == [0, 1, 2]
    assert [m["candidates"] for _, _, m in got] == [3, 2, 3]
    assert "correction (accepted revision 3 from scripted)" in \
        RatingPanel(session, samples).cards[2].status.value  # a fresh panel reads it back


def test_edit_then_save_is_an_edited_revision(session, samples, refiner):
    panel = critiqued_panel(session, samples, refiner)
    panel.keyboard.press("s")
    wait_done(panel)
    card = panel.cards[0]
    panel.keyboard.press("e")  # the first candidate into the correction box
    assert card.correction.value == TEXTS[0]
    card.correction.value = TEXTS[0] + " Thank you."  # the person edits it
    card.save_correction.click()
    [(_, text, meta)] = corrections(session)
    assert text == TEXTS[0] + " Thank you."
    assert meta["via"] == "edited_revision" and meta["candidate_text"] == TEXTS[0]
    assert meta["candidate"] == 0 and meta["edit_distance"] > 0
    assert "edited revision 1 from scripted" in card.status.value
    # the twin with a text saves at once
    panel.critique(1, CRITIQUE)
    panel.suggest(1)
    wait_done(panel, 1)
    assert panel.edit(1, 3, "Kindly sail north.")
    *_, (sid, text, meta) = corrections(session)
    assert (sid, text, meta["via"], meta["candidate"]) == (
        samples[1].sample_id, "Kindly sail north.", "edited_revision", 2)


def test_reject_all_stores_a_rejection_and_no_correction(session, samples, refiner):
    panel = critiqued_panel(session, samples, refiner)
    panel.keyboard.press("s")
    wait_done(panel)
    panel.keyboard.press("x")
    [(sid, value)] = rejections(session)
    assert sid == samples[0].sample_id
    assert value == {"candidates": TEXTS, "refiner": "scripted", "critique": CRITIQUE}
    assert corrections(session) == []
    assert "rejected 3 suggestions" in panel.cards[0].status.value
    assert panel.cards[0].candidates.layout.display == "none"
    # twin
    panel.critique(1, CRITIQUE)
    panel.suggest(1)
    wait_done(panel, 1)
    assert panel.reject(1) and len(rejections(session)) == 2
    assert panel.reject(1) is False  # nothing open any more: said, not raised
    assert "no suggested revisions open" in panel.cards[1].status.value


def test_u_takes_back_a_rejection_in_the_rating_card(session, samples, refiner):
    panel = critiqued_panel(session, samples, refiner)
    panel.keyboard.press("s")
    wait_done(panel)
    panel.keyboard.press("x")
    assert len(rejections(session)) == 1
    panel.keyboard.press("u")
    assert session.store.current_events(kinds=("rejection",)).empty  # no longer in force
    assert "↶ undid rejection" in panel.cards[0].status.value
    assert rows(session, "SELECT COUNT(*) FROM events WHERE kind = 'undo'") == [(1,)]


def test_escape_closes_the_list_and_the_digits_rate_again(session, samples, gated):
    panel = critiqued_panel(session, samples, gated)
    arrived = listen(session, "revision")
    panel.keyboard.press("s")
    gated.release()
    arrived.get(timeout=TIMEOUT)
    panel.keyboard.press("3")  # candidate 3 is not written yet: said, nothing saved
    assert "there is no candidate 3" in panel.cards[0].status.value
    panel.keyboard.press("Escape")
    state = panel._state(panel.cards[0])
    assert not state.open and panel.cards[0].candidates.layout.display == "none"
    state.request.wait(TIMEOUT)  # stopped: nobody waits for the rest
    assert state.request.state == "cancelled"
    assert panel.keyboard.bound_keys == [*RATING_KEYS, "s"]
    panel.keyboard.press("4")
    assert rows(session, "SELECT value FROM events WHERE kind = 'rating'") == [("4",)]
    assert corrections(session) == [] and rejections(session) == []


def test_revisions_asked_for_elsewhere_show_in_the_card(session, samples, refiner):
    """A cell (or the critique queue) asks the session: the card shows them too, usable."""
    panel = RatingPanel(session, samples)
    session.record_critique(samples[1].sample_id, CRITIQUE)
    session.suggest_revisions(samples[1].sample_id, k=2, refiner=refiner).wait(TIMEOUT)
    card = panel.cards[1]
    assert card.candidates.shown == 2 and "2 candidates" in card.candidates.footer.value
    assert panel.accept(1, 2)
    [(sid, text, meta)] = corrections(session)
    assert (sid, text, meta["candidate"], meta["candidates"]) == (samples[1].sample_id,
                                                                  TEXTS[1], 1, 2)


def test_the_panels_annotator_is_the_one_recorded(session, samples, refiner):
    panel = RatingPanel(session, samples, refiner=refiner)
    panel.annotator_box.value = "bob"
    panel.critique(0, "Bob's critique: be polite.")
    panel.suggest(0)
    wait_done(panel)
    panel.accept(0, 1)
    got = rows(session, "SELECT annotator, json_extract(meta, '$.critique') FROM events "
                        "WHERE kind = 'correction'")
    assert got == [("bob", "Bob's critique: be polite.")]
    q = CritiqueQueuePanel(session, k=1, refiner=refiner, annotator="bob")
    assert q.total == 0  # bob's one critique is corrected
    assert CritiqueQueuePanel(session, annotator="ann").total == 0  # ann critiqued nothing


def test_candidates_are_escaped(session, samples, refiner):
    panel = critiqued_panel(session, samples, refiner, critique="No <i>tags</i>, $y$ please.")
    panel.suggest(0)
    wait_done(panel)
    values = [w.value for w in _all(panel) if isinstance(w, widgets.HTML)]
    assert not any("<b>bold" in v or "<i>tags" in v or "$x^2$" in v for v in values)
    assert any("&lt;b&gt;bold&lt;/b&gt; and &#36;x^2&#36; kindly." in v for v in values)
    assert any("No &lt;i&gt;tags&lt;/i&gt;, &#36;y&#36; please." in v for v in values)
    assert all(r[1].description.startswith("Use ") for r in panel.cards[0].candidates.rows)


def test_a_failing_refiner_is_said_in_the_card(session, samples):
    broken = ScriptedRefiner(fail=RuntimeError("<i>no model</i> $here$"))
    try:
        panel = critiqued_panel(session, samples, broken)
        panel.suggest(0)
        with pytest.raises(RuntimeError):
            wait_done(panel)
        footer = panel.cards[0].candidates.footer.value
        assert "the refiner failed" in footer and "&lt;i&gt;no model&lt;/i&gt; &#36;here" in footer
    finally:
        broken.close()


def test_own_model_candidates(session, samples):
    """The default refiner: the session's own (tiny) model, its adapter off."""
    panel = critiqued_panel(session, samples, None)
    panel.suggest(0, k=2)
    state = wait_done(panel)
    assert len(state.candidates) == 2 and panel.cards[0].candidates.shown == 2
    panel.accept(0, 1)
    [(_, _, meta)] = corrections(session)
    assert meta["via"] == "revision" and meta["refiner"].startswith("own:")


def test_a_prefix_edit_is_offered_to_the_other_samples(session, samples):
    panel = RatingPanel(session, samples)
    card = panel.cards[0]
    assert panel.correct(0, "Ahoy! Sail north.")
    assert card.offer.layout.display != "none"
    assert "Apply the same edit (add 'Ahoy! ' at the start) to 2 other samples?" in \
        card.offer_text.value.replace("&#x27;", "'")
    assert card.offer_button.description == "Apply to 2 other samples"
    panel.cursor = 0
    assert "a" in panel.keyboard.bound_keys
    panel.keyboard.press("a")
    assert card.offer.layout.display == "none"
    assert [c.candidates.shown for c in panel.cards] == [0, 1, 1]
    assert "Ahoy! The ship is fast." in candidate_html(panel.cards[1])[0]
    assert "Suggested: the same edit (add" in panel.cards[1].candidates.header.value
    assert panel.cursor == 1  # the first card with a suggestion
    assert "1 use the suggestion · e edit · x reject" in panel.keyboard.hint
    panel.keyboard.press("1")  # use it; the focus moves to the next suggestion
    assert panel.cursor == 2
    panel.keyboard.press("x")  # turn that one down
    source = rows(session, "SELECT id FROM events WHERE kind = 'correction'")[0][0]
    got = corrections(session)
    assert [(sid, text) for sid, text, _ in got] == [
        (samples[0].sample_id, "Ahoy! Sail north."),
        (samples[1].sample_id, "Ahoy! The ship is fast.")]
    assert got[0][2].get("via", "typed") == "typed"
    assert got[1][2]["via"] == "propagated" and got[1][2]["propagated_from"] == source
    assert "correction (propagated from correction" in panel.cards[1].status.value
    assert rejections(session) == [(samples[2].sample_id, {
        "candidates": ["Ahoy! Sails are up."], "refiner": "propagated", "critique": ""})]


def test_propagate_twin_and_an_accepted_revision_is_offered_too(session, samples):
    prefixer = ScriptedRefiner(["Ahoy! Sail north."])
    try:
        panel = critiqued_panel(session, samples, prefixer)
        panel.suggest(0, k=1)
        wait_done(panel)
        panel.accept(0, 1)
        suggestions = panel.propagate(0)  # twin
        assert sorted(s.sample_id for s in suggestions) == [s.sample_id for s in samples[1:]]
        assert panel.accept(1, 1) and panel.accept(2, 1)
        got = corrections(session)
        assert [m["via"] for _, _, m in got] == ["revision", "propagated", "propagated"]
        assert panel.propagate(1) == []  # a propagated correction offers nothing further
    finally:
        prefixer.close()


def test_a_general_rewrite_offers_nothing(session, samples):
    panel = RatingPanel(session, samples)
    assert panel.correct(0, "Head towards the northern seas at dawn.")
    assert panel.cards[0].offer.layout.display == "none" and "a" not in panel.keyboard.bound_keys
    assert panel.propagate(0) == [] and "no edit to apply" in panel.cards[0].status.value


# -- the critique queue ---------------------------------------------------------------------------
@pytest.fixture
def queued(session, samples):
    more = session.store.add_samples([SampleRecord("Row faster.", prompt="How?")])
    for s in samples:
        session.record_critique(s.sample_id, CRITIQUE)
    session.record_critique(more[0], CRITIQUE)
    session.record_correction(samples[2].sample_id, "Sails are up, friend.")  # not in the queue
    return [samples[0].sample_id, samples[1].sample_id, more[0]]


def test_queue_keys(session, queued, refiner):
    q = session.review_critiques(display=False, k=3, refiner=refiner)
    assert isinstance(q, CritiqueQueuePanel)
    assert [s.sample_id for s in q.items] == queued and q.total == 3
    assert "0 of 3 turned into training targets · 0 rejected" in q.header.value
    assert "Item 1 of 3" in q.position.value and "Be more polite." in q.body.value
    q.wait(TIMEOUT)
    assert q.candidates.shown == 3
    assert queued[1] in q._revisions  # the next item's candidates are being written already
    assert "1–3 pick a revision · e edit · x reject all · n/p next/previous item" in \
        q.keyboard.hint
    q.keyboard.press("2")
    assert q.index == 1 and q.corrected == 1
    assert "1 of 3 turned into training targets · 0 rejected" in q.header.value
    assert "item 1: saved correction (accepted revision 2 from scripted)" in q.last.value
    q.wait(TIMEOUT)
    q.keyboard.press("x")
    assert q.index == 2 and q.rejected == 1
    assert "1 of 3 turned into training targets · 1 rejected" in q.header.value
    q.wait(TIMEOUT)
    q.keyboard.press("e")
    assert q.correction.value == TEXTS[0]
    q.correction.value = "Row faster, please."
    q.save_correction.click()
    q.keyboard.press("p")
    q.keyboard.press("p")
    assert q.index == 0 and "in force: correction (accepted revision 2" in q.status.value
    got = corrections(session)[1:]  # after the fixture's typed one
    assert [(sid, text, m["via"]) for sid, text, m in got] == [
        (queued[0], TEXTS[1], "revision"), (queued[2], "Row faster, please.", "edited_revision")]
    assert got[0][2]["critique"] == CRITIQUE and got[0][2]["candidates"] == 3
    assert [sid for sid, _ in rejections(session)] == [queued[1]]
    q.keyboard.press("u")  # the latest: the edited revision of item 3
    assert q.index == 2 and q.corrected == 1
    assert "2 of 3" not in q.header.value


def test_queue_twins(session, queued, refiner):
    q = CritiqueQueuePanel(session, k=2, refiner=refiner)
    q.wait(TIMEOUT)
    assert q.accept(1)
    q.wait(TIMEOUT)
    assert q.edit(2, "The ship is fast, friend.")
    q.wait(TIMEOUT)
    assert q.reject()
    assert (q.corrected, q.rejected) == (2, 1)
    assert "2 of 3 turned into training targets · 1 rejected" in q.header.value
    got = corrections(session)[1:]
    assert [m["via"] for _, _, m in got] == ["revision", "edited_revision"]
    q.prev()
    assert q.index == 1 and q.accept(1) is False  # settled: nothing open, said in the status
    assert "no suggestions open" in q.status.value


def test_queue_escapes_and_empty_queue(session):
    payload = "<img src=x onerror=alert(1)> $x^2$"
    [sid] = session.store.add_samples([SampleRecord(payload, prompt=payload)])
    session.record_critique(sid, payload)
    r = ScriptedRefiner([payload])
    try:
        q = CritiqueQueuePanel(session, k=1, refiner=r)
        q.wait(TIMEOUT)
        values = [w.value for w in _all(q) if isinstance(w, widgets.HTML)]
        assert not any("<img" in v or "$x^2$" in v for v in values)
        assert sum("&lt;img src=x onerror=alert(1)&gt; &#36;x^2&#36;" in v for v in values) >= 2
        q.close()
    finally:
        r.close()
    session.record_correction(sid, "fixed")
    empty = CritiqueQueuePanel(session)
    assert empty.total == 0 and "No critiqued samples" in empty.body.value
    assert empty.accept(1) is False
    with pytest.raises(ValueError, match="k must be"):
        CritiqueQueuePanel(session, k=0)


def test_queue_offers_a_pattern_edit_to_its_other_items(session, queued):
    q = CritiqueQueuePanel(session, k=1, refiner=ScriptedRefiner(["x"]))
    try:
        q.wait(TIMEOUT)
        assert q.correct("Ahoy! Sail north.")  # typed: a prefix edit
        assert q.offer.layout.display != "none" and "a" in q.keyboard.bound_keys
        q.keyboard.press("a")
        assert q.index == 1 and "Ahoy! The ship is fast." in q.candidates.rows[0][0].value
        q.keyboard.press("1")
        assert "Ahoy! Row faster." in q.candidates.rows[0][0].value
        q.keyboard.press("1")
        assert [m.get("via", "typed") for _, _, m in corrections(session)[1:]] == [
            "typed", "propagated", "propagated"]
        assert q.corrected == 3
    finally:
        q.refiner.close()


def _all(w):
    yield w
    for child in getattr(w, "children", ()):
        yield from _all(child)
