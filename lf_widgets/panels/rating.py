"""RatingPanel: rate samples 1–5, critique them, correct them — one prompt at a time.

A thin view. It shows samples as they stream in (text growing token by token, rateable the
moment a sample is finished), holds no judgement of its own — what it shows as rated, critiqued
or corrected is read from the Session (``session.judgements``) and re-read on every
``"judgement"`` / ``"undo"`` event for its samples, whichever panel or cell made it — and every
button has a method twin (``panel.rate(0, 4)``) that runs the very code the click runs.
Model output and prompts are untrusted: they are escaped before they reach an HTML widget.

Learning from critiques (issue 14). Once a card has a saved critique, "Suggest revisions" (key
``s``, twin :meth:`RatingPanel.suggest`) asks ``session.suggest_revisions`` for ``k`` candidates;
they appear in the card one by one as the session's ``"revision"`` events arrive. While a card's
candidate list is open the keys change mode (the hint says so): digits ``1``..``k`` pick a
candidate (:meth:`~RatingPanel.accept`: a correction with its provenance), ``e`` puts the first
into the correction box to edit (:meth:`~RatingPanel.edit`; saving it is an edited revision),
``x`` rejects them all (:meth:`~RatingPanel.reject`: a rejection event), ``Esc`` closes the list
(back to rating). After any correction saved in a card the panel asks ``session.propagate_edit``
whether it is a repeatable pattern edit; if so it offers "Apply the same edit (…) to N other
samples" (key ``a``, twin :meth:`~RatingPanel.propagate`), and each of those cards then shows the
edited text as a suggestion, taken with ``1`` or turned down with ``x``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import ipywidgets as widgets
import traitlets

from ._candidates import CandidateList, RevisionState, describe_correction, listen
from ._card_revisions import DIGITS, RATING_HINT, RATING_KEYS, CardRevisions
from ._display import DisplayOnce
from ._keys import PANEL_CLASS, KeyListener
from ._text import escaped_html

__all__ = ["RatingPanel"]

STARS = (1, 2, 3, 4, 5)
KINDS = ("rating", "critique", "correction")
_FOCUSED, _UNFOCUSED = "2px solid #1976d2", "1px solid #ddd"
_TEXT_STYLE = "white-space:pre-wrap;border-left:3px solid #ccc;padding-left:8px"


class SampleCard(widgets.VBox):
    """The widgets of one sample: its text, rating buttons, critique, correction, status."""

    def __init__(self, number: int, actions: dict | None = None):
        self.sample = None  # the stored Sample once it has arrived
        self.number = number
        act = actions or {}
        noop = lambda *_: None  # noqa: E731 (a card made without a panel, e.g. in a test)
        self.text = widgets.HTML()
        self.stars = [widgets.Button(description=str(v), tooltip=f"rate {v} (key {v})",
                                     layout=widgets.Layout(width="40px")) for v in STARS]
        self.critique = widgets.Textarea(placeholder="What is wrong or right with it?",
                                         layout=widgets.Layout(width="95%", height="48px"))
        self.save_critique = widgets.Button(description="Save critique")
        # Enabled once a critique is saved (not while typing one: the refiner reads the log).
        self.suggest_button = widgets.Button(
            description="Suggest revisions", icon="magic", disabled=True,
            tooltip="rewrites of this sample that follow its saved critique (key s)",
            layout=widgets.Layout(width="auto"))  # the whole label, not "Suggest revisi…"
        self.candidates = CandidateList(act.get("use", noop), act.get("edit", noop),
                                        act.get("reject", noop), act.get("close", noop))
        self.correction = widgets.Textarea(layout=widgets.Layout(width="95%", height="64px"))
        self.save_correction = widgets.Button(description="Save correction")
        self.status = widgets.HTML()
        self.offer_text = widgets.HTML()
        self.offer_button = widgets.Button(description="Apply to the others", icon="clone",
                                           tooltip="suggest the same edit in the other cards "
                                                   "(key a)", layout=widgets.Layout(width="auto"))
        self.offer = widgets.HBox([self.offer_text, self.offer_button],
                                  layout=widgets.Layout(display="none"))
        self.offer.add_class("lfw-offer")
        super().__init__([
            widgets.HTML(escaped_html(f"Sample {number}", style="font-weight:bold")), self.text,
            widgets.HBox([widgets.HTML("Rating:"), *self.stars, self.status]),
            widgets.HBox([self.critique, widgets.VBox(  # never squeezed by the text box
                [self.save_critique, self.suggest_button],
                layout=widgets.Layout(flex="0 0 auto"))]),
            self.candidates,
            widgets.HBox([self.correction, self.save_correction]),
            self.offer,
        ], layout=widgets.Layout(border=_UNFOCUSED, padding="6px", margin="4px 0"))
        self.add_class("lfw-card")
        self.writing("")

    def writing(self, text: str) -> None:
        """Show the text so far of a sample still being written; nothing to judge yet."""
        self.text.value = escaped_html(text + " ▍", style=_TEXT_STYLE + ";color:#555")
        self._enable(False)
        self.set_status("writing…")

    def arrived(self, sample, current: dict) -> None:
        self.sample = sample
        note = " (cut off at the length limit)" if getattr(sample, "truncated", False) else ""
        self.text.value = escaped_html(sample.text, style=_TEXT_STYLE)
        self._enable(True)
        self.critique.value = current.get("critique", "")
        self.correction.value = current.get("correction", sample.text)
        self.show(current)
        if note:
            self.set_status((f"in force: {describe(current)}" if current else "not rated yet") + note)

    def show(self, current: dict) -> None:
        """Reflect the judgements in force (from the store)."""
        for value, button in zip(STARS, self.stars):
            button.button_style = "success" if value == current.get("rating") else ""
        self.suggest_button.disabled = self.sample is None or "critique" not in current
        if current:
            self.set_status("in force: " + describe(current))
        else:
            self.set_status("not rated yet")

    def set_status(self, text: str) -> None:
        self.status.value = escaped_html(text, tag="span")

    def _enable(self, on: bool) -> None:
        for w in (*self.stars, self.save_critique, self.save_correction):
            w.disabled = not on
        if not on:
            self.suggest_button.disabled = True

    def show_offer(self, text: str | None, n: int = 0) -> None:
        """Show (or, ``text=None``, hide) the offer to repeat this card's edit on ``n`` others."""
        if text is None:
            self.offer.layout.display = "none"
            return
        self.offer_text.value = escaped_html(text, tag="span", style="font-weight:bold")
        self.offer_button.description = f"Apply to {n} other sample" + ("s" if n != 1 else "")
        self.offer.layout.display = None


