"""TrainingMonitor: live loss curves, progress and Start / Pause / Stop for a Session's training.

A thin view. The Session emits ``"step"`` (:class:`~lf_widgets.metrics.StepMetrics`) and
``"train_state"`` (:class:`~lf_widgets.metrics.TrainState`) events from the training thread; the
monitor's listeners only append the record to a buffer under a lock. :meth:`TrainingMonitor.flush`
draws the buffer in one plotly ``batch_update()`` (one message to the browser), at most once per
``throttle_s``: an event that arrives sooner arms a single ``threading.Timer``, so the last points
always appear and no asyncio loop is needed (tests run without a kernel).
"""

from __future__ import annotations

import contextlib
import html
import logging
import math
import threading
import time
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go
import traitlets
from plotly.subplots import make_subplots

from ..metrics import StepMetrics, TrainState
from ._text import escaped_html

__all__ = ["TrainingMonitor"]

log = logging.getLogger(__name__)

# Each curve: (objective, field of StepMetrics.as_row(), legend name, subplot (row, col),
# on the secondary y axis). "loss" of every objective shares the first subplot.
CURVES = (
    ("sft", "loss", "SFT loss", (1, 1), False),
    ("dpo", "loss", "DPO loss", (1, 1), False),
    ("kto", "loss", "KTO loss", (1, 1), False),
    ("sft", "target_logp", "log p(target)", (1, 2), False),
    ("dpo", "reward_margin", "reward margin", (2, 1), False),
    ("dpo", "pair_accuracy", "pair accuracy", (2, 1), True),  # 0..1, own axis on the right
    ("kto", "desirable_reward", "desirable reward", (2, 2), False),
    ("kto", "undesirable_reward", "undesirable reward", (2, 2), False),
    ("kto", "kl", "KL estimate", (2, 2), False),
)
TITLES = ("loss (all objectives)", "SFT: log p(target)", "DPO: reward margin · pair accuracy",
          "KTO: rewards · KL")
SKIPPED = ("skipped", "loss")  # key of the red-x trace marking skipped steps
ACTIVE = {"starting", "running", "paused", "stopping"}  # a run exists: Start is off


