"""Statistics for blind A/B tests: win rate, Wilson interval, sign test, Bradley–Terry.

Pure functions of vote labels and counts: no torch, no widgets. The A/B panel records one label
per blind comparison (``"base"``, ``"tuned"``, ``"tie"`` or ``"both_bad"``); `ab_summary` turns
those labels into an `ABResult` whose `~ABResult.sentence` says in plain words whether the tuned
model is really better. `bradley_terry` ranks more than two contenders (several checkpoints).

Conventions, used everywhere here:

- a tie is half a win for each side (win rate, Wilson interval, Bradley–Terry);
- a "both bad" vote says nothing about which is better: it is left out of the win rate and the
  tests and reported on its own (a high count means both models need work);
- the sign test uses decided votes only (ties carry no sign).

Checked against ``scipy.stats.binomtest`` in ``tests/test_evaluation.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Iterable

import numpy as np
import pandas as pd

__all__ = ["ABResult", "ab_chart", "ab_summary", "bradley_terry", "sign_test", "wilson_interval"]

TIE, BOTH_BAD = "tie", "both_bad"


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``p̂ = successes / n``.

    .. math::
        \\frac{n\\hat p + z^2/2 \\;\\pm\\; z\\sqrt{n\\hat p(1-\\hat p) + z^2/4}}{n + z^2}

    with ``z`` the two-sided normal quantile of `confidence` (1.96 for 95 %). Unlike the plain
    ``p̂ ± z·se`` interval it stays inside [0, 1] and is sensible at 0 % and 100 %, which small
    A/B tests hit often. `successes` may be fractional (a tie counts half).

    Returns
    -------
    (low, high) : tuple of float
        ``(0.0, 1.0)`` when ``n == 0`` (nothing is known); exactly 0 / 1 at the ends.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = successes / n
    center = (2 * n * p + z**2) / (2 * (n + z**2))
    delta = z / (2 * (n + z**2)) * math.sqrt(4 * n * p * (1 - p) + z**2)
    # Clamp the ends exactly (the formula gives 0 / 1 there up to rounding).
    low = 0.0 if successes == 0 else center - delta
    high = 1.0 if successes == n else center + delta
    return float(low), float(high)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: p-value of `wins` vs `losses` under "both equally good".

    Under H0 each decided vote is a fair coin, ``X ~ Binomial(n, 1/2)`` with ``n = wins + losses``.
    The p-value sums the probability of every outcome no more likely than the observed one (as
    ``scipy.stats.binomtest`` does); for p = 1/2 those are the two tails ``X ≤ m`` and ``X ≥ n − m``
    with ``m = min(wins, losses)``, so

    .. math::  p = \\min\\Bigl(1,\\; 2 \\sum_{i=0}^{m} \\binom{n}{i} 2^{-n}\\Bigr)

    summed in exact integers (no overflow or cancellation for large n; only a result below
    ~1e-308 rounds to 0). Ties are excluded by the caller.
    Returns 1.0 when there are no decided votes.
    """
    if wins < 0 or losses < 0 or int(wins) != wins or int(losses) != losses:
        raise ValueError(f"wins and losses must be non-negative integers, got {wins}, {losses}")
    n, m = int(wins) + int(losses), int(min(wins, losses))
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(m + 1))
    return min(1.0, 2 * tail / 2**n)  # int / int is correctly rounded in Python


def _pct(x: float) -> str:
    return f"{x:.0%}"


