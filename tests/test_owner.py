"""The redesign's promises: one torch thread, streaming panels, panels that read the store."""

import threading

import pytest

WAIT = 120  # seconds: generous, the machine may be loaded


def _corrected(session, n_prompts=2):
    """Samples with corrections: SFT/DPO examples that need no end-of-turn token from the model."""
    out = session.generate([f"prompt {i}" for i in range(n_prompts)], n=2, max_new_tokens=4,
                           seed=0, progress=False)
    for s in out[::2]:
        session.record_correction(s.sample_id, f"A good answer to {s.prompt}.")
    return out


def test_only_the_owner_thread_runs_the_model(fresh):
    """A forward hook records the thread of every model call across every verb."""
    _corrected(fresh)
    seen = set()
    fresh.model.call(lambda: fresh.model.model.register_forward_pre_hook(
        lambda *_: seen.add(threading.current_thread().name)))
    run = fresh.train(steps=6, objective="sft")
    fresh.generate("during training", n=2, max_new_tokens=3, progress=False)
    stepper = fresh._stepper(fresh.samples()[0])
    stepper.probabilities()
    stepper.step()
    panel = fresh.ab_test(["a b"], n=1, display=False, max_new_tokens=3)
    panel._test.wait()
    run.wait(WAIT)
    fresh.evaluate()
    assert seen == {fresh.model.worker.thread.name}


def test_the_model_refuses_other_threads(session):
    with pytest.raises(RuntimeError, match="own thread"):
        session.model.model  # noqa: B018


def test_provenance_is_read_on_the_model_thread(fresh):
    """A sample carries the adapter step that wrote it, even while steps finish in between."""
    _corrected(fresh)
    run = fresh.train(steps=8, objective="sft", checkpoint_every=0)
    stamps = []
    for _ in range(3):
        stamps += fresh.generate("x", n=1, max_new_tokens=2, progress=False)
    run.wait(WAIT)
    log = fresh.store.samples().set_index("sample_id")
    for s in stamps:
        assert log.loc[s.sample_id, "adapter_step"] == s.adapter_step
    # each generation ran as one job between steps: the stamp is a step that existed then
    assert all(s.adapter_step is None or 0 <= s.adapter_step <= 8 for s in stamps)


def test_pause_reports_pausing_until_the_worker_has_parked(fresh):
    _corrected(fresh)
    release = threading.Event()
    states = []
    fresh.on("train_state", lambda st: states.append(st.state))
    run = fresh.train(steps=50, max_epochs=None, objective="sft")
    # keep the model's thread busy so that the step in progress cannot end yet
    fresh.model.submit(lambda job: release.wait(WAIT), name="hold")
    run.pause()
    assert run.state == "pausing"
    release.set()
    parked = threading.Event()
    fresh.on("train_state", lambda st: parked.set() if st.state == "paused" else None)
    assert parked.wait(WAIT) or run.state == "paused"
    assert run.state == "paused"
    n = len(run.metrics)
    run.resume()
    run.stop()
    assert run.state == "stopped" and len(run.metrics) >= n
    assert states.index("pausing") < states.index("paused") < states.index("stopped")


def test_rate_returns_at_once_and_fills_in_as_samples_arrive(session):
    """rate() shows its panel before generation ends; a rating on an arrived sample is committed
    while later samples are still being written."""
    release = threading.Event()
    session.model.submit(lambda job: release.wait(WAIT), name="hold")  # generation must queue
    panel = session.rate(["first", "second", "third"], n=2, display=False, max_new_tokens=3,
                         batch_size=1)
    assert (panel.total, panel.arrived) == (6, 0) and not panel._request.done
    assert all(card.stars[0].disabled for card in panel.cards)  # nothing to rate yet
    first, go_on = threading.Event(), threading.Event()

    def hold_after_first(generated):  # on the model's thread: later samples wait for the test
        if not first.is_set():
            first.set()
            go_on.wait(WAIT)

    session.on("generated", hold_after_first)
    release.set()
    assert first.wait(WAIT)
    assert panel.arrived >= 1 and not panel._request.done
    arrived = next(i for i, c in enumerate(panel.cards) if c.sample is not None)
    assert panel.rate(arrived, 5)
    assert session.feedback.dropna(subset=["rating"]).shape[0] == 1  # committed
    assert not panel._request.done  # ... while the rest is still to be written
    go_on.set()
    panel._request.wait(WAIT)
    assert panel.arrived == 6 and not any(c.stars[0].disabled for c in panel.cards)


