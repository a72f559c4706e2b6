"""The training monitor driven headlessly by a fake session: no model, no trainer, no kernel.

What reaches the page is the Output widget's ``outputs`` (the plotly bundle) and the HTML
widgets' values; the tests read those, not only the kernel-side figure.
"""

import json
import math
import threading
import time
from types import SimpleNamespace

import pandas as pd
import pytest

from lf_widgets.metrics import StepMetrics, TrainState
from lf_widgets.panels._chart import MIME
from lf_widgets.panels._run_status import RunTally, clock, duration, progress_line
from lf_widgets.panels.monitor import TrainingMonitor

XSS = "<img src=x onerror=alert(1)>"
MATH = r"$\href{https://example.com}{click}$"
WAIT = 30  # seconds an event may take on a loaded machine; never slept, only waited on


class FakeSession:
    """Just what the monitor uses of a Session: events, the training verbs, maybe a history."""

    def __init__(self, history=None, training=None):
        self.listeners = {}
        self.calls = []
        if history is not None:
            self.training_history = lambda: history
        if training is not None:
            self.training = training

    def on(self, name, callback):
        self.listeners.setdefault(name, []).append(callback)
        return lambda: self.listeners[name].remove(callback)

    def _emit(self, name, payload):
        for callback in list(self.listeners.get(name, [])):
            callback(payload)

    def train(self, **kwargs):
        self.calls.append(("train", kwargs))
        return "run-handle"

    def pause_training(self):
        self.calls.append(("pause", {}))

    def resume_training(self):
        self.calls.append(("resume", {}))

    def stop_training(self, wait=True):
        self.calls.append(("stop", {"wait": wait}))


def metrics(step, objective="sft", loss=None, *, run_id="r1", total=10, skipped=False, note="",
            run_step=None, **extras):
    return StepMetrics(run_id=run_id, step=step, run_step=step if run_step is None else run_step,
                       total_steps=total, objective=objective,
                       loss=1.0 / step if loss is None else loss, lr=1e-4, examples=4,
                       tokens=256, seconds=0.5, elapsed_s=0.5 * step,
                       eta_s=0.5 * (total - step), skipped=skipped, note=note, extras=extras)


def trace(monitor, name):
    (found,) = [t for t in monitor.figure.data if t.name == name]
    return list(found.x or ()), list(found.y or ())


def page_trace(monitor, name):
    """The trace as the page gets it: from the Output widget's state, not the figure."""
    (output,) = monitor._chart.view.outputs
    (found,) = [t for t in output["data"][MIME]["data"] if t.get("name") == name]
    return list(found.get("x", ())), list(found.get("y", ()))


@pytest.fixture
def session():
    return FakeSession()


@pytest.fixture
def monitor(session):
    m = TrainingMonitor(session, throttle_s=60, objective="auto", steps=10)  # timers never fire
    yield m
    m.close()


def test_steps_become_points_after_flush(session, monitor):
    for step in (1, 2, 3):
        session._emit("step", metrics(step, target_logp=-5.0 + step))
    monitor.flush()
    assert monitor.points == 3
    assert trace(monitor, "SFT loss") == ([1, 2, 3], [1.0, 0.5, 1 / 3])
    assert trace(monitor, "log p(target)") == ([1, 2, 3], [-4.0, -3.0, -2.0])
    assert trace(monitor, "DPO loss") == ([], [])
    assert (monitor._progress_bar.value, monitor._progress_bar.max) == (3, 10)


def test_the_page_state_holds_every_point(session, monitor):
    """The Output's outputs (what a view renders, however late it is made) have the points."""
    assert page_trace(monitor, "SFT loss") == ([], [])  # the empty chart is there at once
    for step in (1, 2):
        session._emit("step", metrics(step))
    monitor.flush()
    assert page_trace(monitor, "SFT loss") == ([1, 2], [1.0, 0.5])
    (output,) = monitor._chart.view.outputs
    figure = output["data"][MIME]
    json.dumps(output, allow_nan=False)  # plain JSON, no NaN
    titles = [a["text"] for a in figure["layout"]["annotations"]]
    assert titles[0] == "loss (all objectives)" and len(titles) == 4
    assert figure["config"]["displayModeBar"] == "hover"  # the toolbar never covers a title


