"""The training monitor's curves: a plotly figure shown through plotly's own mimetype renderer.

Why not ``plotly.graph_objects.FigureWidget``, which the monitor used before: since plotly 6 it
is an anywidget, and anywidget (0.11) drops every update to a model whose JavaScript has not
loaded within 2 s of the model's creation (``runtime.ready``, which ``_handle_comm_msg`` awaits,
is rejected by an ``AbortSignal.timeout(2000)``). plotly's widget bundle is ~5 MB; on a busy
2-core machine it takes longer, and the monitor kept its first, empty state in the page (one
bare axis, no titles, no traces) while the kernel's figure had every point. FigureWidget also
sends traces and points only as one-off messages (its synced ``_widget_data`` is the state at
construction), so a view made later, or a page reload, could not recover them either.

Here the whole figure is plain widget state: each redraw puts it, as plotly's
``application/vnd.plotly.v1+json`` bundle, into an ``ipywidgets.Output``'s ``outputs``. Output is
a core widget (no JavaScript to load through the kernel), and any view — created late, or after
a reload — renders what is there now. The bundle is drawn by plotly's JupyterLab extension
(installed with plotly; JupyterLab 4 and Notebook 7 use it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
from plotly.subplots import make_subplots

from ._run_status import finite
from ._text import escaped_text

__all__ = ["CURVES", "LossChart", "MIME", "SKIPPED", "TITLES", "figure_bundle", "figure_view"]

MIME = "application/vnd.plotly.v1+json"
HEIGHT = 520
# The toolbar shows only while the pointer is over the plot, and the top margin leaves it a band
# of its own above the subplot titles, so it never covers them.
CONFIG = {"displayModeBar": "hover", "displaylogo": False, "responsive": True}
MARGIN = dict(l=56, r=56, t=78, b=40)

# Each curve: (objective, field of StepMetrics.as_row(), legend name, subplot (row, col),
# on the secondary y axis). "loss" of every objective shares the first subplot.
CURVES = (
    ("sft", "loss", "SFT loss", (1, 1), False),
    ("dpo", "loss", "DPO loss", (1, 1), False),
    ("kto", "loss", "KTO loss", (1, 1), False),
    ("sft", "target_logp", "log p(target)", (1, 2), False),
    ("dpo", "chosen_logp", "log p(chosen)", (1, 2), False),  # its fall is a known DPO failure
    ("dpo", "reward_margin", "reward margin", (2, 1), False),
    ("dpo", "pair_accuracy", "pair accuracy", (2, 1), True),  # 0..1, own axis on the right
    ("kto", "desirable_reward", "desirable reward", (2, 2), False),
    ("kto", "undesirable_reward", "undesirable reward", (2, 2), False),
    ("kto", "kl", "KL estimate", (2, 2), False),
)
TITLES = ("loss (all objectives)", "log p per token: SFT target · DPO chosen",
          "DPO: reward margin · pair accuracy",
          "KTO: rewards · KL")
SKIPPED = ("skipped", "loss")  # key of the red-x trace marking skipped steps


def plot_text(text: str) -> str:
    """Untrusted text for plotly labels: plotly reads a few HTML tags and ``$...$`` maths in
    them, so both are neutralised (numeric entities only: plotly shows ``&quot;`` as typed)."""
    return escaped_text(text, quote=False)


def figure_bundle(figure, text: str) -> dict:
    """``figure`` (a plotly ``go.Figure``) as one display_data output for an ``Output`` widget:
    drawn by plotly's JupyterLab extension from the whole state each time, so a view created
    late or after a reload shows it (a FigureWidget's one-off updates can be lost)."""
    data = figure.to_dict()
    data["config"] = dict(CONFIG)
    return {"output_type": "display_data", "metadata": {},
            "data": {MIME: data, "text/plain": text}}


def figure_view(figure, text: str) -> widgets.Output:
    """An ``Output`` widget showing ``figure`` (see :func:`figure_bundle`)."""
    view = widgets.Output()
    view.outputs = (figure_bundle(figure, text),)
    return view


def _figure():
    fig = make_subplots(rows=2, cols=2, subplot_titles=TITLES, vertical_spacing=0.17,
                        horizontal_spacing=0.13,
                        specs=[[{}, {}], [{"secondary_y": True}, {}]])
    fig.update_layout(height=HEIGHT, margin=MARGIN, template="plotly_white",
                      legend=dict(orientation="h", x=0, y=-0.14), hovermode="closest")
    fig.update_xaxes(title_text="step", row=2)
    # pair accuracy is a share: its own 0–100 % axis, not ticks synced to the margin's axis
    fig.update_yaxes(range=[-0.05, 1.05], tickmode="linear", tick0=0, dtick=0.5,
                     tickformat=".0%", showgrid=False, row=2, col=1, secondary_y=True)
    return fig


class LossChart:
    """The curves of every step drawn so far, and the Output widget that shows them.

    :meth:`add` appends a step's numbers to plain lists; :meth:`render` copies them into
    :attr:`figure` and puts the figure in :attr:`view` — only if something changed since the
    last render (a state change alone does not redraw the plot).
    """

    def __init__(self):
        self.figure = _figure()
        self.view = widgets.Output(layout=widgets.Layout(min_height=f"{HEIGHT + 8}px"))
        self._traces: dict[tuple[str, str], int] = {}  # curve -> index in figure.data
        self._series: dict[tuple[str, str], tuple[list, list]] = {}  # curve -> (x, y)
        self._skip_notes: list[str] = []  # hover text of the red-x markers
        self._last_loss = 0.0  # where a skipped step's marker goes
        self._changes, self._drawn = 0, -1
        for objective, field, name, (row, col), secondary in CURVES:
            self._add_trace((objective, field), name, row, col, secondary)
        self._add_trace(SKIPPED, "skipped step", 1, 1, False,
                        mode="markers", marker=dict(symbol="x", color="red", size=9))

    def _add_trace(self, key, name, row, col, secondary, **style) -> None:
        style = style or dict(mode="lines+markers", marker=dict(size=4))
        self.figure.add_scatter(x=[], y=[], name=name, row=row, col=col, secondary_y=secondary,
                                **style)
        self._traces[key] = len(self.figure.data) - 1
        self._series[key] = ([], [])

    def add(self, row: Mapping[str, Any]) -> None:
        """Append one step (a ``StepMetrics.as_row()`` dict) to its objective's curves."""
        step, objective = int(row["step"]), str(row.get("objective") or "")
        if (objective, "loss") not in self._traces:  # an objective this chart does not know
            self._add_trace((objective, "loss"), plot_text(f"{objective.upper()} loss"), 1, 1,
                            False)
        for key, (xs, ys) in self._series.items():
            value = finite(row.get(key[1])) if key[0] == objective and key != SKIPPED else None
            if value is not None:  # NaN / missing values are left out, never drawn as breaks
                xs.append(step)
                ys.append(value)
        loss = finite(row.get("loss"))
        if bool(row.get("skipped")) or loss is None:
            xs, ys = self._series[SKIPPED]
            xs.append(step)
            ys.append(self._last_loss)  # the red x sits at the last finite loss (0 if none yet)
            note = str(row.get("note") or "non-finite loss")
            self._skip_notes.append(plot_text(f"step {step} skipped: {note}"))
        else:
            self._last_loss = loss
        self._changes += 1

    def render(self) -> bool:
        """Redraw in the page if anything changed; True if it did."""
        if self._drawn == self._changes:
            return False
        for key, (xs, ys) in self._series.items():
            trace = self.figure.data[self._traces[key]]
            if len(trace.x or ()) != len(xs):
                trace.x, trace.y = list(xs), list(ys)
        self.figure.data[self._traces[SKIPPED]].hovertext = list(self._skip_notes)
        self.view.outputs = (self.bundle(),)
        self._drawn = self._changes
        return True

    def bundle(self) -> dict:
        """The figure as one display_data output: plotly's mimetype and a plain-text stand-in."""
        points = len(self._series[SKIPPED][0]) + sum(
            len(xs) for key, (xs, _) in self._series.items() if key[1] == "loss")
        return figure_bundle(self.figure, f"training curves: {points} steps")

    def close(self) -> None:
        self.view.close()
