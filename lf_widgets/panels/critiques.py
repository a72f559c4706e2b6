"""CritiqueQueuePanel: critiqued, uncorrected samples, one at a time, turned into training targets.

``session.review_critiques()`` shows it. Each item is a sample the annotator critiqued and has
not corrected: its prompt, its answer, the critique, and candidate revisions that follow the
critique, streaming in as the refiner writes them (``session.suggest_revisions``; the panel asks
for the item shown and, so that the person does not wait, for the next one too). Keyboard-first:

====== ==============================================================================
key    what it does (method twin)
====== ==============================================================================
1..k   use candidate k as the correction (:meth:`~CritiqueQueuePanel.accept`), then next
e      put the first candidate in the correction box to edit; Save correction stores an
       edited revision (:meth:`~CritiqueQueuePanel.edit`, :meth:`~CritiqueQueuePanel.correct`)
x      reject every candidate: a rejection event, no example (:meth:`~CritiqueQueuePanel.reject`)
n / p  next / previous item (:meth:`~CritiqueQueuePanel.next`, :meth:`~CritiqueQueuePanel.prev`)
s      ask for new candidates (:meth:`~CritiqueQueuePanel.suggest`)
a      repeat the correction's pattern edit on the other open items
       (:meth:`~CritiqueQueuePanel.propagate`)
u      undo the annotator's latest correction or rejection in this queue
====== ==============================================================================

The counts ("3 of 30 turned into training targets · 1 rejected") are read from the log on
every judgement, whichever panel or cell made it. A thin view: every action is a session verb,
and every untrusted text (prompt, answer, critique, candidates, refiner names, errors) goes
through :func:`~lf_widgets.panels._text.escaped_html`.
"""

from __future__ import annotations

import threading
import time

import ipywidgets as widgets
import traitlets

from ._candidates import (DIGIT_KEYS, CandidateList, RevisionState, call_verb, candidate_keys,
                          describe_correction, finished, listen, revision_parts)
from ._display import DisplayOnce
from ._keys import PANEL_CLASS, KeyListener
from ._text import escaped_html

__all__ = ["CritiqueQueuePanel"]

_TEXT = "white-space:pre-wrap;border-left:3px solid #ccc;padding-left:8px;margin:2px 0 6px 0"
_LABEL = "font-weight:bold;margin-top:4px"
_SETTLED = ("correction", "rejection")  # what takes an item off the open list


