"""TrainingMonitor: live loss curves, progress and Start / Pause / Stop for a Session's training.

A thin view. The Session emits ``"step"`` (:class:`~lf_widgets.metrics.StepMetrics`) and
``"train_state"`` (:class:`~lf_widgets.metrics.TrainState`) events from the training thread; the
monitor's listeners only append the record to a buffer under a lock. :meth:`TrainingMonitor.flush`
draws the buffer at most once per ``throttle_s``: an event that arrives sooner arms a single
``threading.Timer``, so the last points always appear and no asyncio loop is needed (tests run
without a kernel).

What the page shows is widget *state*, never one-off messages, so a view created while the kernel
is busy, or after a page reload, shows every point drawn so far: the curves are a plotly figure
put whole into an ``ipywidgets.Output`` (see :mod:`lf_widgets.panels._chart` for why not plotly's
FigureWidget), the text is ``HTML`` with every piece escaped and kept from MathJax.

Front ends: JupyterLab 4 and Notebook 7 — tested in Chromium (tests/browser); the curves are
drawn by the JupyterLab extension that the plotly package installs. VS Code and Colab: not
tested. Both run ipywidgets, so buttons and status should work; the curves need plotly's
mimetype rendered inside an Output widget, which VS Code has failed to do before
(microsoft/vscode-jupyter#5871) and Colab does not do (it shows plotly as HTML).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import traitlets

from ..metrics import StepMetrics, TrainState
from ._chart import LossChart, plot_text
from ._display import DisplayOnce
from ._run_status import ACTIVE, RunTally, capability_line, critique_line, finite, progress_line
from ._text import escaped_html

__all__ = ["TrainingMonitor", "EXTRA_CURVES"]

# Extra loss terms of critique training (step extras), each drawn as its own curve beside the
# objective's loss once a step reports it: field -> legend name after the objective's
EXTRA_CURVES = {"critique_nll": "critique NLL", "hindsight_nll": "hindsight NLL"}

log = logging.getLogger(__name__)


class TrainingMonitor(DisplayOnce, widgets.VBox):
    """Live curves, progress and controls for the training runs of a Session.

    Parameters
    ----------
    session : lf_widgets.Session
        Emits ``"step"`` and ``"train_state"`` events; Start / Pause / Resume / Stop call its
        ``train(**train_kwargs)``, ``pause_training()``, ``resume_training()`` and
        ``stop_training()``. If it has ``training_history()`` (a DataFrame with the columns of
        ``StepMetrics.as_row()``), the earlier steps are drawn at once; if it has ``training``
        (the current or last run), the monitor starts from that run's state.
    throttle_s : float
        Draw at most once per this many seconds, however fast steps arrive.
    **train_kwargs
        Passed to ``session.train`` by the Start button (e.g. ``objective="dpo", steps=50``).
    """

    state = traitlets.Unicode("idle", help="Training state from the last train_state event.")
    objective = traitlets.Unicode("", help="Objective of the current run (sft, dpo, kto).")
    reason = traitlets.Unicode("", help="Why that objective was chosen, or the error message.")
    run_id = traitlets.Unicode("", help="Run the latest event belongs to.")
    step = traitlets.Int(0, help="Global adapter step of the latest drawn step.")
    points = traitlets.Int(0, help="Steps drawn so far, skipped ones included (as red x).")
    skipped = traitlets.Int(0, help="Steps skipped for a non-finite loss or gradient.")
    progress = traitlets.Unicode("no steps yet", help="The line beside the progress bar.")
    throttle_s = traitlets.Float(0.25, help="Minimum seconds between two redraws.")

    def __init__(self, session, *, throttle_s: float = 0.25, **train_kwargs):
        self._session = session
        self.train_kwargs = dict(train_kwargs)
        self._lock = threading.Lock()  # guards _pending, _timer, _last_flush, _closed
        self._draw_lock = threading.RLock()  # one flush at a time, records drawn in order
        self._pending: list[StepMetrics | TrainState] = []
        self._timer: threading.Timer | None = None
        self._last_flush = -math.inf
        self._closed = False
        self._seen: set[tuple[str, int]] = set()  # (run_id, step) drawn: history + live overlap
        self._tally: RunTally | None = None  # the current run, or the last one
        self._step_running = True  # False while "stopping" comes from "paused"
        self._last_skip = ""  # "step k: note" of the latest skipped step
        self._news = ""  # latest non-skip note of a step
        self._capability = ""  # "capability: NLL per token …" from the latest step that measured it
        self._critique = ""  # "critique NLL per token …" of the latest step with critique terms
        self._stale = ""  # why the adapter follows outdated feedback ("" when it does not)
        self._error = ""  # a verb that failed, shown until the next state change

        self._chart = LossChart()
        self.figure = self._chart.figure  # the drawn figure (a plotly go.Figure)
        self._progress_bar = widgets.IntProgress(min=0, max=1, value=0,
                                                 layout=widgets.Layout(width="160px"))
        self._progress = widgets.HTML(layout=widgets.Layout(flex="1 1 auto"))
        self._status = widgets.HTML()
        narrow = dict(layout=widgets.Layout(width="104px"))  # room for the progress line
        self._start = widgets.Button(description="Start", icon="play", tooltip="start a run",
                                     **narrow)
        self._pause = widgets.Button(description="Pause", icon="pause", tooltip="pause the run",
                                     **narrow)
        self._stop = widgets.Button(description="Stop", icon="stop", tooltip="stop the run",
                                    **narrow)
        super().__init__([
            widgets.HBox([self._start, self._pause, self._stop, self._progress_bar,
                          self._progress]),
            self._status, self._chart.view,
        ])
        self._start.on_click(lambda _: self.start())
        self._pause.on_click(lambda _: self.resume() if self.state in ("paused", "pausing")
                             else self.pause())
        self._stop.on_click(lambda _: self.stop())
        self.throttle_s = throttle_s
        with self._draw_lock:  # a step the training thread sends meanwhile waits for the past
            self._unsubscribe = [session.on("step", self._on_event),
                                 session.on("train_state", self._on_event),
                                 session.on("undo", self._on_feedback_change),
                                 session.on("judgement", self._on_feedback_change)]
            self._load_history()
            self._adopt_current_run()
        self.flush()
        self._last_flush = -math.inf  # the first live step is drawn at once
        self._chart.render()  # the empty chart, titles and axes, before the first step
        self._render_progress()
        self._render_controls()

    # -- events (training thread) --------------------------------------------------------------
    def _on_event(self, record: StepMetrics | TrainState) -> None:
        """Buffer ``record``; draw now if the last draw is old enough, else arm one timer."""
        with self._lock:
            if self._closed:
                return
            self._pending.append(record)
            if self._timer is not None:  # a draw is already on its way; it will take this too
                return
            wait = self.throttle_s - (time.monotonic() - self._last_flush)
            if wait > 0:
                self._timer = threading.Timer(wait, self._timed_flush)
                self._timer.daemon = True
                self._timer.start()
                return
        self.flush()

    def _timed_flush(self) -> None:
        with self._lock:
            self._timer = None
        self.flush()

    # -- drawing -------------------------------------------------------------------------------
    def flush(self) -> int:
        """Draw every buffered record now; returns how many there were."""
        with self._draw_lock:
            with self._lock:
                records, self._pending = self._pending, []
                self._last_flush = time.monotonic()
                if self._closed or not records:
                    return 0
            for record in records:
                if isinstance(record, TrainState):
                    self._apply_state(record)
                else:
                    self._add_row(record.as_row())
            self._chart.render()
            self._render_progress()
            self._render_status()
            return len(records)

    def _add_row(self, row: Mapping[str, Any]) -> bool:
        """Count and chart one step (an ``as_row()`` dict); False if it was drawn already."""
        run_id, step = str(row.get("run_id", "")), int(row["step"])
        if (run_id, step) in self._seen:
            return False
        self._seen.add((run_id, step))
        if self._tally is None or self._tally.run_id != run_id:
            self._tally = RunTally(run_id)
        self._tally.add(row)
        self._extra_curves(row)
        self._chart.add(row)
        if bool(row.get("skipped")) or finite(row.get("loss")) is None:
            self._last_skip = f"step {step}: {row.get('note') or 'non-finite loss'}"
            self.skipped += 1
        elif row.get("note"):
            self._news = f"step {step}: {row['note']}"
        if finite(row.get("capability_nll")) is not None:
            self._capability = capability_line(row)
        if critique_line(row):
            self._critique = critique_line(row)
        self.points += 1
        self.step, self.run_id = step, run_id
        if row.get("objective"):
            self.objective = str(row["objective"])
        return True

    def _extra_curves(self, row: Mapping[str, Any]) -> None:
        """A curve in the loss subplot for each extra term this step reports, made when first
        seen, so runs without critique terms draw exactly the chart they drew before."""
        objective = str(row.get("objective") or "")
        for field, label in EXTRA_CURVES.items():
            key = (objective, field)
            if finite(row.get(field)) is not None and key not in self._chart._traces:
                self._chart._add_trace(key, plot_text(f"{objective.upper()} {label}"), 1, 1, False)

    def _apply_state(self, record: TrainState) -> None:
        new_run = record.run_id != self.run_id
        if new_run or self._tally is None or self._tally.run_id != record.run_id:
            self._tally = RunTally(record.run_id, record.objective or "")
            self._news = self._critique = ""
        self._step_running = not (record.state == "stopping" and self.state == "paused")
        self.run_id = record.run_id
        if record.objective:
            self.objective = record.objective
        # The trainer's reason is why this objective (starting / running) or the error (failed);
        # in other states it describes the state, which the progress line already says.
        if record.state in ("starting", "running"):
            self.reason = record.reason or ("" if new_run else self.reason)
        elif record.state == "failed":
            self.reason = record.reason
        self._error = ""
        self.state = record.state

    def _render_progress(self) -> None:
        tally = self._tally
        if tally is not None and tally.total:
            self._progress_bar.max = tally.total
            self._progress_bar.value = min(tally.taken, tally.total)
        if self.state == "starting" or tally is None:
            self._progress_bar.value = 0
        self.progress = progress_line(self.state, tally, step_running=self._step_running)
        self._progress.value = escaped_html(self.progress, tag="span")

    # -- status and buttons --------------------------------------------------------------------
    @traitlets.observe("state")
    def _state_changed(self, change) -> None:
        self._render_progress()
        self._render_controls()

    def _render_controls(self) -> None:
        resumable = self.state in ("paused", "pausing")
        self._start.disabled = self.state in ACTIVE
        self._pause.disabled = self.state not in {"running", "pausing", "paused"}
        self._pause.description = "Resume" if resumable else "Pause"
        self._pause.icon = "play" if resumable else "pause"
        self._stop.disabled = self.state not in {"starting", "running", "pausing", "paused"}
        self._render_status()

    def _render_status(self) -> None:
        # Reasons, notes and error messages are untrusted text: every piece is escaped, and
        # kept from MathJax (escaped_html), so it shows literally.
        head = self.state + (f" · objective {self.objective}" if self.objective else "")
        parts = [escaped_html(head, style="font-weight:bold")]
        if self.reason:
            color = "#b00" if self.state == "failed" else "#444"
            parts.append(escaped_html(self.reason, style=f"color:{color};white-space:pre-wrap"))
        if self.skipped:
            skipped = f"⚠ {self.skipped} skipped step(s), last at {self._last_skip}"
            parts.append(escaped_html(skipped, style="color:#b00"))
        if self._news:
            parts.append(escaped_html(self._news, style="color:#444"))
        if self._capability:
            warn = "⚠" in self._capability
            parts.append(escaped_html(self._capability, style="color:#b00" if warn else "color:#444"))
        if self._critique:
            parts.append(escaped_html(self._critique, style="color:#444"))
        if self._stale:
            parts.append(escaped_html("⚠ " + self._stale, style="color:#b00"))
        if self._error:
            parts.append(escaped_html(self._error, style="color:#b00"))
        self._status.value = "".join(parts)

    def _on_feedback_change(self, event) -> None:
        """An undo or a new judgement may leave the adapter trained on outdated feedback."""
        staleness = getattr(self._session, "adapter_staleness", None)
        stale = staleness() if callable(staleness) else ""
        if stale != self._stale:
            self._stale = stale
            self._render_status()

    def _call(self, what: str, verb: str, *args, **kwargs):
        try:
            return getattr(self._session, verb)(*args, **kwargs)
        except Exception as err:  # shown, not swallowed: the person must know it did not happen
            self._error = f"✗ could not {what}: {err}"
            self._render_controls()  # re-enable what the click disabled
            raise

    # -- actions (each button calls one of these) ----------------------------------------------
    def start(self):
        """Start a run: ``session.train(**train_kwargs)``; returns what it returns."""
        self.flush()  # an old run's last state must not overwrite "starting" later
        previous, self.state = self.state, "starting"  # the old run's "step 8 of 8" goes now
        try:
            return self._call("start", "train", **self.train_kwargs)
        except Exception:
            self.state = previous
            raise

    def pause(self) -> None:
        """Pause the run after its current step (``session.pause_training()``)."""
        self._pause.disabled = True  # until the "pausing" / "paused" state arrives
        self._call("pause", "pause_training")

    def resume(self) -> None:
        """Resume a paused run (``session.resume_training()``)."""
        self._pause.disabled = True  # until the "running" state arrives
        self._call("resume", "resume_training")

    def stop(self) -> None:
        """Stop the run after its current step (``session.stop_training()``)."""
        self._stop.disabled = self._pause.disabled = True  # until "stopped" / "done" arrives
        self._call("stop", "stop_training", wait=False)

    # -- history and lifetime ------------------------------------------------------------------
    def _load_history(self) -> None:
        """Draw the session's earlier steps, if it keeps them (``training_history()``)."""
        history = getattr(self._session, "training_history", None)
        if not callable(history):
            return
        try:
            frame = history()
            rows = frame.to_dict("records") if hasattr(frame, "to_dict") else list(frame or [])
        except Exception as err:  # the live curves still work without the past ones
            log.warning("could not load the training history: %s", err)
            self._error = f"✗ could not load earlier steps: {err}"
            return
        for row in sorted(rows, key=lambda r: int(r["step"])):
            self._add_row(row)

    def _adopt_current_run(self) -> None:
        """Start from the state of the session's current or last run, if it has one: a monitor
        made after ``train()`` says "running" (or "done"), not "idle"."""
        run = getattr(self._session, "training", None)
        state, run_id = getattr(run, "state", None), getattr(run, "run_id", None)
        if not isinstance(state, str) or not isinstance(run_id, str):
            return
        snapshot = TrainState(run_id, state, getattr(run, "objective", None),
                              str(getattr(run, "reason", "") or ""))
        with self._lock:  # before any event that came in since we subscribed: those are newer
            self._pending.insert(0, snapshot)

    def close(self) -> None:
        """Stop listening to the session, cancel a pending redraw, close the widgets."""
        with getattr(self, "_lock", None) or contextlib.nullcontext():
            self._closed = True
            timer, self._timer = getattr(self, "_timer", None), None
            self._pending = []
        if timer is not None:
            timer.cancel()
        if hasattr(self, "_chart"):
            self._chart.close()
        super().close()  # DisplayOnce: unsubscribes, then closes the widgets
