"""Working as a team on one log: work plans with overlap, progress, and disagreements to review.

An *item* is what one judge judges once, named by a key like the store's subjects
(:func:`lf_widgets._judgements.subject_of`): ``s:<sample>`` (rate a sample), ``p:<a>:<b>``
(pick the better of two samples, a < b) or ``q:<prompt>`` (rate every stored sample of a
prompt). :func:`assign` writes a plan into the log (``assignments``, append-only); whether an
item is done is read from the judgements in force, so progress needs no bookkeeping of its own
and is the same in every annotator's notebook. Agreement figures are in
:mod:`lf_widgets.agreement`.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ._judgements import check_annotator, check_id

__all__ = ["item_key", "assign", "Progress", "progress", "disagreements",
           "judgement_table", "pair_winner", "adjudicate"]


def item_key(store, item: Any) -> str:
    """The key of ``item``: a sample id or Sample, a pair of them (tuple or PairItem), a prompt
    (str; added to the log if new), or a key already (``"s:3"``, ``"p:3:4"``, ``"q:1"``)."""
    if isinstance(item, str) and item[:2] in ("s:", "p:", "q:") and item[2:3].isdigit():
        return item
    if isinstance(item, str):
        return f"q:{store.add_prompt(item)}"
    if hasattr(item, "left") and hasattr(item, "right"):  # a PairItem of the preference panel
        item = (item.left, item.right)
    if isinstance(item, (tuple, list)) and len(item) == 2:
        a, b = sorted(_sample_id(x) for x in item)
        if a == b:
            raise ValueError(f"a pair needs two different samples, got {a} twice")
        return f"p:{a}:{b}"
    return f"s:{_sample_id(item)}"


def _sample_id(x: Any) -> int:
    return check_id(getattr(x, "sample_id", x), "a sample id")


def assign(store, items: Iterable, annotators: Sequence[str], *, overlap: int = 2,
           seed: int | None = None, recheck: float = 0.0) -> pd.DataFrame:
    """Give every item to ``overlap`` different annotators, loads balanced within one.

    Items are taken in a shuffled order (``seed``) and each goes to the ``overlap`` annotators
    with the fewest items so far (ties in a shuffled order), which keeps every two loads within
    one of each other. ``recheck``: the share of each annotator's sample and pair items shown to
    them a second time, once judged (at least one when > 0), for intra-rater consistency.
    Returns the plan written: plan, item, annotator, recheck.
    """
    annotators = list(dict.fromkeys(check_annotator(a) for a in annotators))
    keys = list(dict.fromkeys(item_key(store, i) for i in items))
    if not 1 <= overlap <= len(annotators):
        raise ValueError(f"overlap must be from 1 to the number of annotators "
                         f"({len(annotators)}), got {overlap!r}")
    if not 0 <= recheck <= 1:
        raise ValueError(f"recheck must be a share from 0 to 1, got {recheck!r}")
    rng = random.Random(seed)
    rng.shuffle(keys)
    load: Counter = Counter({a: 0 for a in annotators})
    given: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        order = rng.sample(annotators, len(annotators))
        for who in sorted(order, key=lambda a: load[a])[:overlap]:  # sorted() is stable
            load[who] += 1
            given[who].append(key)
    rows = [(key, who, False) for key in keys for who in annotators if key in given[who]]
    for who in annotators:
        own = [k for k in given[who] if not k.startswith("q:")]
        n = 0 if not recheck or not own else max(1, round(recheck * len(own)))
        rows += [(key, who, True) for key in rng.sample(own, n)]
    plan = uuid.uuid4().hex[:12]
    store.add_assignments(plan, rows)
    return pd.DataFrame([(plan, *r) for r in rows],
                        columns=["plan", "item", "annotator", "recheck"])


def _judged(store) -> tuple[dict, Counter, dict]:
    """Who has judged what: (item key -> annotators, (annotator, item) -> active judgements,
    prompt id -> its sample ids)."""
    samples = store.samples()
    of_prompt = {int(p): [int(s) for s in g["sample_id"]]
                 for p, g in samples.dropna(subset=["prompt_id"]).groupby("prompt_id")}
    done: dict[str, set] = defaultdict(set)
    for e in store.current_events(kinds=["rating", "preference"]).itertuples():
        done[e.subject].add(e.annotator)
    active = store.events(active_only=True)
    active = active[active["kind"].isin(["rating", "preference"])]
    times = Counter(zip(active["annotator"], active["subject"]))
    for pid, sids in of_prompt.items():  # a prompt is done once all its samples are rated
        raters = set.intersection(*(done.get(f"s:{s}", set()) for s in sids))
        done[f"q:{pid}"] = raters
    return done, times, of_prompt


@dataclass(frozen=True)
class Progress:
    """Where a team stands on its work plan."""

    table: pd.DataFrame  # per annotator: assigned, done, rechecks, rechecks_done
    items: int  # distinct items in the plan
    items_done: int  # items every assigned annotator has judged
    pending: dict[str, list[str]]  # annotator -> item keys still to judge, in queue order

    def line(self, annotator: str) -> str:
        """E.g. "alice: 3 of 8 done · team: 5 of 12 items done"."""
        row = self.table.loc[annotator] if annotator in self.table.index else None
        mine = ("no items assigned" if row is None
                else f"{row.done} of {row.assigned} done"
                + (f", {row.rechecks_done} of {row.rechecks} rechecks" if row.rechecks else ""))
        return f"{annotator}: {mine} · team: {self.items_done} of {self.items} items done"


def progress(store) -> Progress:
    """Each annotator's and the team's progress on every plan in the log."""
    plan = store.assignments()
    done, times, _ = _judged(store)
    regular, again = plan[~plan["recheck"]], plan[plan["recheck"]]
    finished = [who in done.get(item, ()) for item, who in zip(regular["item"],
                                                               regular["annotator"])]
    rechecked = [times[(who, item)] >= 2 for item, who in zip(again["item"], again["annotator"])]
    table = pd.DataFrame({
        "assigned": regular.groupby("annotator").size(),
        "done": pd.Series(finished, index=regular.index, dtype=bool).groupby(
            regular["annotator"]).sum(),
        "rechecks": again.groupby("annotator").size(),
        "rechecks_done": pd.Series(rechecked, index=again.index, dtype=bool).groupby(
            again["annotator"]).sum()}).fillna(0).astype(int).rename_axis("annotator")
    per_item = pd.Series(finished, index=regular.index, dtype=bool).groupby(regular["item"]).all()
    queues = {who: _pending(plan[plan["annotator"] == who], done, times, who)
              for who in dict.fromkeys(plan["annotator"])}
    return Progress(table, int(per_item.size), int(per_item.sum()), queues)


def _pending(plan: pd.DataFrame, done: dict, times: Counter, annotator: str) -> list[str]:
    """The annotator's items still to judge, in plan order; rechecks after them, each once the
    item's first judgement exists (so it is seen again later, not twice in a row)."""
    first = [i for i in dict.fromkeys(plan.loc[~plan["recheck"], "item"])
             if annotator not in done.get(i, ())]
    again = [i for i in dict.fromkeys(plan.loc[plan["recheck"], "item"])
             if times[(annotator, i)] == 1 and i not in first]
    return first + again


