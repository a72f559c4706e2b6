"""Background LoRA training on the tiny model: what moves, what must not, and steering."""

import math
import threading
import time

import pytest
import torch
from peft import PeftModel

import lf_widgets as lfw
from lf_widgets.models import tiny_model
from lf_widgets.trainer import TrainConfig


from .helpers import finished_samples

WAIT = 120  # seconds: generous, the machine may be loaded


def rated(session, ratings=(5, 1, 4, 2), prompts=("hello", "world")):
    samples = finished_samples(session, prompts, n=len(ratings))
    for i, s in enumerate(samples):
        session.record_rating(s.sample_id, ratings[i % len(ratings)])
    return samples


def on_thread(session, fn):
    """Run ``fn(model)`` on the model's thread (the only one that may touch it)."""
    return session.model.call(lambda: fn(session.model.model))


def logp_of(session, prompt_ids, completion_ids):
    from lf_widgets.losses import sequence_logps

    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    labels = ids.clone()
    labels[0, :len(prompt_ids)] = -100
    with torch.no_grad():
        return on_thread(session, lambda m: sequence_logps(m(input_ids=ids).logits, labels)[0].item())


def named(session):
    return on_thread(session, lambda m: {n: p.detach().clone() for n, p in m.named_parameters()})


def requires_grad(session):
    return on_thread(session, lambda m: {n: p.requires_grad for n, p in m.named_parameters()})


def after_steps(session, k):
    """An Event set once ``k`` steps of the coming run are reported (wait on it, no polling)."""
    done, seen = threading.Event(), []
    session.on("step", lambda m: (seen.append(m), len(seen) >= k and done.set()))
    return done


def test_train_returns_at_once_and_lora_moves_but_base_does_not(fresh):
    rated(fresh)
    base_before = named(fresh)
    gate = threading.Event()
    fresh.on("train_state", lambda st: gate.wait(30) if st.state == "running" else None)
    run = fresh.train(steps=4, lr=1e-2)
    # train() returned while the worker is still held before its first step: the work is in
    # the thread (return latency under load is measured in benchmarks/bench_feedback.py)
    assert run.state in ("starting", "running") and not run.metrics
    gate.set()
    run.wait(60)
    assert run.state == "done" and len(run.metrics) == 4
    assert fresh.model.has_adapter
    changed_lora = 0
    grads = requires_grad(fresh)
    for name, p in named(fresh).items():
        if "lora_" in name:
            changed_lora += grads[name]
            continue
        original = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(p, base_before[original]), f"base parameter {original} changed"
        assert not grads[name]
    assert changed_lora > 0
    lora_b = [p for n, p in named(fresh).items() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: non-zero means it learnt


def test_sft_steps_raise_the_target_logprob(fresh):
    from lf_widgets.data import build_examples

    rated(fresh, ratings=(5, 4), prompts=("hello",))
    target = on_thread(fresh, lambda m: build_examples(fresh.store, fresh.tokenizer)).sft[0]
    before = logp_of(fresh, target.prompt_ids, target.completion_ids)
    run = fresh.train("sft", steps=8, lr=1e-2, batch_size=2).wait(60)
    after = logp_of(fresh, target.prompt_ids, target.completion_ids)
    assert run.objective == "sft" and after > before + 0.5
    assert all("target_logp" in m.extras for m in run.metrics)
    assert run.metrics[-1].extras["target_logp"] > run.metrics[0].extras["target_logp"]


def test_dpo_steps_raise_the_reward_margin(fresh):
    from lf_widgets.data import build_examples
    from lf_widgets.losses import dpo_loss

    rated(fresh)
    pairs = on_thread(fresh, lambda m: build_examples(fresh.store, fresh.tokenizer)).pairs
    ref = [(logp_of(fresh, p.prompt_ids, p.chosen_ids), logp_of(fresh, p.prompt_ids, p.rejected_ids))
           for p in pairs]
    run = fresh.train("dpo", steps=10, lr=1e-2).wait(60)
    pol = [(logp_of(fresh, p.prompt_ids, p.chosen_ids), logp_of(fresh, p.prompt_ids, p.rejected_ids))
           for p in pairs]
    out = dpo_loss(*(torch.tensor(x) for x in zip(*pol)), *(torch.tensor(x) for x in zip(*ref)))
    assert out.margins.mean() > 0.05 and out.accuracies.mean() > 0.5
    assert run.metrics[-1].extras["reward_margin"] > run.metrics[0].extras["reward_margin"]
    cache = fresh.model.reference_cache
    sequences = {(p.prompt_ids, c) for p in pairs for c in (p.chosen_ids, p.rejected_ids)}
    assert cache.misses == len(sequences) and cache.hits > 0  # each reference computed once


def test_kto_moves_desirable_and_undesirable_apart(fresh):
    rated(fresh, ratings=(5, 1), prompts=("a", "b", "c"))
    run = fresh.train("kto", steps=10, lr=1e-2, batch_size=4).wait(60)
    first, last = run.metrics[0].extras, run.metrics[-1].extras
    gap = lambda m: m.get("desirable_reward", 0) - m.get("undesirable_reward", 0)
    assert run.objective == "kto" and all(math.isfinite(m.loss) for m in run.metrics)
    assert gap(last) > gap(first) and gap(last) > 0


def test_auto_objective_says_why(fresh):
    rated(fresh, ratings=(5,), prompts=("x",))
    run = fresh.train(steps=1).wait(60)
    assert run.objective == "sft" and "SFT" in run.reason


def test_not_enough_feedback_is_an_immediate_error(fresh):
    with pytest.raises(ValueError, match="Not enough feedback"):
        fresh.train()
    rated(fresh, ratings=(3,), prompts=("x",))
    with pytest.raises(ValueError, match="'dpo' has no examples"):
        fresh.train("dpo")


def test_config_is_checked():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lion")
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)


