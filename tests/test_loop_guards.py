"""The loop's guards: A/B prompts stay out of training, an adapter does not overfit a few pairs,
and it knows which judgements it learnt from (stale when they change)."""

import math
import threading

import pytest
import torch

from lf_widgets.trainer import AB_PROMPT, TrainConfig

from .helpers import finished_samples

WAIT = 120


def pairs_of(session, prompts=("hello", "world")):
    samples = finished_samples(session, prompts, n=2)
    for good, bad in zip(samples[0::2], samples[1::2]):
        session.record_rating(good.sample_id, 5)
        session.record_rating(bad.sample_id, 1)
    return samples


def test_ab_prompts_are_left_out_of_training_by_default(fresh):
    pairs_of(fresh, ("hello", "world", "again"))
    fresh.model.call(lambda: fresh.model.ensure_adapter(TrainConfig()))
    fresh.ab_test(["hello"], n=1, display=False, max_new_tokens=3).wait()
    run = fresh.train("dpo", steps=1, lr=1e-3)
    run.wait(WAIT)
    assert {e.prompt for e in run._data.pairs} == {"world", "again"}
    assert run._data.dropped_by["dpo"][AB_PROMPT] == 1
    opted_out = fresh.train("dpo", steps=1, lr=1e-3, exclude_ab_prompts=False)
    opted_out.wait(WAIT)
    assert "hello" in {e.prompt for e in opted_out._data.pairs}


def test_a_tiny_pool_is_not_trained_to_death(fresh):
    """The quickstart's case: 2 pairs, 8 steps of 4 would be 16 epochs; the guard says so and
    caps the run, and a second round on unchanged feedback trains nothing."""
    pairs_of(fresh)
    run = fresh.train("dpo", steps=8, lr=1e-2, batch_size=4)
    assert "of 8 steps" in run.reason and "max_epochs" in run.reason
    run.wait(WAIT)
    assert len(run.metrics) == 4 and run.state == "done"  # 2 pairs x 4 epochs / 2 a step
    step, weights = fresh.adapter_step, fresh.model.call(
        lambda: [p.detach().clone() for p in fresh.model.trainable_parameters()])
    again = fresh.train("dpo", steps=8, lr=1e-2)
    assert "Nothing to train" in again.reason
    again.wait(WAIT)
    assert again.metrics == [] and fresh.adapter_step == step
    after = fresh.model.call(lambda: [p.detach().clone() for p in fresh.model.trainable_parameters()])
    assert all(torch.equal(a, b) for a, b in zip(weights, after))  # nothing undone
    pairs_of(fresh, ("new prompt",))  # new feedback: training goes on, on the new pair only
    more = fresh.train("dpo", steps=8, lr=1e-2).wait(WAIT)
    assert 1 <= len(more.metrics) <= 4


def test_max_epochs_none_and_bad_values(fresh):
    pairs_of(fresh)
    run = fresh.train("dpo", steps=6, lr=1e-3, max_epochs=None).wait(WAIT)
    assert len(run.metrics) == 6
    for bad in (0, -1, float("nan"), True):
        with pytest.raises(ValueError, match="max_epochs"):
            TrainConfig(max_epochs=bad)


def test_adapters_know_what_they_learnt_and_go_stale(fresh):
    samples = pairs_of(fresh)
    fresh.train("dpo", steps=2, lr=1e-2, checkpoint_every=1).wait(WAIT)
    table = fresh.adapters()
    assert len(table) == 2 and (table["judgements"] == 4).all() and not table["stale"].any()
    assert table["current"].tolist() == [False, True]
    fb = fresh.feedback.dropna(subset=["rating"])
    assert fb["seen_by_adapter"].all()
    assert fresh.adapter_staleness() == ""
    fresh.undo(samples[-1].sample_id)  # a judgement both adapters saw
    assert fresh.adapters()["stale"].all()
    assert "undone or changed" in fresh.adapter_staleness()
    [meta] = [__import__("json").loads(open(f"{p}/lf_widgets.json").read())
              for p in fresh.adapters()["path"][-1:]]
    assert meta["judgements"]["count"] == 4 and len(meta["judgements"]["sha256"]) == 64
    fresh.record_rating(samples[0].sample_id, 5)  # new judgement: not seen yet
    fb = fresh.feedback
    assert not fb[fb.sample_id == samples[-1].sample_id]["seen_by_adapter"].any()


