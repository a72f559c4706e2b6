"""Two samples side by side and a choice: the shared view of the preference and A/B panels."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import ipywidgets as widgets
import traitlets

from ._keys import PANEL_CLASS, KeyListener
from ._text import escaped_html

__all__ = ["PairItem", "PairPanel", "CHOICES"]

# choice -> button label; "a"/"b" are the sides as shown, never the models behind them
CHOICES = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both bad"}
_KEY_TO_CHOICE = {"a": "a", "b": "b", "t": "tie", "x": "both_bad"}
_TEXT_STYLE = "white-space:pre-wrap;border:1px solid #ddd;padding:6px;min-height:3em"


@dataclass(frozen=True)
class PairItem:
    """One judgement to make: the prompt and the samples shown left (A) and right (B)."""

    prompt: str | None
    left: object  # lf_widgets.session.Sample shown as A
    right: object  # lf_widgets.session.Sample shown as B


class PairPanel(widgets.VBox):
    """Base view: one item per page, choices A / B / tie / both bad, optional reason, undo."""

    index = traitlets.Int(0, help="Which item is shown (0-based).")
    judged = traitlets.Int(0, help="Items with a choice from this annotator.")
    total = traitlets.Int(0, help="Items in this panel.")

    def __init__(self, session, items: Sequence[PairItem], *, title: str, **kwargs):
        self._session = session
        self.items = list(items)
        self._choices: dict[int, str] = {}  # item index -> choice (sides as shown)
        self._title = widgets.HTML(escaped_html(title, style="font-weight:bold"))
        self._prompt = widgets.HTML()
        self._left, self._right = widgets.HTML(), widgets.HTML()
        self._buttons = {c: widgets.Button(description=label, tooltip=f"{label} (key {k})")
                         for (k, c), label in zip(_KEY_TO_CHOICE.items(), CHOICES.values())}
        self._reason = widgets.Text(placeholder="why? (optional)", description="Reason:")
        self._status = widgets.Label("")
        self._progress = widgets.Label()
        self._prev = widgets.Button(description="◀ Prev")
        self._next = widgets.Button(description="Next ▶")
        self._undo = widgets.Button(description="Undo", icon="undo")
        self.keyboard = KeyListener(["a", "b", "t", "x", "n", "p", "u"],
                                    {"a/b": "choose side", "t": "tie", "x": "both bad",
                                     "n/p": "next/previous", "u": "undo"}, self.press)
        half = widgets.Layout(width="50%")
        super().__init__([
            widgets.HBox([self._title, self._progress]), self._prompt,
            widgets.HBox([widgets.VBox([widgets.Label("A"), self._left], layout=half),
                          widgets.VBox([widgets.Label("B"), self._right], layout=half)]),
            widgets.HBox(list(self._buttons.values())), widgets.HBox([self._reason, self._status]),
            widgets.HBox([self._prev, self._next, self._undo]), self.keyboard,
        ], **kwargs)
        self.add_class(PANEL_CLASS)
        for choice, button in self._buttons.items():
            button.on_click(lambda _, c=choice: self.choose(c))
        self._prev.on_click(lambda _: self.prev())
        self._next.on_click(lambda _: self.next())
        self._undo.on_click(lambda _: self.undo())
        self.total = len(self.items)
        self._render()

    # -- subclasses say how a choice is stored ---------------------------------------------------
    def _record(self, index: int, choice: str, reason: str | None):
        raise NotImplementedError

    def _after_change(self) -> None:
        """Hook: called after every choice or undo."""

    # -- view ------------------------------------------------------------------------------------
    @traitlets.observe("index")
    def _index_changed(self, change) -> None:
        self._render()

    def _render(self) -> None:
        if not self.items:
            self._prompt.value = escaped_html("(nothing to compare)")
            self._left.value = self._right.value = ""
        else:
            item = self.items[self.index]
            self._prompt.value = escaped_html(
                f"Item {self.index + 1} of {self.total}: {item.prompt or '(no prompt)'}",
                style="font-weight:bold;white-space:pre-wrap")
            self._left.value = escaped_html(item.left.text, style=_TEXT_STYLE)
            self._right.value = escaped_html(item.right.text, style=_TEXT_STYLE)
        chosen = self._choices.get(self.index)
        for choice, button in self._buttons.items():
            button.button_style = "success" if choice == chosen else ""
        self._progress.value = f"{self.judged} of {self.total} judged"
        self._prev.disabled = self.index == 0
        self._next.disabled = self.index >= self.total - 1

    # -- actions ---------------------------------------------------------------------------------
    def choose(self, choice: str) -> bool:
        """Record ``choice`` ("a", "b", "tie", "both_bad") for the item shown, then move on."""
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {list(CHOICES)}, got {choice!r}")
        if not self.items:
            return False
        reason = self._reason.value.strip() or None
        try:
            self._record(self.index, choice, reason)
        except Exception as err:  # shown: the person must know it did not save
            self._status.value = f"✗ not saved: {err}"
            return False
        self._choices[self.index] = choice
        self.judged = len(self._choices)
        self._status.value = f"✓ saved {CHOICES[choice]} at {time.strftime('%H:%M:%S')}"
        self._reason.value = ""
        self._after_change()
        if self.index < self.total - 1:
            self.index += 1
        else:
            self._render()
        return True

    def undo(self) -> bool:
        """Cancel this annotator's latest choice in this panel and show that item again."""
        if not self._choices:
            return False
        last = list(self._choices)[-1]
        event = self._session.undo(annotator=self._session.annotator)
        if event is None:
            return False
        del self._choices[last]
        self.judged = len(self._choices)
        self._status.value = "↶ undone"
        self._after_change()
        if self.index != last:
            self.index = last
        else:
            self._render()
        return True

    def press(self, key: str) -> None:
        """Do what ``key`` does (a, b, t, x choose; n / p move; u undoes)."""
        if key in _KEY_TO_CHOICE:
            self.choose(_KEY_TO_CHOICE[key])
        elif key == "n":
            self.next()
        elif key == "p":
            self.prev()
        elif key == "u":
            self.undo()

    def next(self) -> None:
        self.index = min(self.index + 1, max(self.total - 1, 0))

    def prev(self) -> None:
        self.index = max(self.index - 1, 0)
