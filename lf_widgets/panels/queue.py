"""QueuePanel: an annotator's own pending work, first and only — the items the team's plan
(``session.assign``) gave them that they have not judged yet — with "k of m done" for them and
for the team.

A thin view: which items are pending is read from the log (``session.progress()``) when the
panel is made; samples to rate go to a :class:`~lf_widgets.panels.rating.RatingPanel`, pairs to
a :class:`~lf_widgets.panels.preference.PreferencePanel`, and the progress line is re-read on
every judgement or undo, whichever notebook made it.
"""

from __future__ import annotations

import random

import ipywidgets as widgets
import traitlets

from ._display import DisplayOnce
from ._pair import PairItem
from ._text import escaped_html
from .preference import PreferencePanel
from .rating import RatingPanel

__all__ = ["QueuePanel"]


class QueuePanel(DisplayOnce, widgets.VBox):
    """The session's annotator's pending items: ratings first, then pairs.

    Parameters
    ----------
    session : lf_widgets.Session
    seed : int, optional
        Makes the sides of the pairs repeatable.
    """

    done = traitlets.Int(0, help="Items of this annotator's plan they have judged.")
    assigned = traitlets.Int(0, help="Items the plan gave this annotator (rechecks aside).")

    def __init__(self, session, *, seed: int | None = None, **kwargs):
        self._session = session
        self.annotator = session.annotator
        progress = session.progress()
        self.items = list(progress.pending.get(self.annotator, []))  # item keys, queue order
        samples = {s.sample_id: s for s in session.samples()}
        to_rate, pairs, rng = [], [], random.Random(seed)
        for key in self.items:
            kind, *ids = key.split(":")
            if kind == "s":
                to_rate.append(samples[int(ids[0])])
            elif kind == "q":
                to_rate += _of_prompt(session, int(ids[0]), samples)
            else:
                left, right = samples[int(ids[0])], samples[int(ids[1])]
                if rng.random() < 0.5:
                    left, right = right, left
                pairs.append(PairItem(left.prompt, left, right))
        self.header = widgets.HTML()
        self.rating = RatingPanel(session, to_rate) if to_rate else None
        self.preference = PreferencePanel(session, pairs) if pairs else None
        empty = widgets.HTML(escaped_html("Nothing pending for you in the team's plan."))
        parts = [p for p in (self.rating, self.preference) if p is not None] or [empty]
        super().__init__([self.header, *parts], **kwargs)
        self._unsubscribe = [session.on("judgement", self._refresh),
                             session.on("undo", self._refresh)]
        self._show(progress)

    def _refresh(self, _event=None) -> None:
        self._show(self._session.progress())

    def _show(self, progress) -> None:
        row = progress.table.loc[self.annotator] if self.annotator in progress.table.index \
            else None
        self.assigned = 0 if row is None else int(row.assigned)
        self.done = 0 if row is None else int(row.done)
        self.header.value = escaped_html(progress.line(self.annotator), style="font-weight:bold")

    def close(self) -> None:
        for panel in (self.rating, self.preference):
            if panel is not None:
                panel.close()
        super().close()


def _of_prompt(session, prompt_id: int, samples: dict) -> list:
    """The stored samples of one prompt (a ``q:`` item), oldest first."""
    ids = session.store.samples(prompt_id)["sample_id"]
    return [samples[int(i)] for i in ids]
