"""Session verbs on the tiny model: generation with provenance, judgements, events."""

import threading

import pytest
import torch

from lf_widgets.generation import SamplingConfig, chat_prompt_ids, sample_completions


def test_generate_stores_samples_with_token_ids_and_params(session):
    out = session.generate(["Say hi", "说你好"], n=3, max_new_tokens=6, seed=1, progress=False)
    assert len(out) == 6 and [s.prompt for s in out] == ["Say hi"] * 3 + ["说你好"] * 3
    df = session.store.samples().set_index("sample_id")
    for s in out:
        row = df.loc[s.sample_id]
        assert row.text == s.text and row.model == "tiny" and row.source == "generated"
        assert 1 <= len(row.token_ids) <= 6
        assert session.tokenizer.decode(row.token_ids, skip_special_tokens=True).strip() == s.text
        assert row.params["n"] == 3 and row.params["seed"] == 1 and row.params["max_new_tokens"] == 6


def test_generate_is_reproducible_with_seed(session):
    a = session.generate("hello", n=2, max_new_tokens=8, seed=3, progress=False)
    b = session.generate("hello", n=2, max_new_tokens=8, seed=3, progress=False)
    assert [s.text for s in a] == [s.text for s in b]


def test_session_generate_matches_plain_generate(session):
    """Same seed, same inputs: our wrapper returns exactly what model.generate samples."""
    model, tok = session.model, session.tokenizer
    ids = torch.tensor([chat_prompt_ids(tok, "hello")])
    torch.manual_seed(5)
    plain = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                           do_sample=True, temperature=0.8, top_p=0.95, top_k=None,
                           num_return_sequences=2, pad_token_id=tok.pad_token_id)
    ours = session.generate("hello", n=2, max_new_tokens=8, seed=5, progress=False)
    stored = session.store.samples().token_ids.tolist()
    for row, token_ids in zip(plain[:, ids.shape[1]:].tolist(), stored):
        assert row[:len(token_ids)] == token_ids
    assert len(ours) == 2


def test_generation_respects_the_model_lock(session):
    """While another thread holds the model lock, generation waits for it."""
    session.model_lock.acquire()
    done = threading.Event()
    t = threading.Thread(target=lambda: (session.generate("x", n=1, max_new_tokens=2,
                                                          progress=False), done.set()))
    t.start()
    assert not done.wait(0.5)
    session.model_lock.release()
    assert done.wait(30)
    t.join()


def test_interrupt_keeps_whole_batches_only(session, monkeypatch):
    import lf_widgets.generation as gen

    real = gen.sample_completions

    def interrupted(*args, **kwargs):
        it = real(*args, **kwargs)
        yield next(it)
        raise KeyboardInterrupt

    monkeypatch.setattr("lf_widgets.session.sample_completions", interrupted)
    out = session.generate(["a", "b", "c"], n=2, max_new_tokens=3, batch_size=1, progress=False)
    assert len(out) == 2  # the first prompt's batch only, complete
    assert len(session.store.samples()) == 2


@pytest.mark.parametrize("bad", [dict(max_new_tokens=0), dict(temperature=-1), dict(top_p=0),
                                 dict(batch_size=0)])
def test_bad_sampling_config(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingConfig(**bad)


def test_bad_prompts_name_the_index(session):
    with pytest.raises(ValueError, match=r"prompts\[1\]"):
        session.generate(["ok", "  "], n=1)
    with pytest.raises(ValueError, match="n must be"):
        list(sample_completions(session.model, session.tokenizer, ["x"], n=0))


def test_greedy_generation(session):
    a = session.generate("hi", n=1, max_new_tokens=5, temperature=0, progress=False)
    b = session.generate("hi", n=1, max_new_tokens=5, temperature=0, progress=False)
    assert a[0].text == b[0].text


def test_judgements_and_events(session):
    seen = []
    session.on("judgement", seen.append)
    unsubscribe = session.on("undo", seen.append)
    [s] = session.generate("x", n=1, max_new_tokens=3, progress=False)
    session.record_rating(s.sample_id, 4)
    session.record_critique(s.sample_id, "meh", annotator="bob")
    session.record_correction(s.sample_id, "better")
    assert session.undo().kind == "correction"
    unsubscribe()
    session.undo()
    assert [e.kind for e in seen] == ["rating", "critique", "correction", "correction"]
    fb = session.feedback.set_index("annotator")
    assert pd_isna(fb.loc["bob", "rating"]) and fb.loc["bob", "critique"] == "meh"
    with pytest.raises(ValueError, match="correction"):
        session.record_correction(s.sample_id, "  ")


def pd_isna(x):
    import pandas as pd

    return pd.isna(x)


def test_broken_listener_does_not_lose_the_judgement(session, caplog):
    [s] = session.generate("x", n=1, max_new_tokens=3, progress=False)
    session.on("judgement", lambda e: 1 / 0)
    session.record_rating(s.sample_id, 5)
    assert session.feedback.rating.tolist() == [5]
    assert "listener" in caplog.text


def test_import_and_export(session, tmp_path):
    from lf_widgets.io import read_feedback

    from .test_io import SEED_CSV

    assert session.import_csv(SEED_CSV) == 3
    path = session.export("csv", tmp_path / "out.csv")
    assert read_feedback(path).rating.tolist() == [4, 1, 5]