def test_a_state_change_alone_does_not_redraw_the_plot(session, monitor):
    before = monitor._chart.view.outputs
    session._emit("train_state", TrainState("r1", "running", "sft", "only ratings"))
    monitor.flush()
    assert monitor._chart.view.outputs is before


def test_dpo_extras_in_their_subplot(session, monitor):
    session._emit("step", metrics(1, "dpo", 0.69, reward_margin=0.1, pair_accuracy=0.5,
                                  chosen_reward=0.05))
    session._emit("step", metrics(2, "dpo", 0.60, reward_margin=0.4, pair_accuracy=0.75))
    monitor.flush()
    assert trace(monitor, "DPO loss") == ([1, 2], [0.69, 0.60])
    assert trace(monitor, "reward margin") == ([1, 2], [0.1, 0.4])
    assert trace(monitor, "pair accuracy") == ([1, 2], [0.5, 0.75])
    margin = next(t for t in monitor.figure.data if t.name == "reward margin")
    accuracy = next(t for t in monitor.figure.data if t.name == "pair accuracy")
    assert margin.xaxis == accuracy.xaxis and margin.yaxis != accuracy.yaxis  # own right axis


def test_kto_extras(session, monitor):
    session._emit("step", metrics(1, "kto", 0.5, desirable_reward=0.2, undesirable_reward=-0.1,
                                  kl=0.01))
    monitor.flush()
    assert trace(monitor, "KTO loss") == ([1], [0.5])
    assert trace(monitor, "desirable reward") == ([1], [0.2])
    assert trace(monitor, "undesirable reward") == ([1], [-0.1])
    assert trace(monitor, "KL estimate") == ([1], [0.01])
    assert monitor.objective == "kto"


def test_skipped_nan_step_is_counted_and_marked(session, monitor):
    session._emit("step", metrics(1, "dpo", 0.7, reward_margin=0.1))
    session._emit("step", metrics(2, "dpo", math.nan, skipped=True, note="non-finite loss",
                                  reward_margin=math.nan))
    session._emit("step", metrics(3, "dpo", 0.6, reward_margin=math.inf))
    monitor.flush()
    assert (monitor.points, monitor.skipped) == (3, 1)
    assert trace(monitor, "DPO loss") == ([1, 3], [0.7, 0.6])  # no NaN reaches plotly
    assert trace(monitor, "reward margin") == ([1], [0.1])
    assert trace(monitor, "skipped step") == ([2], [0.7])  # red x at the last finite loss
    assert "1 skipped step(s), last at step 2: non-finite loss" in monitor._status.value
    json.dumps(monitor._chart.view.outputs, allow_nan=False)


def test_first_step_skipped_marks_at_zero(session, monitor):
    session._emit("step", metrics(1, "sft", math.nan, skipped=True))
    monitor.flush()
    assert trace(monitor, "skipped step") == ([1], [0.0])
    assert trace(monitor, "SFT loss") == ([], [])


def test_runs_continue_on_the_global_step(session, monitor):
    for step in (1, 2):
        session._emit("step", metrics(step, "sft", run_id="a"))
    for run_step, step in ((1, 3), (2, 4)):
        session._emit("step", metrics(step, "dpo", 0.5, run_id="b", run_step=run_step, total=2))
    monitor.flush()
    assert trace(monitor, "SFT loss")[0] == [1, 2]
    assert trace(monitor, "DPO loss")[0] == [3, 4]
    assert (monitor.points, monitor.run_id) == (4, "b")
    assert (monitor._progress_bar.value, monitor._progress_bar.max) == (2, 2)


