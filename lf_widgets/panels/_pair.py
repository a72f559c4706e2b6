"""Two samples side by side and a choice: the shared view of the preference and A/B panels.

Items arrive as their two samples are written (both complete before an item is shown). What is
chosen is read from the Session (``session.judgements``), never kept here: choosing again on an
item replaces the earlier choice, undo brings the earlier one back, and a choice made elsewhere
shows here too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import ipywidgets as widgets
import traitlets

from ._display import DisplayOnce
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


class PairPanel(DisplayOnce, widgets.VBox):
    """Base view: one item per page, choices A / B / tie / both bad, optional reason, undo.

    Subclasses say how a choice is stored (``_record``), which choices are in force
    (``_choices``: item index -> choice as shown) and which event kind they write (``KIND``).
    """

    KIND = ""
    index = traitlets.Int(0, help="Which item is shown (0-based).")
    judged = traitlets.Int(0, help="Items with a choice in force from this annotator.")
    total = traitlets.Int(0, help="Items in this panel (arrived or still being written).")
    ready = traitlets.Int(0, help="Items whose two answers are both written.")

    def __init__(self, session, items: Sequence[PairItem], *, title: str, total: int | None = None,
                 **kwargs):
        self._session = session
        self._lock = threading.RLock()  # items arrive on the model's thread
        # a vote on the last arrived item while more are being written: show the next one as it
        # arrives, as a vote on any other item moves on at once (cleared by moving by hand)
        self._advance_on_arrival = False
        self.items = list(items)
        self.title = widgets.HTML(escaped_html(title, style="font-weight:bold"))
        self.prompt_text = widgets.HTML()
        self.left_text, self.right_text = widgets.HTML(), widgets.HTML()
        self.buttons = {c: widgets.Button(description=label, tooltip=f"{label} (key {k})")
                        for (k, c), label in zip(_KEY_TO_CHOICE.items(), CHOICES.values())}
        self.reason = widgets.Text(placeholder="why? (optional)", description="Reason:")
        self.status = widgets.HTML()
        self.progress = widgets.HTML()
        self.prev_button = widgets.Button(description="◀ Prev")
        self.next_button = widgets.Button(description="Next ▶")
        self.undo_button = widgets.Button(description="Undo", icon="undo")
        self.keyboard = KeyListener(["a", "b", "t", "x", "n", "p", "u"],
                                    {"a/b": "choose side", "t": "tie", "x": "both bad",
                                     "n/p": "next/previous", "u": "undo"}, self.press)
        half = widgets.Layout(width="50%")
        super().__init__([
            widgets.HBox([self.title, self.progress]), self.prompt_text,
            widgets.HBox([widgets.VBox([widgets.HTML("<b>A</b>"), self.left_text], layout=half),
                          widgets.VBox([widgets.HTML("<b>B</b>"), self.right_text], layout=half)]),
            widgets.HBox(list(self.buttons.values())), widgets.HBox([self.reason, self.status]),
            widgets.HBox([self.prev_button, self.next_button, self.undo_button]), self.keyboard,
        ], **kwargs)
        self.add_class(PANEL_CLASS)
        for choice, button in self.buttons.items():
            button.on_click(lambda _, c=choice: self.choose(c))
        self.prev_button.on_click(lambda _: self.prev())
        self.next_button.on_click(lambda _: self.next())
        self.undo_button.on_click(lambda _: self.undo())
        self.total = len(self.items) if total is None else total
        self._unsubscribe = [session.on("judgement", self._on_judgement),
                             session.on("undo", self._on_judgement)]
        self._render()

    # -- subclasses ------------------------------------------------------------------------------
    def _record(self, index: int, choice: str, reason: str | None):
        raise NotImplementedError

    def _choices(self) -> dict[int, str]:
        raise NotImplementedError

    def _after_change(self) -> None:
        """Hook: called after every choice or undo."""

    # -- items arriving (model's thread) ---------------------------------------------------------
    def add_item(self, item: PairItem) -> None:
        """Show one more item (its two answers are written)."""
        with self._lock:
            self.items.append(item)
            if self._advance_on_arrival and self.index == len(self.items) - 2:
                self._advance_on_arrival = False
                self.index += 1  # renders
            else:
                self._render()

    def sample_ids(self) -> list[int]:
        return [s.sample_id for item in list(self.items) for s in (item.left, item.right)]

    def _on_judgement(self, event) -> None:
        if event.kind in (self.KIND, "undo") and event.sample_id in set(self.sample_ids()):
            with self._lock:
                self._render()
                self._after_change()

    # -- view ------------------------------------------------------------------------------------
    @traitlets.observe("index")
    def _index_changed(self, change) -> None:
        self._advance_on_arrival = False  # moved (by hand or by a vote): nothing pending
        self._render()

    def _render(self) -> None:
        with self._lock:
            self.ready = len(self.items)
            if not self.items:
                waiting = "(nothing to compare)" if not self.total else "(answers are being written…)"
                self.prompt_text.value = escaped_html(waiting)
                self.left_text.value = self.right_text.value = ""
            else:
                item = self.items[self.index]
                self.prompt_text.value = escaped_html(
                    f"Item {self.index + 1} of {self.total}: {item.prompt or '(no prompt)'}",
                    style="font-weight:bold;white-space:pre-wrap")
                self.left_text.value = escaped_html(item.left.text, style=_TEXT_STYLE)
                self.right_text.value = escaped_html(item.right.text, style=_TEXT_STYLE)
            choices = self._choices() if self.items else {}
            self.judged = len(choices)
            chosen = choices.get(self.index)
            for choice, button in self.buttons.items():
                button.button_style = "success" if choice == chosen else ""
                button.disabled = not self.items
            more = f" · {self.total - self.ready} still being written" if self.ready < self.total else ""
            self.progress.value = escaped_html(f"{self.judged} of {self.total} judged{more}",
                                               tag="span")
            self.prev_button.disabled = self.index == 0
            self.next_button.disabled = self.index >= len(self.items) - 1

    # -- actions ---------------------------------------------------------------------------------
    def choose(self, choice: str) -> bool:
        """Record ``choice`` ("a", "b", "tie", "both_bad") for the item shown, then move on.

        Choosing again on an item replaces the earlier choice (only the latest counts)."""
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {list(CHOICES)}, got {choice!r}")
        if not self.items:
            return False
        reason = self.reason.value.strip() or None
        before = self._choices().get(self.index)
        try:
            self._record(self.index, choice, reason)
        except Exception as err:  # shown: the person must know it did not save
            self.status.value = escaped_html(f"✗ not saved: {err}", tag="span")
            return False
        again = f" (replaces {CHOICES[before]})" if before and before != choice else ""
        self.status.value = escaped_html(
            f"✓ saved {CHOICES[choice]}{again} at {time.strftime('%H:%M:%S')}", tag="span")
        self.reason.value = ""
        with self._lock:
            if self.index < len(self.items) - 1:
                self.index += 1
            else:
                self._advance_on_arrival = len(self.items) < self.total
                self._render()
        return True

    def undo(self) -> bool:
        """Cancel this annotator's latest choice in this panel; the one it replaced (if any) is
        in force again, and that item is shown."""
        if not self.items:
            return False
        event = self._session.undo(sample_ids=self.sample_ids(), kinds=[self.KIND])
        if event is None:
            return False
        ids = (event.sample_id, event.value.get("other"))
        for i, item in enumerate(self.items):
            if (item.left.sample_id, item.right.sample_id) in (ids, ids[::-1]):
                if self.index != i:
                    self.index = i
                now = self._choices().get(i)
                self.status.value = escaped_html(
                    f"↶ undone; in force now: {CHOICES[now] if now else 'no choice'}", tag="span")
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
        self.index = min(self.index + 1, max(len(self.items) - 1, 0))

    def prev(self) -> None:
        self.index = max(self.index - 1, 0)