@pytest.mark.parametrize("bad", [dict(lr=float("inf")), dict(lr=0), dict(max_grad_norm=float("nan")),
                                 dict(beta=-0.1), dict(lora_alpha=0), dict(checkpoint_every=-1),
                                 dict(steps=2.5), dict(steps=True), dict(batch_size="4"),
                                 dict(holdout=1.0), dict(lora_dropout=float("nan"))])
def test_every_numeric_option_is_checked_before_any_work(fresh, bad):
    rated(fresh)
    with pytest.raises(ValueError, match=next(iter(bad))):
        fresh.train(**bad)
    assert fresh.training is None and not fresh.model.has_adapter


def test_unknown_option_is_named(fresh):
    with pytest.raises(TypeError, match="stpes"):
        fresh.train(stpes=3)


def test_infinite_lr_is_rolled_back_and_never_checkpointed(fresh, tmp_path):
    rated(fresh)
    run = fresh.train("dpo", steps=3, lr=1e300, checkpoint_every=1).wait(WAIT)
    assert all(m.skipped for m in run.metrics)
    assert all("rolled back" in m.note for m in run.metrics)
    assert on_thread(fresh, lambda m: all(torch.isfinite(p).all() for p in m.parameters()))
    assert fresh.store.checkpoints().empty  # no step happened: nothing to save
    fresh.close()
    again = lfw.Session(tiny_model(seed=0), store=tmp_path / "fb.sqlite")
    assert again.adapter_step is None  # nothing to resume
    again.generate("still works", n=1, max_new_tokens=2, progress=False)
    again.close()


