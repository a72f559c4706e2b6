"""ReviewPanel: the items where judges disagree, one per page, for a reviewer to settle.

Each page shows the sample (or the two samples of a pair), every judgement in force with its
annotator and critique, and the adjudication in force if any; a rating button (1-5) or a choice
(A / B / tie) records the reviewer's settled judgement (``session.adjudicate``), which training
then uses over the judges' own. Everything untrusted — texts, prompts, names, critiques — goes
through :func:`~lf_widgets.panels._text.escaped_html`. Method twins: ``settle(value)``,
``next()``, ``prev()``.
"""

from __future__ import annotations

import ipywidgets as widgets
import traitlets

from ._display import DisplayOnce
from ._text import escaped_html

__all__ = ["ReviewPanel"]

_TEXT = "white-space:pre-wrap;border-left:3px solid #ccc;padding-left:8px;margin:4px 0"


class ReviewPanel(DisplayOnce, widgets.VBox):
    """Disagreements (rating spread ≥ ``spread``, or a pair judged both ways) to adjudicate."""

    index = traitlets.Int(0, help="Which disagreement is shown (0-based).")
    total = traitlets.Int(0, help="Items where the judges disagree.")
    settled = traitlets.Int(0, help="Of those, items with an adjudication in force.")

    def __init__(self, session, *, spread: int = 2, **kwargs):
        from ..team import disagreements  # pandas only: no model library

        self._session, self._spread, self._find = session, spread, disagreements
        self.body = widgets.VBox()
        self.note = widgets.Text(placeholder="why (optional)", description="Note:")
        self.stars = [widgets.Button(description=str(v), layout=widgets.Layout(width="40px"))
                      for v in range(1, 6)]
        self.choices = {c: widgets.Button(description=c.upper() if c != "tie" else "tie")
                        for c in ("a", "b", "tie")}
        self.status = widgets.HTML()
        self.prev_button = widgets.Button(description="◀ Prev")
        self.next_button = widgets.Button(description="Next ▶")
        for v, button in enumerate(self.stars, 1):
            button.on_click(lambda _, v=v: self.settle(v))
        for c, button in self.choices.items():
            button.on_click(lambda _, c=c: self.settle(c))
        self.prev_button.on_click(lambda _: self.prev())
        self.next_button.on_click(lambda _: self.next())
        self.controls = widgets.HBox()
        super().__init__([self.body, self.controls, self.note, self.status,
                          widgets.HBox([self.prev_button, self.next_button])], **kwargs)
        self._reload()

    def _reload(self) -> None:
        self.items = self._find(self._session.store, spread=self._spread)
        self.total = len(self.items)
        self.settled = sum(item["adjudicated"] is not None for item in self.items)
        self._render()

    @traitlets.observe("index")
    def _index_changed(self, change) -> None:
        self._render()

    def _render(self) -> None:
        if not self.items:
            self.body.children = [widgets.HTML(escaped_html("No disagreements to review."))]
            self.controls.children = []
            return
        item = self.items[self.index]
        texts = {s.sample_id: s for s in self._session.samples()}
        first = texts[item["sample_ids"][0]]
        parts = [escaped_html(f"{self.index + 1} of {self.total} · {item['kind']}",
                              style="font-weight:bold"),
                 escaped_html(f"Prompt: {first.prompt or ''}")]
        for label, sid in zip("AB", item["sample_ids"]):
            name = f"{label} (sample {sid})" if item["kind"] == "preference" else f"sample {sid}"
            parts += [escaped_html(name), escaped_html(texts[sid].text, style=_TEXT)]
        for j in item["judgements"]:
            said = f"rated {j['value']}" if item["kind"] == "rating" else f"chose {j['value']}"
            parts.append(escaped_html(f"{j['annotator']}: {said}"
                                      + (f" — {j['critique']}" if j.get("critique") else "")))
        settled = item["adjudicated"]
        parts.append(escaped_html("adjudicated: " + ("not yet" if settled is None else
                                                     str(_shown(item, settled)))))
        self.body.children = [widgets.HTML("".join(parts))]
        self.controls.children = self.stars if item["kind"] == "rating" \
            else list(self.choices.values())

    def settle(self, value) -> bool:
        """Adjudicate the item shown: a rating 1-5, or "a" / "b" / "tie" for a pair (A is the
        lower sample id, as shown). Returns False when there is nothing to settle."""
        if not self.items:
            return False
        item = self.items[self.index]
        if item["kind"] == "preference" and value != "tie":
            value = item["sample_ids"][0 if value == "a" else 1]
        self._session.adjudicate(item["subject"], value, note=self.note.value or None)
        self.status.value = escaped_html(f"saved: {item['subject']} settled", tag="span")
        index = self.index
        self._reload()
        self.index = min(index, max(self.total - 1, 0))
        return True

    def next(self) -> None:
        self.index = min(self.index + 1, max(self.total - 1, 0))

    def prev(self) -> None:
        self.index = max(self.index - 1, 0)


def _shown(item: dict, settled) -> str:
    if item["kind"] == "rating":
        return f"rating {settled}"
    winner = settled.get("winner")
    return "tie" if winner is None else ("A" if winner == item["sample_ids"][0] else "B")