@dataclass(frozen=True)
class ABResult:
    """Summary of a blind A/B test of `contender_a` against `contender_b`.

    ``win_rate_a = (wins_a + ties/2) / (wins_a + wins_b + ties)``: a tie is half a win for each;
    both-bad votes are left out (they are in `n` and `both_bad`). ``(ci_low, ci_high)`` is the
    Wilson interval of that same rate; `p_value` is the sign test of `wins_a` vs `wins_b`.
    `win_rate_a` is NaN and the interval (0, 1) when no vote compared the two.
    """

    contender_a: str  # usually the base model
    contender_b: str  # usually the tuned model
    wins_a: int
    wins_b: int
    ties: int
    both_bad: int  # "both bad" votes: not in the win rate, reported on their own
    n: int  # all votes, both_bad included
    win_rate_a: float  # ties count half
    ci_low: float  # Wilson interval of win_rate_a
    ci_high: float
    p_value: float  # two-sided sign test, ties excluded
    alpha: float = 0.05  # conclusive when p_value < alpha
    checks: object = None  # ab_checks.ABChecks: side bias, lengths, length-controlled rate
    notes: tuple = ()  # warnings said with the result (e.g. prompts the adapter was trained on)

    def report(self) -> list[str]:
        """The sentence, then one line per check and note."""
        lines = [self.sentence()]
        if self.checks is not None:
            lines += self.checks.lines(self.contender_b)
        return lines + [f"⚠ {n}" for n in self.notes]

    def table(self) -> pd.DataFrame:
        """The counts and the rate as a one-row table."""
        return pd.DataFrame([{"contender A": self.contender_a, "contender B": self.contender_b,
                              f"{self.contender_a} wins": self.wins_a,
                              f"{self.contender_b} wins": self.wins_b, "ties": self.ties,
                              "both bad": self.both_bad,
                              f"{self.contender_b} win rate": 1 - self.win_rate_a,
                              "95% low": 1 - self.ci_high, "95% high": 1 - self.ci_low,
                              "p (sign test)": self.p_value}])

    def __repr__(self) -> str:
        return "ABResult: " + "\n  ".join(self.report())

    def _repr_html_(self) -> str:
        import html

        lines = "".join(f"<li>{html.escape(x)}</li>" for x in self.report()[1:])
        return (f'<div class="tex2jax_ignore mathjax_ignore"><b>{html.escape(self.sentence())}'
                f"</b><ul>{lines}</ul>{self.table().to_html(index=False, escape=True)}</div>"
                ).replace("$", "&#36;")

    @property
    def decided(self) -> int:
        """Votes that picked a side (neither tie nor both bad)."""
        return self.wins_a + self.wins_b

    def sentence(self) -> str:
        """The result in plain words, e.g. ``"tuned wins 14 of 20 decided votes, 70% [48%, 85%],
        p = 0.12: not yet conclusive"``. Speaks for whichever side is ahead (`contender_b` when
        even), with that side's win rate and interval."""
        bad = f" ({self.both_bad} said both were bad)" if self.both_bad else ""
        if self.n == 0:
            return "no votes yet"
        if self.decided + self.ties == 0:
            return f"all {self.n} votes said both were bad"
        if self.decided == 0:
            return "all votes were ties" + bad
        a_leads = self.wins_a > self.wins_b
        name, wins = (self.contender_a, self.wins_a) if a_leads else (self.contender_b, self.wins_b)
        rate, low, high = (
            (self.win_rate_a, self.ci_low, self.ci_high) if a_leads
            else (1 - self.win_rate_a, 1 - self.ci_high, 1 - self.ci_low)
        )
        ties = (f" and {self.ties} {'tie' if self.ties == 1 else 'ties'} (each half a win)"
                if self.ties else "")
        p = "p < 0.001" if self.p_value < 0.001 else f"p = {self.p_value:.2g}"
        verdict = f"{name} is better" if self.p_value < self.alpha else "not yet conclusive"
        return (f"{name} wins {wins} of {self.decided} decided votes{ties}, {_pct(rate)} "
                f"[{_pct(low)}, {_pct(high)}], {p}: {verdict}{bad}")


def ab_summary(votes: Iterable[str], a: str = "base", b: str = "tuned", alpha: float = 0.05,
               *, confidence: float = 0.95) -> ABResult:
    """Count A/B votes and test them.

    Parameters
    ----------
    votes : iterable of str (a list, a pandas Series …)
        One winner label per vote: `a`, `b`, ``"tie"`` or ``"both_bad"``. Anything else raises.
    a, b : str
        The two contenders' labels; the result's win rate is `a`'s.
    alpha : float
        Significance level of the sign test for `ABResult.sentence`.
    confidence : float
        Level of the Wilson interval.
    """
    if a == b or {a, b} & {TIE, BOTH_BAD}:
        raise ValueError(f"need two distinct contenders other than tie/both_bad: {a!r}, {b!r}")
    counts = {a: 0, b: 0, TIE: 0, BOTH_BAD: 0}
    for vote in votes:
        if vote not in counts:
            raise ValueError(f"unknown vote {vote!r}; expected one of {list(counts)}")
        counts[vote] += 1
    wins_a, wins_b, ties = counts[a], counts[b], counts[TIE]
    compared = wins_a + wins_b + ties
    score = wins_a + 0.5 * ties
    low, high = wilson_interval(score, compared, confidence)
    return ABResult(
        contender_a=a, contender_b=b, wins_a=wins_a, wins_b=wins_b, ties=ties,
        both_bad=counts[BOTH_BAD], n=compared + counts[BOTH_BAD],
        win_rate_a=score / compared if compared else float("nan"),
        ci_low=low, ci_high=high, p_value=sign_test(wins_a, wins_b), alpha=alpha,
    )


