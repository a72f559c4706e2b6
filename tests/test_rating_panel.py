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
    card = panel._card_widgets[1]
    card.stars[3].click()  # the "4" button
    got = rows(session, "SELECT sample_id, kind, value, annotator FROM events")
    assert got == [(panel.samples[1].sample_id, "rating", "4", "ann")]
    assert card.stars[3].button_style == "success" and card.status.value.startswith("✓ saved")
    assert (panel.rated, panel.total) == (1, 4)
    assert panel._progress.value == "1 of 4 rated"


def test_critique_and_correction_by_widgets(session, panel):
    card = panel._card_widgets[0]
    assert card.correction.value == panel.samples[0].text  # editor prefilled with the sample
    card.critique.value = "too short"
    card.save_critique.click()
    card.correction.value = "A better answer."
    card.save_correction.click()
    got = rows(session, "SELECT kind, value FROM events ORDER BY id")
    assert got == [("critique", '"too short"'), ("correction", '"A better answer."')]


def test_undo_button(session, panel):
    panel._card_widgets[0].stars[1].click()
    panel._card_widgets[0].stars[4].click()
    panel._undo.click()
    fb = session.feedback
    assert fb[fb.sample_id == panel.samples[0].sample_id].rating.iloc[0] == 2
    assert panel._card_widgets[0].stars[1].button_style == "success"
    assert rows(session, "SELECT kind, undoes FROM events WHERE kind='undo'") == [("undo", 2)]
    panel._undo.click()
    assert panel.rated == 0


def test_annotator_field_and_two_annotators_on_one_sample(session, panel):
    panel._card_widgets[0].stars[4].click()
    panel._annotator_box.value = "bob"
    assert panel.rated == 0  # bob has rated nothing yet
    assert panel._card_widgets[0].stars[4].button_style == ""
    panel._card_widgets[0].stars[0].click()
    got = rows(session, "SELECT annotator, value FROM events ORDER BY id")
    assert got == [("ann", "5"), ("bob", "1")]
    fb = session.feedback
    assert fb[fb.sample_id == panel.samples[0].sample_id].set_index("annotator").rating.to_dict() \
        == {"ann": 5, "bob": 1}


def test_empty_annotator_is_not_saved(session, panel):
    panel._annotator_box.value = "  "
    panel._card_widgets[0].stars[2].click()
    assert panel._card_widgets[0].status.value.startswith("✗ not saved")
    assert rows(session, "SELECT COUNT(*) FROM events") == [(0,)]


def test_failed_save_is_shown(session, panel, monkeypatch):
    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(session.store, "record", broken)
    assert panel.rate(0, 3) is False
    assert "disk full" in panel._card_widgets[0].status.value
    assert panel.rated == 0


def test_navigation_and_method_twins(session, panel):
    assert panel._prev.disabled and not panel._next.disabled
    panel._next.click()
    assert panel.index == 1 and panel._next.disabled
    assert [s.prompt for s in panel.samples] == ["second prompt"] * 2
    assert panel.rate(1, 2)  # twin: the same path as the click
    panel._prev.click()
    assert panel.index == 0
    panel.next()
    assert panel._card_widgets[1].stars[1].button_style == "success"  # remembered
    with pytest.raises(IndexError, match="sample_idx"):
        panel.rate(5, 3)


def test_reopened_panel_shows_saved_state(session, panel):
    panel.rate(0, 4)
    panel.critique(0, "ok")
    again = session.rate(display=False)
    card = again._card_widgets[0]
    assert card.stars[3].button_style == "success" and card.critique.value == "ok"
    assert again.rated == 1 and "saved earlier" in card.status.value


def test_untrusted_text_is_escaped(session):
    [sid] = session.store.add_samples([_record(XSS, prompt="<b>prompt</b>")])
    panel = RatingPanel(session, [Sample(sid, "<b>prompt</b>", XSS)])
    html_values = [w.value for w in _all_widgets(panel) if isinstance(w, widgets.HTML)]
    assert html_values and all("<img" not in v and "<b>" not in v for v in html_values)
    assert any("&lt;img src=x onerror=&quot;document.title=&#x27;pwned&#x27;&quot;&gt;" in v
               for v in html_values)
    assert panel._card_widgets[0].correction.value == XSS  # a Textarea shows it as text


def test_empty_panel(session):
    panel = RatingPanel(session, [])
    assert panel.total == 0 and "no samples" in panel._prompt.value


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
    assert panel._card_widgets[1].layout.border.startswith("2px")
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
    panel._card_widgets[1].stars[0].click()
    assert panel.cursor == 1


def pd_isna(x):
    import pandas as pd

    return pd.isna(x)
