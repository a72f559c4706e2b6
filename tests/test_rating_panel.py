"""The rating panel driven headlessly through its real widgets; assertions read SQLite."""

import sqlite3

import ipywidgets as widgets
import pytest

from lf_widgets.panels import RatingPanel
from lf_widgets.session import Sample

XSS = '<img src=x onerror="document.title=\'pwned\'">'


@pytest.fixture
def panel(session):
    session.generate(["first prompt", "second prompt"], n=2, max_new_tokens=4, seed=0,
                     progress=False)
    return session.rate(display=False)


def rows(session, sql):
    con = sqlite3.connect(session.store.path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_click_rating_lands_in_sqlite(session, panel):
    card = panel.cards[1]
    card.stars[3].click()  # the "4" button
    got = rows(session, "SELECT sample_id, kind, value, annotator FROM events")
    assert got == [(panel.samples[1].sample_id, "rating", "4", "ann")]
    assert card.stars[3].button_style == "success" and "✓ saved" in card.status.value
    assert (panel.rated, panel.total) == (1, 4)
    assert "1 of 4 rated" in panel.progress.value


def test_critique_and_correction_by_widgets(session, panel):
    card = panel.cards[0]
    assert card.correction.value == panel.samples[0].text  # editor prefilled with the sample
    card.critique.value = "too short"
    card.save_critique.click()
    card.correction.value = "A better answer."
    card.save_correction.click()
    got = rows(session, "SELECT kind, value FROM events ORDER BY id")
    assert got == [("critique", '"too short"'), ("correction", '"A better answer."')]


def test_undo_button(session, panel):
    panel.cards[0].stars[1].click()
    panel.cards[0].stars[4].click()
    panel.undo_button.click()
    fb = session.feedback
    assert fb[fb.sample_id == panel.samples[0].sample_id].rating.iloc[0] == 2
    assert panel.cards[0].stars[1].button_style == "success"
    assert rows(session, "SELECT kind, undoes FROM events WHERE kind='undo'") == [("undo", 2)]
    panel.undo_button.click()
    assert panel.rated == 0


def test_annotator_field_and_two_annotators_on_one_sample(session, panel):
    panel.cards[0].stars[4].click()
    panel.annotator_box.value = "bob"
    assert panel.rated == 0  # bob has rated nothing yet
    assert panel.cards[0].stars[4].button_style == ""
    panel.cards[0].stars[0].click()
    got = rows(session, "SELECT annotator, value FROM events ORDER BY id")
    assert got == [("ann", "5"), ("bob", "1")]
    fb = session.feedback
    assert fb[fb.sample_id == panel.samples[0].sample_id].set_index("annotator").rating.to_dict() \
        == {"ann": 5, "bob": 1}


def test_empty_annotator_is_not_saved(session, panel):
    panel.annotator_box.value = "  "
    panel.cards[0].stars[2].click()
    assert "✗ not saved" in panel.cards[0].status.value
    assert rows(session, "SELECT COUNT(*) FROM events") == [(0,)]


def test_failed_save_is_shown(session, panel, monkeypatch):
    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(session.store, "record", broken)
    assert panel.rate(0, 3) is False
    assert "disk full" in panel.cards[0].status.value
    assert panel.rated == 0


def test_navigation_and_method_twins(session, panel):
    assert panel.prev_button.disabled and not panel.next_button.disabled
    panel.next_button.click()
    assert panel.index == 1 and panel.next_button.disabled
    assert [s.prompt for s in panel.samples] == ["second prompt"] * 2
    assert panel.rate(1, 2)  # twin: the same path as the click
    panel.prev_button.click()
    assert panel.index == 0
    panel.next()
    assert panel.cards[1].stars[1].button_style == "success"  # remembered
    with pytest.raises(IndexError, match="sample_idx"):
        panel.rate(5, 3)


def test_reopened_panel_shows_saved_state(session, panel):
    panel.rate(0, 4)
    panel.critique(0, "ok")
    again = session.rate(display=False)
    card = again.cards[0]
    assert card.stars[3].button_style == "success" and card.critique.value == "ok"
    assert again.rated == 1 and "in force: rating" in card.status.value


def test_untrusted_text_is_escaped(session):
    [sid] = session.store.add_samples([_record(XSS, prompt="<b>prompt</b>")])
    panel = RatingPanel(session, [Sample(sid, "<b>prompt</b>", XSS)])
    html_values = [w.value for w in _all_widgets(panel) if isinstance(w, widgets.HTML)]
    assert html_values and all("<img" not in v and "<b>" not in v for v in html_values)
    assert any("&lt;img src=x onerror=&quot;document.title=&#x27;pwned&#x27;&quot;&gt;" in v
               for v in html_values)
    assert panel.cards[0].correction.value == XSS  # a Textarea shows it as text


def test_empty_panel(session):
    panel = RatingPanel(session, [])
    assert panel.total == 0 and "no samples" in panel.prompt_text.value


def _record(text, prompt):
    from lf_widgets.store import SampleRecord

    return SampleRecord(text, prompt=prompt)


def _all_widgets(w):
    yield w
    for child in getattr(w, "children", ()):
        yield from _all_widgets(child)


def test_keyboard_rates_the_focused_sample_and_moves_on(session, panel):
    assert panel.keyboard.bound_keys == ["1", "2", "3", "4", "5", "j", "k", "n", "p", "u"]
    assert "1-5 rate" in panel.keyboard.hint and "u undo" in panel.keyboard.hint
    panel.keyboard.press("4")  # the path a real keydown takes (the front end sends {"key": "4"})
    panel.keyboard._handle_custom_msg({"key": "2"}, [])
    fb = session.feedback.set_index("sample_id")
    assert fb.loc[panel.samples[0].sample_id, "rating"] == 4
    assert fb.loc[panel.samples[1].sample_id, "rating"] == 2
    assert panel.cursor == 1  # last sample of the page: focus stays
    assert panel.cards[1].layout.border.startswith("2px")
    panel.keyboard.press("u")
    assert pd_isna(session.feedback.set_index("sample_id").loc[panel.samples[1].sample_id, "rating"])
    panel.keyboard.press("n")
    assert panel.index == 1 and panel.cursor == 0
    panel.keyboard.press("j")
    assert panel.cursor == 1
    panel.keyboard.press("k")
    panel.keyboard.press("p")
    assert panel.index == 0
    panel.keyboard.press("z")  # not a declared key: nothing happens
    assert len(session.store.events()) == 3


def test_clicking_a_card_moves_the_keyboard_focus(panel):
    panel.cards[1].stars[0].click()
    assert panel.cursor == 1


def pd_isna(x):
    import pandas as pd

    return pd.isna(x)