def _bt_fit(games: np.ndarray, score: np.ndarray, prior: float, start: np.ndarray,
            tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
    """Maximum-likelihood log-strengths θ (π = e^θ) by damped Newton steps.

    The penalised log-likelihood, with `prior` virtual tied games of each contender against a
    virtual opponent of strength 1 (θ = 0), is

    .. math::
        ℓ(θ) = \\sum_i (W_i + \\tfrac{prior}{2}) θ_i
               − \\sum_{i<j} N_{ij} \\log(e^{θ_i} + e^{θ_j}) − prior \\sum_i \\log(e^{θ_i} + 1)

    (``W_i`` score, ``N_ij`` games between i and j): logistic regression on θ, strictly concave
    thanks to the virtual games, which also keep an undefeated or unconnected contender finite.
    Newton rather than Hunter's MM: MM crawls along the weakly pinned overall scale (thousands of
    iterations); Newton needs ~10. Halving the step keeps each one uphill.
    """
    w = score + prior / 2

    def loglik(t: np.ndarray) -> float:
        pairs = np.logaddexp(t[:, None], t[None, :])
        return w @ t - 0.5 * np.sum(games * pairs) - prior * np.sum(np.logaddexp(t, 0.0))

    theta = start.copy()
    for _ in range(max_iter):
        beats = 1 / (1 + np.exp(theta[None, :] - theta[:, None]))  # (K, K) P(i beats j)
        beats_virtual = 1 / (1 + np.exp(-theta))  # (K,) P(i beats the virtual opponent)
        grad = w - (games * beats).sum(axis=1) - prior * beats_virtual
        v = games * beats * beats.T
        hess = v - np.diag(v.sum(axis=1) + prior * beats_virtual * (1 - beats_virtual))
        step = np.linalg.solve(hess, -grad)
        base, size = loglik(theta), 1.0
        while loglik(theta + size * step) < base - 1e-12 and size > 1e-6:
            size /= 2
        theta = theta + size * step
        if np.max(np.abs(size * step)) < tol:
            break
    return theta


def _centred(theta: np.ndarray) -> np.ndarray:
    return theta - theta.mean()  # log-strengths sum to 0: geometric mean strength 1


def bradley_terry(comparisons: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
                  confidence: float = 0.95, prior: float = 1.0) -> pd.DataFrame:
    """Bradley–Terry strengths of several contenders from pairwise comparisons.

    The model says ``P(i beats j) = π_i / (π_i + π_j)``; strengths are fitted by maximum
    likelihood (logistic regression on log-strengths, solved by Newton's method) and scaled so
    that their geometric mean is 1 (log-strengths sum to 0): a strength of 2 means twice the odds
    of the geometric-average contender, and ``P(i beats j)`` is the ratio formula above.

    Parameters
    ----------
    comparisons : DataFrame with columns ``a``, ``b``, ``winner``
        One row per comparison; `winner` is the row's `a`, its `b`, or ``"tie"`` (half a win
        each). Rows with ``"both_bad"`` carry no order and are dropped.
    n_boot : int
        Bootstrap resamples of the comparisons (with replacement) for the intervals; 0 for none
        (the interval columns are then NaN).
    seed : int
        Seed of ``numpy.random.default_rng`` for the bootstrap.
    confidence : float
        Level of the percentile bootstrap intervals.
    prior : float
        Virtual tied games of each contender against a virtual opponent of strength 1: a small
        pull toward equal strengths that keeps an undefeated contender finite. Must be > 0.

    Returns
    -------
    DataFrame
        One row per contender, strongest first: ``contender, strength, ci_low, ci_high, wins,
        losses, ties`` (the last three are raw counts).
    """
    if prior <= 0:
        raise ValueError("prior must be > 0 (it keeps undefeated strengths finite)")
    missing = {"a", "b", "winner"} - set(comparisons.columns)
    if missing:
        raise ValueError(f"comparisons lack columns {sorted(missing)}")
    rows = comparisons[comparisons["winner"] != BOTH_BAD]
    a, b, winner = (rows[c].astype(str).to_numpy() for c in ("a", "b", "winner"))
    bad = (winner != a) & (winner != b) & (winner != TIE) | (a == b)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"row {rows.index[i]!r}: winner {winner[i]!r} must be a, b or 'tie' "
                         f"(a={a[i]!r}, b={b[i]!r}, a != b)")
    names = list(pd.unique(np.concatenate([a, b])))
    columns = ["contender", "strength", "ci_low", "ci_high", "wins", "losses", "ties"]
    if not names:
        return pd.DataFrame(columns=columns)
    k, index = len(names), {name: i for i, name in enumerate(names)}
    ia, ib = np.array([index[x] for x in a]), np.array([index[x] for x in b])
    score_a = np.where(winner == a, 1.0, np.where(winner == TIE, 0.5, 0.0))

    def fit(weight: np.ndarray, start: np.ndarray) -> np.ndarray:  # weight: copies of each row
        games = np.zeros((k, k))
        np.add.at(games, (ia, ib), weight)
        games += games.T  # N_ij: games between i and j, either order
        score = (np.bincount(ia, weight * score_a, k) + np.bincount(ib, weight * (1 - score_a), k))
        return _bt_fit(games, score, prior, start)

    theta = fit(np.ones(len(a)), np.zeros(k))
    low = high = np.full(k, np.nan)
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        boot = np.array([
            _centred(fit(np.bincount(rng.integers(0, len(a), len(a)), minlength=len(a)),
                         theta))  # warm start: resamples sit near the estimate
            for _ in range(n_boot)
        ])
        tail = (1 - confidence) / 2
        low, high = np.exp(np.quantile(boot, [tail, 1 - tail], axis=0))

    is_tie = winner == TIE
    wins = np.bincount(ia, score_a == 1, k) + np.bincount(ib, score_a == 0, k)
    ties = np.bincount(ia, is_tie, k) + np.bincount(ib, is_tie, k)
    games = np.bincount(ia, minlength=k) + np.bincount(ib, minlength=k)
    table = pd.DataFrame({
        "contender": names, "strength": np.exp(_centred(theta)), "ci_low": low, "ci_high": high,
        "wins": wins.astype(int), "losses": (games - wins - ties).astype(int),
        "ties": ties.astype(int),
    })
    return table.sort_values("strength", ascending=False, ignore_index=True)