def test_throttled_from_another_thread_yet_all_points_arrive(session):
    monitor = TrainingMonitor(session, throttle_s=0.05)
    renders, all_drawn = [], threading.Event()
    real_render = monitor._chart.render

    def counting():
        drew = real_render()
        if drew:
            renders.append(time.monotonic())
        if monitor.points == 200:
            all_drawn.set()
        return drew

    monitor._chart.render = counting

    def train():
        for step in range(1, 201):
            session._emit("step", metrics(step, "sft", total=200))

    t0 = time.monotonic()
    worker = threading.Thread(target=train, name="trainer")
    worker.start()
    worker.join()
    try:
        assert all_drawn.wait(WAIT), "the last points were never drawn"
        assert trace(monitor, "SFT loss")[0] == list(range(1, 201))
        assert page_trace(monitor, "SFT loss")[0] == list(range(1, 201))
        # at most one draw per throttle interval (however loaded the machine), not one per step
        assert 1 <= len(renders) <= (renders[-1] - t0) / 0.05 + 3, len(renders)
        assert len(renders) < 200
    finally:
        monitor.close()


def test_train_state_updates_status(session, monitor):
    session._emit("train_state", TrainState("r1", "running", "dpo", "12 preference pairs"))
    monitor.flush()
    assert (monitor.state, monitor.objective, monitor.reason) == ("running", "dpo",
                                                                  "12 preference pairs")
    assert "running · objective dpo" in monitor._status.value
    assert "12 preference pairs" in monitor._status.value
    assert monitor.progress == "working on step 1"
    session._emit("train_state", TrainState("r1", "paused", step=3,
                                            reason="after step 3 of 10"))
    monitor.flush()
    assert monitor.state == "paused" and monitor.reason == "12 preference pairs"  # kept
    session._emit("train_state", TrainState("r1", "failed", reason="CUDA out of memory"))
    monitor.flush()
    assert "CUDA out of memory" in monitor._status.value


def run_steps(session, monitor, steps, *, total=8, run_id="r1", objective="dpo"):
    session._emit("train_state", TrainState(run_id, "running", objective, "why"))
    for step in steps:
        session._emit("step", metrics(step, objective, 0.7 - 0.03 * step, run_id=run_id,
                                      total=total))
    monitor.flush()


def test_pausing_and_stopping_name_the_step_being_finished(session, monitor):
    run_steps(session, monitor, (1, 2, 3))
    assert monitor.progress == "step 3 of 8 · ETA 00:02 · 512 tokens/s"
    session._emit("train_state", TrainState("r1", "pausing", "dpo", "finishing step 4 of 8"))
    monitor.flush()
    assert monitor.progress == "pausing — finishing step 4 of 8"
    assert monitor._pause.description == "Resume" and not monitor._pause.disabled
    session._emit("step", metrics(4, "dpo", 0.5, total=8))
    session._emit("train_state", TrainState("r1", "paused", "dpo", "after step 4 of 8"))
    monitor.flush()
    assert monitor.progress == "paused after step 4 of 8"
    session._emit("train_state", TrainState("r1", "stopping", "dpo"))
    monitor.flush()
    assert monitor.progress == "stopping"  # from paused: no step to finish
    session._emit("train_state", TrainState("r1", "running", "dpo", "why"))
    session._emit("train_state", TrainState("r1", "stopping", "dpo", "finishing step 5 of 8"))
    monitor.flush()
    assert monitor.progress == "stopping — finishing step 5 of 8"
    assert monitor._stop.disabled and monitor._start.disabled


def test_after_a_run_its_summary_not_an_eta_and_start_clears_it(session, monitor):
    run_steps(session, monitor, range(1, 9))
    assert monitor.progress.startswith("step 8 of 8 · ETA 00:00")
    session._emit("train_state", TrainState("r1", "done", "dpo", "done · 8 of 8 steps"))
    monitor.flush()
    assert monitor.progress == "done · 8 steps · DPO · loss 0.67 → 0.46 · 4 s"
    assert "ETA" not in monitor._progress.value and not monitor._start.disabled
    monitor._start.click()
    assert monitor.progress == "starting…" and monitor._progress_bar.value == 0
    assert "step 8 of 8" not in monitor._progress.value
    session._emit("train_state", TrainState("r2", "running", "dpo", "why"))
    session._emit("step", metrics(9, "dpo", 0.4, run_id="r2", run_step=1, total=4))
    monitor.flush()
    assert monitor.progress.startswith("step 1 of 4 · ETA")  # the run's step, not the global