def test_a_non_finite_checkpoint_is_never_resumed(fresh, tmp_path, capsys):
    rated(fresh)
    fresh.train("dpo", steps=2, lr=1e-2, checkpoint_every=1).wait(WAIT)
    paths = fresh.store.checkpoints().path.tolist()
    assert len(paths) == 2
    from safetensors.torch import load_file, save_file

    bad = f"{paths[-1]}/adapter_model.safetensors"  # someone (or a bug) wrote NaN into it
    weights = load_file(bad)
    save_file({k: v * float("nan") for k, v in weights.items()}, bad)
    fresh.close()
    again = lfw.Session(tiny_model(seed=0), store=tmp_path / "fb.sqlite")
    assert again.adapter_step == 1  # the earlier, finite one
    assert "not finite" in capsys.readouterr().out
    again.close()


def test_a_huge_lr_warns_of_divergence(fresh):
    rated(fresh)
    run = fresh.train("dpo", steps=2, lr=1e3, optimizer="sgd", max_grad_norm=1e9).wait(WAIT)
    notes = " ".join(m.note for m in run.metrics)
    assert "diverging" in notes or all(m.skipped for m in run.metrics)


@pytest.mark.parametrize("optimizer", ["rmsprop", "sgd"])
def test_other_optimizers(fresh, optimizer):
    rated(fresh)
    run = fresh.train("dpo", steps=2, optimizer=optimizer, lr=1e-3).wait(60)
    assert run.state == "done" and all(math.isfinite(m.loss) for m in run.metrics)


def test_stop_in_the_middle_leaves_a_loadable_finite_adapter(fresh, tmp_path):
    rated(fresh)
    three = after_steps(fresh, 3)
    run = fresh.train("dpo", steps=10_000, max_epochs=None, lr=1e-3)
    assert three.wait(WAIT)
    fresh.stop_training()
    assert run.state == "stopped" and 3 <= len(run.metrics) < 10_000
    [checkpoint] = fresh.store.checkpoints().path.tolist()
    model = PeftModel.from_pretrained(tiny_model(seed=0)[0], checkpoint)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_pause_and_resume(fresh):
    rated(fresh)
    first = after_steps(fresh, 1)
    parked = threading.Event()
    fresh.on("train_state", lambda st: parked.set() if st.state == "paused" else None)
    run = fresh.train("dpo", steps=10_000, max_epochs=None, lr=1e-3)
    assert first.wait(WAIT)
    fresh.pause_training()
    assert parked.wait(WAIT)  # the step in flight finished, then the run parked
    n = len(run.metrics)
    fresh.model.call(lambda: None)  # a job after the pause ran: no step was queued meanwhile
    assert run.state == "paused" and len(run.metrics) == n
    more = after_steps(fresh, 1)
    fresh.resume_training()
    assert more.wait(WAIT)
    fresh.stop_training()
    assert run.state == "stopped" and len(run.metrics) > n


def test_nan_loss_is_skipped_and_reported(fresh, monkeypatch):
    import lf_widgets.step as trainer

    real = trainer.sft_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(trainer, "sft_loss", sometimes_nan)
    rated(fresh, ratings=(5,), prompts=("x",))
    states = []
    fresh.on("step", states.append)
    run = fresh.train("sft", steps=4, lr=1e-2).wait(60)
    assert [m.skipped for m in run.metrics] == [False, True, False, False]
    assert "loss is nan" in run.metrics[1].note and math.isnan(run.metrics[1].loss)
    assert fresh.adapter_step == 3  # the skipped step applied nothing
    assert on_thread(fresh, lambda m: all(torch.isfinite(p).all() for p in m.parameters()))
    assert len(states) == 4


def test_200_clicks_while_training_are_all_stored(fresh):
    samples = rated(fresh)
    panel = fresh.rate(display=False)
    first = after_steps(fresh, 1)
    run = fresh.train("dpo", steps=10_000, max_epochs=None, lr=1e-3)
    assert first.wait(WAIT)
    for i in range(200):
        panel.cards[i % len(panel.cards)].stars[i % 5].click()
    assert run.state == "running"  # the clicks really happened during training
    fresh.stop_training()
    events = fresh.store.events()
    assert (events.annotator == "ann").sum() == len(samples) + 200


