"""The Session's verbs for learning from critiques (a mixin of :class:`lf_widgets.session.Session`).

A critique says in words what is wrong; these verbs turn it into a training target. A refiner
writes candidate revisions (:mod:`lf_widgets.refine`), the person accepts one (a correction with
its provenance in ``meta``), edits one, or rejects them all (a ``"rejection"`` event, no
example); a correction that is a pattern edit can be proposed on other samples
(:meth:`propagate_edit`). Corrections feed SFT/DPO/KTO exactly as typed ones do.

The mixin uses only what the Session has: ``store``, ``annotator``, ``_emit``, ``_show``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._judgements import check_annotator, check_id
from .refine import Candidate, resolve_refiner
from .revisions import (Revision, RevisionRequest, RevisionsDone, Suggestion, correction_meta)

__all__ = ["SessionRevisions"]

_KEPT = 8  # recent requests kept per sample, so an accepted Candidate finds its provenance


def _sample_id(value: Any, name: str = "sample_id") -> int:
    try:
        return check_id(value, name)
    except ValueError:
        raise ValueError(f"{name} must be an integer sample id, got {value!r}") from None


class SessionRevisions:
    """Verbs: suggest_revisions, accept_revision, reject_revisions, propagate_edit,
    review_critiques."""

    # -- suggest ---------------------------------------------------------------------------------
    def suggest_revisions(self, sample_id: int, critique: str | None = None, k: int = 3,
                          refiner=None, *, seed: int | None = None,
                          annotator: str | None = None) -> RevisionRequest:
        """Have a refiner write ``k`` revisions of a sample that follow a critique.

        Returns a :class:`~lf_widgets.revisions.RevisionRequest` at once; the candidates stream
        in as ``"revision"`` events (``Revision(sample_id, index, candidate, request)``), then one
        ``"revisions_done"`` (``RevisionsDone(sample_id, candidates, request)``), also when the
        refiner fails (``request.error``) or is stopped. ``request.wait()`` blocks for them.

        Parameters
        ----------
        sample_id : int
            The sample to revise.
        critique : str, optional
            What the revision must fix; default: the annotator's current critique of the sample.
        k : int
            How many candidates (strategies and temperatures mixed, see :mod:`lf_widgets.refine`).
        refiner : optional
            None or "own" (the session's model with its adapter off), a model folder or hub id,
            a :class:`~lf_widgets.remote.RemoteChatModel`, or a :class:`~lf_widgets.refine.Refiner`.
        seed : int, optional
            Makes the sampled candidates repeatable.

        Raises
        ------
        ValueError
            For an unknown ``sample_id``, a sample with no critique (and none given), or ``k``
            that is not a positive integer.
        """
        sid = _sample_id(sample_id)
        if isinstance(k, bool) or not hasattr(k, "__index__") or int(k) < 1:
            raise ValueError(f"k must be a positive integer (candidates to write), got {k!r}")
        who = self._revision_annotator(annotator)
        prompt, answer = self._revision_sample(sid)
        current, event_id = self._current_value(sid, "critique", who)
        if critique is None:
            if current is None:
                raise ValueError(f"sample {sid} has no critique by {who!r}: record_critique("
                                 f"{sid}, '...') first, or pass critique='...'")
            critique = current
        elif not isinstance(critique, str) or not critique.strip():
            raise ValueError(f"critique must be non-empty text, got {critique!r}")
        elif critique != current:
            event_id = None  # a critique given here, not the one stored
        chosen = resolve_refiner(refiner, self)
        request = RevisionRequest(sid, prompt, answer, critique, int(k), chosen.name, event_id,
                                  who)
        kept = self._revision_requests().setdefault(sid, [])
        kept.append(request)
        del kept[:-_KEPT]

        def arrived(index: int, candidate: Candidate) -> None:  # on the refiner's thread
            request._add(index, candidate)
            self._emit("revision", Revision(sid, index, candidate, request))

        def finished(future) -> None:
            from ._worker import Cancelled

            error = None if future.cancelled() else future.exception()
            stopped = future.cancelled() or isinstance(error, (Cancelled, KeyboardInterrupt))
            state = "cancelled" if stopped else "failed" if error is not None else "done"
            request._finish(state, error if state == "failed" else None)
            try:
                self._emit("revisions_done", RevisionsDone(sid, list(request.candidates),
                                                           request))
            finally:
                request._release()  # wait() returns after the listeners have run

        request.job = chosen.submit(prompt, answer, critique, int(k), seed=seed,
                                    on_candidate=arrived)
        request.job.future.add_done_callback(finished)
        return request

    # -- accept / reject -------------------------------------------------------------------------
    def accept_revision(self, sample_id: int, candidate: Candidate | Suggestion | int, *,
                        text: str | None = None, annotator: str | None = None):
        """Make a suggested revision the sample's correction (a training target).

        ``candidate``: an index into the sample's latest :meth:`suggest_revisions` candidates
        (0-based), a :class:`~lf_widgets.refine.Candidate` (of any recent request), or a
        :class:`~lf_widgets.revisions.Suggestion` from :meth:`propagate_edit`. ``text``: the
        candidate as the person edited it. The correction's ``meta`` records ``via``
        ("revision", "edited_revision" when ``text`` differs, "propagated"), the refiner, the
        critique and its event, the candidate's index, ``k`` and strategy, the candidate's own
        text when edited, the correction a propagated edit came from; the store adds the edit
        distance. Returns the committed :class:`~lf_widgets.store.Event`.
        """
        sid = _sample_id(sample_id)
        who = self._revision_annotator(annotator)
        chosen, index, request = self._chosen(sid, candidate)
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise ValueError(f"text must be non-empty text (the edited revision), got {text!r}")
        edited = text is not None and text != chosen.text
        if not edited and not chosen.text.strip():
            raise ValueError(f"candidate {index if index is not None else ''} is empty text: "
                             "edit it (text='...') or pick another")
        propagated = isinstance(chosen, Suggestion)
        via = "edited_revision" if edited else "propagated" if propagated else "revision"
        critique, event_id = (None, None)
        if not propagated and (request is None or index is None):
            critique, event_id = self._current_value(sid, "critique", who)
        meta = correction_meta(via, candidate=chosen, index=index,
                               request=request,
                               critique=critique, critique_event=event_id,
                               edited_from=chosen.text if edited else None)
        return self._record_with_meta(sid, "correction", text if edited else chosen.text, who,
                                      meta)

    def reject_revisions(self, sample_id: int, candidates: Sequence | None = None, *,
                         annotator: str | None = None):
        """Record that none of the suggested revisions will do (a ``"rejection"`` event; no
        training example). ``candidates``: those rejected (Candidates, Suggestions or texts);
        default the sample's latest suggested ones, whose refiner is then stopped if it is
        still writing. Returns the committed Event."""
        sid = _sample_id(sample_id)
        who = self._revision_annotator(annotator)
        request = self._latest_request(sid)
        if candidates is None:
            if request is None or not request.candidates:
                raise ValueError(f"sample {sid} has no suggested revisions to reject: "
                                 "suggest_revisions() first, or pass candidates=[...]")
            if not request.done:
                request.cancel()
            chosen = list(request.candidates)
        else:
            single = isinstance(candidates, (str, Candidate, Suggestion))
            chosen = [candidates] if single else list(candidates)
            if not chosen or not all(isinstance(c, (str, Candidate, Suggestion)) for c in chosen):
                raise ValueError("candidates must be a non-empty list of Candidates, Suggestions "
                                 f"or texts, got {candidates!r}")
        texts = [c if isinstance(c, str) else c.text for c in chosen]
        first = next((c for c in chosen if not isinstance(c, str)), None)
        refiner = (first.refiner if isinstance(first, Candidate) else "propagated"
                   if isinstance(first, Suggestion) else request.refiner if request else "")
        if request is not None and not isinstance(first, Suggestion):
            critique, event_id = request.critique, request.critique_event
        else:
            critique, event_id = self._current_value(sid, "critique", who)
        value = {"candidates": texts, "refiner": refiner, "critique": critique or ""}
        meta = {"strategies": [c.strategy if not isinstance(c, str) else "" for c in chosen]}
        if event_id is not None:
            meta["critique_event"] = event_id
        return self._record_with_meta(sid, "rejection", value, who, meta)

    # -- propagate -------------------------------------------------------------------------------
    def propagate_edit(self, correction, sample_ids: Sequence[int] | None = None, *,
                       annotator: str | None = None) -> list[Suggestion]:
        """The same edit, proposed on other samples, when a correction is a pattern edit.

        ``correction``: a correction :class:`~lf_widgets.store.Event`, or a sample id (its
        current correction by the annotator). When the correction adds a phrase at the start or
        end, or replaces or removes one phrase everywhere
        (:func:`lf_widgets.edits.find_pattern_edit`),
        each of ``sample_ids`` (default: every other stored sample; panels pass the samples they
        show) that the edit changes and that has no correction by the annotator yet gets a
        :class:`~lf_widgets.revisions.Suggestion`; accept one with :meth:`accept_revision` (its
        correction records ``via="propagated"`` and ``propagated_from``), reject with
        :meth:`reject_revisions`. A general rewrite gives ``[]``.
        """
        from .edits import find_pattern_edit

        who = self._revision_annotator(annotator)
        event_id, source, corrected = self._correction_of(correction, who)
        stored = self.store.samples()
        texts = dict(zip(stored["sample_id"].astype(int), stored["text"]))
        edit = find_pattern_edit(texts[source], corrected)
        if edit is None:
            return []
        if sample_ids is None:
            targets = list(texts)
        else:
            if isinstance(sample_ids, (str, bytes)) or not hasattr(sample_ids, "__iter__"):
                raise ValueError(f"sample_ids must be a list of sample ids, got {sample_ids!r}")
            targets = [_sample_id(t, "sample_ids") for t in sample_ids]
            if unknown := [t for t in targets if t not in texts]:
                raise ValueError(f"sample_ids: no such samples {unknown} in {self.store.path}")
        done = self.store.current_events(kinds=["correction"], annotator=who)
        done = {int(s) for s, v in zip(done["sample_id"], done["value"])
                if isinstance(v, str) and v.strip()}
        out = []
        for sid in dict.fromkeys(targets):
            if sid == source or sid in done:
                continue
            revised = edit.apply(texts[sid])
            if revised is not None:
                out.append(Suggestion(sid, revised, edit, event_id))
        return out

    # -- the queue -------------------------------------------------------------------------------
    def review_critiques(self, *, display: bool = True, **options):
        """A queue of the annotator's critiqued, uncorrected samples, one at a time with its
        suggested revisions: keys 1–k accept, e edit, x reject, n / p next / previous
        (:class:`~lf_widgets.panels.critiques.CritiqueQueuePanel`; ``options`` such as ``k``,
        ``refiner`` and ``annotator`` go to it)."""
        from .panels.critiques import CritiqueQueuePanel

        return self._show(CritiqueQueuePanel(self, **options), display)

    # -- helpers -----------------------------------------------------------------------------------
    def _close_refiners(self) -> None:
        """Close the refiners this session made (a LocalRefiner's model and thread, a
        RemoteRefiner's thread); the session's own model is left to Session.close."""
        for _, refiner in list(self.__dict__.get("_refiners", {}).values()):
            refiner.close()
        self.__dict__.get("_refiners", {}).clear()

    def _revision_requests(self) -> dict[int, list[RevisionRequest]]:
        """sample id -> its recent RevisionRequests, oldest first (the last one is what an index
        in accept_revision means; a Candidate is looked up in all of them)."""
        return self.__dict__.setdefault("_revisions_by_sample", {})

    def _latest_request(self, sid: int) -> RevisionRequest | None:
        kept = self._revision_requests().get(sid)
        return kept[-1] if kept else None

    def _revision_annotator(self, annotator: str | None) -> str:
        return self.annotator if annotator is None else check_annotator(annotator)

    def _revision_sample(self, sid: int) -> tuple[str | None, str]:
        _, rows = self.store._rows(
            "SELECT p.text, s.text FROM samples s LEFT JOIN prompts p ON p.id = s.prompt_id"
            " WHERE s.id = ?", (sid,))
        if not rows:
            raise ValueError(f"sample_id {sid}: there is no such sample in {self.store.path}")
        return rows[0][0], rows[0][1]

    def _current_value(self, sid: int, kind: str, who: str) -> tuple[Any, int | None]:
        """(value, event id) of the annotator's current ``kind`` judgement of a sample; an
        empty text counts as none."""
        ev = self.store.current_events(kinds=[kind], sample_ids=[sid], annotator=who)
        ev = ev[ev["sample_id"] == sid]
        if ev.empty:
            return None, None
        row = ev.iloc[-1]
        if isinstance(row["value"], str) and not row["value"].strip():
            return None, None
        return row["value"], int(row["id"])

    def _chosen(self, sid: int, candidate):
        """(the Candidate or Suggestion, its index, the request it came from) — index and
        request None when it came from no request of this session."""
        if isinstance(candidate, Suggestion):
            if candidate.sample_id != sid:
                raise ValueError(f"candidate is a suggestion for sample {candidate.sample_id}, "
                                 f"not for sample_id {sid}")
            return candidate, None, None
        if isinstance(candidate, Candidate):
            for request in reversed(self._revision_requests().get(sid, [])):
                for i, c in enumerate(list(request.candidates)):
                    if c is candidate:  # the very object an event handed out
                        return candidate, i, request
            for request in reversed(self._revision_requests().get(sid, [])):
                if candidate in request.candidates:  # an equal one (e.g. rebuilt by the caller)
                    return candidate, request.candidates.index(candidate), request
            return candidate, None, None
        request = self._latest_request(sid)
        if isinstance(candidate, bool) or not hasattr(candidate, "__index__"):
            raise ValueError("candidate must be an index, a Candidate or a Suggestion, got "
                             f"{candidate!r}")
        written = request.candidates if request is not None else []
        if not written:
            raise ValueError(f"candidate {int(candidate)}: sample {sid} has no suggested "
                             "revisions yet (suggest_revisions() first)")
        if not 0 <= int(candidate) < len(written):
            raise ValueError(f"candidate must be from 0 to {len(written) - 1} (the sample's "
                             f"{len(written)} candidates), got {int(candidate)}")
        return written[int(candidate)], int(candidate), request

    def _correction_of(self, correction, who: str) -> tuple[int, int, str]:
        """(event id, sample id, corrected text) of a correction Event or a sample's current one."""
        from .store import Event

        if isinstance(correction, Event):
            if correction.kind != "correction" or correction.sample_id is None:
                raise ValueError(f"correction must be a correction event, got a "
                                 f"{correction.kind!r} event")
            return correction.id, int(correction.sample_id), correction.value
        sid = _sample_id(correction, "correction")
        self._revision_sample(sid)
        value, event_id = self._current_value(sid, "correction", who)
        if value is None:
            raise ValueError(f"correction: sample {sid} has no correction by {who!r}")
        return event_id, sid, value

    def _record_with_meta(self, sid: int, kind: str, value, who: str, meta: dict | None):
        """Commit one judgement (with its provenance) and announce it, as Session._record does."""
        if meta is None:
            event = self.store.record(sid, kind, value, who)
        else:
            event = self.store.record(sid, kind, value, who, meta=meta)
        self._emit("judgement", event)
        return event