def ab_chart(result_or_table: ABResult | pd.DataFrame):
    """A plotly figure of an `ABResult` (win rates with Wilson error bars and a 50 % line) or of
    a `bradley_terry` table (strengths with bootstrap error bars, log scale, a line at 1)."""
    import plotly.graph_objects as go  # here, so the statistics import without plotly

    r = result_or_table
    if isinstance(r, ABResult):
        rates = [r.win_rate_a, 1 - r.win_rate_a]
        above, below = r.ci_high - r.win_rate_a, r.win_rate_a - r.ci_low
        fig = go.Figure(go.Bar(
            x=[r.contender_a, r.contender_b], y=rates,
            error_y=dict(type="data", array=[above, below], arrayminus=[below, above]),
        ))
        fig.add_hline(y=0.5, line_dash="dash")
        fig.update_layout(title=r.sentence(), yaxis=dict(range=[0, 1], tickformat=".0%",
                                                         title="win rate (ties half)"))
        return fig
    if isinstance(r, pd.DataFrame) and {"contender", "strength"} <= set(r.columns):
        fig = go.Figure(go.Bar(
            x=r["contender"], y=r["strength"],
            error_y=dict(type="data", array=r["ci_high"] - r["strength"],
                         arrayminus=r["strength"] - r["ci_low"]),
        ))
        fig.add_hline(y=1.0, line_dash="dash")
        fig.update_layout(title="Bradley–Terry strength (1 = average)",
                          yaxis=dict(type="log", title="strength"))
        return fig
    raise TypeError(f"expected an ABResult or a bradley_terry table, got {type(r).__name__}")
