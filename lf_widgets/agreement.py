"""How far a team's judges agree: the figures a reviewer of a feedback data set asks for first.

Ratings (1-5, ordinal): Krippendorff's α from the ``krippendorff`` package (ordinal distance,
missing judgements allowed) and percent agreement. Preferences and A/B votes over {a, b, tie}
(a pair's "a" is its lower sample id; both bad counts as a tie): Cohen's κ per pair of
annotators and Fleiss' κ over all (statsmodels), Krippendorff's α (nominal) and percent
agreement. Each figure per annotator pair and overall, with a bootstrap 95 % interval
(items resampled with replacement), plus intra-rater figures where rechecks exist (an
annotator's first judgement of an item against their later one).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pandas as pd

__all__ = ["agreement", "COLUMNS"]

COLUMNS = ["kind", "metric", "annotators", "items", "value", "ci_low", "ci_high"]
_CATEGORIES = {"a": 0, "b": 1, "tie": 2}


def agreement(store, *, n_boot: int = 1000, seed: int | None = 0) -> pd.DataFrame:
    """One row per kind (rating, preference, ab_vote), metric and annotator pair ("overall"
    for all of them, "alice (recheck)" for intra-rater figures): items, value, ci_low, ci_high.
    Figures that the data cannot give (fewer than two judges of any item, one value only) are
    left out."""
    from .team import judgement_table

    table = pd.concat([judgement_table(store), _votes(store)], ignore_index=True)
    table["code"] = [_coded(k, v) for k, v in zip(table["kind"], table["value"])]
    rng = np.random.default_rng(seed)
    rows = []
    for kind, group in table.groupby("kind", sort=False):
        matrix = group.pivot_table(index="annotator", columns="subject", values="code",
                                   aggfunc="first")
        rows += _figures(kind, matrix, rng, n_boot)
    rows += _intra_rater(store, rng, n_boot)
    return pd.DataFrame(rows, columns=COLUMNS)


def _votes(store) -> pd.DataFrame:
    votes = store.current_events(kinds=["ab_vote"])
    return pd.DataFrame({"subject": votes["subject"], "kind": "ab_vote",
                         "annotator": votes["annotator"],
                         "value": [v.get("choice") for v in votes["value"]]})


def _coded(kind: str, value) -> float:
    if kind == "rating":
        return float(value)
    return float(_CATEGORIES.get(value, 2))  # both_bad and tie: no preference


def _figures(kind: str, matrix: pd.DataFrame, rng, n_boot: int) -> list[list]:
    data = matrix.to_numpy(dtype=float)  # annotators × items, NaN where not judged
    rows = [_row(kind, name, "overall", data, fn, rng, n_boot)
            for name, fn in _metrics(kind, overall=True).items()]
    for (i, a), (j, b) in itertools.combinations(enumerate(matrix.index), 2):
        pair = data[[i, j]]
        pair = pair[:, ~np.isnan(pair).any(axis=0)]  # the items both judged
        rows += [_row(kind, name, f"{a}, {b}", pair, fn, rng, n_boot)
                 for name, fn in _metrics(kind, overall=False).items()]
    return [r for r in rows if r is not None]


def _metrics(kind: str, overall: bool) -> dict[str, Callable]:
    if kind == "rating":
        return {"krippendorff_alpha": _alpha_ordinal, "percent_agreement": _percent}
    kappa = {"fleiss_kappa": _fleiss} if overall else {"cohen_kappa": _cohen}
    return {**kappa, "krippendorff_alpha": _alpha_nominal, "percent_agreement": _percent}


def _row(kind, metric, who, data, fn, rng, n_boot):
    judged = (~np.isnan(data)).sum(axis=0) >= 2
    data = data[:, judged]
    value = _safe(fn, data)
    if np.isnan(value):
        return None
    boots = [_safe(fn, data[:, rng.integers(0, data.shape[1], data.shape[1])])
             for _ in range(n_boot)]
    low, high = np.nanpercentile(boots, [2.5, 97.5]) if n_boot else (np.nan, np.nan)
    return [kind, metric, who, int(data.shape[1]), value, float(low), float(high)]


def _safe(fn, data) -> float:
    try:
        with np.errstate(invalid="ignore", divide="ignore"):  # 0/0: undefined, NaN below
            return float(fn(data))
    except (ValueError, ZeroDivisionError, FloatingPointError):
        return float("nan")  # e.g. one value only: agreement is undefined there


def _alpha_ordinal(data) -> float:
    import krippendorff

    return krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal",
                              value_domain=[1, 2, 3, 4, 5])


def _alpha_nominal(data) -> float:
    import krippendorff

    return krippendorff.alpha(reliability_data=data, level_of_measurement="nominal",
                              value_domain=[0, 1, 2])


def _percent(data) -> float:
    """Per item: the share of its pairs of judges who agree; then the mean over items."""
    shares = []
    for column in data.T:
        values = column[~np.isnan(column)]
        pairs = list(itertools.combinations(values, 2))
        if pairs:
            shares.append(np.mean([x == y for x, y in pairs]))
    if not shares:
        raise ValueError("no item has two judges")
    return float(np.mean(shares))


def _cohen(data) -> float:
    from statsmodels.stats.inter_rater import cohens_kappa

    if data.shape[1] == 0:
        raise ValueError("no common items")
    table = np.zeros((3, 3))
    for x, y in data.T.astype(int):
        table[x, y] += 1
    return cohens_kappa(table, return_results=False)


def _fleiss(data) -> float:
    """Fleiss' κ over the items with the most common number of judges (it needs the same
    number for every item)."""
    from statsmodels.stats.inter_rater import fleiss_kappa

    counts = (~np.isnan(data)).sum(axis=0)
    if counts.size == 0:
        raise ValueError("no items")
    n = np.bincount(counts).argmax()
    table = np.array([[np.sum(col == c) for c in range(3)] for col in data.T[counts == n]])
    return fleiss_kappa(table, method="fleiss")


def _intra_rater(store, rng, n_boot) -> list[list]:
    """Each annotator's first judgement of a rechecked item against their latest."""
    plan = store.assignments()
    again = plan[plan["recheck"]]
    active = store.events(active_only=True)
    rows = []
    for who, items in again.groupby("annotator")["item"]:
        for kind in ("rating", "preference"):
            mine = active[(active["annotator"] == who) & (active["kind"] == kind)
                          & active["subject"].isin(set(items))]
            twice = [g for _, g in mine.groupby("subject") if len(g) >= 2]
            if not twice:
                continue
            pairs = [[_code(kind, g.iloc[0]), _code(kind, g.iloc[-1])] for g in twice]
            data = np.array(pairs, dtype=float).T
            fn = _alpha_ordinal if kind == "rating" else _alpha_nominal
            for metric, f in (("krippendorff_alpha", fn), ("percent_agreement", _percent)):
                row = _row(kind, metric, f"{who} (recheck)", data, f, rng, n_boot)
                if row is not None:
                    rows.append(row)
    return rows


def _code(kind: str, event) -> float:
    if kind == "rating":
        return float(event.value)
    from .team import pair_winner

    win = pair_winner(int(event.sample_id), event.value)
    low = int(event.subject.split(":")[1])
    return float(2 if win is None else (0 if win == low else 1))