def describe(current: dict) -> str:
    """E.g. "rating 4, critique, correction (accepted revision 2 from own:…)" — what is in
    force for a sample (a correction says where it came from: typed, a revision, propagated)."""
    def one(kind):
        if kind == "rating":
            return f"rating {current['rating']}"
        if kind == "correction":
            return describe_correction(current.get("correction_meta"))
        return kind
    parts = [one(k) for k in KINDS if k in current]
    if "rejection" in current and "correction" not in current:
        parts.append("suggestions rejected")
    return ", ".join(parts)


class RatingPanel(CardRevisions, DisplayOnce, widgets.VBox):
    """Rate, critique and correct samples, one prompt per page.

    Parameters
    ----------
    session : lf_widgets.Session
        Owner of the model and the feedback log; every action goes through its verbs.
    samples : sequence of lf_widgets.session.Sample, optional
        Stored samples to show; grouped by prompt, in the order given.
    request : lf_widgets._requests.GenerationRequest, optional
        A generation in progress: its ``n`` samples per prompt stream into the cards.
    refiner : optional
        Who writes suggested revisions (``session.suggest_revisions``'s ``refiner``: None for
        the session's own model, a model folder, a RemoteChatModel or a Refiner); also the
        attribute ``panel.refiner``, which may be changed at any time.
    """

    index = traitlets.Int(0, help="Which prompt page is shown (0-based).")
    annotator = traitlets.Unicode(help="Who is rating; recorded with every judgement.")
    rated = traitlets.Int(0, help="Samples in this panel the annotator has rated.")
    total = traitlets.Int(0, help="Samples in this panel (arrived or still being written).")
    arrived = traitlets.Int(0, help="Samples that have been written and stored.")
    cursor = traitlets.Int(0, help="Sample (on this page) that the keys 1-5 rate.")

    def __init__(self, session, samples: Sequence = (), *, request=None, refiner=None,
                 **kwargs):
        self._session, self._request = session, request
        self.refiner = refiner
        self._lock = threading.RLock()  # events arrive on the model's thread
        # Per sample id, across pages: the open (or last) candidate list, the candidate put in
        # the correction box by "Edit", and an edit this card offers to repeat on others.
        self._revisions: dict[int, RevisionState] = {}
        self._editing: dict[int, tuple[RevisionState, int, object]] = {}
        self._offers: dict[int, tuple[object, list, str]] = {}
        self._pages: list[tuple[str | None, list[int]]] = []  # (prompt, slots)
        self._slots: dict[int, object] = {}  # slot -> Sample (absent: still being written)
        self._partial: dict[int, str] = {}
        self._build_pages(samples, request)
        self.prompt_text = widgets.HTML()
        self._cards = widgets.VBox()
        self.cards: list[SampleCard] = []
        self.annotator_box = widgets.Text(value=session.annotator, description="Annotator:")
        self._progress_bar = widgets.IntProgress(min=0, max=max(self.total_slots, 1))
        self.progress = widgets.HTML()
        self.generation = widgets.HTML()
        self.prev_button = widgets.Button(description="◀ Prev", tooltip="previous prompt")
        self.next_button = widgets.Button(description="Next ▶", tooltip="next prompt")
        self.undo_button = widgets.Button(description="Undo", icon="undo",
                                          tooltip="undo my last judgement in this panel")
        self._page = widgets.HTML()
        self.keyboard = KeyListener(RATING_KEYS, RATING_HINT, self.press)
        super().__init__([
            widgets.HBox([self.annotator_box, self._progress_bar, self.progress]),
            self.generation, self.prompt_text, self._cards,
            widgets.HBox([self.prev_button, self._page, self.next_button, self.undo_button]),
            self.keyboard,
        ], **kwargs)
        self.add_class(PANEL_CLASS)
        self.prev_button.on_click(lambda _: self.prev())
        self.next_button.on_click(lambda _: self.next())
        self.undo_button.on_click(lambda _: self.undo())
        self.annotator_box.observe(lambda ch: setattr(self, "annotator", ch["new"].strip()), "value")
        self.total = self.total_slots
        self._unsubscribe = [session.on("judgement", self._on_judgement),
                             session.on("undo", self._on_judgement)]
        self._unsubscribe += listen(session, self._on_revision, self._on_revisions_done)
        if request is not None:
            self._unsubscribe += [session.on("partial", self._on_partial),
                                  session.on("generated", self._on_generated),
                                  session.on("generation", self._on_generation)]
            for slot, sample in list(request.samples.items()):  # arrived before we listened
                self._slots[slot] = sample
        self.arrived = len(self._slots)
        self.annotator = session.annotator  # triggers the first render
        self._render()
        self._show_generation()

    def _build_pages(self, samples, request) -> None:
        if request is not None:
            n = request.n
            self._pages = [(p, list(range(i * n, (i + 1) * n))) for i, p in enumerate(request.prompts)]
            return
        for slot, s in enumerate(samples):  # group by prompt, keeping first-seen order
            if not self._pages or self._pages[-1][0] != s.prompt:
                self._pages.append((s.prompt, []))
            self._pages[-1][1].append(slot)
            self._slots[slot] = s

    @property
    def total_slots(self) -> int:
        return sum(len(slots) for _, slots in self._pages)

    # -- what is shown -------------------------------------------------------------------------
    @property
    def samples(self) -> list:
        """The samples on the page being shown that have arrived, in card order."""
        return [c.sample for c in self.cards if c.sample is not None]

    def sample_ids(self) -> list[int]:
        """Ids of every arrived sample of this panel."""
        return [s.sample_id for s in list(self._slots.values())]

    def _current(self) -> dict[int, dict]:
        """sample id -> the annotator's judgements in force, read from the store."""
        ids = self.sample_ids()
        if not ids or not self.annotator:
            return {}
        df = self._session.judgements(ids, annotator=self.annotator, kinds=KINDS)
        out: dict[int, dict] = {}
        for row in df.itertuples(index=False):
            out.setdefault(int(row.sample_id), {})[row.kind] = row.value
            if row.kind == "correction":  # its provenance, for the status line
                out[int(row.sample_id)]["correction_meta"] = getattr(row, "meta", None)
        return out

    @traitlets.observe("annotator")
    def _annotator_changed(self, change) -> None:
        if self.annotator_box.value.strip() != change["new"]:
            self.annotator_box.value = change["new"]
        if hasattr(self, "_cards"):
            self._render()

    @traitlets.observe("index")
    def _index_changed(self, change) -> None:
        self.cursor = 0
        self._render()

    @traitlets.observe("cursor")
    def _cursor_changed(self, change) -> None:
        for i, card in enumerate(getattr(self, "cards", ())):
            card.layout.border = _FOCUSED if i == change["new"] else _UNFOCUSED
        if hasattr(self, "keyboard"):
            with self._lock:
                for card in self.cards:
                    self._show_candidates(card)
                self._update_keys()

    def _render(self) -> None:
        with self._lock:
            prompt, slots = self._pages[self.index] if self._pages else (None, [])
            self.prompt_text.value = escaped_html(
                "(no samples to rate)" if not self._pages else
                f"Prompt {self.index + 1} of {len(self._pages)}: {prompt or '(no prompt)'}",
                style="font-weight:bold;white-space:pre-wrap")
            current = self._current()
            cards = []
            for i, slot in enumerate(slots):
                card = SampleCard(i + 1, self._actions(i))
                card.slot = slot
                self._wire(i, card)
                sample = self._slots.get(slot)
                if sample is None:
                    card.writing(self._partial.get(slot, ""))
                else:
                    card.arrived(sample, current.get(sample.sample_id, {}))
                card.layout.border = _FOCUSED if i == self.cursor else _UNFOCUSED
                cards.append(card)
            self.cards = cards
            for card in cards:
                self._show_candidates(card)
                self._show_offer(card)
            self._cards.children = cards
            self._page.value = escaped_html(f"{self.index + 1} / {max(len(self._pages), 1)}",
                                            tag="span")
            self.prev_button.disabled = self.index == 0
            self.next_button.disabled = self.index >= len(self._pages) - 1
            self._update_progress(current)
            self._update_keys()

    def _actions(self, i: int) -> dict:
        """What the candidate list's buttons of card ``i`` call: the method twins."""
        return {"use": lambda j: self.accept(i, j), "edit": lambda j: self.edit(i, j),
                "reject": lambda: self.reject(i), "close": lambda: self.close_revisions(i)}

    def _wire(self, i: int, card: SampleCard) -> None:
        for value, button in zip(STARS, card.stars):
            button.on_click(lambda _, i=i, v=value: self.rate(i, v))
        card.save_critique.on_click(lambda _, i=i, c=card: self.critique(i, c.critique.value))
        card.save_correction.on_click(lambda _, i=i, c=card: self.correct(i, c.correction.value))
        card.suggest_button.on_click(lambda _, i=i: self.suggest(i))
        card.offer_button.on_click(lambda _, i=i: self.propagate(i))

    def _update_progress(self, current: dict | None = None) -> None:
        current = self._current() if current is None else current
        self.rated = sum(1 for v in current.values() if "rating" in v)
        self._progress_bar.max = max(self.total, 1)
        self._progress_bar.value = self.rated
        self.progress.value = escaped_html(f"{self.rated} of {self.total} rated", tag="span")

    def _show_generation(self) -> None:
        request = self._request
        text = "" if request is None else request.progress_text()
        self.generation.value = escaped_html(text, style="color:#555") if text else ""

    # -- events (any thread) -------------------------------------------------------------------
    def _mine(self, event) -> bool:
        ids = set(self.sample_ids())
        other = event.value.get("other") if isinstance(event.value, dict) else None
        return event.sample_id in ids or other in ids

    def _on_judgement(self, event) -> None:
        if self._mine(event):
            with self._lock:
                current = self._current()
                for card in self.cards:
                    if card.sample is not None:
                        card.show(current.get(card.sample.sample_id, {}))
                self._update_progress(current)
                self._update_keys()

    def _on_partial(self, partial) -> None:
        if partial.request_id != self._request.id:
            return
        with self._lock:
            self._partial[partial.slot] = partial.text
            for card in self.cards:
                if card.slot == partial.slot and card.sample is None:
                    card.writing(partial.text)

    def _on_generated(self, generated) -> None:
        if generated.request_id != self._request.id:
            return
        with self._lock:
            self._slots[generated.slot] = generated.sample
            self._partial.pop(generated.slot, None)
            self.arrived = len(self._slots)
            for card in self.cards:
                if card.slot == generated.slot:
                    card.arrived(generated.sample, {})

    def _on_generation(self, request) -> None:
        if request.id == self._request.id:
            self._show_generation()

    # -- actions (each button calls one of these) ----------------------------------------------
    def _card(self, sample_idx: int) -> SampleCard:
        if not 0 <= sample_idx < len(self.cards):
            raise IndexError(f"sample_idx must be 0..{len(self.cards) - 1}, got {sample_idx}")
        card = self.cards[sample_idx]
        if card.sample is None:
            raise ValueError(f"sample {sample_idx + 1} is still being written")
        return card

    def _save(self, card: SampleCard, what: str, action) -> bool:
        # The indicator turns to "saved" only after the store committed the event.
        if not self.annotator:
            card.set_status("✗ not saved: enter an annotator name first")
            return False
        try:
            action()
        except Exception as err:  # shown, not swallowed: the person must know it did not save
            card.set_status(f"✗ not saved ({what}): {err}")
            return False
        card.set_status(f"✓ saved {what} at {time.strftime('%H:%M:%S')}")
        return True

    def press(self, key: str) -> None:
        """Do what ``key`` does: 1-5 rate the focused sample (then focus the next), j/k move
        the focus, n/p change prompt, u undoes, s suggests revisions (once it has a critique),
        a applies its edit to the other samples. While the focused card's candidate list is
        open: 1..k use candidate k, e puts the first in the correction box, x rejects them all,
        Esc closes the list (back to rating)."""
        n = len(self.cards)
        card = self._focused()
        state = None if card is None else self._state(card)
        if state is not None and state.open and key in (*DIGITS, "e", "x", "Escape"):
            if key in DIGITS:
                self.accept(self.cursor, int(key))
            elif key == "e":
                self.edit(self.cursor, 1)
            elif key == "x":
                self.reject(self.cursor)
            else:
                self.close_revisions(self.cursor)
            return
        if key == "s" and card is not None and card.sample is not None:
            self.suggest(self.cursor)
        elif key == "a" and card is not None and card.sample is not None:
            self.propagate(self.cursor)
        elif key in {str(v) for v in STARS} and n:
            if self.cards[self.cursor].sample is not None and self.rate(self.cursor, int(key)):
                self.cursor = min(self.cursor + 1, n - 1)
        elif key == "j" and n:
            self.cursor = min(self.cursor + 1, n - 1)
        elif key == "k":
            self.cursor = max(self.cursor - 1, 0)
        elif key in ("n", "p"):
            self.next() if key == "n" else self.prev()
        elif key == "u":
            self.undo()

    def rate(self, sample_idx: int, rating: int) -> bool:
        """Rate sample ``sample_idx`` of this page 1–5; returns whether it was saved."""
        card = self._card(sample_idx)
        self.cursor = sample_idx
        return self._save(card, f"rating {rating}", lambda: self._session.record_rating(
            card.sample.sample_id, rating, annotator=self.annotator))

    def critique(self, sample_idx: int, text: str) -> bool:
        """Save a critique of sample ``sample_idx``; returns whether it was saved."""
        card = self._card(sample_idx)
        card.critique.value = text
        return self._save(card, "critique", lambda: self._session.record_critique(
            card.sample.sample_id, text, annotator=self.annotator))

    def correct(self, sample_idx: int, text: str) -> bool:
        """Save a corrected text for sample ``sample_idx``; returns whether it was saved.

        After "Edit" (or :meth:`edit`) put a candidate in the box, the saved text is an edited
        revision (``session.accept_revision(..., text=text)``, its provenance kept); otherwise
        a typed correction. Either way the panel then looks for a pattern edit to offer to the
        other samples (:meth:`propagate`)."""
        card = self._card(sample_idx)
        card.correction.value = text
        sid = card.sample.sample_id
        editing = self._editing.get(sid)
        if editing is not None:
            return self._save_edited(sample_idx, card, editing, text)
        saved: list = []
        ok = self._save(card, "correction", lambda: saved.append(self._session.record_correction(
            sid, text, annotator=self.annotator)))
        if ok:
            self._after_correction(sample_idx, card, saved[0])
        return ok

    def undo(self) -> bool:
        """Cancel the annotator's latest judgement on this panel's samples (not another panel's)."""
        if not self.annotator or not self.sample_ids():
            return False
        # a rejection of suggested revisions is a judgement made in this panel too: u takes it back
        event = self._session.undo(annotator=self.annotator, sample_ids=self.sample_ids(),
                                   kinds=(*KINDS, "rejection"))
        if event is None:
            return False
        for i, (_, slots) in enumerate(self._pages):
            if any(getattr(self._slots.get(s), "sample_id", None) == event.sample_id for s in slots):
                if i != self.index:
                    self.index = i
        now = self._current().get(event.sample_id, {})
        for card in self.cards:
            if card.sample is not None and card.sample.sample_id == event.sample_id:
                card.set_status(f"↶ undid {event.kind}; in force: {describe(now) or 'nothing'}")
        return True

    def wait(self, timeout: float | None = None) -> RatingPanel:
        """Block until every sample of the panel has been written (for scripts and notebooks
        that rate from code; a person can rate the arrived ones meanwhile)."""
        if self._request is not None:
            self._request.wait(timeout)
        return self

    def next(self) -> None:
        """Show the next prompt."""
        self.index = min(self.index + 1, max(len(self._pages) - 1, 0))

    def prev(self) -> None:
        """Show the previous prompt."""
        self.index = max(self.index - 1, 0)