class CritiqueQueuePanel(DisplayOnce, widgets.VBox):
    """The annotator's critiqued, uncorrected samples, each with suggested revisions.

    Parameters
    ----------
    session : lf_widgets.Session
        Owner of the model and the log; suggestions, corrections and rejections are its verbs.
    k : int
        Candidates asked for per item (keys 1..k pick one).
    refiner : optional
        Who writes the candidates (``session.suggest_revisions``'s ``refiner``): None for the
        session's own model (adapter off), a model folder or hub id, a RemoteChatModel, or a
        Refiner. Also the attribute ``panel.refiner``.
    annotator : str, optional
        Whose critiques are listed and who the corrections are recorded for; default the
        session's annotator.
    prefetch : bool
        Also ask for the next item's candidates while the person looks at this one.
    """

    index = traitlets.Int(0, help="Which item is shown (0-based).")
    total = traitlets.Int(0, help="Items in the queue (critiqued and uncorrected when made).")
    corrected = traitlets.Int(0, help="Items with a correction in force (training targets).")
    rejected = traitlets.Int(0, help="Items whose suggestions were rejected (no correction).")

    def __init__(self, session, *, k: int = 3, refiner=None, annotator: str | None = None,
                 prefetch: bool = True, **kwargs):
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(DIGIT_KEYS):
            raise ValueError(f"k must be an integer from 1 to {len(DIGIT_KEYS)} (one key each), "
                             f"got {k!r}")
        self._session, self.k, self.refiner, self.prefetch = session, k, refiner, prefetch
        self.annotator = session.annotator if annotator is None else annotator
        self._lock = threading.RLock()  # candidates arrive on the refiner's thread
        self._revisions: dict[int, RevisionState] = {}
        self._editing: dict[int, tuple[RevisionState, int, object]] = {}
        self._offers: dict[int, tuple[object, list, str]] = {}
        self.items, self._critiques = self._find_items()
        self.header = widgets.HTML()
        self.position = widgets.HTML()
        self.body = widgets.HTML()
        self.candidates = CandidateList(self.accept, self.edit, self.reject, self.next,
                                        esc=None, more_keys="n next · s suggest again")
        self.candidates.close_button.description = "Skip"
        self.candidates.close_button.tooltip = "next item, nothing recorded (key n)"
        self.correction = widgets.Textarea(placeholder="the answer it should have been",
                                           layout=widgets.Layout(flex="1 1 auto", height="64px"))
        self.save_correction = widgets.Button(description="Save correction")
        self.save_correction.on_click(lambda _: self.correct(self.correction.value))
        self.suggest_button = widgets.Button(description="Suggest again", icon="magic",
                                             tooltip="new candidates (key s)")
        self.suggest_button.on_click(lambda _: self.suggest())
        self.offer_text = widgets.HTML()
        self.offer_button = widgets.Button(description="Apply to the others", icon="clone",
                                           layout=widgets.Layout(width="auto"),
                                           tooltip="suggest the same edit on the other open "
                                                   "items (key a)")
        self.offer_button.on_click(lambda _: self.propagate())
        self.offer = widgets.HBox([self.offer_text, self.offer_button],
                                  layout=widgets.Layout(display="none"))
        self.status = widgets.HTML()
        self.last = widgets.HTML()  # what happened to the previous item (the panel moved on)
        self.prev_button = widgets.Button(description="◀ Prev", tooltip="previous item (key p)")
        self.next_button = widgets.Button(description="Next ▶", tooltip="next item (key n)")
        self.prev_button.on_click(lambda _: self.prev())
        self.next_button.on_click(lambda _: self.next())
        self.keyboard = KeyListener([], {}, self.press)
        super().__init__([
            self.header, self.position, self.body, self.candidates,
            widgets.HBox([self.correction, widgets.VBox(  # the buttons keep their width
                [self.save_correction, self.suggest_button],
                layout=widgets.Layout(flex="0 0 auto"))]),
            self.offer, self.status, self.last,
            widgets.HBox([self.prev_button, self.next_button]), self.keyboard,
        ], **kwargs)
        self.add_class(PANEL_CLASS)
        self.add_class("lfw-critiques")
        self.total = len(self.items)
        self._unsubscribe = [session.on("judgement", self._on_judgement),
                             session.on("undo", self._on_judgement)]
        self._unsubscribe += listen(session, self._on_revision, self._on_revisions_done)
        self._count()
        self._render()

    # -- the items -----------------------------------------------------------------------------
    def _find_items(self) -> tuple[list, dict[int, str]]:
        """Samples with a critique and no correction in force by the annotator, oldest critique
        first; and each one's critique."""
        df = self._session.judgements(annotator=self.annotator, kinds=["critique", "correction"])
        critiques: dict[int, str] = {}
        corrected = set()
        for row in df.itertuples(index=False):
            if row.kind == "critique" and isinstance(row.value, str) and row.value.strip():
                critiques[int(row.sample_id)] = row.value
            elif row.kind == "correction":
                corrected.add(int(row.sample_id))
        samples = {s.sample_id: s for s in self._session.samples()}
        ids = [sid for sid in critiques if sid not in corrected and sid in samples]
        return [samples[sid] for sid in ids], {sid: critiques[sid] for sid in ids}

    def _current(self, sample_ids=None) -> dict[int, dict]:
        ids = [s.sample_id for s in self.items] if sample_ids is None else list(sample_ids)
        if not ids:
            return {}
        df = self._session.judgements(ids, annotator=self.annotator, kinds=list(_SETTLED))
        out: dict[int, dict] = {}
        for row in df.itertuples(index=False):
            entry = out.setdefault(int(row.sample_id), {})
            entry[row.kind] = row.value
            if row.kind == "correction":
                entry["correction_meta"] = getattr(row, "meta", None)
        return out

    def _count(self, current: dict | None = None) -> None:
        current = self._current() if current is None else current
        self.corrected = sum(1 for v in current.values() if "correction" in v)
        self.rejected = sum(1 for v in current.values()
                            if "rejection" in v and "correction" not in v)
        line = (f"{self.corrected} of {self.total} turned into training targets"
                f" · {self.rejected} rejected")
        self.header.value = escaped_html("Critiques to turn into corrections: " + line,
                                         style="font-weight:bold")

    @property
    def sample(self):
        """The sample of the item shown (None when the queue is empty)."""
        return self.items[self.index] if self.items else None

    def _settled(self, sid: int, current: dict | None = None) -> dict:
        current = self._current([sid]) if current is None else current
        return current.get(sid, {})

    # -- drawing -------------------------------------------------------------------------------
    @traitlets.observe("index")
    def _index_changed(self, change) -> None:
        if hasattr(self, "keyboard"):
            self._render()

    def _render(self) -> None:
        with self._lock:
            if not self.items:
                self.position.value = ""
                self.body.value = escaped_html("No critiqued samples without a correction: "
                                               "write a critique in a rating panel first.")
                self.candidates.show(None)
                for w in (self.prev_button, self.next_button, self.save_correction,
                          self.suggest_button):
                    w.disabled = True
                self.keyboard.set_keys([], {})
                return
            sample = self.sample
            sid = sample.sample_id
            self.position.value = escaped_html(f"Item {self.index + 1} of {self.total}",
                                               tag="span")
            self.body.value = "".join([
                escaped_html("Prompt", style=_LABEL),
                escaped_html(sample.prompt or "(no prompt)", style=_TEXT),
                escaped_html("Answer", style=_LABEL), escaped_html(sample.text, style=_TEXT),
                escaped_html("Critique", style=_LABEL),
                escaped_html(self._critiques.get(sid, ""), style=_TEXT + ";color:#6a1b9a"),
            ])
            self.prev_button.disabled = self.index == 0
            self.next_button.disabled = self.index >= self.total - 1
            settled = self._settled(sid)
            if sid not in self._editing:
                self.correction.value = settled.get("correction", sample.text)
            if settled.get("correction") is not None:
                self._set_status("in force: "
                                 + describe_correction(settled.get("correction_meta")))
            elif "rejection" in settled:
                self._set_status("suggestions rejected (s: ask again, or type a correction)")
            else:
                self._set_status("")
            self._show()
        if not settled:
            self._ensure(self.index)
        if self.prefetch:
            self._ensure(self.index + 1)

    def _show(self) -> None:
        """The current item's candidates, offer and keys."""
        with self._lock:
            if not self.items:
                return
            sid = self.sample.sample_id
            state = self._revisions.get(sid)
            self.candidates.show(state)
            pending = self._pending_offer()  # (made on an earlier item: the panel moved on)
            offer = None if pending is None else pending[1]
            if offer is None:
                self.offer.layout.display = "none"
            else:
                n = len(offer[1])
                self.offer_text.value = escaped_html(
                    f"Apply the same edit ({offer[2]}) to {n} other item"
                    + ("s" if n != 1 else "") + "?", tag="span", style="font-weight:bold")
                self.offer_button.description = f"Apply to {n} other item" + \
                    ("s" if n != 1 else "")
                self.offer.layout.display = None
            keys = {"n/p": "next/previous item"}
            bound = ["n", "p", "s", "u"]
            hints = candidate_keys(state, esc=None)
            if hints is not None:
                n = max(len(state.candidates), state.k, 1)
                bound = [*DIGIT_KEYS[:n], "e", "x", *bound]
                keys = {**hints, **keys}
            keys["s"] = "suggest again"
            if offer is not None:
                bound.append("a")
                keys["a"] = "apply the edit to the others"
            keys["u"] = "undo"
            self.keyboard.set_keys(bound, keys)

    def _set_status(self, text: str) -> None:
        self.status.value = escaped_html(text, tag="span") if text else ""

    # -- candidates ----------------------------------------------------------------------------
    def _ensure(self, index: int) -> None:
        """Ask for candidates for item ``index`` unless it has some (or is settled)."""
        if not 0 <= index < self.total:
            return
        sid = self.items[index].sample_id
        if sid in self._revisions or self._settled(sid):
            return
        self._ask(sid)

    def _ask(self, sid: int, k: int | None = None) -> bool:
        k = self.k if k is None else k
        state = RevisionState(sid, k=k, critique=self._critiques.get(sid))
        with self._lock:
            self._revisions[sid] = state
            self._editing.pop(sid, None)
        own = self.annotator == self._session.annotator
        try:
            request = call_verb(self._session.suggest_revisions, sid,
                                critique=None if own else self._critiques.get(sid), k=k,
                                refiner=self.refiner, annotator=None if own else self.annotator)
        except Exception as err:  # shown: the person must know nothing is coming
            with self._lock:
                state.done, state.error = True, str(err)
            self._refresh(sid)
            return False
        with self._lock:
            state.attach(request)
        self._refresh(sid)
        return True

    def _refresh(self, sid: int) -> None:
        if self.items and self.sample.sample_id == sid:
            self._show()

    def _on_revision(self, payload) -> None:
        sample_id, index, candidate, request = revision_parts(payload)
        with self._lock:
            state = self._revisions.get(sample_id)
            if state is None or state.kind != "revision" or not state.open \
                    or not state.mine(request):
                return
            state.candidates[index] = candidate
            self._refresh(sample_id)

    def _on_revisions_done(self, payload) -> None:
        with self._lock:
            state = finished(self._revisions, payload)
            if state is not None:
                self._refresh(state.sample_id)

    def _on_judgement(self, event) -> None:
        ids = {s.sample_id for s in self.items}
        if getattr(event, "sample_id", None) in ids:
            self._count()

    # -- actions (each button and key calls one of these) --------------------------------------
    def press(self, key: str) -> None:
        """Do what ``key`` does (see the module's table)."""
        if not self.items:
            return
        if key in DIGIT_KEYS:
            self.accept(int(key))
        elif key == "e":
            self.edit(1)
        elif key == "x":
            self.reject()
        elif key == "n":
            self.next()
        elif key == "p":
            self.prev()
        elif key == "s":
            self.suggest()
        elif key == "a":
            self.propagate()
        elif key == "u":
            self.undo()

    def _open_state(self) -> RevisionState:
        if not self.items:
            raise ValueError("the queue is empty")
        state = self._revisions.get(self.sample.sample_id)
        if state is None or not state.open:
            raise ValueError(f"item {self.index + 1} has no suggestions open (s: suggest again)")
        return state

    def _do(self, what: str, action):
        """Run ``action``; a failure is shown in the status line (never lost) and gives None."""
        if not self.annotator:
            self._set_status("✗ not saved: the session has no annotator")
            return None
        try:
            return action()
        except Exception as err:
            self._set_status(f"✗ not saved ({what}): {err}")
            return None

    def _done_with(self, sid: int, state: RevisionState | None, said: str) -> None:
        """After the item was settled: say so, and move on to the next item."""
        with self._lock:
            if state is not None:
                state.open = False
            self._editing.pop(sid, None)
        number = next((i for i, s in enumerate(self.items) if s.sample_id == sid), 0) + 1
        self.last.value = escaped_html(f"✓ item {number}: {said} at {time.strftime('%H:%M:%S')}",
                                       tag="span", style="color:#2e7d32")
        self._count()
        if self.index < self.total - 1:
            self.index += 1
        else:
            self._render()

    def accept(self, j: int) -> bool:
        """Use candidate ``j`` (1-based) as the shown item's correction (key ``j``, "Use j"),
        then show the next item. Returns whether it was saved."""
        def action():
            state = self._open_state()
            candidate = state.get(j)
            return state, call_verb(self._session.accept_revision, self.sample.sample_id,
                                    candidate, annotator=self.annotator)

        done = self._do(f"revision {j}", action)
        if done is None:
            return False
        state, event = done
        sid = self.sample.sample_id
        self._offer(sid, event)
        self._done_with(sid, state, "saved " + _said(event, f"revision {j}"))
        return True

    def edit(self, j: int, text: str | None = None) -> bool:
        """Put candidate ``j`` into the correction box (key ``e`` for the first, "Edit"); then
        Save correction stores it as an edited revision. With ``text``, save that at once."""
        try:
            state = self._open_state()
            candidate = state.get(j)
        except ValueError as err:
            self._set_status(f"✗ {err}")
            return False
        sid = self.sample.sample_id
        self._editing[sid] = (state, j, candidate)
        self.correction.value = candidate.text if text is None else text
        if text is None:
            self._set_status(f"candidate {j} is in the correction box: edit it, then Save "
                             "correction")
            return True
        return self.correct(text)

    def correct(self, text: str) -> bool:
        """Save ``text`` as the shown item's correction ("Save correction"): an edited
        revision after :meth:`edit`, else a typed correction. Then the next item."""
        if not self.items:
            return False
        sid = self.sample.sample_id
        self.correction.value = text
        editing = self._editing.get(sid)
        if editing is not None:
            state, j, candidate = editing
            event = self._do(f"edited revision {j}", lambda: call_verb(
                self._session.accept_revision, sid, candidate, text=text,
                annotator=self.annotator))
            fallback = f"edited revision {j}"
        else:
            state = self._revisions.get(sid)
            event = self._do("correction", lambda: self._session.record_correction(
                sid, text, annotator=self.annotator))
            fallback = "typed correction"
        if event is None:
            return False
        self._offer(sid, event)
        self._done_with(sid, state, "saved " + _said(event, fallback))
        return True

    def reject(self) -> bool:
        """Reject every candidate of the shown item (key ``x``, "Reject all"): a rejection
        event, no training example; then the next item."""
        def action():
            state = self._open_state()
            call_verb(self._session.reject_revisions, self.sample.sample_id,
                      state.ordered() or None, annotator=self.annotator)
            return state

        state = self._do("rejection", action)
        if state is None:
            return False
        n = len(state.candidates)
        self._done_with(self.sample.sample_id, state,
                        f"rejected {n} suggestion" + ("s" if n != 1 else ""))
        return True

    def suggest(self, k: int | None = None) -> bool:
        """Ask again for candidates for the shown item (key ``s``, "Suggest again")."""
        if not self.items:
            return False
        sid = self.sample.sample_id
        old = self._revisions.get(sid)
        if old is not None and not old.done and hasattr(old.request, "cancel"):
            old.request.cancel()
        self._set_status(f"asking for {k or self.k} revisions…")
        return self._ask(sid, k)

    def next(self) -> None:
        """Show the next item (key ``n``)."""
        self.index = min(self.index + 1, max(self.total - 1, 0))

    def prev(self) -> None:
        """Show the previous item (key ``p``)."""
        self.index = max(self.index - 1, 0)

    def undo(self) -> bool:
        """Cancel the annotator's latest correction or rejection on this queue's items, and
        show that item again."""
        ids = [s.sample_id for s in self.items]
        if not ids or not self.annotator:
            return False
        event = self._session.undo(annotator=self.annotator, sample_ids=ids, kinds=_SETTLED)
        if event is None:
            return False
        with self._lock:
            state = self._revisions.get(event.sample_id)
            if state is not None:
                state.open = True
        self._count()
        where = ids.index(event.sample_id)
        self.last.value = escaped_html(f"↶ item {where + 1}: undid the {event.kind}", tag="span")
        if where != self.index:
            self.index = where
        else:
            self._render()
        return True

    # -- edit propagation ----------------------------------------------------------------------
    def _offer(self, sid: int, event) -> None:
        """After a correction: if it is a pattern edit, offer it to the other open items."""
        self._offers.pop(sid, None)
        meta = getattr(event, "meta", None) or {}
        propagate = getattr(self._session, "propagate_edit", None)
        if propagate is None or meta.get("via") == "propagated":
            return
        current = self._current()
        others = [s.sample_id for s in self.items
                  if s.sample_id != sid and not current.get(s.sample_id)]
        if not others:
            return
        try:
            suggestions = list(call_verb(propagate, event, sample_ids=others,
                                         annotator=self.annotator) or [])
        except Exception:  # the correction is saved; only the offer is missing
            return
        if suggestions:
            edit = getattr(suggestions[0], "edit", None)
            what = edit.describe() if hasattr(edit, "describe") else "the same change"
            self._offers[sid] = (event, suggestions, what)

    def _pending_offer(self):
        """The latest offer still pending (the panel has moved on from its item)."""
        return next(reversed(self._offers.items()), None)

    def propagate(self) -> list:
        """Put the latest correction's pattern edit on every other open item it applies to, as
        a suggestion (key ``a``): ``1`` uses it there, ``x`` turns it down. Returns them."""
        pending = self._pending_offer()
        if pending is None:
            self._set_status("✗ no edit to apply (save a correction that adds, removes or "
                             "replaces a phrase)")
            return []
        sid, (event, suggestions, what) = pending
        self._offers.pop(sid)
        number = next((i for i, s in enumerate(self.items) if s.sample_id == sid), 0) + 1
        with self._lock:
            for suggestion in suggestions:
                target = int(suggestion.sample_id)
                old = self._revisions.get(target)
                if old is not None and not old.done and hasattr(old.request, "cancel"):
                    old.request.cancel()
                self._revisions[target] = RevisionState(
                    target, kind="propagated", k=1, candidates={0: suggestion}, done=True,
                    edit=what, source=f"item {number}")
                self._editing.pop(target, None)
        self._set_status(f"suggested the edit on {len(suggestions)} other item"
                         + ("s" if len(suggestions) != 1 else ""))
        self._show()
        return suggestions

    # -- scripts -------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> CritiqueQueuePanel:
        """Block until the shown item's candidates are all written (for scripts and tests)."""
        state = self._revisions.get(self.sample.sample_id) if self.items else None
        request = None if state is None else state.request
        if request is not None and hasattr(request, "wait"):
            request.wait(timeout)
        return self


def _said(event, fallback: str) -> str:
    meta = getattr(event, "meta", None)
    return describe_correction(meta) if isinstance(meta, dict) and meta.get("via") else fallback