def test_stopped_and_failed_runs_say_how_far_they_got(session, monitor):
    run_steps(session, monitor, (1, 2, 3))
    session._emit("train_state", TrainState("r1", "stopped", "dpo"))
    monitor.flush()
    assert monitor.progress == "stopped · 3 of 8 steps · DPO · loss 0.67 → 0.61 · 2 s"
    run_steps(session, monitor, (), run_id="r2")
    assert monitor.progress == "working on step 1"
    session._emit("train_state", TrainState("r2", "failed", "dpo", "RuntimeError: boom"))
    monitor.flush()
    assert monitor.progress == "failed · 0 steps · DPO"
    assert "RuntimeError: boom" in monitor._status.value and "#b00" in monitor._status.value


def test_buttons_call_verbs_and_follow_the_state(session, monitor):
    assert not monitor._start.disabled
    assert monitor._pause.disabled and monitor._stop.disabled
    monitor._start.click()
    assert session.calls == [("train", {"objective": "auto", "steps": 10})]
    assert monitor._start.disabled and monitor.state == "starting"

    session._emit("train_state", TrainState("r1", "running", "sft", "only ratings"))
    monitor.flush()
    assert monitor._start.disabled and not monitor._pause.disabled and not monitor._stop.disabled
    monitor._pause.click()
    assert session.calls[-1] == ("pause", {}) and monitor._pause.disabled

    session._emit("train_state", TrainState("r1", "paused"))
    monitor.flush()
    assert monitor._pause.description == "Resume" and not monitor._pause.disabled
    monitor._pause.click()
    assert session.calls[-1] == ("resume", {})

    session._emit("train_state", TrainState("r1", "running"))
    monitor.flush()
    assert monitor._pause.description == "Pause"
    monitor._stop.click()
    # the click returns at once: the kernel must not block until the step in progress ends
    assert session.calls[-1] == ("stop", {"wait": False})
    session._emit("train_state", TrainState("r1", "stopped"))
    monitor.flush()
    assert not monitor._start.disabled and monitor._pause.disabled and monitor._stop.disabled


def test_method_twins(session, monitor):
    assert monitor.start() == "run-handle"
    monitor.pause()
    monitor.resume()
    monitor.stop()
    assert [name for name, _ in session.calls] == ["train", "pause", "resume", "stop"]


def test_failed_verb_is_shown_and_state_restored(monitor):
    monitor._session.train = lambda **kw: (_ for _ in ()).throw(RuntimeError("no feedback yet"))
    with pytest.raises(RuntimeError):
        monitor.start()
    assert monitor.state == "idle" and not monitor._start.disabled
    assert "could not start: no feedback yet" in monitor._status.value


def test_close_unsubscribes_and_cancels_the_timer(session):
    monitor = TrainingMonitor(session, throttle_s=60)
    session._emit("step", metrics(1))  # drawn at once
    session._emit("step", metrics(2))  # arms the timer
    timer = monitor._timer
    assert timer is not None and timer.is_alive()
    monitor.close()
    timer.join(WAIT)
    assert not timer.is_alive()
    assert session.listeners == {"step": [], "train_state": [], "undo": [], "judgement": []}
    assert monitor.points == 1 and monitor.flush() == 0
    monitor.close()  # twice is harmless