def test_partial_text_is_shown_while_writing(session):
    parts = []
    session.on("partial", parts.append)
    request = session.start_generation("hello", n=2, max_new_tokens=30)
    request.wait(WAIT)
    # the tiny model never stops early: text so far was announced at least once per 0.2 s
    assert all(p.request_id == request.id and p.slot in (0, 1) for p in parts)


def test_undo_in_one_panel_leaves_another_panels_rating(session):
    session.generate(["p"], n=2, max_new_tokens=3, progress=False)
    a, b = session.samples()
    first = session.rate(display=False)
    from lf_widgets.panels.rating import RatingPanel

    other = RatingPanel(session, [b])
    mine = RatingPanel(session, [a])
    assert other.rate(0, 4)
    assert mine.rate(0, 2)
    assert other.undo()  # cancels other's rating of b, not mine's newer rating of a
    assert mine.rated == 1 and mine.cards[0].stars[1].button_style == "success"
    assert other.rated == 0
    assert first.rated == 1  # the panel showing both follows the store


def test_preference_undo_does_not_cancel_a_rating(session):
    from lf_widgets.panels.preference import PreferencePanel

    session.generate(["p"], n=2, max_new_tokens=3, progress=False)
    samples = session.samples()
    pair = PreferencePanel(session, samples)
    rating = session.rate(display=False)
    assert pair.choose("a") and pair.judged == 1
    assert rating.rate(0, 5)
    assert pair.undo()  # the preference, not the newer rating
    assert pair.judged == 0 and rating.rated == 1
    kinds = session.judgements(kinds=["rating", "preference"])["kind"].tolist()
    assert kinds == ["rating"]


def test_compare_streams_pairs(session):
    panel = session.compare(["one", "two"], display=False, max_new_tokens=3)
    assert panel.total == 2
    panel._request.wait(WAIT)
    assert panel.ready == 2 and panel.choose("b") and panel.judged == 1


def test_changed_vote_and_preference_count_once(fresh):
    from lf_widgets.trainer import TrainConfig

    session = fresh
    session.model.call(lambda: session.model.ensure_adapter(TrainConfig()))  # a "tuned" contender
    panel = session.ab_test(["x", "y"], n=2, display=False, max_new_tokens=3, seed=0)
    panel._test.wait()
    assert panel.ready == panel.total == 4
    panel.choose("b")
    panel.prev()
    panel.choose("tie")
    assert panel.judged == 1
    votes = session.ab_results(panel.test_id)
    assert votes["choice"].tolist() == ["tie"]
    assert session.ab_summary(panel.test_id).n == 1
    panel.undo()  # the earlier vote is in force again
    assert session.ab_results(panel.test_id)["choice"].tolist() == ["b"]


def test_a_panel_is_displayed_once(session, monkeypatch):
    """The verb displays its panel; as the cell's last expression it shows no second copy."""
    shown = []
    from IPython.core.formatters import DisplayFormatter

    panel = session.rate(["x"], n=1, display=False, max_new_tokens=2)
    formatter = DisplayFormatter()
    monkeypatch.setattr("IPython.display.display",
                        lambda obj, raw=False, **kw: shown.append(obj))
    session._show(panel, True)  # what rate(display=True) does
    assert formatter.format(panel) == ({}, {})  # the displayhook finds nothing more to show
    assert len(shown) == 1
