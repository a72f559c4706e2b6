"""Revisions in progress and what a person does with them: plain Python, no torch.

:meth:`Session.suggest_revisions <lf_widgets.session.Session.suggest_revisions>` returns a
:class:`RevisionRequest` at once; its candidates stream in as ``"revision"`` events
(:class:`Revision`), then one ``"revisions_done"`` (:class:`RevisionsDone`). Accepting one
writes a correction whose ``meta`` says where it came from (the keys of
``lf_widgets._judgements.CORRECTION_META``); :func:`correction_meta` builds it.
:class:`Suggestion` is a propagated pattern edit (``Session.propagate_edit``) waiting to be
accepted or rejected.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple

import pandas as pd

from .edits import PatternEdit
from .refine import Candidate

__all__ = ["Revision", "RevisionsDone", "RevisionRequest", "Suggestion", "correction_meta",
           "critiques_to_review"]

_ids = itertools.count(1)


class Revision(NamedTuple):
    """The ``"revision"`` event: candidate ``index`` of a sample has been written.

    ``payload[:3]`` is ``(sample_id, index, candidate)``; ``request`` tells two requests for
    the same sample apart (a card and the critique queue may both ask).
    """

    sample_id: int
    index: int  # 0-based; "Use 1" is index 0
    candidate: Candidate
    request: RevisionRequest  # the request it belongs to


class RevisionsDone(NamedTuple):
    """The ``"revisions_done"`` event: the refiner finished, was stopped or failed
    (``request.state``, ``request.error``)."""

    sample_id: int
    candidates: list  # the Candidates written, in index order (fewer than k if it stopped)
    request: RevisionRequest


class RevisionRequest:
    """``k`` candidate revisions of one sample, written in the background.

    ``candidates`` fills in as they arrive; :meth:`wait` blocks until the end and returns them;
    :meth:`cancel` stops after the token in progress (written candidates stay). ``state`` goes
    queued → running → done | cancelled | failed (``error`` then says why).
    """

    def __init__(self, sample_id: int, prompt: str | None, answer: str, critique: str, k: int,
                 refiner: str, critique_event: int | None = None, annotator: str | None = None):
        self.id = next(_ids)
        self.annotator = annotator  # whose critique it follows
        self.sample_id, self.prompt, self.answer = sample_id, prompt, answer
        self.critique, self.k, self.refiner = critique, k, refiner
        self.critique_event = critique_event  # the critique event it follows, when one is stored
        self.candidates: list[Candidate] = []
        self.state = "queued"
        self.error: BaseException | None = None
        self.job = None  # the refiner's job, set when it is queued
        self._finished = threading.Event()

    def __repr__(self) -> str:
        return (f"RevisionRequest(sample {self.sample_id}: {len(self.candidates)} of {self.k} "
                f"candidates, {self.state})")

    @property
    def done(self) -> bool:
        """True once the refiner has stopped (finished, cancelled or failed)."""
        return self.state in ("done", "cancelled", "failed")

    def wait(self, timeout: float | None = None) -> list[Candidate]:
        """Block until the refiner stops; the candidates. Re-raises the refiner's failure.
        Ctrl-C while waiting cancels the job (written candidates stay)."""
        if self.job is not None:
            try:
                self.job.result(timeout)
            except KeyboardInterrupt:
                pass  # Job.result cancelled the job and waited for it
            except Exception:  # noqa: S110 -- the state says what happened
                pass
        self._finished.wait(timeout)
        if self.state == "failed" and self.error is not None:
            raise self.error
        return list(self.candidates)

    def cancel(self) -> None:
        """Stop after the token in progress; the candidates written so far stay."""
        if self.job is not None:
            self.job.cancel()

    # -- for the session ----------------------------------------------------------------------
    def _add(self, index: int, candidate: Candidate) -> None:
        self.state = "running"
        self.candidates.append(candidate)
        assert len(self.candidates) == index + 1, "candidates arrive in order"

    def _finish(self, state: str, error: BaseException | None) -> None:
        self.state, self.error = state, error

    def _release(self) -> None:
        self._finished.set()


@dataclass(frozen=True)
class Suggestion:
    """A pattern edit of one sample, proposed from another sample's correction."""

    sample_id: int  # the sample it would correct
    text: str  # the sample's text with the edit made
    edit: PatternEdit  # the edit (``edit.describe()`` says it in words)
    propagated_from: int  # id of the correction event the edit was found in

    @property
    def strategy(self) -> str:
        return f"pattern_edit:{self.edit.kind}"


def correction_meta(via: str, *, candidate: Candidate | Suggestion | None = None,
                    index: int | None = None, request: RevisionRequest | None = None,
                    critique: str | None = None, critique_event: int | None = None,
                    edited_from: str | None = None) -> dict[str, Any]:
    """The provenance of a correction that came from a revision or a propagated edit.

    Only keys with a value are written (the store adds ``edit_distance`` and ``edit_ratio``).
    """
    meta: dict[str, Any] = {"via": via}
    if isinstance(candidate, Suggestion):
        meta.update(strategy=candidate.strategy, propagated_from=candidate.propagated_from)
    elif candidate is not None:
        meta.update(refiner=candidate.refiner, strategy=candidate.strategy)
    if request is not None:
        meta["candidates"] = request.k
        critique = request.critique if critique is None else critique
        critique_event = request.critique_event if critique_event is None else critique_event
    if index is not None:
        meta["candidate"] = int(index)
    if critique is not None:
        meta["critique"] = critique
    if critique_event is not None:
        meta["critique_event"] = int(critique_event)
    if edited_from is not None:
        meta["candidate_text"] = edited_from
    return meta


def critiques_to_review(store, annotator: str) -> pd.DataFrame:
    """The annotator's critiqued samples that have no correction of theirs yet, oldest first:
    sample_id, prompt, text, critique, critique_event (what ``review_critiques`` goes through)."""
    ev = store.current_events(kinds=["critique", "correction"], annotator=annotator)
    cols = ["sample_id", "prompt", "text", "critique", "critique_event"]
    if ev.empty:
        return pd.DataFrame(columns=cols)
    ev = ev[ev["sample_id"].notna()]
    critiques = ev[(ev["kind"] == "critique")
                   & ev["value"].map(lambda v: isinstance(v, str) and bool(v.strip()))]
    corrected = set(ev[(ev["kind"] == "correction")
                       & ev["value"].map(lambda v: isinstance(v, str) and bool(v.strip()))]
                    ["sample_id"].astype(int))
    critiques = critiques[~critiques["sample_id"].astype(int).isin(corrected)]
    critiques = critiques.rename(columns={"value": "critique", "id": "critique_event"})[
        ["sample_id", "critique", "critique_event"]].astype({"sample_id": int})
    samples = store.samples()[["sample_id", "prompt", "text"]].astype({"sample_id": int})
    out = critiques.merge(samples, on="sample_id")
    return out[cols].sort_values("critique_event").reset_index(drop=True)
