"""ABTestPanel: blind votes between two contenders, then the reveal with the statistics."""

from __future__ import annotations

import html

import ipywidgets as widgets
import traitlets

from ._pair import PairPanel
from ._text import escaped_html

__all__ = ["ABTestPanel"]


class ABTestPanel(PairPanel):
    """Vote A / B / tie / both bad without knowing which model wrote which side.

    Nothing in the widgets says which side is which contender until :meth:`reveal` (the
    Reveal button, or voting on every item). Then the panel shows, per item, who was who, the
    win rate with its Wilson interval and sign-test p-value in a sentence, and a chart.
    """

    revealed = traitlets.Bool(False, help="Whether the side assignment has been shown.")

    def __init__(self, session, test, **kwargs):
        self._test = test  # kernel-side only: holds the hidden assignment
        super().__init__(session, test.items, title="Blind A/B test: which answer is better?",
                         **kwargs)
        self._reveal_button = widgets.Button(description="Reveal", icon="eye",
                                             tooltip="show which model wrote which side")
        self._reveal_button.on_click(lambda _: self.reveal())
        self._results = widgets.VBox()
        self.children = (*self.children, self._reveal_button, self._results)

    @property
    def test_id(self) -> str:
        """The id of this test in the log (``session.ab_results(panel.test_id)``)."""
        return self._test.test_id

    def _record(self, index: int, choice: str, reason: str | None):
        return self._session.record_ab_vote(self._test, index, choice, reason=reason)

    def _after_change(self) -> None:
        if self.judged == self.total and self.total and not self.revealed:
            self.reveal()
        elif self.revealed:
            self._show_results()

    def reveal(self) -> None:
        """Show who was who and the statistics (also done when every item has a vote)."""
        self.revealed = True
        self._reveal_button.disabled = True
        self._show_results()

    def _show_results(self) -> None:
        from ..evaluation import ab_chart

        result = self._session.ab_summary(self._test.test_id)
        rows = "".join(
            f"<tr><td>{i + 1}</td><td>{html.escape(left)}</td><td>{html.escape(right)}</td></tr>"
            for i, (left, right) in enumerate(self._test.hidden))
        table = ("<table><tr><th>item</th><th>A was</th><th>B was</th></tr>" + rows + "</table>")
        self._results.children = [
            widgets.HTML(escaped_html(result.sentence(), style="font-weight:bold")),
            widgets.HTML(table),  # every cell above went through html.escape
            widgets.Output() if not result.n else _figure_widget(ab_chart(result)),
        ]


def _figure_widget(figure):
    import plotly.graph_objects as go

    return go.FigureWidget(figure)