@pytest.mark.parametrize("payload", [XSS, MATH])
def test_untrusted_reason_and_note_show_literally(session, monitor, payload):
    session._emit("train_state", TrainState("r1", "failed", "sft", payload))
    session._emit("step", metrics(1, "sft", math.nan, skipped=True, note=payload))
    session._emit("step", metrics(2, "sft", note=payload))
    monitor.flush()
    value = monitor._status.value
    assert "<img" not in value and "$" not in value
    assert value.count("&lt;img src=x" if payload == XSS else "&#36;\\href{") == 3
    assert value.count("mathjax_ignore") == value.count("<div")  # every piece kept from MathJax
    hover = "".join(next(t for t in monitor.figure.data if t.name == "skipped step").hovertext)
    assert "<img" not in hover and "$" not in hover and ("&lt;img" in hover or "&#36;" in hover)


def test_earlier_history_is_drawn_and_summarised(session):
    rows = [metrics(s, "dpo", 0.5, reward_margin=0.1 * s).as_row() for s in (1, 2)]
    rows.append(metrics(3, "sft", 0.9, run_id="r2", run_step=1, total=4).as_row())
    history = FakeSession(history=pd.DataFrame(rows))  # no DPO columns for SFT: NaN
    monitor = TrainingMonitor(history, throttle_s=60)
    try:
        assert monitor.points == 3
        assert trace(monitor, "reward margin") == ([1, 2], [0.1, 0.2])
        assert trace(monitor, "SFT loss") == ([3], [0.9])
        assert page_trace(monitor, "SFT loss") == ([3], [0.9])
        assert monitor.state == "idle"
        assert monitor.progress == "last run · 1 of 4 steps · SFT · loss 0.9 → 0.9 · 2 s"
        history._emit("step", metrics(3, "sft", 0.9, run_id="r2", run_step=1))  # not twice
        history._emit("step", metrics(4, "sft", 0.8, run_id="r2", run_step=2))
        monitor.flush()
        assert trace(monitor, "SFT loss") == ([3, 4], [0.9, 0.8])
    finally:
        monitor.close()


def test_made_during_a_run_it_says_running(session):
    run = SimpleNamespace(run_id="r7", state="running", objective="dpo", reason="4 pairs")
    monitor = TrainingMonitor(FakeSession(training=run), throttle_s=60)
    try:
        assert (monitor.state, monitor.objective, monitor.reason) == ("running", "dpo", "4 pairs")
        assert monitor._start.disabled and not monitor._stop.disabled
    finally:
        monitor.close()


def test_without_history_starts_empty(session, monitor):
    assert not hasattr(session, "training_history")
    assert monitor.points == 0 and monitor.progress == "no steps yet"
    assert "no steps yet" in monitor._progress.value
    assert all(not t.x for t in monitor.figure.data)


def test_status_sentences():
    tally = RunTally("r")
    assert progress_line("idle", None) == "no steps yet"
    assert progress_line("running", tally) == "working on step 1"
    assert progress_line("pausing", tally) == "pausing — finishing step 1"
    assert progress_line("paused", tally) == "paused"
    tally.add(metrics(1, "kto", 0.5, total=1).as_row())
    assert progress_line("done", tally) == "done · 1 step · KTO · loss 0.5 → 0.5 · 0 s"
    assert (duration(30), duration(150), duration(725)) == ("30 s", "2.5 min", "12 min")


def test_clock():
    assert (clock(83), clock(3725), clock(math.nan), clock(-1)) == (
        "01:23", "1:02:05", "--:--", "--:--")


def test_capability_and_stale_lines_show_in_the_status(session):
    """The capability guard's figures (from a step that measured them) and a stale adapter."""
    from lf_widgets.metrics import StepMetrics
    from lf_widgets.panels.monitor import TrainingMonitor

    monitor = TrainingMonitor(session, throttle_s=0.0)
    m = StepMetrics(run_id="r", step=1, run_step=1, total_steps=2, objective="dpo", loss=0.6,
                    lr=1e-3, examples=2, tokens=10, seconds=0.1, elapsed_s=0.1, eta_s=0.1,
                    extras={"capability_nll": 2.6, "capability_base_nll": 2.4})
    session._emit("step", m)
    monitor.flush()
    assert "capability: NLL per token on general text 2.600 (base 2.400, +8.3%)" in \
        monitor._status.value
    assert "got worse at general text" in monitor._status.value
    monitor.close()
