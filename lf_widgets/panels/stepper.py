"""StepperPanel: one sample's tokens coloured by probability, its loss written out, one step at a time.

The teacher's view of the seed's loss ``L(θ) = Σ −log P(y|x; θ)``: every token of the answer with
the probability the model gives it, the sum written out with the numbers plugged in, a **Take one
step** button (method twin :meth:`StepperPanel.take_step`) and, after the step, a bar per token of
how much its log-probability moved.

A thin view: no torch here. The numbers come from a kernel-side stepper
(:class:`lf_widgets.stepper.SampleStepper`) with two methods, ``probabilities()`` and ``step()``.
Token text, the prompt and error messages are untrusted: they are escaped (``_text``) before
they reach HTML or the plot, never put in a ``Label`` (which MathJax typesets), and the rest of
the HTML is fixed markup and computed numbers.
"""

from __future__ import annotations

import math

import ipywidgets as widgets
import plotly.graph_objects as go
import traitlets

from ._chart import figure_bundle, figure_view
from ._display import DisplayOnce
from ._text import NO_MATH, escaped_html, escaped_text

__all__ = ["StepperPanel"]

SHOWN_TERMS = 4  # terms of the sum written out before "…"


def _colour(prob: float) -> str:
    """Red (p ≤ 1e-4) through yellow to green (p = 1), on a log scale: most tokens of a good
    answer have p > 0.1 while a surprising one may have 1e-5, so a linear scale shows only red."""
    share = 0.0 if prob <= 0 else min(max(1 + math.log10(prob) / 4, 0.0), 1.0)
    return f"hsl({120 * share:.0f}, 75%, 80%)"


_LEGEND = ('<div style="font-size:90%;color:#555">colour = probability of the token: '
           + "".join(f'<span style="background:{_colour(p)};padding:0 4px;margin:0 1px">{label}</span>'
                     for p, label in [(1e-4, "≤ 0.0001"), (1e-2, "0.01"), (1.0, "1")]) + "</div>")


def _shown(text: str) -> str:
    """A token as the reader should see it: line breaks marked, empty pieces visible."""
    return text.replace("\n", "↵\n") if text else "·"


def tokens_html(tokens) -> str:
    """The tokens as coloured spans; each token's text escaped, the rest numbers and fixed markup."""
    spans = [f'<span title="p = {t.prob:.4g}" style="background:{_colour(t.prob)};'
             f'border-radius:3px;padding:0 1px;margin:0 1px">{escaped_text(_shown(t.token_text))}</span>'
             for t in tokens]
    return (f'<div class="{NO_MATH}" style="white-space:pre-wrap;line-height:1.9;'
            'font-family:monospace">' + "".join(spans) + "</div>")


def loss_formula(tokens) -> str:
    """``L = Σ −log p`` for these tokens with the first few terms written out (plain text)."""
    n, shown = len(tokens), tokens[:SHOWN_TERMS]
    more = f" … ({n - len(shown)} more)" if n > len(shown) else ""
    total = -sum(t.logp for t in tokens)
    return (f"L(θ) = Σ −log p(token)   over the {n} tokens of this answer\n"
            f"     = " + " ".join(f"−log {t.prob:.4f}" if i == 0 else f"− log {t.prob:.4f}"
                                  for i, t in enumerate(shown)) + more + "\n"
            "     = " + " + ".join(f"{-t.logp:.3f}" for t in shown) + (" + …" if more else "")
            + f" = {total:.3f} nats   ({total / max(n, 1):.3f} per token)")


def _figure() -> go.Figure:
    fig = go.Figure(data=[go.Bar(name="Δ log p", x=[], y=[], hoverinfo="text")])
    fig.update_layout(height=280, margin=dict(l=50, r=20, t=40, b=60), showlegend=False,
                      title_text="Change per token after the step: Δ log p (> 0: more likely)",
                      yaxis_title="Δ log p")
    return fig