def test_generation_during_training_records_the_adapter_step(fresh):
    rated(fresh)
    two = after_steps(fresh, 2)
    fresh.train("dpo", steps=10_000, max_epochs=None, lr=1e-3)
    assert two.wait(WAIT)
    new = fresh.generate("during", n=2, max_new_tokens=4, progress=False)
    fresh.stop_training()
    assert all(s.adapter_step is not None and s.adapter_step >= 2 for s in new)
    assert on_thread(fresh, lambda m: all(torch.isfinite(p).all() for p in m.parameters()))


def test_checkpoint_loaded_into_fresh_session_gives_identical_logits(fresh, tmp_path):
    rated(fresh)
    fresh.train("dpo", steps=3, lr=1e-2).wait(60)
    fresh.save_adapter(tmp_path / "adapter")
    ids = torch.tensor([[1, 5, 9, 20, 33, 7]])
    with torch.no_grad():
        want = on_thread(fresh, lambda m: m(input_ids=ids).logits)
    other = lfw.Session(tiny_model(seed=0), store=tmp_path / "other.sqlite",
                        adapter=tmp_path / "adapter")
    with torch.no_grad():
        got = on_thread(other, lambda m: m(input_ids=ids).logits)
    assert torch.equal(got, want) and other.adapter_step == 3
    # and the standard PEFT loader reads the same folder
    plain = PeftModel.from_pretrained(tiny_model(seed=0)[0], tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(plain(input_ids=ids).logits, want)
    other.close()


def test_new_session_on_same_store_resumes_latest_checkpoint_and_history(fresh, tmp_path):
    rated(fresh)
    fresh.train("dpo", steps=3, lr=1e-2, checkpoint_every=2).wait(60)
    ids = torch.tensor([[1, 5, 9, 20]])
    with torch.no_grad():
        want = on_thread(fresh, lambda m: m(input_ids=ids).logits)
    fresh.close()
    again = lfw.Session(tiny_model(seed=0), store=tmp_path / "fb.sqlite")  # "after a restart"
    assert again.adapter_step == 3
    with torch.no_grad():
        assert torch.equal(on_thread(again, lambda m: m(input_ids=ids).logits), want)
    history = again.training_history()
    assert history.step.tolist() == [1, 2, 3] and "reward_margin" in history.columns
    run = again.train("dpo", steps=2, lr=1e-2).wait(60)
    assert [m.step for m in run.metrics] == [4, 5]
    again.close()


def test_feedback_given_during_training_joins_the_pool(fresh):
    rated(fresh, ratings=(5,), prompts=("x",))
    first = after_steps(fresh, 1)
    grown = threading.Event()
    fresh.on("step", lambda m: grown.set() if m.examples >= 2 else None)
    run = fresh.train("sft", steps=10_000, max_epochs=None, lr=1e-3, refresh_every=1, batch_size=8)
    assert first.wait(WAIT)
    extra = fresh.store.add_samples([lfw.store.SampleRecord("a brand new good answer", prompt="y")])
    fresh.record_rating(extra[0], 5)
    assert grown.wait(WAIT)
    fresh.stop_training()
    assert run.metrics[-1].examples == 2



def test_logits_only_where_scored_give_the_same_logps():
    from lf_widgets.losses import sequence_logps
    from lf_widgets.step import forward_logps as _forward_logps

    model, _ = tiny_model(seed=0)
    ids = torch.randint(5, 300, (3, 20), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[2, 15:] = 0
    labels = ids.clone()
    labels[:, :8] = -100
    labels[1, :11] = -100
    labels[2, 15:] = -100
    with torch.no_grad():
        ours, n = _forward_logps(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
        want, n_want = sequence_logps(model(input_ids=ids, attention_mask=mask).logits, labels)
    assert torch.allclose(ours, want, atol=1e-5) and n.tolist() == n_want.tolist() == [12, 9, 7]


# -- a step in several passes -------------------------------------------------------------------
def _examples(session, pool):
    from lf_widgets.data import build_examples

    rated(session, ratings=(5, 1, 4, 2, 3), prompts=("hello", "world", "again"))
    examples = getattr(on_thread(session, lambda m: build_examples(session.store, session.tokenizer)), pool)
    assert len(examples) >= 3, f"need a few {pool} examples, got {len(examples)}"
    return examples[:4]


@pytest.mark.parametrize("objective,pool", [("sft", "sft"), ("dpo", "pairs"), ("kto", "kto")])
def test_a_batch_split_into_passes_gives_the_same_update(fresh, objective, pool):
    from lf_widgets._planning import split_passes
    from lf_widgets.adapters import wrap_lora
    from lf_widgets.step import ReferenceCache as _ReferenceCache, train_step

    examples = _examples(fresh, pool)
    pad_id = fresh.tokenizer.pad_token_id
    results, weights = [], []
    for pass_tokens in (0, 1):  # the whole batch at once; one example per pass
        # plain SGD and no clipping: the update is lr × the gradient, so a wrong scale would show
        config = TrainConfig(objective=objective, optimizer="sgd", lr=0.5, max_grad_norm=1e9,
                             pass_tokens=pass_tokens)
        model = wrap_lora(tiny_model(seed=0)[0], config)
        params = [p for p in model.parameters() if p.requires_grad]
        shapes = []  # rows of each forward that builds a graph (not the no-grad reference/KL ones)
        model.register_forward_pre_hook(
            lambda m, a, kw: shapes.append(len(kw["input_ids"])) if torch.is_grad_enabled() else None,
            with_kwargs=True)
        model.train()
        result = train_step(model, objective, examples, pad_id=pad_id, device="cpu",
                            cache=_ReferenceCache(), config=config, params=params,
                            optimizer=torch.optim.SGD(params, lr=config.lr))
        assert result.passes == len(split_passes(examples, pass_tokens))
        assert not result.skipped and all(p.grad is None for p in params)
        results.append(result)
        weights.append({n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n})
        rows = 2 if objective == "dpo" else 1  # rows per example
        assert shapes == ([rows * len(examples)] if pass_tokens == 0 else [rows] * len(examples))
    whole, split = results
    assert split.passes == len(examples) and whole.passes == 1
    assert split.loss == pytest.approx(whole.loss, rel=1e-5)
    assert split.grad_norm == pytest.approx(whole.grad_norm, rel=1e-4)
    assert split.tokens > 0 and split.extras.keys() == whole.extras.keys()
    for name in whole.extras:
        assert split.extras[name] == pytest.approx(whole.extras[name], rel=1e-4, abs=1e-6), name
    for name, value in weights[0].items():
        assert torch.allclose(weights[1][name], value, atol=1e-6), name
    assert any(v.abs().sum() > 0 for n, v in weights[0].items() if "lora_B" in n)  # it did move


def test_split_passes_respects_the_token_budget():
    from lf_widgets.data import PairExample, SFTExample
    from lf_widgets._planning import split_passes

    sft = [SFTExample("p", (1,) * 10, (2,) * n, i, "rating") for i, n in enumerate((5, 20, 10, 90))]
    assert split_passes(sft, None) == [sft] and split_passes(sft, 0) == [sft]
    # rows x longest row <= 60: [15, 30] is 2 x 30 = 60; adding 20 makes 3 x 30; 100 stands alone
    assert split_passes(sft, 60) == [sft[:2], sft[2:3], sft[3:]]
    assert [e for part in split_passes(sft, 1) for e in part] == sft  # nothing lost, order kept
    pairs = [PairExample("p", (1,) * 10, (2,) * 10, (3,) * 5, None, i, "preference") for i in range(3)]
    assert split_passes(pairs, 80) == [pairs[:2], pairs[2:]]  # a pair is two rows of 20


def test_small_passes_only_where_memory_is_small(monkeypatch):
    from lf_widgets._planning import CPU_PASS_TOKENS, pass_tokens

    monkeypatch.setenv("LF_WIDGETS_MEMORY_LIMIT", "2G")  # a Binder kernel
    assert pass_tokens(None, "cpu") == CPU_PASS_TOKENS
    assert pass_tokens(None, "cuda") == 0  # GPU memory is another matter
    assert pass_tokens(0, "cpu") == 0  # the config always wins
    assert pass_tokens(512, "cpu") == 512
    monkeypatch.setenv("LF_WIDGETS_MEMORY_LIMIT", "16G")  # a laptop: one pass is faster
    assert pass_tokens(None, "cpu") == 0
    with pytest.raises(ValueError, match="pass_tokens"):
        TrainConfig(pass_tokens=-1)


def test_small_memory_run_splits_batches_and_releases_memory(fresh, monkeypatch):
    import lf_widgets._planning as planning
    import lf_widgets.step as trainer

    monkeypatch.setenv("LF_WIDGETS_MEMORY_LIMIT", "2G")
    monkeypatch.setattr(planning, "CPU_PASS_TOKENS", 1)  # one example per pass
    trims, passes = [], []
    monkeypatch.setattr(planning, "release_memory", lambda: trims.append(1))
    real_step = trainer.train_step

    def counting(*args, **kwargs):
        result = real_step(*args, **kwargs)
        passes.append(result.passes)
        return result

    monkeypatch.setattr(trainer, "train_step", counting)
    rated(fresh)
    run = fresh.train("dpo", steps=3, lr=1e-2, batch_size=2).wait(60)
    assert run.state == "done" and all(math.isfinite(m.loss) for m in run.metrics)
    assert passes == [m.examples for m in run.metrics] and max(passes) == 2
    assert len(trims) == 3  # after every step
    monkeypatch.undo()
    planning.release_memory()  # the real one is safe to call anywhere (glibc or not)


def test_kto_reference_rows_are_all_cached_after_one_epoch(fresh):
    from lf_widgets.batching import length_batches
    from lf_widgets.data import build_examples
    from lf_widgets.adapters import wrap_lora
    from lf_widgets.step import ReferenceCache as _ReferenceCache, train_step

    rated(fresh, ratings=(5, 1, 4, 2, 1), prompts=("hello", "world", "again"))
    pool = on_thread(fresh, lambda m: build_examples(fresh.store, fresh.tokenizer)).kto
    assert len(pool) >= 4
    config = TrainConfig(objective="kto", batch_size=2, pass_tokens=0)
    cache, misses = _ReferenceCache(), []

    def epochs(m):
        model = wrap_lora(m, config)
        with torch.no_grad():
            for epoch in range(3):  # reshuffled batches each epoch, as in training
                for batch in length_batches(pool, 2, seed=epoch):
                    train_step(model, "kto", batch, pad_id=fresh.tokenizer.pad_token_id,
                               device="cpu", cache=cache, config=config)
                misses.append(cache.misses)

    on_thread(fresh, epochs)
    # matched rows and the fixed KL partners: each computed once, in the first epoch
    assert misses[0] <= 2 * len(pool) and misses[1] == misses[2] == misses[0]


def test_checkpoints_are_private_and_stale_temporaries_are_cleaned(fresh, tmp_path):
    import os
    import stat

    rated(fresh)
    folder = fresh.checkpoint_dir
    folder.mkdir(mode=0o755)
    stale = folder / ".step-000007.tmp-999999-abcd"  # a kernel killed while writing (pid gone)
    stale.mkdir()
    (stale / "adapter_model.safetensors").write_bytes(b"half")
    fresh.train("dpo", steps=2, lr=1e-2, checkpoint_every=1).wait(WAIT)
    assert not stale.exists()
    [*checkpoints] = fresh.store.checkpoints().path.tolist()
    assert checkpoints
    for path in checkpoints:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        for f in os.listdir(path):
            assert stat.S_IMODE(os.stat(os.path.join(path, f)).st_mode) == 0o600, f
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]
