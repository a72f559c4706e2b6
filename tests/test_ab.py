"""Preference panel, blind A/B panel, offline evaluation: driven through the real widgets."""

import json
import random
import time

import ipywidgets as widgets
import pytest
import torch
from scipy.stats import binomtest

import lf_widgets as lfw
from lf_widgets.ab import assign_sides
from lf_widgets.data import build_examples
from lf_widgets.models import tiny_model

from .helpers import finished_samples

CONTENDER_WORDS = ("base", "tuned", "contender", "step-", "adapter")


@pytest.fixture
def trained(tmp_path):
    s = lfw.Session(tiny_model(seed=0), store=tmp_path / "fb.sqlite", annotator="ann")
    samples = finished_samples(s, ["hello", "world"], n=4, max_new_tokens=6)
    for i, x in enumerate(samples):
        s.record_rating(x.sample_id, [5, 1, 4, 2][i % 4])
    s.train("dpo", steps=3, lr=1e-2, checkpoint_every=1).wait(60)
    yield s
    if s.training is not None:
        s.stop_training()
    s.close()


def all_widgets(w):
    yield w
    for child in getattr(w, "children", ()):
        yield from all_widgets(child)


def widget_states(panel) -> str:
    return json.dumps([w.get_state() for w in all_widgets(panel)], default=str)


# -- preferences ----------------------------------------------------------------------------------
def test_preference_choices_become_dpo_pairs(session):
    finished_samples(session, ["p1", "p2"], n=2, max_new_tokens=5)
    panel = session.compare(display=False, seed=0)
    assert panel.total == 2
    first = panel.items[0]
    panel.reason.value = "more polite"
    panel.buttons["a"].click()  # A (left) is better
    assert panel.index == 1 and panel.judged == 1
    panel.buttons["tie"].click()
    ev = session.store.events()
    ev = ev[ev.sample_id.isin(panel.sample_ids())].reset_index(drop=True)
    assert ev.kind.tolist() == ["preference", "preference"]
    assert ev.value[0] == {"other": first.right.sample_id, "choice": "a", "reason": "more polite"}
    assert ev.sample_id[0] == first.left.sample_id
    pairs = build_examples(session.store, session.tokenizer).pairs
    assert [(p.chosen_sample_id, p.rejected_sample_id, p.source) for p in pairs] == \
        [(first.left.sample_id, first.right.sample_id, "preference")]


def test_preference_keys_and_undo(session):
    session.generate(["p1"], n=4, max_new_tokens=5, seed=0, progress=False)
    panel = session.compare(display=False, seed=0)
    assert panel.keyboard.bound_keys == ["a", "b", "t", "x", "n", "p", "u"]
    panel.keyboard.press("b")
    panel.keyboard.press("x")
    assert panel.judged == 2
    panel.undo_button.click()
    assert panel.judged == 1 and panel.index == 1
    assert len(session.store.events(active_only=True)) == 1
    panel.keyboard.press("p")
    assert panel.index == 0 and panel.buttons["b"].button_style == "success"


def test_sides_are_random_per_pair(session):
    session.generate(["p"] * 1, n=40, max_new_tokens=2, seed=0, progress=False)
    from lf_widgets.panels.preference import pair_up

    items = pair_up(session.samples(), seed=3)
    lefts_first = sum(i.left.sample_id < i.right.sample_id for i in items)
    assert 0 < lefts_first < len(items)


# -- blind A/B -----------------------------------------------------------------------------------
def test_nothing_in_widget_state_reveals_the_sides(trained):
    panel = trained.ab_test(["q1", "q2", "q3"], n=2, display=False, seed=0, max_new_tokens=4)
    panel._test.wait()
    state = widget_states(panel).lower()
    for word in CONTENDER_WORDS:
        assert word not in state, f"{word!r} visible before reveal"
    panel.choose("a")
    assert not panel.revealed and "tuned" not in widget_states(panel).lower()
    panel.reveal_button.click()
    assert panel.revealed
    state = widget_states(panel).lower()
    assert "tuned" in state and "base" in state


def test_votes_by_widgets_match_results_after_reveal(trained):
    panel = trained.ab_test(["q1", "q2"], n=2, display=False, seed=1, max_new_tokens=4)
    panel._test.wait()
    choices = ["a", "b", "tie", "both_bad"]
    for c in choices:
        panel.buttons[c].click()
    assert panel.revealed  # every item voted: revealed by itself
    votes = trained.ab_results(panel._test.test_id)
    assert votes.choice.tolist() == choices
    expected = [{"a": l, "b": r}.get(c, c) for (l, r), c in zip(panel._test.hidden, choices)]
    assert votes.winner.tolist() == expected
    result = trained.ab_summary(panel._test.test_id)
    assert (result.wins_a, result.wins_b, result.ties, result.both_bad) == (
        expected.count("base"), expected.count("tuned"), 1, 1)
    texts = [w.value for w in all_widgets(panel) if isinstance(w, widgets.HTML)]
    assert any(result.sentence().split(",")[0] in t for t in texts)
    charts = [w for w in all_widgets(panel) if isinstance(w, widgets.Output) and w.outputs]
    assert any("application/vnd.plotly.v1+json" in o["data"] for w in charts for o in w.outputs)


def test_undo_in_ab_panel(trained):
    panel = trained.ab_test(["q1", "q2"], display=False, seed=1, max_new_tokens=4)
    panel._test.wait()
    panel.keyboard.press("a")
    panel.keyboard.press("u")
    assert panel.judged == 0 and trained.ab_results(panel._test.test_id).empty


