"""ABTestPanel: blind votes between two contenders, then the reveal with the statistics."""

from __future__ import annotations

import ipywidgets as widgets
import traitlets

from ._pair import PairPanel
from ._text import NO_MATH, escaped_html, escaped_text

__all__ = ["ABTestPanel"]


class ABTestPanel(PairPanel):
    """Vote A / B / tie / both bad without knowing which model wrote which side.

    An item appears once both of its answers are written. Nothing in the widgets says which
    side is which contender until :meth:`reveal` (the Reveal button, or voting on every item).
    Then the panel shows, per item, who was who, the win rate with its Wilson interval and
    sign-test p-value in a sentence, and a chart. A vote changed later (also after the reveal)
    replaces the earlier one, and the statistics follow.
    """

    KIND = "ab_vote"
    revealed = traitlets.Bool(False, help="Whether the side assignment has been shown.")

    def __init__(self, session, test, **kwargs):
        self._test = test  # kernel-side only: holds the hidden assignment
        super().__init__(session, list(test.items), title="Blind A/B test: which answer is better?",
                         total=test.total or len(test.items), **kwargs)
        self.reveal_button = widgets.Button(description="Reveal", icon="eye",
                                            tooltip="show which model wrote which side")
        self.reveal_button.on_click(lambda _: self.reveal())
        self.results = widgets.VBox()
        self.children = (*self.children, self.reveal_button, self.results)
        test.listeners.append(self._on_item)
        self._on_item()  # items completed before we listened

    @property
    def test_id(self) -> str:
        """The id of this test in the log (``session.ab_results(panel.test_id)``)."""
        return self._test.test_id

    def wait(self) -> ABTestPanel:
        """Block until both answers of every item are written (scripts, notebooks)."""
        self._test.wait()
        return self

    def _on_item(self) -> None:  # the model's thread: an item's two answers are written
        with self._lock:
            for item in self._test.items[len(self.items):]:
                self.add_item(item)

    def _record(self, index: int, choice: str, reason: str | None):
        return self._session.record_ab_vote(self._test, index, choice, reason=reason)

    def _choices(self) -> dict[int, str]:
        votes = self._session.judgements(self.sample_ids(), annotator=self._session.annotator,
                                         kinds=["ab_vote"])
        return {int(v["item"]): v["choice"] for v in votes["value"]
                if v.get("test") == self._test.test_id}

    def _after_change(self) -> None:
        if self.judged == self.total and self.total and not self.revealed:
            self.reveal()
        elif self.revealed:
            self._show_results()

    def reveal(self) -> None:
        """Show who was who and the statistics (also done when every item has a vote)."""
        self.revealed = True
        self.reveal_button.disabled = True
        self._show_results()

    def _show_results(self) -> None:
        from ..evaluation import ab_chart

        result = self._session.ab_summary(self._test.test_id)
        rows = "".join(
            f"<tr><td>{i + 1}</td><td>{escaped_text(left)}</td><td>{escaped_text(right)}</td></tr>"
            for i, (left, right) in enumerate(self._test.hidden[:len(self.items)]))
        table = (f'<table class="{NO_MATH}"><tr><th>item</th><th>A was</th>'
                 "<th>B was</th></tr>" + rows + "</table>")
        checks = "".join(escaped_html(line, style="color:#b00" if line.startswith("⚠") else
                                      "color:#333") for line in result.report()[1:])
        self.results.children = [
            widgets.HTML(escaped_html(result.sentence(), style="font-weight:bold")),
            widgets.HTML(checks),  # side bias, lengths, length-controlled rate, leak warnings
            widgets.HTML(escaped_html("Votes can still be changed: the latest vote on an item "
                                      "counts, and these figures follow.", style="color:#555")),
            widgets.HTML(table),  # every cell above went through escaped_text
            widgets.Output() if not result.n else _figure_widget(ab_chart(result)),
        ]


def _figure_widget(figure):
    """The chart as a widget, its contender names and title (a folder path can hold anything)
    escaped: plotly reads a few tags, entities and ``$…$`` maths in its labels. Drawn whole into
    an Output (see ``_chart``), not as a FigureWidget, whose updates a slow page can lose."""
    from ._chart import figure_view

    figure.update_layout(title_text=escaped_text(figure.layout.title.text or "", quote=False))
    for trace in figure.data:
        if trace.x is not None:
            trace.x = [escaped_text(x, quote=False) for x in trace.x]
    return figure_view(figure, "A/B result chart")
