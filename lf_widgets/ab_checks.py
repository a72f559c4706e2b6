"""Is an A/B result honest? Side bias, answer length, and a length-controlled win rate.

A blind A/B vote can be swayed by where an answer is shown and by how long it is (people and
LLM judges alike favour longer — or, asked for brevity, shorter — answers). The panel shuffles
sides per item, so the win rate stays valid; these checks say how strong each bias was:

- **side**: of the decided votes, how many went to the left side (A), with a two-sided sign test
  against 50 %;
- **length**: mean length in words of each contender's answers, and of winners and losers;
- **length-controlled win rate** (as AlpacaEval's LC win rate): a logistic regression of
  "contender B won" on the length difference (B − A, standardised), fitted by statsmodels' GLM;
  its intercept is B's win rate for answers of equal length, with the interval from the
  intercept's standard error. Ties count half (two half-weighted rows); "both bad" votes are
  left out. With too few votes, or votes that length separates perfectly, it says so instead.

Pure functions of a votes table (``ab.votes_frame`` with answer lengths): no torch, no widgets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .evaluation import BOTH_BAD, TIE, sign_test

__all__ = ["ABChecks", "ab_checks", "MIN_VOTES_FOR_LC"]

MIN_VOTES_FOR_LC = 8  # fewer compared votes than this: no regression, say so


@dataclass(frozen=True)
class ABChecks:
    """Side bias and length effects of one A/B test (see the module docstring)."""

    left_wins: int  # decided votes won by the side shown as A
    right_wins: int  # ... by the side shown as B
    side_p_value: float  # sign test of left vs right wins (small: people favoured a side)
    mean_words: dict = field(default_factory=dict)  # contender -> mean answer length (words)
    winner_words: float = float("nan")  # mean length of the answers that won a decided vote
    loser_words: float = float("nan")  # ... that lost one
    lc_win_rate_b: float = float("nan")  # contender B's win rate at equal length
    lc_ci: tuple[float, float] = (float("nan"), float("nan"))  # 95 % interval of that rate
    lc_note: str = ""  # why there is no length-controlled rate, if there is none

    @property
    def left_share(self) -> float:
        decided = self.left_wins + self.right_wins
        return self.left_wins / decided if decided else float("nan")

    def lines(self, b: str) -> list[str]:
        """The checks in words, one line each."""
        out = []
        if self.left_wins + self.right_wins:
            p = "p < 0.001" if self.side_p_value < 0.001 else f"p = {self.side_p_value:.2g}"
            flag = " — people favoured a side" if self.side_p_value < 0.05 else ""
            out.append(f"side: the left answer (A) won {self.left_wins} of "
                       f"{self.left_wins + self.right_wins} votes that picked a side "
                       f"({self.left_share:.0%}, {p}){flag}")
        if self.mean_words:
            lengths = ", ".join(f"{k} {v:.1f}" for k, v in self.mean_words.items())
            out.append(f"length: mean words per answer {lengths}; winners {self.winner_words:.1f}, "
                       f"losers {self.loser_words:.1f}")
        if math.isnan(self.lc_win_rate_b):
            out.append(f"length-controlled win rate of {b}: {self.lc_note or 'not available'}")
        else:
            low, high = self.lc_ci
            out.append(f"length-controlled win rate of {b}: {self.lc_win_rate_b:.0%} "
                       f"[{low:.0%}, {high:.0%}] (what it would be for answers of equal length)")
        return out


def _words(text) -> int:
    return len(str(text or "").split())


def ab_checks(votes: pd.DataFrame, a: str, b: str) -> ABChecks:
    """Side bias, lengths and the length-controlled win rate of ``b`` against ``a``.

    ``votes``: one row per vote in force with ``left``, ``right`` (contenders shown as A / B),
    ``choice`` ("a", "b", "tie", "both_bad"), ``winner`` and ``left_text`` / ``right_text``.
    """
    decided = votes[votes["choice"].isin(["a", "b"])]
    left_wins = int((decided["choice"] == "a").sum())
    right_wins = int((decided["choice"] == "b").sum())
    words = {name: [] for name in (a, b)}
    win_len, lose_len = [], []
    for v in votes.itertuples(index=False):
        lens = {v.left: _words(v.left_text), v.right: _words(v.right_text)}
        for name in (a, b):
            words[name].append(lens.get(name, 0))
        if v.choice in ("a", "b"):
            loser = v.right if v.choice == "a" else v.left
            win_len.append(lens[v.winner])
            lose_len.append(lens[loser])
    mean = {k: float(np.mean(x)) for k, x in words.items() if x}
    lc, ci, note = _length_controlled(votes, a, b)
    return ABChecks(left_wins, right_wins, sign_test(left_wins, right_wins), mean,
                    float(np.mean(win_len)) if win_len else float("nan"),
                    float(np.mean(lose_len)) if lose_len else float("nan"), lc, ci, note)


def _length_controlled(votes: pd.DataFrame, a: str, b: str):
    """(rate, (low, high), note): GLM of "b won" on the standardised length difference."""
    import statsmodels.api as sm

    rows = votes[votes["choice"] != BOTH_BAD]
    if len(rows) < MIN_VOTES_FOR_LC:
        return float("nan"), (float("nan"),) * 2, (f"needs at least {MIN_VOTES_FOR_LC} compared "
                                                   f"votes, has {len(rows)}")
    y, diff, weight = [], [], []
    for v in rows.itertuples(index=False):
        lens = {v.left: _words(v.left_text), v.right: _words(v.right_text)}
        d = lens.get(b, 0) - lens.get(a, 0)
        outcomes = [(1.0, 0.5), (0.0, 0.5)] if v.winner == TIE else [(float(v.winner == b), 1.0)]
        for outcome, w in outcomes:
            y.append(outcome)
            diff.append(d)
            weight.append(w)
    diff = np.asarray(diff, dtype=float)
    scale = diff.std() or 1.0  # standardised, so the slope is per standard deviation of length
    X = sm.add_constant(diff / scale, has_constant="add")
    try:
        fit = sm.GLM(np.asarray(y), X, family=sm.families.Binomial(),
                     freq_weights=np.asarray(weight)).fit()
        b0, se = float(fit.params[0]), float(fit.bse[0])
    except Exception as err:  # perfect separation and friends: statsmodels raises or warns
        return float("nan"), (float("nan"),) * 2, f"the regression did not fit ({err})"
    if not (math.isfinite(b0) and math.isfinite(se)) or se > 10:
        return float("nan"), (float("nan"),) * 2, "length separates the votes: no stable fit"
    sigmoid = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    return sigmoid(b0), (sigmoid(b0 - 1.96 * se), sigmoid(b0 + 1.96 * se)), ""