def test_nll_weight_adds_the_chosen_nll_and_zero_changes_nothing(fresh):
    from lf_widgets.step import ReferenceCache, train_step

    pairs_of(fresh)
    pairs = fresh.model.call(lambda: __import__("lf_widgets.data", fromlist=["x"]).build_examples(
        fresh.store, fresh.tokenizer)).pairs

    def loss(weight):
        config = TrainConfig(objective="dpo", nll_weight=weight, pass_tokens=0)
        fresh.model.call(lambda: fresh.model.ensure_adapter(config))
        return fresh.model.call(lambda: train_step(
            fresh.model.model, "dpo", pairs, pad_id=fresh.model.pad_id, device="cpu",
            cache=ReferenceCache(), config=config))

    plain, zero, with_nll = loss(0.0), loss(0.0), loss(1.0)
    assert plain.loss == zero.loss
    # + 1.0 x mean NLL per token of the chosen answers
    assert with_nll.loss == pytest.approx(plain.loss - plain.extras["chosen_logp"], rel=1e-5)
    assert math.isfinite(plain.extras["chosen_logp"])


@pytest.mark.parametrize("tuned", ["tuned", "tuned+goal"])  # both use the tuned adapter
def test_an_ab_test_on_trained_prompts_says_so(fresh, tuned):
    pairs_of(fresh, ("hello", "world"))
    fresh.train("dpo", steps=1, lr=1e-3).wait(WAIT)  # trained on "hello" and "world"
    fresh.goal = "A good answer."
    panel = fresh.ab_test(["hello", "something new"], n=1, models=("base", tuned), display=False,
                          max_new_tokens=3).wait()
    panel.choose("a")
    result = fresh.ab_summary(panel.test_id)
    assert result.notes == ("1 of 2 prompts of this test were in the tuned adapter's training "
                            "data: on them the result flatters it",)
    assert "⚠ 1 of 2 prompts" in repr(result)


def test_capability_is_measured_during_training_for_the_monitor(fresh):
    pairs_of(fresh)
    run = fresh.train("dpo", steps=3, lr=1e-2, capability_every=2, max_epochs=None).wait(WAIT)
    measured = [m.run_step for m in run.metrics if "capability_nll" in m.extras]
    assert measured == [2, 3]  # every 2 steps, and at the end
    last = run.metrics[-1].extras
    assert last["capability_nll"] > 0 and last["capability_base_nll"] > 0
    history = fresh.training_history()
    assert "capability_nll" in history.columns


def _contradict(session, samples, prompt):
    """New judgements that reverse learnt ones: the same texts, under a near-identical prompt,
    the rejected one now preferred (what a slip or a noisy annotator does)."""
    from lf_widgets.store import SampleRecord

    good, bad = samples[0], samples[1]
    ids = session.store.add_samples([SampleRecord(text=bad.text, prompt=prompt),
                                     SampleRecord(text=good.text, prompt=prompt)])
    session.record_rating(ids[0], 5)
    session.record_rating(ids[1], 1)


def adapter_weights(session):
    return session.model.call(lambda: [p.detach().clone() for p in session.model.trainable_parameters()])


@pytest.mark.parametrize("tolerance", [0.05, None])
def test_new_feedback_that_undoes_learnt_feedback_stops_the_run_and_restores_it(fresh, tolerance):
    """The noisy-annotator case of bench_loop: once the adapter has learnt many judgements, a few
    new ones that contradict them must not undo them (held-out share 100 % -> 0 % before)."""
    samples = pairs_of(fresh, ("hello", "world"))
    fresh.train("dpo", steps=2, lr=5e-2, max_epochs=1, batch_size=2).wait(WAIT)  # both learnt
    before = adapter_weights(fresh)
    for prompt in ("hello ", "hello!", "hello?"):
        _contradict(fresh, samples, prompt)
    states = []
    stop_listening = fresh.on("train_state", states.append)  # what the monitor shows
    run = fresh.train("dpo", steps=6, lr=5e-2, max_epochs=1, batch_size=1,
                      retention_tolerance=tolerance, retention_every=1).wait(WAIT)
    stop_listening()
    if tolerance is None:  # no check: the run trains on the contradicting pairs to the end
        assert len(run.metrics) == 3 and run.state == "done"
        return
    assert run.state == "stopped", run.reason
    last = states[-1]
    assert last.state == "stopped"
    assert "stopped after step 1: the reward margin on 2 earlier examples fell" in last.reason
    assert "retention_tolerance=0.05" in last.reason and "back to where it was" in last.reason
    # the adapter is back to the last checked state that kept the earlier feedback: here the
    # state before the run (the first step already undid it)
    assert len(run.metrics) == 1
    assert all(torch.equal(a, b) for a, b in zip(before, adapter_weights(fresh)))


def test_retention_options_are_checked():
    for bad in (-0.1, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match="retention_tolerance"):
            TrainConfig(retention_tolerance=bad)
    with pytest.raises(ValueError, match="retention_every"):
        TrainConfig(retention_every=0)
