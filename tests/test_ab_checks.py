"""Honest A/B: side bias, answer lengths and the length-controlled win rate."""

import math
import random

import pandas as pd
import pytest

from lf_widgets.ab_checks import MIN_VOTES_FOR_LC, ab_checks


def votes(rows):
    """rows: (left contender, right contender, choice, left words, right words)."""
    out = []
    for left, right, choice, lw, rw in rows:
        winner = {"a": left, "b": right}.get(choice, choice)
        out.append({"left": left, "right": right, "choice": choice, "winner": winner,
                    "left_text": "w " * lw, "right_text": "w " * rw})
    return pd.DataFrame(out)


def test_side_bias_is_counted_and_tested():
    rows = [("base", "tuned", "a", 5, 5), ("tuned", "base", "a", 5, 5)] * 10  # left always wins
    checks = ab_checks(votes(rows), "base", "tuned")
    assert (checks.left_wins, checks.right_wins) == (20, 0) and checks.left_share == 1.0
    assert checks.side_p_value < 0.001
    assert "favoured a side" in checks.lines("tuned")[0]
    fair = ab_checks(votes([("base", "tuned", "a", 5, 5), ("base", "tuned", "b", 5, 5)] * 5),
                     "base", "tuned")
    assert fair.left_share == 0.5 and fair.side_p_value == 1.0


def test_lengths_of_contenders_and_winners():
    rows = [("base", "tuned", "b", 10, 4), ("tuned", "base", "a", 4, 10), ("base", "tuned", "tie", 10, 4)]
    checks = ab_checks(votes(rows), "base", "tuned")
    assert checks.mean_words == {"base": 10.0, "tuned": 4.0}
    assert (checks.winner_words, checks.loser_words) == (4.0, 10.0)


def test_length_controlled_rate_removes_a_pure_length_effect():
    """Voters who prefer the shorter answer (with noise) and a tuned model that is shorter: the
    raw win rate of "tuned" is high, the length-controlled one is near 50 %."""
    rng = random.Random(0)
    rows = []
    for _ in range(300):
        lens = {"base": rng.randint(5, 40), "tuned": rng.randint(3, 30)}
        left, right = ("base", "tuned") if rng.random() < 0.5 else ("tuned", "base")
        d = lens[right] - lens[left]
        p_right = 1 / (1 + math.exp(d / 6))  # shorter right answer -> more likely to win
        rows.append((left, right, "b" if rng.random() < p_right else "a", lens[left], lens[right]))
    df = votes(rows)
    raw = (df["winner"] == "tuned").mean()
    checks = ab_checks(df, "base", "tuned")
    low, high = checks.lc_ci
    assert raw > 0.6
    assert low < 0.5 < high and abs(checks.lc_win_rate_b - 0.5) < 0.1
    assert "length-controlled win rate of tuned" in checks.lines("tuned")[-1]


def test_a_real_effect_survives_length_control():
    rng = random.Random(1)
    rows = []
    for _ in range(200):
        left, right = ("base", "tuned") if rng.random() < 0.5 else ("tuned", "base")
        tuned_wins = rng.random() < 0.8
        choice = "a" if (left == "tuned") == tuned_wins else "b"
        rows.append((left, right, choice, rng.randint(5, 20), rng.randint(5, 20)))
    checks = ab_checks(votes(rows), "base", "tuned")
    assert checks.lc_ci[0] > 0.6


def test_too_few_votes_says_so():
    checks = ab_checks(votes([("base", "tuned", "b", 3, 4)] * (MIN_VOTES_FOR_LC - 1)), "base", "tuned")
    assert math.isnan(checks.lc_win_rate_b) and "at least" in checks.lc_note


def test_result_reads_as_sentence_and_table(fresh):
    from lf_widgets.trainer import TrainConfig

    fresh.model.call(lambda: fresh.model.ensure_adapter(TrainConfig()))
    panel = fresh.ab_test(["x", "y"], n=2, display=False, max_new_tokens=3, seed=0).wait()
    for choice in ("a", "b", "a", "tie"):
        panel.choose(choice)
    result = fresh.ab_summary(panel.test_id)
    text = repr(result)
    assert text.startswith("ABResult: ") and "side: the left answer" in text
    assert "length: mean words" in text and "length-controlled" in text
    html = result._repr_html_()
    assert "<table" in html and "mathjax_ignore" in html
    assert result.table().shape == (1, 10)


def test_the_reveal_shows_side_bias_lengths_and_the_controlled_rate(fresh):
    from lf_widgets.trainer import TrainConfig

    fresh.model.call(lambda: fresh.model.ensure_adapter(TrainConfig()))
    panel = fresh.ab_test(["x", "y"], n=1, display=False, max_new_tokens=3, seed=0).wait()
    panel.choose("a")
    panel.choose("b")  # every item voted: revealed
    assert panel.revealed
    shown = " ".join(w.value for w in panel.results.children if hasattr(w, "value"))
    assert "side: the left answer (A) won 1 of 2 votes that picked a side" in shown
    assert "length: mean words per answer" in shown
    assert "length-controlled win rate of tuned" in shown
