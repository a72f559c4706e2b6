"""The rating panel's suggested revisions and edit propagation (a mixin of
:class:`~lf_widgets.panels.rating.RatingPanel`).

Kept apart so that rating.py stays about rating. Per sample (across the panel's pages) the panel
keeps the candidate list it shows (:class:`~lf_widgets.panels._candidates.RevisionState`), the
candidate "Edit" put in the correction box, and the pattern edit a card offers to repeat. Every
action is a session verb: ``suggest_revisions`` (the candidates then come as ``"revision"``
events, on the refiner's thread), ``accept_revision``, ``reject_revisions``, ``propagate_edit``.

The mixin uses what the panel has: ``_session``, ``_lock``, ``cards``, ``cursor``, ``index``,
``annotator``, ``keyboard``, ``sample_ids()``, ``_current()``, ``_card(i)`` and ``_save(card,
what, action)`` (which shows a failure in the card instead of raising).
"""

from __future__ import annotations

import time

from ._candidates import (DIGIT_KEYS, RevisionState, call_verb, candidate_keys,
                          describe_correction, finished, revision_parts)

__all__ = ["CardRevisions", "RATING_KEYS", "RATING_HINT"]

# The keys of rating mode (the listener's default list; "s" and "a" join it when the focused
# card can suggest revisions / has an edit to propagate).
RATING_KEYS = ["1", "2", "3", "4", "5", "j", "k", "n", "p", "u"]
RATING_HINT = {"1-5": "rate", "j/k": "next/previous sample", "n/p": "next/previous prompt",
               "u": "undo"}
DIGITS = list(DIGIT_KEYS)  # candidates a key can pick (so k is at most 9 by key)
_KINDS = ("rating", "critique", "correction", "rejection")


