"""RatingPanel: rate samples 1–5, critique them, correct them — one prompt at a time.

A thin view: it holds no feedback of its own beyond what it shows, calls Session verbs, and
every button has a method twin (``panel.rate(0, 4)``) that runs the very code the click runs.
Model output and prompts are untrusted: they are escaped before they reach an HTML widget.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import ipywidgets as widgets
import traitlets

from ._keys import PANEL_CLASS, KeyListener
from ._text import escaped_html

__all__ = ["RatingPanel"]

STARS = (1, 2, 3, 4, 5)
_FOCUSED, _UNFOCUSED = "2px solid #1976d2", "1px solid #ddd"


class _SampleCard(widgets.VBox):
    """The widgets of one sample: its text, rating buttons, critique, correction, status."""

    def __init__(self, number: int, text: str):
        self.text = widgets.HTML(escaped_html(text, style="white-space:pre-wrap;"
                                              "border-left:3px solid #ccc;padding-left:8px"))
        self.stars = [widgets.Button(description=str(v), tooltip=f"rate {v} (key {v})",
                                     layout=widgets.Layout(width="40px")) for v in STARS]
        self.critique = widgets.Textarea(placeholder="What is wrong or right with it?",
                                         layout=widgets.Layout(width="95%", height="48px"))
        self.save_critique = widgets.Button(description="Save critique")
        self.correction = widgets.Textarea(value=text, layout=widgets.Layout(width="95%",
                                                                                height="64px"))
        self.save_correction = widgets.Button(description="Save correction")
        self.status = widgets.Label(value="not rated yet")
        super().__init__([
            widgets.Label(value=f"Sample {number}"), self.text,
            widgets.HBox([widgets.Label(value="Rating:"), *self.stars, self.status]),
            widgets.HBox([self.critique, self.save_critique]),
            widgets.HBox([self.correction, self.save_correction]),
        ], layout=widgets.Layout(border="1px solid #ddd", padding="6px", margin="4px 0"))

    def show_rating(self, rating: int | None) -> None:
        for value, button in zip(STARS, self.stars):
            button.button_style = "success" if value == rating else ""


class RatingPanel(widgets.VBox):
    """Rate, critique and correct samples, one prompt per page.

    Parameters
    ----------
    session : lf_widgets.Session
        Owner of the model and the feedback log; every action goes through its verbs.
    samples : sequence of lf_widgets.session.Sample
        What to show; grouped by prompt, in the order given.
    """

    index = traitlets.Int(0, help="Which prompt page is shown (0-based).")
    annotator = traitlets.Unicode(help="Who is rating; recorded with every judgement.")
    rated = traitlets.Int(0, help="Samples in this panel the annotator has rated.")
    total = traitlets.Int(0, help="Samples in this panel.")
    cursor = traitlets.Int(0, help="Sample (on this page) that the keys 1-5 rate.")

    def __init__(self, session, samples: Sequence, **kwargs):
        self._session = session
        self._pages: list[tuple[str | None, list]] = []
        for s in samples:  # group by prompt, keeping first-seen order
            if not self._pages or self._pages[-1][0] != s.prompt:
                self._pages.append((s.prompt, []))
            self._pages[-1][1].append(s)
        self._ratings: dict[int, int] = {}  # sample_id -> this annotator's current rating
        self._prompt = widgets.HTML()
        self._cards = widgets.VBox()
        self._annotator_box = widgets.Text(value=session.annotator, description="Annotator:")
        self._progress_bar = widgets.IntProgress(min=0, max=max(len(samples), 1))
        self._progress = widgets.Label()
        self._prev = widgets.Button(description="◀ Prev", tooltip="previous prompt")
        self._next = widgets.Button(description="Next ▶", tooltip="next prompt")
        self._undo = widgets.Button(description="Undo", icon="undo", tooltip="undo my last judgement")
        self._page = widgets.Label()
        self.keyboard = KeyListener([*(str(v) for v in STARS), "j", "k", "n", "p", "u"],
                                {"1-5": "rate", "j/k": "next/previous sample",
                                 "n/p": "next/previous prompt", "u": "undo"}, self.press)
        super().__init__([
            widgets.HBox([self._annotator_box, self._progress_bar, self._progress]),
            self._prompt, self._cards,
            widgets.HBox([self._prev, self._page, self._next, self._undo]), self.keyboard,
        ], **kwargs)
        self.add_class(PANEL_CLASS)
        self._prev.on_click(lambda _: self.prev())
        self._next.on_click(lambda _: self.next())
        self._undo.on_click(lambda _: self.undo())
        self._annotator_box.observe(lambda ch: setattr(self, "annotator", ch["new"].strip()), "value")
        self.total = len(samples)
        self.annotator = session.annotator  # triggers loading this annotator's ratings
        self._render()

    # -- what is shown -------------------------------------------------------------------------
    @property
    def samples(self) -> list:
        """The samples on the page being shown."""
        return self._pages[self.index][1] if self._pages else []

    @traitlets.observe("annotator")
    def _annotator_changed(self, change) -> None:
        if self._annotator_box.value.strip() != change["new"]:
            self._annotator_box.value = change["new"]
        store = self._session.store
        self._ratings = {}
        for _, page in self._pages:
            for s in page:
                rating = store.current(s.sample_id, change["new"]).get("rating") if change["new"] else None
                if rating is not None:
                    self._ratings[s.sample_id] = rating
        self._update_progress()
        if hasattr(self, "_card_widgets"):
            self._render()

    @traitlets.observe("index")
    def _index_changed(self, change) -> None:
        self.cursor = 0
        self._render()

    @traitlets.observe("cursor")
    def _cursor_changed(self, change) -> None:
        for i, card in enumerate(getattr(self, "_card_widgets", ())):
            card.layout.border = _FOCUSED if i == change["new"] else _UNFOCUSED

    def _render(self) -> None:
        prompt = self._pages[self.index][0] if self._pages else None
        self._prompt.value = escaped_html(
            "(no samples to rate)" if not self._pages else
            f"Prompt {self.index + 1} of {len(self._pages)}: {prompt or '(no prompt)'}",
            style="font-weight:bold;white-space:pre-wrap")
        cards = []
        for i, sample in enumerate(self.samples):
            card = _SampleCard(i + 1, sample.text)
            for value, button in zip(STARS, card.stars):
                button.on_click(lambda _, i=i, v=value: self.rate(i, v))
            card.save_critique.on_click(lambda _, i=i, c=card: self.critique(i, c.critique.value))
            card.save_correction.on_click(lambda _, i=i, c=card: self.correct(i, c.correction.value))
            current = (self._session.store.current(sample.sample_id, self.annotator)
                       if self.annotator else {})
            card.show_rating(current.get("rating"))
            card.critique.value = current.get("critique", "")
            card.correction.value = current.get("correction", sample.text)
            if current:
                card.status.value = "saved earlier: " + ", ".join(
                    f"{k} {v}" if k == "rating" else k for k, v in current.items())
            card.layout.border = _FOCUSED if i == self.cursor else _UNFOCUSED
            cards.append(card)
        self._card_widgets = cards
        self._cards.children = cards
        self._page.value = f"{self.index + 1} / {max(len(self._pages), 1)}"
        self._prev.disabled = self.index == 0
        self._next.disabled = self.index >= len(self._pages) - 1

    def _update_progress(self) -> None:
        self.rated = len(self._ratings)
        self._progress_bar.value = self.rated
        self._progress.value = f"{self.rated} of {self.total} rated"

    def _card(self, sample_idx: int) -> tuple[_SampleCard, object]:
        if not 0 <= sample_idx < len(self.samples):
            raise IndexError(f"sample_idx must be 0..{len(self.samples) - 1}, got {sample_idx}")
        return self._card_widgets[sample_idx], self.samples[sample_idx]

    def _save(self, card: _SampleCard, what: str, action) -> bool:
        # The indicator turns to "saved" only after the store committed the event.
        if not self.annotator:
            card.status.value = "✗ not saved: enter an annotator name first"
            return False
        try:
            action()
        except Exception as err:  # shown, not swallowed: the person must know it did not save
            card.status.value = f"✗ not saved ({what}): {err}"
            return False
        card.status.value = f"✓ saved {what} at {time.strftime('%H:%M:%S')}"
        return True

    # -- actions (each button calls one of these) ----------------------------------------------
    def press(self, key: str) -> None:
        """Do what ``key`` does: 1-5 rate the focused sample (then focus the next), j/k move
        the focus, n/p change prompt, u undoes."""
        n = len(self.samples)
        if key in {str(v) for v in STARS} and n:
            if self.rate(self.cursor, int(key)):
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
        card, sample = self._card(sample_idx)
        self.cursor = sample_idx
        ok = self._save(card, f"rating {rating}", lambda: self._session.record_rating(
            sample.sample_id, rating, annotator=self.annotator))
        if ok:
            self._ratings[sample.sample_id] = rating
            card.show_rating(rating)
            self._update_progress()
        return ok

    def critique(self, sample_idx: int, text: str) -> bool:
        """Save a critique of sample ``sample_idx``; returns whether it was saved."""
        card, sample = self._card(sample_idx)
        card.critique.value = text
        return self._save(card, "critique", lambda: self._session.record_critique(
            sample.sample_id, text, annotator=self.annotator))

    def correct(self, sample_idx: int, text: str) -> bool:
        """Save a corrected text for sample ``sample_idx``; returns whether it was saved."""
        card, sample = self._card(sample_idx)
        card.correction.value = text
        return self._save(card, "correction", lambda: self._session.record_correction(
            sample.sample_id, text, annotator=self.annotator))

    def undo(self) -> bool:
        """Cancel the annotator's latest judgement on any sample of this panel."""
        ids = {s.sample_id for _, page in self._pages for s in page}
        event = self._session.undo(annotator=self.annotator) if self.annotator else None
        if event is None:
            return False
        if event.sample_id in ids:
            now = self._session.store.current(event.sample_id, self.annotator)
            if "rating" in now:
                self._ratings[event.sample_id] = now["rating"]
            else:
                self._ratings.pop(event.sample_id, None)
            self._update_progress()
            self._render()
            for card, s in zip(self._card_widgets, self.samples):
                if s.sample_id == event.sample_id:
                    card.status.value = f"↶ undid {event.kind}"
        return True

    def next(self) -> None:
        """Show the next prompt."""
        self.index = min(self.index + 1, max(len(self._pages) - 1, 0))

    def prev(self) -> None:
        """Show the previous prompt."""
        self.index = max(self.index - 1, 0)
