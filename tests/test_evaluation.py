"""A/B statistics checked against scipy (an independent implementation) and hand-computed values."""

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from scipy.stats import binomtest

from lf_widgets.evaluation import (ABResult, ab_chart, ab_summary, bradley_terry, sign_test,
                                   wilson_interval)


# --- Wilson interval -------------------------------------------------------------------------

@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_wilson_matches_scipy(confidence):
    for n in [1, 2, 3, 5, 6, 10, 20, 37, 100, 1000]:
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            ref = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
            low, high = wilson_interval(k, n, confidence)
            assert low == pytest.approx(ref.low, abs=1e-9), (k, n)
            assert high == pytest.approx(ref.high, abs=1e-9), (k, n)


def test_wilson_by_hand_14_of_20():
    # z = 1.959964, p = 0.7: (14 + z²/2 ± z·sqrt(20·0.7·0.3 + z²/4)) / (20 + z²)
    z = 1.959963984540054
    center, half = (14 + z**2 / 2), z * math.sqrt(20 * 0.7 * 0.3 + z**2 / 4)
    assert wilson_interval(14, 20) == pytest.approx(
        ((center - half) / (20 + z**2), (center + half) / (20 + z**2)), abs=1e-12)
    low, high = wilson_interval(14, 20)
    assert (round(low, 4), round(high, 4)) == (0.4810, 0.8545)


def test_wilson_edges_and_half_counts():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 7)[0] == 0.0 and wilson_interval(7, 7)[1] == 1.0
    low, high = wilson_interval(10.5, 21)  # half-counts from ties: symmetric around 1/2
    assert low == pytest.approx(1 - high) and low < 0.5 < high
    # Between its integer neighbours.
    assert wilson_interval(10, 21)[0] < low < wilson_interval(11, 21)[0]
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


# --- sign test -------------------------------------------------------------------------------