class StepperPanel(DisplayOnce, widgets.VBox):
    """One sample, its per-token probabilities and loss, and one SFT step at a time.

    Parameters
    ----------
    session : lf_widgets.Session
        Owner of the model; the step takes its model lock and changes its adapter.
    sample : lf_widgets.session.Sample or int
        The answer to learn from (its prompt and stored token ids).
    stepper : object, optional
        The kernel side, with ``probabilities()`` and ``step()``; by default
        ``session._stepper(sample, **options)`` (a :class:`lf_widgets.stepper.SampleStepper`).
    **options
        For the default stepper: ``lr`` and :class:`~lf_widgets.trainer.TrainConfig` fields.
    """

    loss = traitlets.Float(math.nan, help="The sample's loss now, L = Σ −log p over its tokens (nats).")
    steps_taken = traitlets.Int(0, help="Optimizer steps this panel has taken on the sample.")

    def __init__(self, session, sample, *, stepper=None, **options):
        self._session = session
        self._stepper = stepper if stepper is not None else session._stepper(sample, **options)
        self.report = None  # the last step's StepReport
        # the stepper's prompt is what the step conditions on (with feedback, the hindsight turn)
        prompt = getattr(self._stepper, "prompt", None) or getattr(sample, "prompt", None)
        label = ("Prompt with the feedback (a hindsight example)"
                 if getattr(self._stepper, "feedback", None) else "Prompt")
        self._prompt = widgets.HTML(escaped_html(f"{label}: {prompt or '(none)'}",
                                                 style="font-weight:bold;white-space:pre-wrap"))
        self._tokens = widgets.HTML()
        self._formula = widgets.HTML()
        lr = getattr(self._stepper, "lr", None)
        self._button = widgets.Button(description="Take one step", icon="step-forward",
                                      button_style="primary",
                                      tooltip="one gradient step on this answer"
                                              + (f" (lr {lr:g})" if lr is not None else ""))
        self._status = widgets.HTML()  # not a Label: error messages quote untrusted values
        self.figure = _figure()  # a plain figure, drawn whole into an Output (see _chart)
        self.chart = figure_view(self.figure, "no step yet")
        super().__init__([self._prompt, self._tokens, widgets.HTML(_LEGEND), self._formula,
                          widgets.HBox([self._button, self._status]), self.chart])
        self._button.on_click(lambda _: self.take_step())
        self._say("no step yet")
        self._show(self._stepper.probabilities())

    def _say(self, text: str) -> None:
        self._status.value = escaped_html(text, tag="span")

    def _show(self, tokens) -> None:
        self.tokens = list(tokens)
        self._tokens.value = tokens_html(self.tokens)
        self._formula.value = escaped_html(loss_formula(self.tokens), style="white-space:pre;"
                                           "font-family:monospace;overflow-x:auto")
        self.loss = -sum(t.logp for t in self.tokens)

    def _draw(self, report) -> None:
        labels = [escaped_text(_shown(t.token_text).replace("\n", "")[:12], quote=False)
                  for t in report.after]  # plotly reads entities, a few tags and $maths$: escape
        deltas = report.delta_logp
        hover = [f"{label}<br>p {b.prob:.4g} → {a.prob:.4g}<br>Δ log p {d:+.4f}"
                 for label, b, a, d in zip(labels, report.before, report.after, deltas)]
        bar = self.figure.data[0]
        bar.x, bar.y, bar.hovertext = list(range(len(deltas))), deltas, hover
        bar.marker.color = ["#2e7d32" if d >= 0 else "#c62828" for d in deltas]
        self.figure.layout.xaxis.update(tickmode="array", tickvals=list(range(len(deltas))),
                                        ticktext=labels)
        self.chart.outputs = (figure_bundle(self.figure, f"Δ log p of {len(deltas)} tokens"),)

    # -- actions ---------------------------------------------------------------------------------
    def take_step(self):
        """Take one optimizer step on the sample (what the button does); returns the report.

        Runs in the caller's thread: one step on one answer is about a second on a CPU.
        """
        self._button.disabled = True
        self._say("taking one step…")
        try:
            report = self._stepper.step()
        except Exception as err:  # shown, not swallowed: the person must know nothing moved
            self._say(f"✗ step failed: {err}")
            return None
        finally:
            self._button.disabled = False
        self.report = report
        if not report.skipped:
            self.steps_taken += 1
        self._show(report.after)
        self._draw(report)
        self._say(f"step {self.steps_taken}: L {report.loss_before:.3f} → "
                  f"{report.loss_after:.3f} nats" if not report.skipped else f"skipped: {report.note}")
        return report