def test_side_assignment_is_balanced():
    sides = assign_sides(1000, ("base", "tuned"), random.Random(12345))
    left_base = sum(left == "base" for left, _ in sides)
    assert binomtest(left_base, 1000, 0.5).pvalue > 0.01
    assert all(set(pair) == {"base", "tuned"} for pair in sides)


def test_samples_record_which_model_made_them(trained):
    panel = trained.ab_test(["q"], n=3, display=False, seed=0, max_new_tokens=4)
    panel._test.wait()
    df = trained.store.samples().set_index("sample_id")
    for item, (left, right) in zip(panel.items, panel._test.hidden):
        for sample, name in ((item.left, left), (item.right, right)):
            row = df.loc[sample.sample_id]
            assert row.params["contender"] == name
            assert (row.adapter_step == 3) if name == "tuned" else row.adapter_step is pd_na()


def pd_na():
    import pandas as pd

    return pd.NA


def test_two_checkpoints_can_be_compared(trained):
    paths = trained.store.checkpoints().path.tolist()
    panel = trained.ab_test(["q"], n=2, models=(paths[0], paths[-1]), display=False, seed=0,
                            max_new_tokens=4)
    panel._test.wait()
    steps = {s.adapter_step for item in panel.items for s in (item.left, item.right)}
    assert steps == {1, 3}
    active = trained.model.call(lambda: trained.model.model.active_adapter)
    assert active == "default"  # the training adapter is active again


def test_ab_needs_an_adapter(session):
    with pytest.raises(ValueError, match="needs an adapter"):
        session.ab_test(["q"], display=False)
    with pytest.raises(ValueError, match="two different"):
        session.ab_test(["q"], models=("base", "base"), display=False)


def test_ab_generation_during_training_corrupts_nothing(trained):
    run = trained.train("dpo", steps=10_000, max_epochs=None, lr=1e-3)
    while len(run.metrics) < 2:
        time.sleep(0.01)
    panel = trained.ab_test(["q1", "q2"], n=2, display=False, seed=0, max_new_tokens=4)
    panel._test.wait()
    steps_during = len(run.metrics)
    while len(run.metrics) < steps_during + 2:  # training goes on after the A/B generation
        time.sleep(0.01)
    trained.stop_training()
    assert run.state == "stopped" and run.error is None
    assert trained.model.call(lambda: all(torch.isfinite(p).all()
                                          for p in trained.model.model.parameters()))
    assert all(s.text is not None for item in panel.items for s in (item.left, item.right))
    df = trained.store.samples()
    mine = df[df.params.map(lambda p: p.get("ab_test") == panel._test.test_id)]
    assert sorted(mine.params.map(lambda p: p["contender"])) == ["base"] * 4 + ["tuned"] * 4


def test_a_vote_on_the_last_arrived_item_moves_on_when_the_next_one_arrives(session):
    """Voting faster than the model writes: the next item is shown as it arrives, as a vote on
    any earlier item moves on at once — unless the person moved by hand meanwhile."""
    from lf_widgets.panels._pair import PairItem
    from lf_widgets.panels.preference import PreferencePanel

    samples = finished_samples(session, ["p1", "p2", "p3"], n=2, max_new_tokens=4)
    items = [PairItem(a.prompt, a, b) for a, b in zip(samples[::2], samples[1::2])]
    panel = PreferencePanel(session, items[:1])
    panel.total = 3  # as a compare() request of 3 prompts whose pairs are still being written
    panel.keyboard.press("a")  # the only item so far: stays, waiting
    assert panel.index == 0 and panel.judged == 1
    panel.add_item(items[1])  # arrives: shown, ready for the next key
    assert panel.index == 1 and "Item 2 of 3" in panel.prompt_text.value
    panel.keyboard.press("b")
    panel.keyboard.press("p")  # back to item 1 by hand: the arrival must not pull the view away
    panel.add_item(items[2])
    assert panel.index == 0
    panel.keyboard.press("n")
    panel.keyboard.press("n")
    panel.keyboard.press("t")  # the last item of all: nothing more comes, the view stays
    assert panel.index == 2 and panel.judged == 3


def test_untrusted_text_in_pair_panels_is_escaped(session):
    from lf_widgets.panels.preference import PreferencePanel
    from lf_widgets.panels._pair import PairItem
    from lf_widgets.session import Sample

    evil = '<img src=x onerror="document.title=\'pwned\'">'
    panel = PreferencePanel(session, [PairItem(evil, Sample(1, evil, evil), Sample(2, evil, evil))])
    html_values = [w.value for w in all_widgets(panel) if isinstance(w, widgets.HTML)]
    assert all("<img" not in v for v in html_values)
    assert sum("&lt;img" in v for v in html_values) == 3


# -- offline evaluation ----------------------------------------------------------------------------
def test_evaluate_base_vs_tuned(trained):
    df = trained.evaluate()
    assert list(df.index) == ["preference accuracy", "log-prob per token of good samples",
                              "capability NLL per token"]
    assert (df.split[:2] == "in sample").all() and df.split.iloc[2] == "general text"
    assert df.loc["preference accuracy", "tuned"] >= df.loc["preference accuracy", "base"]
    assert df.loc["preference accuracy", "examples"] == len(
        build_examples(trained.store, trained.tokenizer).pairs)


def test_holdout_is_kept_out_of_training_and_evaluated(trained):
    from lf_widgets.data import split_holdout

    run = trained.train("dpo", steps=2, lr=1e-2, holdout=0.5).wait(60)
    all_pairs = build_examples(trained.store, trained.tokenizer).pairs
    train, held = split_holdout(all_pairs, 0.5)
    assert len(run._data.pairs) == len(train) and held
    df = trained.evaluate()
    assert (df.split[:2] == "held out").all()
    assert df.loc["preference accuracy", "examples"] == len(held)