def test_sign_test_matches_scipy():
    for n in list(range(1, 41)) + [99, 100, 500]:
        for wins in sorted({0, 1, min(2, n), n // 3, n // 2, (n + 1) // 2, n - 1, n}):
            ref = binomtest(wins, n, 0.5).pvalue
            assert sign_test(wins, n - wins) == pytest.approx(ref, abs=1e-12, rel=1e-12)


def test_sign_test_edges():
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 5) == 1.0
    assert sign_test(6, 0) == pytest.approx(2 / 64)  # both "all" outcomes, 1/64 each
    assert sign_test(3, 7) == sign_test(7, 3)
    # Large n: exact integers, no overflow; a far tail underflows to 0 rather than failing.
    assert sign_test(1100, 1000) == pytest.approx(binomtest(1100, 2100).pvalue, rel=1e-9)
    assert sign_test(2000, 0) == 0.0
    with pytest.raises(ValueError):
        sign_test(-1, 3)


# --- ab_summary and sentences ----------------------------------------------------------------

def test_summary_14_of_20():
    r = ab_summary(["tuned"] * 14 + ["base"] * 6)
    assert (r.wins_a, r.wins_b, r.ties, r.both_bad, r.n) == (6, 14, 0, 0, 20)
    assert r.win_rate_a == pytest.approx(0.3)
    ref = binomtest(6, 20).proportion_ci(method="wilson")
    assert (r.ci_low, r.ci_high) == pytest.approx((ref.low, ref.high), abs=1e-9)
    assert r.p_value == pytest.approx(binomtest(14, 20).pvalue, abs=1e-12)
    assert r.sentence() == "tuned wins 14 of 20 decided votes, 70% [48%, 85%], p = 0.12: not yet conclusive"


def test_summary_conclusive_both_ways():
    tuned = ab_summary(pd.Series(["tuned"] * 17 + ["base"] * 3))
    assert tuned.p_value < 0.05 and tuned.sentence().endswith(": tuned is better")
    base = ab_summary(["tuned"] * 3 + ["base"] * 17)
    assert base.sentence().startswith("base wins 17 of 20") and base.sentence().endswith(": base is better")
    # alpha decides what "conclusive" means.
    assert ab_summary(["tuned"] * 17 + ["base"] * 3, alpha=0.001).sentence().endswith("not yet conclusive")


def test_ties_count_half_and_both_bad_is_apart():
    votes = ["tuned"] * 12 + ["base"] * 6 + ["tie"] * 2 + ["both_bad"] * 3
    r = ab_summary(votes)
    assert r.n == 23 and r.ties == 2 and r.both_bad == 3 and r.decided == 18
    assert r.win_rate_a == pytest.approx((6 + 0.5 * 2) / 20)
    assert (r.ci_low, r.ci_high) == pytest.approx(wilson_interval(7, 20))
    assert r.p_value == pytest.approx(binomtest(12, 18).pvalue)  # ties excluded
    s = r.sentence()
    assert s.startswith("tuned wins 12 of 18 decided votes and 2 ties") and "65%" in s
    assert s.endswith("(3 said both were bad)")


def test_no_votes():
    r = ab_summary([])
    assert r.n == 0 and math.isnan(r.win_rate_a) and (r.ci_low, r.ci_high) == (0.0, 1.0)
    assert r.p_value == 1.0 and r.sentence() == "no votes yet"


def test_all_ties():
    r = ab_summary(["tie"] * 5)
    assert r.win_rate_a == 0.5 and r.p_value == 1.0 and r.ci_low < 0.5 < r.ci_high
    assert r.sentence() == "all votes were ties"


def test_all_both_bad():
    r = ab_summary(["both_bad"] * 4)
    assert r.n == 4 and r.both_bad == 4 and math.isnan(r.win_rate_a) and r.p_value == 1.0
    assert r.sentence() == "all 4 votes said both were bad"


@pytest.mark.parametrize("n", [6, 10, 30])
def test_all_wins_for_tuned(n):
    r = ab_summary(["tuned"] * n)
    assert r.win_rate_a == 0.0 and r.ci_low == 0.0  # base's rate: 0%
    assert r.p_value == pytest.approx(2 / 2**n) and r.p_value < 0.05
    assert r.sentence().startswith(f"tuned wins {n} of {n} decided votes, 100% [")
    assert "100%]" in r.sentence() and r.sentence().endswith("tuned is better")


def test_all_wins_for_base():
    r = ab_summary(["base"] * 6)
    assert r.win_rate_a == 1.0 and r.ci_high == 1.0 and r.p_value < 0.05
    assert r.sentence() == "base wins 6 of 6 decided votes, 100% [61%, 100%], p = 0.031: base is better"


def test_custom_labels_and_bad_votes():
    r = ab_summary(["step-50", "step-100", "step-100"], a="step-50", b="step-100")
    assert (r.contender_a, r.wins_a, r.wins_b) == ("step-50", 1, 2)
    with pytest.raises(ValueError, match="unknown vote 'a'"):
        ab_summary(["a", "tuned"])
    with pytest.raises(ValueError):
        ab_summary([], a="tie")
    with pytest.raises(Exception):  # frozen
        r.wins_a = 5


# --- Bradley–Terry ---------------------------------------------------------------------------

TRUE = {"small": 1.0, "medium": 2.0, "large": 4.0}


def simulate(strengths, n=600, seed=1):
    rng, names, rows = np.random.default_rng(seed), list(strengths), []
    for _ in range(n):
        i, j = rng.choice(len(names), 2, replace=False)
        a, b = names[i], names[j]
        p_a = strengths[a] / (strengths[a] + strengths[b])
        rows.append((a, b, a if rng.random() < p_a else b))
    return pd.DataFrame(rows, columns=["a", "b", "winner"])


def mm_reference(comparisons, prior=1.0, iters=20_000):
    """Hunter's (2004) MM iterations with the same virtual-opponent prior: a second algorithm."""
    names = list(pd.unique(comparisons[["a", "b"]].to_numpy().ravel()))
    idx = {n: i for i, n in enumerate(names)}
    k = len(names)
    games, wins = np.zeros((k, k)), np.full(k, prior / 2)
    for a, b, w in comparisons.itertuples(index=False):
        games[idx[a], idx[b]] += 1
        games[idx[b], idx[a]] += 1
        wins[idx[a]] += 1.0 if w == a else 0.5 if w == "tie" else 0.0
        wins[idx[b]] += 1.0 if w == b else 0.5 if w == "tie" else 0.0
    p = np.ones(k)
    for _ in range(iters):
        p = wins / ((games / (p[:, None] + p[None, :])).sum(1) + prior / (p + 1))
    p = p / np.exp(np.log(p).mean())
    return dict(zip(names, p))


def test_bradley_terry_recovers_known_strengths():
    table = bradley_terry(simulate(TRUE))
    assert list(table.columns) == ["contender", "strength", "ci_low", "ci_high", "wins", "losses", "ties"]
    assert list(table["contender"]) == ["large", "medium", "small"]
    s = table.set_index("contender")
    assert np.log(s["strength"]).sum() == pytest.approx(0, abs=1e-9)  # geometric mean 1
    for hi, lo in [("large", "medium"), ("medium", "small"), ("large", "small")]:
        fitted = math.log(s.at[hi, "strength"] / s.at[lo, "strength"])
        assert fitted == pytest.approx(math.log(TRUE[hi] / TRUE[lo]), abs=0.3)
    geo = math.exp(np.mean(np.log(list(TRUE.values()))))
    for name, strength in TRUE.items():
        assert s.at[name, "ci_low"] < strength / geo < s.at[name, "ci_high"], name
        assert s.at[name, "ci_low"] < s.at[name, "strength"] < s.at[name, "ci_high"]
    assert (s["wins"] + s["losses"] + s["ties"]).sum() == 2 * 600


def test_bradley_terry_matches_mm_reference_with_ties():
    df = simulate(TRUE, n=200, seed=3)
    df.loc[::7, "winner"] = "tie"
    table = bradley_terry(df, n_boot=0).set_index("contender")
    for name, strength in mm_reference(df).items():
        assert table.at[name, "strength"] == pytest.approx(strength, rel=1e-6)
    assert table["ci_low"].isna().all()
    assert table["ties"].sum() == 2 * (df["winner"] == "tie").sum()


def test_bradley_terry_undefeated_is_finite():
    df = pd.DataFrame({"a": ["p"] * 10 + ["q"] * 4, "b": ["q"] * 10 + ["r"] * 4,
                       "winner": ["p"] * 10 + ["q", "r", "q", "tie"]})
    table = bradley_terry(df, n_boot=200)
    assert np.isfinite(table[["strength", "ci_low", "ci_high"]].to_numpy()).all()
    assert table.at[0, "contender"] == "p" and (table.at[0, "wins"], table.at[0, "losses"]) == (10, 0)


def test_bradley_terry_two_contenders_follow_win_rate():
    df = pd.DataFrame({"a": ["u"] * 100, "b": ["v"] * 100, "winner": ["v"] * 60 + ["u"] * 40})
    table = bradley_terry(df, n_boot=100)
    assert list(table["contender"]) == ["v", "u"]
    # Without the prior the ratio would be exactly 60/40; the prior pulls it in a little.
    ratio = table.at[0, "strength"] / table.at[1, "strength"]
    assert 1.4 < ratio <= 1.5


def test_bradley_terry_bootstrap_is_seeded_and_checks_input():
    df = simulate(TRUE, n=100)
    pd.testing.assert_frame_equal(bradley_terry(df, n_boot=50, seed=4), bradley_terry(df, n_boot=50, seed=4))
    both_bad = pd.concat([df, pd.DataFrame({"a": ["small"], "b": ["large"], "winner": ["both_bad"]})])
    pd.testing.assert_frame_equal(bradley_terry(both_bad, n_boot=0), bradley_terry(df, n_boot=0))
    with pytest.raises(ValueError, match="winner"):
        bradley_terry(pd.DataFrame({"a": ["x"], "b": ["y"], "winner": ["z"]}))
    with pytest.raises(ValueError, match="lack columns"):
        bradley_terry(pd.DataFrame({"a": ["x"], "b": ["y"]}))
    assert bradley_terry(pd.DataFrame(columns=["a", "b", "winner"])).empty


# --- charts ----------------------------------------------------------------------------------

def test_ab_chart_of_result():
    r = ab_summary(["tuned"] * 14 + ["base"] * 6)
    fig = ab_chart(r)
    assert isinstance(fig, go.Figure)
    bar = fig.data[0]
    assert list(bar.x) == ["base", "tuned"] and list(bar.y) == pytest.approx([0.3, 0.7])
    # Error bars reach the Wilson interval for base and its mirror for tuned.
    assert bar.y[0] + bar.error_y.array[0] == pytest.approx(r.ci_high)
    assert bar.y[1] - bar.error_y.arrayminus[1] == pytest.approx(1 - r.ci_high)
    assert any(shape.y0 == 0.5 for shape in fig.layout.shapes)
    assert r.sentence() in fig.layout.title.text


def test_ab_chart_of_bradley_terry_table():
    table = bradley_terry(simulate(TRUE), n_boot=100)
    fig = ab_chart(table)
    bar = fig.data[0]
    assert list(bar.x) == list(table["contender"]) and list(bar.y) == pytest.approx(list(table["strength"]))
    assert list(np.asarray(bar.y) - np.asarray(bar.error_y.arrayminus)) == pytest.approx(list(table["ci_low"]))
    with pytest.raises(TypeError):
        ab_chart([1, 2])


def test_result_is_plain_dataclass():
    r = ab_summary(["base", "tuned", "tie"])
    assert isinstance(r, ABResult) and r.decided == 2 and r.alpha == 0.05