def _finite(value: Any) -> float | None:
    """``value`` as a float, or None when missing or non-finite (never plot NaN / inf)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _clock(seconds: float) -> str:
    """mm:ss (h:mm:ss past an hour); ``--:--`` when unknown."""
    if _finite(seconds) is None or seconds < 0:
        return "--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _figure() -> go.FigureWidget:
    fig = make_subplots(rows=2, cols=2, subplot_titles=TITLES, vertical_spacing=0.14,
                        specs=[[{}, {}], [{"secondary_y": True}, {}]])
    fig.update_layout(height=520, margin=dict(l=40, r=40, t=40, b=30), uirevision="keep",
                      legend=dict(orientation="h", y=-0.16))
    fig.update_xaxes(title_text="step", row=2)
    return go.FigureWidget(fig)


class TrainingMonitor(widgets.VBox):
    """Live curves, progress and controls for the training runs of a Session.

    Parameters
    ----------
    session : lf_widgets.Session
        Emits ``"step"`` and ``"train_state"`` events; Start / Pause / Resume / Stop call its
        ``train(**train_kwargs)``, ``pause_training()``, ``resume_training()`` and
        ``stop_training()``. If it has ``training_history()`` (a DataFrame with the columns of
        ``StepMetrics.as_row()``), the earlier steps are drawn at once.
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
        self._series: dict[tuple[str, str], tuple[list, list]] = {}  # curve -> (x, y)
        self._skip_notes: list[str] = []  # hover text of the red-x markers
        self._last_loss = 0.0  # where a skipped step's marker goes
        self._last_skip = ""  # "step k: note" of the latest skipped step
        self._news = ""  # latest non-skip note of a step
        self._error = ""  # a verb that failed, shown until the next state change

        self.figure = _figure()
        self._traces: dict[tuple[str, str], int] = {}  # curve -> index in figure.data
        for objective, field, name, (row, col), secondary in CURVES:
            self._add_trace((objective, field), name, row, col, secondary)
        self._add_trace(SKIPPED, "skipped step", 1, 1, False,
                        mode="markers", marker=dict(symbol="x", color="red", size=9))
        self._progress_bar = widgets.IntProgress(min=0, max=1, value=0)
        self._progress = widgets.Label(value="no steps yet")
        self._status = widgets.HTML()
        self._start = widgets.Button(description="Start", icon="play", tooltip="start a run")
        self._pause = widgets.Button(description="Pause", icon="pause", tooltip="pause the run")
        self._stop = widgets.Button(description="Stop", icon="stop", tooltip="stop the run")
        super().__init__([
            widgets.HBox([self._start, self._pause, self._stop, self._progress_bar,
                          self._progress]),
            self._status, self.figure,
        ])
        self._start.on_click(lambda _: self.start())
        self._pause.on_click(lambda _: self.resume() if self.state == "paused" else self.pause())
        self._stop.on_click(lambda _: self.stop())
        self.throttle_s = throttle_s
        self._unsubscribe = [session.on("step", self._on_event),
                             session.on("train_state", self._on_event)]
        self._load_history()
        self._render_controls()

    def _add_trace(self, key, name, row, col, secondary, **style) -> None:
        style = style or dict(mode="lines+markers", marker=dict(size=4))
        self.figure.add_trace(go.Scatter(x=[], y=[], name=name, **style), row=row, col=col,
                              secondary_y=secondary)
        self._traces[key] = len(self.figure.data) - 1
        self._series[key] = ([], [])

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
        """Draw every buffered record now (one ``batch_update``); returns how many there were."""
        with self._draw_lock:
            with self._lock:
                records, self._pending = self._pending, []
                self._last_flush = time.monotonic()
                if self._closed or not records:
                    return 0
            last_step = None
            for record in records:
                if isinstance(record, TrainState):
                    self._apply_state(record)
                else:
                    last_step = self._add_row(record.as_row()) or last_step
            self._draw()
            if last_step is not None:
                self._show_progress(last_step)
            self._render_status()
            return len(records)

    def _add_row(self, row: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Append one step (an ``as_row()`` dict) to the plain lists; None if already drawn."""
        run_id, step = str(row.get("run_id", "")), int(row["step"])
        if (run_id, step) in self._seen:
            return None
        self._seen.add((run_id, step))
        objective = str(row.get("objective") or "")
        if (objective, "loss") not in self._traces:  # an objective this panel does not know yet
            self._add_trace((objective, "loss"), f"{objective.upper()} loss", 1, 1, False)
        for key, (xs, ys) in self._series.items():
            value = _finite(row.get(key[1])) if key[0] == objective and key != SKIPPED else None
            if value is not None:  # NaN / missing values are left out, never drawn as breaks
                xs.append(step)
                ys.append(value)
        loss = _finite(row.get("loss"))
        self._last_loss = self._last_loss if loss is None else loss
        if bool(row.get("skipped")) or loss is None:
            note = str(row.get("note") or "non-finite loss")
            xs, ys = self._series[SKIPPED]
            xs.append(step)
            ys.append(self._last_loss)  # the red x sits at the last finite loss (0 if none yet)
            # hover text: plotly reads a few tags in it, so escape (it shows entities as text)
            self._skip_notes.append(html.escape(f"step {step} skipped: {note}"))
            self._last_skip = f"step {step}: {note}"
            self.skipped += 1
        elif row.get("note"):
            self._news = f"step {step}: {row['note']}"
        self.points += 1
        self.step, self.run_id = step, run_id
        if objective:
            self.objective = objective
        return row

    def _draw(self) -> None:
        with self.figure.batch_update():
            for key, (xs, ys) in self._series.items():
                trace = self.figure.data[self._traces[key]]
                if len(trace.x or ()) != len(xs):
                    trace.x, trace.y = list(xs), list(ys)
            self.figure.data[self._traces[SKIPPED]].hovertext = list(self._skip_notes)

    def _show_progress(self, row: Mapping[str, Any]) -> None:
        total, done = max(int(row.get("total_steps") or 0), 1), int(row.get("run_step") or 0)
        self._progress_bar.max = total
        self._progress_bar.value = min(done, total)
        speed = _finite(row.get("tokens_per_s")) or 0.0
        self._progress.value = (f"step {done} of {total} · ETA {_clock(row.get('eta_s'))} · "
                                f"{speed:,.0f} tokens/s")

    def _apply_state(self, record: TrainState) -> None:
        if record.state == "starting" and record.run_id != self.run_id:
            self._progress_bar.value = 0
            self._progress.value = "starting…"
        same_run = record.run_id == self.run_id
        self.run_id = record.run_id
        if record.objective:
            self.objective = record.objective
        self.reason = record.reason or (self.reason if same_run else "")  # "paused" says no why
        self._error = ""
        self.state = record.state

    # -- status and buttons --------------------------------------------------------------------
    @traitlets.observe("state")
    def _state_changed(self, change) -> None:
        self._render_controls()

    def _render_controls(self) -> None:
        paused = self.state == "paused"
        self._start.disabled = self.state in ACTIVE
        self._pause.disabled = self.state not in {"running", "paused"}
        self._pause.description = "Resume" if paused else "Pause"
        self._pause.icon = "play" if paused else "pause"
        self._stop.disabled = self.state not in {"starting", "running", "paused"}
        self._render_status()

    def _render_status(self) -> None:
        # Reasons, notes and error messages are untrusted text: every piece is escaped.
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
        if self._error:
            parts.append(escaped_html(self._error, style="color:#b00"))
        self._status.value = "".join(parts)

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
        previous, self.state = self.state, "starting"
        try:
            return self._call("start", "train", **self.train_kwargs)
        except Exception:
            self.state = previous
            raise

    def pause(self) -> None:
        """Pause the run after its current step (``session.pause_training()``)."""
        self._pause.disabled = True  # until the "paused" state arrives
        self._call("pause", "pause_training")

    def resume(self) -> None:
        """Resume a paused run (``session.resume_training()``)."""
        self._pause.disabled = True  # until the "running" state arrives
        self._call("resume", "resume_training")

    def stop(self) -> None:
        """Stop the run after its current step (``session.stop_training()``)."""
        self._stop.disabled = self._pause.disabled = True  # until "stopped" / "done" arrives
        self._call("stop", "stop_training")

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
        with self._draw_lock:
            last = None
            for row in sorted(rows, key=lambda r: int(r["step"])):
                last = self._add_row(row) or last
            self._draw()
            if last is not None:
                self._show_progress(last)

    def close(self) -> None:
        """Stop listening to the session, cancel a pending redraw, close the widgets."""
        with getattr(self, "_lock", None) or contextlib.nullcontext():
            self._closed = True
            timer, self._timer = getattr(self, "_timer", None), None
            self._pending = []
        if timer is not None:
            timer.cancel()
        for unsubscribe in getattr(self, "_unsubscribe", []):
            try:
                unsubscribe()
            except ValueError:  # already removed
                pass
        self._unsubscribe = []
        if hasattr(self, "figure"):
            self.figure.close()
        super().close()

