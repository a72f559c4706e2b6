"""The training monitor driven headlessly by a fake session: no model, no trainer, no kernel."""

import contextlib
import math
import threading
import time

import pandas as pd
import pytest

from lf_widgets.metrics import StepMetrics, TrainState
from lf_widgets.panels.monitor import TrainingMonitor, _clock

XSS = "<img src=x onerror=alert(1)>"


class FakeSession:
    """Just what the monitor uses of a Session: events, the training verbs, maybe a history."""

    def __init__(self, history=None):
        self.listeners = {}
        self.calls = []
        if history is not None:
            self.training_history = lambda: history

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

    def stop_training(self):
        self.calls.append(("stop", {}))


def metrics(step, objective="sft", loss=None, *, run_id="r1", total=10, skipped=False, note="",
            **extras):
    return StepMetrics(run_id=run_id, step=step, run_step=step, total_steps=total,
                       objective=objective, loss=1.0 / step if loss is None else loss, lr=1e-4,
                       examples=4, tokens=256, seconds=0.5, elapsed_s=0.5 * step,
                       eta_s=0.5 * (total - step), skipped=skipped, note=note, extras=extras)


def trace(monitor, name):
    (found,) = [t for t in monitor.figure.data if t.name == name]
    return list(found.x or ()), list(found.y or ())


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
    assert monitor._progress.value == "step 3 of 10 · ETA 00:04 · 512 tokens/s"
    assert (monitor._progress_bar.value, monitor._progress_bar.max) == (3, 10)


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
    monitor.figure.to_dict()  # the figure still serialises


def test_first_step_skipped_marks_at_zero(session, monitor):
    session._emit("step", metrics(1, "sft", math.nan, skipped=True))
    monitor.flush()
    assert trace(monitor, "skipped step") == ([1], [0.0])
    assert trace(monitor, "SFT loss") == ([], [])


def test_runs_continue_on_the_global_step(session, monitor):
    for step in (1, 2):
        session._emit("step", metrics(step, "sft", run_id="a"))
    for run_step, step in ((1, 3), (2, 4)):
        session._emit("step", StepMetrics("b", step, run_step, 2, "dpo", 0.5, 1e-4, 2, 64, 1.0,
                                          1.0, 0.0))
    monitor.flush()
    assert trace(monitor, "SFT loss")[0] == [1, 2]
    assert trace(monitor, "DPO loss")[0] == [3, 4]
    assert (monitor.points, monitor.run_id, monitor._progress.value.split(" ·")[0]) == (
        4, "b", "step 2 of 2")


def test_throttled_from_another_thread_yet_all_points_arrive(session):
    monitor = TrainingMonitor(session, throttle_s=0.05)
    draws = []
    real_batch_update = monitor.figure.batch_update

    @contextlib.contextmanager
    def counting():
        draws.append(threading.current_thread().name)
        with real_batch_update():
            yield

    monitor.figure.batch_update = counting

    def train():
        for step in range(1, 201):
            session._emit("step", metrics(step, "sft", total=200))
            time.sleep(0.001)

    worker = threading.Thread(target=train, name="trainer")
    worker.start()
    worker.join()
    deadline = time.monotonic() + 5
    while monitor.points < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert monitor.points == 200
        assert trace(monitor, "SFT loss")[0] == list(range(1, 201))
        assert 1 <= len(draws) < 40, len(draws)  # ~0.3 s of steps / 0.05 s, not 200
        assert monitor._progress.value.startswith("step 200 of 200")
    finally:
        monitor.close()


def test_train_state_updates_status(session, monitor):
    session._emit("train_state", TrainState("r1", "running", "dpo", "12 preference pairs"))
    monitor.flush()
    assert (monitor.state, monitor.objective, monitor.reason) == ("running", "dpo",
                                                                  "12 preference pairs")
    assert "running · objective dpo" in monitor._status.value
    assert "12 preference pairs" in monitor._status.value
    session._emit("train_state", TrainState("r1", "paused", step=3))
    monitor.flush()
    assert monitor.state == "paused" and monitor.reason == "12 preference pairs"  # kept
    session._emit("train_state", TrainState("r1", "failed", reason="CUDA out of memory"))
    monitor.flush()
    assert "CUDA out of memory" in monitor._status.value


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
    assert session.calls[-1] == ("stop", {})
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
    timer.join(1)
    assert not timer.is_alive()
    assert session.listeners == {"step": [], "train_state": []}
    assert monitor.points == 1 and monitor.flush() == 0
    monitor.close()  # twice is harmless


def test_untrusted_reason_and_note_are_escaped(session, monitor):
    session._emit("train_state", TrainState("r1", "failed", "sft", XSS))
    session._emit("step", metrics(1, "sft", math.nan, skipped=True, note=XSS))
    session._emit("step", metrics(2, "sft", note=XSS))
    monitor.flush()
    value = monitor._status.value
    assert "<img" not in value
    assert value.count("&lt;img src=x onerror=alert(1)&gt;") == 3
    hover = next(t for t in monitor.figure.data if t.name == "skipped step").hovertext
    assert "<img" not in "".join(hover)


def test_earlier_history_is_drawn(session):
    rows = [metrics(s, "dpo", 0.5, reward_margin=0.1 * s).as_row() for s in (1, 2)]
    rows.append(metrics(3, "sft", 0.9).as_row())  # no DPO columns: NaN in the frame
    history = FakeSession(history=pd.DataFrame(rows))
    monitor = TrainingMonitor(history, throttle_s=60)
    try:
        assert monitor.points == 3
        assert trace(monitor, "reward margin") == ([1, 2], [0.1, 0.2])
        assert trace(monitor, "SFT loss") == ([3], [0.9])
        history._emit("step", metrics(3, "sft", 0.9))  # already drawn: not twice
        history._emit("step", metrics(4, "sft", 0.8))
        monitor.flush()
        assert trace(monitor, "SFT loss") == ([3, 4], [0.9, 0.8])
    finally:
        monitor.close()


def test_without_history_starts_empty(session, monitor):
    assert not hasattr(session, "training_history")
    assert monitor.points == 0 and monitor._progress.value == "no steps yet"
    assert all(not t.x for t in monitor.figure.data)


def test_clock():
    assert (_clock(83), _clock(3725), _clock(math.nan), _clock(-1)) == (
        "01:23", "1:02:05", "--:--", "--:--")
