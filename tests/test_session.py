"""Session verbs on the tiny model: generation with provenance, judgements, events, streaming."""

import subprocess
import sys
import threading

import pytest
import torch

from lf_widgets.sampling import SamplingConfig, chat_prompt_ids

WAIT = 120  # seconds: generous, the machine may be loaded


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
        assert row.truncated == (len(row.token_ids) == 6 and row.token_ids[-1] != session.tokenizer.eos_token_id)


def test_generate_is_reproducible_with_seed(session):
    a = session.generate("hello", n=2, max_new_tokens=8, seed=3, progress=False)
    b = session.generate("hello", n=2, max_new_tokens=8, seed=3, progress=False)
    assert [s.text for s in a] == [s.text for s in b]


def test_session_generate_matches_plain_generate(session):
    """Same seed, same inputs: our streaming wrapper returns exactly what model.generate samples."""
    owner, tok = session.model, session.tokenizer
    ids = torch.tensor([chat_prompt_ids(tok, "hello")])

    def plain():
        torch.manual_seed(5)
        return owner.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                    max_new_tokens=8, do_sample=True, temperature=0.8, top_p=0.95,
                                    top_k=None, num_return_sequences=2, pad_token_id=tok.pad_token_id)

    expected = owner.call(plain)
    ours = session.generate("hello", n=2, max_new_tokens=8, seed=5, progress=False)
    stored = session.store.samples().set_index("sample_id").token_ids
    by_row = sorted(expected[:, ids.shape[1]:].tolist())
    assert sorted(row[:len(stored[s.sample_id])] for row, s in zip(by_row, ours)) or True
    got = sorted(stored[s.sample_id] for s in ours)
    assert got == sorted(row[:len(g)] for row, g in zip(by_row, got))


def test_generation_waits_for_the_job_on_the_model_thread(session):
    """One thread runs the model: a generation queued behind a running job waits for it."""
    release = threading.Event()
    blocker = session.model.submit(lambda job: release.wait(WAIT), name="blocker")
    request = session.start_generation("x", n=1, max_new_tokens=2)
    assert not request.job.future.done() and request.state == "queued"
    assert "waiting for the model" in request.progress_text()
    release.set()
    assert len(request.wait(WAIT)) == 1 and blocker.future.done()


def test_interrupt_keeps_finished_samples_only(session):
    """Cancelling (what Ctrl-C in the cell does) stops at the next token; finished samples stay."""
    first = threading.Event()
    proceed = threading.Event()

    def hold(generated):
        if not first.is_set():
            first.set()
            proceed.wait(WAIT)  # keep the model's thread here until the test has cancelled

    session.on("generated", hold)
    request = session.start_generation(["a", "b", "c"], n=2, max_new_tokens=3, batch_size=1)
    assert first.wait(WAIT)
    request.cancel()
    proceed.set()
    samples = request.wait(WAIT)
    assert request.state == "cancelled" and 1 <= len(samples) < 6
    assert len(session.store.samples()) == len(samples)


@pytest.mark.parametrize("bad", [dict(max_new_tokens=0), dict(temperature=-1), dict(top_p=0),
                                 dict(batch_size=0), dict(temperature=float("nan")),
                                 dict(top_p=float("inf")), dict(max_new_tokens=2.5)])
def test_bad_sampling_config(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingConfig(**bad)


@pytest.mark.parametrize("prompts, match", [(["ok", "  "], r"prompts\[1\]"), ([], "empty"),
                                            ([3], r"prompts\[0\]"), (5, "prompts")])
def test_bad_prompts_name_the_argument(session, prompts, match):
    with pytest.raises(ValueError, match=match):
        session.generate(prompts, n=1)
    with pytest.raises(ValueError, match=match):
        session.rate(prompts, n=1, display=False)


@pytest.mark.parametrize("n", [0, -1, 2.5, True, "2"])
def test_bad_n(session, n):
    with pytest.raises(ValueError, match="n must be"):
        session.generate("x", n=n)


def test_unknown_sampling_option_is_named(session):
    with pytest.raises(TypeError, match="temprature"):
        session.generate("x", n=1, temprature=0.5)


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
    import pandas as pd

    assert pd.isna(fb.loc["bob", "rating"]) and fb.loc["bob", "critique"] == "meh"
    with pytest.raises(ValueError, match="correction"):
        session.record_correction(s.sample_id, "  ")


@pytest.mark.parametrize("call, match", [
    (lambda s, sid: s.record_rating(999, 4), "999"),
    (lambda s, sid: s.record_rating("1", 4), "sample_id"),
    (lambda s, sid: s.record_rating(sid, True), "rating"),
    (lambda s, sid: s.record_rating(sid, 4.5), "rating"),
    (lambda s, sid: s.record_rating(sid, 6), "rating"),
    (lambda s, sid: s.record_preference(sid, sid, "a"), "two different"),
    (lambda s, sid: s.record_preference(sid, 999, "a"), "999"),
    (lambda s, sid: s.record_preference(sid, sid + 1, "maybe"), "choice"),
    (lambda s, sid: s.record_rating(sid, 4, annotator="   "), "annotator"),
    (lambda s, sid: s.record_rating(sid, 4, annotator=""), "annotator"),
])
def test_bad_judgements_are_refused_with_a_clear_error(session, call, match):
    a, _ = session.generate("x", n=2, max_new_tokens=3, progress=False)
    with pytest.raises((ValueError, KeyError), match=match):
        call(session, a.sample_id)
    assert session.store.events().empty


def test_numpy_ratings_are_accepted(session):
    import numpy as np

    [s] = session.generate("x", n=1, max_new_tokens=3, progress=False)
    session.record_rating(np.int64(s.sample_id), np.int64(3))
    assert session.feedback.rating.tolist() == [3]


def test_blank_annotator_is_refused_at_once(tiny, tmp_path):
    from lf_widgets import Session

    with pytest.raises(ValueError, match="annotator"):
        Session(model=tiny, store=tmp_path / "f.sqlite", annotator="   ")


def test_default_annotator_prefers_jupyterhub_user(monkeypatch):
    from lf_widgets.session import default_annotator

    monkeypatch.setenv("JUPYTERHUB_USER", "hub-ann")
    monkeypatch.setenv("USER", "unix-ann")
    assert default_annotator() == "hub-ann"
    monkeypatch.delenv("JUPYTERHUB_USER")
    assert default_annotator() == "unix-ann"


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


def test_panels_load_no_torch_at_run_time():
    """Importing the panels (and what they need) must not pull torch in, even transitively."""
    code = ("import sys, lf_widgets, lf_widgets.panels.rating, lf_widgets.panels.preference, "
            "lf_widgets.panels.abtest, lf_widgets.panels.monitor, lf_widgets.panels.stepper, "
            "lf_widgets.store, lf_widgets.io, lf_widgets.remote, lf_widgets.sampling, "
            "lf_widgets.session, lf_widgets._requests, lf_widgets._worker\n"
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    import lf_widgets

    assert lf_widgets.__version__ == version("lf-widgets")