class CardRevisions:
    """Suggest / accept / edit / reject revisions in a card; offer and apply a pattern edit."""

    _revisions: dict  # sample id -> RevisionState (open or last)
    _editing: dict  # sample id -> (state, j, candidate) put in the correction box by "Edit"
    _offers: dict  # sample id -> (correction event, [Suggestion], what the edit does)

    def _current_of(self, sample_id: int) -> dict:
        """The annotator's judgements in force on one sample (incl. a rejection)."""
        if not self.annotator:
            return {}
        df = self._session.judgements([sample_id], annotator=self.annotator,
                                      kinds=list(_KINDS))
        out: dict = {}
        for row in df.itertuples(index=False):
            if int(row.sample_id) == sample_id:
                out[row.kind] = row.value
                if row.kind == "correction":
                    out["correction_meta"] = getattr(row, "meta", None)
        return out

    # -- what is shown -------------------------------------------------------------------------
    def _state(self, card) -> RevisionState | None:
        return None if card.sample is None else self._revisions.get(card.sample.sample_id)

    def _show_candidates(self, card) -> None:
        focused = 0 <= self.cursor < len(self.cards) and self.cards[self.cursor] is card
        card.candidates.show(self._state(card), focused=focused)

    def _show_offer(self, card) -> None:
        offer = None if card.sample is None else self._offers.get(card.sample.sample_id)
        if offer is None:
            card.show_offer(None)
        else:
            _, suggestions, what = offer
            n = len(suggestions)
            card.show_offer(f"Apply the same edit ({what}) to {n} other sample"
                            + ("s" if n != 1 else "") + "?", n)

    def _focused(self):
        """The card the keys act on (None on an empty page)."""
        if 0 <= self.cursor < len(self.cards):
            return self.cards[self.cursor]
        return None

    def _update_keys(self) -> None:
        """The keys (and their hint) for the focused card: rating mode, or candidate mode while
        its candidate list is open (the digits then pick a candidate, not a rating)."""
        card = self._focused()
        state = None if card is None else self._state(card)
        hints = candidate_keys(state)
        if hints is not None:
            n = max(len(state.candidates), state.k, 1)
            keys = [*DIGITS[:max(n, 5)], "e", "x", "Escape", "j", "k", "n", "p", "u"]
            self.keyboard.set_keys(keys, {**hints, "j/k": "next/previous sample"})
            return
        keys, hints = list(RATING_KEYS), dict(RATING_HINT)
        if card is not None and not card.suggest_button.disabled:
            keys.append("s")
            hints["s"] = "suggest revisions"
        if card is not None and card.sample is not None and card.sample.sample_id in self._offers:
            keys.append("a")
            hints["a"] = "apply the same edit to the others"
        self.keyboard.set_keys(keys, hints)

    # -- events (any thread) -------------------------------------------------------------------
    def _on_revision(self, payload) -> None:
        """A candidate was written (model or refiner thread): show it in its card at once."""
        sample_id, index, candidate, request = revision_parts(payload)
        with self._lock:
            state = self._revisions.get(sample_id)
            if state is None or state.kind != "revision" or not state.mine(request):
                if sample_id not in set(self.sample_ids()) or request is None:
                    return
                # suggested from elsewhere (a cell, the critique queue): shown here too
                state = RevisionState(sample_id, k=int(getattr(request, "k", 0) or 0),
                                      critique=getattr(request, "critique", None),
                                      request=request)
                self._revisions[sample_id] = state
            elif not state.open:
                return
            state.candidates[index] = candidate
            self._refresh_sample(sample_id)

    def _on_revisions_done(self, payload) -> None:
        with self._lock:
            state = finished(self._revisions, payload)
            if state is not None:
                self._refresh_sample(state.sample_id)

    def _refresh_sample(self, sample_id: int, keys: bool = True) -> None:
        for card in self.cards:
            if card.sample is not None and card.sample.sample_id == sample_id:
                self._show_candidates(card)
                self._show_offer(card)
        if keys:
            self._update_keys()

    # -- suggested revisions -------------------------------------------------------------------
    def suggest(self, sample_idx: int, k: int = 3, *, refiner=None) -> bool:
        """Ask for ``k`` revisions of sample ``sample_idx`` that follow its saved critique (the
        "Suggest revisions" button, key ``s``); they stream into the card. ``refiner``: who
        writes them (default ``panel.refiner``; None: the session's own model). Returns whether
        the request was made (False, said in the card, when there is no saved critique)."""
        card = self._card(sample_idx)
        self.cursor = sample_idx
        sid = card.sample.sample_id
        if not self.annotator:
            card.set_status("✗ enter an annotator name first")
            return False
        critique = self._current_of(sid).get("critique")
        if not critique:
            card.set_status("✗ save a critique first: the revisions follow it")
            return False
        state = RevisionState(sid, k=int(k) if isinstance(k, int) else 0, critique=critique)
        with self._lock:
            old = self._revisions.get(sid)
            if old is not None and not old.done and hasattr(old.request, "cancel"):
                old.request.cancel()  # asked again: the earlier list is not shown any more
            self._revisions[sid] = state
            self._editing.pop(sid, None)
            self._refresh_sample(sid)
        own = self.annotator == self._session.annotator
        try:  # returns at once; the candidates come as "revision" events
            request = call_verb(self._session.suggest_revisions, sid,
                                critique=None if own else critique, k=k,
                                refiner=refiner if refiner is not None else self.refiner,
                                annotator=None if own else self.annotator)
        except Exception as err:  # said in the card: the person must know nothing is coming
            with self._lock:
                self._revisions.pop(sid, None)
                self._refresh_sample(sid)
            card.set_status(f"✗ could not suggest revisions: {err}")
            return False
        with self._lock:
            state.attach(request)
            self._refresh_sample(sid)
        card.set_status(f"asked for {state.k} revisions following the critique…")
        return True

    def _open_state(self, card) -> RevisionState:
        state = self._state(card)
        if state is None or not state.open:
            raise ValueError(f"sample {card.number} has no suggested revisions open "
                             "(Suggest revisions first)")
        return state

    def accept(self, sample_idx: int, j: int) -> bool:
        """Use candidate ``j`` (1-based, as numbered in the card; button "Use j", key ``j``
        while the list is open) as the correction of sample ``sample_idx``: a correction event
        with its provenance (refiner, critique, candidate). Returns whether it was saved."""
        card = self._card(sample_idx)
        self.cursor = sample_idx
        sid = card.sample.sample_id
        saved: list = []

        def action():
            state = self._open_state(card)
            candidate = state.get(j)
            saved.append((state, call_verb(self._session.accept_revision, sid, candidate,
                                           annotator=self.annotator), candidate))

        what = f"revision {j}"
        if not self._save(card, what, action):
            return False
        state, event, candidate = saved[0]
        self._closed(sid, state, card, candidate.text)
        card.set_status(f"✓ saved {self._provenance(event, what)} at {time.strftime('%H:%M:%S')}")
        self._next_open(sample_idx)
        self._after_correction(sample_idx, card, event)
        return True

    def edit(self, sample_idx: int, j: int, text: str | None = None) -> bool:
        """Put candidate ``j`` into sample ``sample_idx``'s correction box ("Edit", key ``e``
        for the first); saving the box then stores an edited revision. With ``text``, save
        that text at once as the edited revision. Returns whether it was put (and saved)."""
        card = self._card(sample_idx)
        self.cursor = sample_idx
        try:
            state = self._open_state(card)
            candidate = state.get(j)
        except ValueError as err:
            card.set_status(f"✗ {err}")
            return False
        editing = (state, j, candidate)
        self._editing[card.sample.sample_id] = editing
        card.correction.value = candidate.text if text is None else text
        if text is None:
            card.set_status(f"candidate {j} is in the correction box: edit it, then "
                            "Save correction")
            return True
        return self._save_edited(sample_idx, card, editing, text)

    def _save_edited(self, sample_idx: int, card, editing, text: str) -> bool:
        state, j, candidate = editing
        sid = card.sample.sample_id
        saved: list = []
        what = f"edited revision {j}"
        ok = self._save(card, what, lambda: saved.append(call_verb(
            self._session.accept_revision, sid, candidate, text=text, annotator=self.annotator)))
        if not ok:
            return False
        self._editing.pop(sid, None)
        self._closed(sid, state, card, text)
        card.set_status(f"✓ saved {self._provenance(saved[0], what)} at "
                        f"{time.strftime('%H:%M:%S')}")
        self._next_open(sample_idx)
        self._after_correction(sample_idx, card, saved[0])
        return True

    def reject(self, sample_idx: int) -> bool:
        """Turn down every candidate shown for sample ``sample_idx`` (button "Reject all", key
        ``x``): a rejection event, no training example. Returns whether it was saved."""
        card = self._card(sample_idx)
        self.cursor = sample_idx
        sid = card.sample.sample_id
        saved: list = []

        def action():
            state = self._open_state(card)
            saved.append(state)
            call_verb(self._session.reject_revisions, sid, state.ordered() or None,
                      annotator=self.annotator)

        if not self._save(card, "rejection", action):
            return False
        state = saved[0]
        n = len(state.candidates)
        self._closed(sid, state, card, None)
        card.set_status(f"✓ rejected {n} suggestion" + ("s" if n != 1 else "")
                        + f" at {time.strftime('%H:%M:%S')}")
        self._next_open(sample_idx)
        self._update_keys()
        return True

    def close_revisions(self, sample_idx: int) -> None:
        """Close sample ``sample_idx``'s candidate list without a judgement (key Esc): the keys
        rate again. Suggest revisions again to reopen it."""
        card = self._card(sample_idx)
        state = self._state(card)
        if state is not None:
            request = getattr(state, "request", None)
            if not state.done and hasattr(request, "cancel"):
                request.cancel()  # nobody waits for the rest
            self._closed(card.sample.sample_id, state, card, None)
            self._update_keys()

    def _closed(self, sid: int, state: RevisionState, card, text: str | None) -> None:
        """Close a list. The keys are left to the caller, which may move the focus first: no
        moment in between in which the page would drop a key it is about to need (x, 1)."""
        with self._lock:
            state.open = False
            if text is not None:
                card.correction.value = text
            self._refresh_sample(sid, keys=False)

    def _next_open(self, sample_idx: int) -> None:
        """After a candidate list of this page was settled, focus the next card that has one
        open (a propagated edit: 1, 1, 1 goes through the cards)."""
        n = len(self.cards)
        for step in range(1, n):
            i = (sample_idx + step) % n
            state = self._state(self.cards[i])
            if state is not None and state.open:
                self.cursor = i
                return

    @staticmethod
    def _provenance(event, fallback: str) -> str:
        meta = getattr(event, "meta", None)
        return describe_correction(meta) if isinstance(meta, dict) and meta.get("via") \
            else fallback

    # -- edit propagation ----------------------------------------------------------------------
    def _after_correction(self, sample_idx: int, card, event) -> None:
        """Ask the session whether the correction just saved is a pattern edit that the other
        samples of this panel could take too; if so, offer it in the card."""
        sid = card.sample.sample_id
        meta = getattr(event, "meta", None) or {}
        self._offers.pop(sid, None)
        propagate = getattr(self._session, "propagate_edit", None)
        if event is None or propagate is None or meta.get("via") == "propagated":
            self._refresh_sample(sid)
            return
        current = self._current()
        others = [i for i in self.sample_ids()
                  if i != sid and "correction" not in current.get(i, {})]
        suggestions = []
        if others:
            try:
                suggestions = list(call_verb(propagate, event, sample_ids=others,
                                             annotator=self.annotator) or [])
            except Exception as err:  # the correction is saved; only the offer is missing
                card.set_status(f"✓ saved correction; no edit to offer to the others ({err})")
        if suggestions:
            edit = getattr(suggestions[0], "edit", None)
            what = edit.describe() if hasattr(edit, "describe") else "the same change"
            self._offers[sid] = (event, suggestions, what)
        with self._lock:
            self._refresh_sample(sid)

    def propagate(self, sample_idx: int) -> list:
        """Show the edit that sample ``sample_idx``'s correction made as a suggestion in every
        other card it applies to (the offer's button, key ``a``); each is then used with ``1``
        (a correction with provenance "propagated from correction N") or turned down with
        ``x``. Returns the suggestions (empty when there is no edit to offer)."""
        card = self._card(sample_idx)
        sid = card.sample.sample_id
        offer = self._offers.pop(sid, None)
        if offer is None:
            card.set_status("✗ no edit to apply to other samples (save a correction that adds, "
                            "removes or replaces a phrase)")
            return []
        event, suggestions, what = offer
        source = f"sample {card.number} of prompt {self.index + 1}"
        with self._lock:
            for suggestion in suggestions:
                target = int(suggestion.sample_id)
                self._revisions[target] = RevisionState(
                    target, kind="propagated", k=1, candidates={0: suggestion}, done=True,
                    edit=what, source=source)
                self._editing.pop(target, None)
            for other in self.cards:
                self._show_candidates(other)
                self._show_offer(other)
        here = {c.sample.sample_id for c in self.cards if c.sample is not None}
        elsewhere = sum(1 for s in suggestions if int(s.sample_id) not in here)
        note = f" ({elsewhere} on other prompts' pages)" if elsewhere else ""
        card.set_status(f"suggested the edit to {len(suggestions)} other sample"
                        + ("s" if len(suggestions) != 1 else "") + note
                        + ": key 1 uses it, x turns it down")
        self._next_open(sample_idx)
        self._update_keys()
        return suggestions
