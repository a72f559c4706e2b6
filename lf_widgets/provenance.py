"""Adapter provenance: which judgements an adapter learnt from, and whether they still hold.

An adapter folder's ``lf_widgets.json`` records the ids of the judgements it was trained on
(their range, count and a SHA-256 of their content) and how often it visited each example.
Undoing a judgement it saw, or replacing it with a new one, makes the adapter *stale*: it
follows feedback that is no longer the person's. The leak guard's second half is here too: an
A/B test on prompts the tuned adapter was trained on says so.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

__all__ = ["PROVENANCE_KINDS", "provenance", "stale_judgements", "adapters_table", "staleness",
           "with_seen_column", "leak_notes"]

PROVENANCE_KINDS = ("rating", "correction", "preference")  # what training reads


def provenance(owner, store) -> dict:
    """What ``owner``'s adapter was trained on, for its folder's metadata: the ids of the
    judgements (range, count, SHA-256 of their content, so an edited log is noticed) and the
    visits per example (the overfitting guard goes on after a resume)."""
    ids = sorted(owner.seen_events)
    events = store.events()
    mine = events[events["id"].isin(ids)].sort_values("id")
    content = json.dumps([[int(r.id), r.kind, r.value, r.annotator] for r in mine.itertuples()],
                         ensure_ascii=False, sort_keys=True, default=str)
    return {"judgements": {"ids": ids, "first_id": ids[0] if ids else None,
                           "last_id": ids[-1] if ids else None, "count": len(ids),
                           "sha256": hashlib.sha256(content.encode()).hexdigest()},
            "visits": dict(owner.visits)}


def stale_judgements(seen, store) -> set[int]:
    """Of the judgements ``seen`` by an adapter, those no longer in force (undone, or replaced
    by a later judgement of the same kind)."""
    if not seen:
        return set()
    current = set(int(i) for i in store.current_events(kinds=PROVENANCE_KINDS)["id"])
    return set(seen) - current


def adapters_table(owner, store) -> pd.DataFrame:
    """The store's checkpoints with ``judgements``, ``stale`` and ``current`` columns."""
    from .adapters import read_meta

    rows = []
    for r in store.checkpoints().itertuples(index=False):
        meta = read_meta(r.path) if Path(r.path).is_dir() else {}
        seen = set(meta.get("judgements", {}).get("ids") or [])
        rows.append({"step": r.step, "path": r.path, "objective": r.objective,
                     "judgements": len(seen), "stale": bool(stale_judgements(seen, store)),
                     "current": owner is not None and owner.adapter_step == r.step})
    return pd.DataFrame(rows, columns=["step", "path", "objective", "judgements", "stale",
                                       "current"])


def staleness(owner, store) -> str:
    """"" when the adapter in use learnt only from judgements still in force; else a warning."""
    stale = stale_judgements(owner.seen_events, store)
    return (f"the adapter learnt from {len(stale)} judgement(s) that were undone or changed "
            "since: train again to follow the feedback as it is now") if stale else ""


def with_seen_column(feedback: pd.DataFrame, seen, store) -> pd.DataFrame:
    """``feedback`` with ``seen_by_adapter``: the adapter in use was trained on that row's
    rating or correction."""
    if feedback.empty:
        return feedback.assign(seen_by_adapter=pd.Series(dtype=bool))
    current = store.current_events(kinds=["rating", "correction"])
    trained = {(int(e.sample_id), e.annotator) for e in current.itertuples() if int(e.id) in seen}
    feedback["seen_by_adapter"] = [(int(r.sample_id), r.annotator) in trained
                                   for r in feedback[["sample_id", "annotator"]].itertuples(index=False)]
    return feedback


def leak_notes(owner, store, test_id: str, contenders) -> list[str]:
    """A warning when the tuned adapter was trained on prompts of this A/B test."""
    if not {"tuned", "tuned+goal"} & set(contenders) or not owner.seen_events:  # both: tuned adapter
        return []
    samples = store.samples()
    tested = {p for p, params in zip(samples["prompt"], samples["params"])
              if params.get("ab_test") == test_id}
    events = store.events()
    seen_samples = events[events["id"].isin(owner.seen_events)]["sample_id"]
    trained = set(samples[samples["sample_id"].isin(seen_samples)]["prompt"])
    leaked = sorted(p for p in tested & trained if isinstance(p, str))
    return [f"{len(leaked)} of {len(tested)} prompts of this test were in the tuned adapter's "
            "training data: on them the result flatters it"] if leaked else []