def pair_winner(sample_id: int, value: dict) -> int | None:
    """The winning sample of a preference event (None: tie, both bad or invalid)."""
    choice = value.get("choice") if isinstance(value, dict) else None
    return {"a": sample_id, "b": value.get("other")}.get(choice) if choice else None


def judgement_table(store) -> pd.DataFrame:
    """Every rating and preference in force as (subject, kind, annotator, value): ratings 1-5;
    preferences as "a" (the lower sample id won), "b" or "tie" (tie and both bad)."""
    rows = []
    for e in store.current_events(kinds=["rating", "preference"]).itertuples():
        value = e.value
        if e.kind == "preference":
            win = pair_winner(int(e.sample_id), e.value)
            low = int(e.subject.split(":")[1])
            value = "tie" if win is None else ("a" if win == low else "b")
        rows.append((e.subject, e.kind, e.annotator, value))
    return pd.DataFrame(rows, columns=["subject", "kind", "annotator", "value"])


def disagreements(store, *, spread: int = 2) -> list[dict]:
    """Items whose judges disagree: ratings at least ``spread`` apart, or a pair some judged
    one way and some the other. Each: subject, kind, sample ids, every judgement in force
    (annotator, value, critique), and the adjudication in force (or None)."""
    table = judgement_table(store)
    critiques = {(e.sample_id, e.annotator): e.value
                 for e in store.current_events(kinds=["critique"]).itertuples()}
    settled = {(a.kind, a.subject): a.value for a in store.adjudications().itertuples()}
    out = []
    for (subject, kind), group in table.groupby(["subject", "kind"], sort=False):
        values = list(group["value"])
        split = (max(values) - min(values) >= spread) if kind == "rating" \
            else {"a", "b"} <= set(values)
        if len(values) < 2 or not split:
            continue
        ids = [int(x) for x in subject.split(":")[1:]]
        out.append({"subject": subject, "kind": kind, "sample_ids": ids,
                    "judgements": [{"annotator": who, "value": v,
                                    "critique": critiques.get((ids[0], who)) if kind == "rating"
                                    else None}
                                   for who, v in zip(group["annotator"], values)],
                    "adjudicated": settled.get((kind, subject))})
    return out


def adjudicate(store, item: Any, value: Any, reviewer: str, *, note: str | None = None) -> int:
    """Record a reviewer's settled judgement: a rating 1-5 for a sample; for a pair, the
    winning sample's id or "tie". Returns its id."""
    key = item_key(store, item)
    if key.startswith("s:"):
        return store.adjudicate(key, "rating", value, reviewer, note)
    if key.startswith("q:"):
        raise ValueError("a prompt is settled sample by sample: adjudicate each sample's rating")
    pair = [int(x) for x in key.split(":")[1:]]
    winner = None if value == "tie" else check_id(value, "the winning sample")
    if winner is not None and winner not in pair:
        raise ValueError(f"the winner must be one of the pair's samples {pair}, got {winner}")
    return store.adjudicate(key, "preference", {"winner": winner}, reviewer, note)
