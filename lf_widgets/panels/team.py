"""TeamPanel: where a team stands — each annotator's progress on the work plan, and a heatmap
of how far each pair of annotators agrees.

A thin view over ``session.progress()`` and ``session.agreement()``, re-read by
:meth:`TeamPanel.refresh` (the Refresh button). The heatmap is a plotly figure put into an
``Output`` as plotly's own mimetype (see ``_chart``: plain widget state that any view, made late
or after a reload, draws). Annotator names are untrusted: escaped in HTML and in plot labels.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from ._chart import MIME, plot_text
from ._display import DisplayOnce
from ._text import escaped_html

__all__ = ["TeamPanel", "heatmap"]

# The figure per kind: the chance-corrected one (κ for choices, α for ratings), which percent
# agreement would overstate when one answer is far more common than the others.
_HEATMAP_METRIC = {"rating": "krippendorff_alpha", "preference": "cohen_kappa",
                   "ab_vote": "cohen_kappa"}


def heatmap(agreement, kind: str) -> go.Figure | None:
    """Pairwise agreement of one kind as an annotator × annotator heatmap (None: no pairs)."""
    rows = agreement[(agreement["kind"] == kind) & (agreement["metric"] == _HEATMAP_METRIC[kind])
                     & agreement["annotators"].str.contains(", ", regex=False)]
    if rows.empty:
        return None
    pairs = [who.split(", ", 1) for who in rows["annotators"]]
    names = sorted({n for pair in pairs for n in pair})
    index = {n: i for i, n in enumerate(names)}
    grid = np.full((len(names), len(names)), np.nan)
    for (a, b), value in zip(pairs, rows["value"]):
        grid[index[a], index[b]] = grid[index[b], index[a]] = value
    labels = [plot_text(n) for n in names]
    z = [[None if np.isnan(v) else float(v) for v in row] for row in grid]  # JSON: no NaN
    return go.Figure(go.Heatmap(z=z, x=labels, y=labels, zmin=-1, zmax=1,
                                colorscale="RdBu", texttemplate="%{z:.2f}"),
                     layout=dict(title=f"{kind}: {_HEATMAP_METRIC[kind].replace('_', ' ')}",
                                 height=360, width=420, margin=dict(l=60, r=20, t=50, b=40)))


class TeamPanel(DisplayOnce, widgets.VBox):
    """Per-annotator progress and pairwise agreement heatmaps; ``refresh()`` re-reads both."""

    def __init__(self, session, *, n_boot: int = 200, **kwargs):
        self._session, self._n_boot = session, n_boot
        self.progress = widgets.HTML()
        self.figures = widgets.Output()
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _: self.refresh())
        super().__init__([self.refresh_button, self.progress, self.figures], **kwargs)
        self.refresh()

    def refresh(self) -> None:
        """Read progress and agreement from the log again and redraw."""
        progress = self._session.progress()
        self.agreement = self._session.agreement(n_boot=self._n_boot)
        head = "".join(f"<th>{h}</th>" for h in ("annotator", "done", "assigned", "rechecks"))
        body = "".join(
            f"<tr><td>{html.escape(str(who))}</td><td>{r.done}</td><td>{r.assigned}</td>"
            f"<td>{r.rechecks_done} of {r.rechecks}</td></tr>"
            for who, r in progress.table.iterrows())
        team = escaped_html(f"team: {progress.items_done} of {progress.items} items done")
        self.progress.value = (f'<table class="lfw-team">{head}{body}</table>{team}'
                               .replace("$", "&#36;"))
        outputs = []
        for kind in _HEATMAP_METRIC:
            figure = heatmap(self.agreement, kind)
            if figure is not None:
                outputs.append({"output_type": "display_data", "metadata": {},
                                "data": {MIME: figure.to_dict(),
                                         "text/plain": f"{kind} agreement heatmap"}})
        self.figures.outputs = tuple(outputs)
