"""Refiners: critique parsing, constrained strategies, and the three refiners on real models and a
real HTTP server on 127.0.0.1 (the tiny random model; no mocks of the model or the client)."""

from __future__ import annotations

import threading

import pytest

from lf_widgets.refine import (FEW_SHOT, REFINE_TEMPLATE, Candidate, Constraints, LocalRefiner,
                               OwnModelRefiner, RemoteRefiner, cut_to_fit, parse_critique,
                               resolve_refiner)
from lf_widgets.remote import RemoteChatModel

from .test_remote import FakeServer

AHOY = "Start your answer with 'Ahoy!'"


# -- reading critiques -------------------------------------------------------------------------
@pytest.mark.parametrize("critique, expected", [
    (AHOY, Constraints(prefix="Ahoy!")),
    ("Please begin with “Dear friend,” and end with ‘Cheers.’",
     Constraints(prefix="Dear friend,", suffix="Cheers.")),
    ('open it with "Hi there"', Constraints(prefix="Hi there")),
    ("You should start with: 'Yo'", Constraints(prefix="Yo")),
    ("Finish with 'Don't panic'", Constraints(suffix="Don't panic")),  # an apostrophe inside
    ("Don't start with 'Sure'", Constraints()),  # asks for the opposite: nothing forced
    ("Too long. At most 10 words.", Constraints(max_words=10)),
    ("no more than twelve words", Constraints(max_words=12)),
    ("Use fewer than five words", Constraints(max_words=4)),
    ("Answer in one sentence", Constraints(sentences=1)),
    ("two sentences max", Constraints(sentences=2)),
    ("Shorter, please", Constraints(shorter=True)),
    ("Make it funnier", Constraints()),
    ("Start with 'Ahoy!' and keep it to a single sentence",
     Constraints(prefix="Ahoy!", sentences=1)),
])
def test_parse_critique(critique, expected):
    assert parse_critique(critique) == expected
    assert bool(parse_critique(critique)) == bool(expected)


def test_parse_critique_needs_text():
    with pytest.raises(ValueError, match="critique"):
        parse_critique(None)


def test_cut_to_fit_cuts_at_a_sentence_boundary():
    text = "The sea is big. It is blue. Fish live there."
    assert cut_to_fit(text, max_words=7) == "The sea is big. It is blue."
    assert cut_to_fit(text, sentences=1) == "The sea is big."
    assert cut_to_fit(text, max_words=100) == text
    # the first sentence alone is too long: cut after the words allowed, ended with a stop
    assert cut_to_fit("The sea is wide and deep, and full of fish.", max_words=6) == \
        "The sea is wide and deep."


def test_template_and_few_shot_are_documented_strings():
    assert all(f"{{{k}}}" in REFINE_TEMPLATE for k in ("prompt", "answer", "critique"))
    for prompt, answer, critique, rewrite in FEW_SHOT:  # each example follows its own critique
        c = parse_critique(critique)
        assert c.prefix is None or rewrite.startswith(c.prefix)
        assert c.suffix is None or rewrite.endswith(c.suffix)
        assert c.max_words is None or len(rewrite.split()) <= c.max_words


# -- the session's own model ---------------------------------------------------------------------
@pytest.fixture
def owner(session):
    return session.model


def test_own_model_streams_constrained_candidates_on_the_owners_thread(owner):
    refiner = OwnModelRefiner(owner, max_new_tokens=12)
    seen = []
    cands = refiner.refine("Say hi", "Hello. I am a model. Nice to meet you.", AHOY, k=4, seed=3,
                           on_candidate=lambda i, c: seen.append(
                               (i, c, threading.current_thread() is owner.worker.thread)))
    assert [i for i, *_ in seen] == [0, 1, 2, 3] and [c for _, c, _ in seen] == cands
    assert all(on_thread for *_, on_thread in seen)  # torch work on the model's own thread
    assert [c.strategy for c in cands] == ["prompted+prefix", "original+prefix",
                                           "few_shot+prefix", "prompted+prefix"]
    assert all(c.text.startswith("Ahoy!") for c in cands), [c.text for c in cands]
    assert cands[1].text == "Ahoy! Hello. I am a model. Nice to meet you."
    assert [c.temperature for c in cands] == [0.3, None, 0.7, 1.0]
    assert {c.refiner for c in cands} == {f"own:{owner.tag}"}
    # repeatable with a seed
    again = refiner.refine("Say hi", "Hello. I am a model. Nice to meet you.", AHOY, k=4, seed=3)
    assert again == cands


def test_plain_critique_runs_only_the_prompted_rewrite(owner):
    cands = OwnModelRefiner(owner, max_new_tokens=6).refine("Say hi", "Hello.", "Make it funnier",
                                                           k=4, seed=0)
    assert [c.strategy for c in cands] == ["prompted"] * 4
    assert [c.temperature for c in cands] == [0.3, 0.7, 1.0, 0.3]
    assert all(isinstance(c, Candidate) and isinstance(c.text, str) for c in cands)


def test_length_critique_cuts_at_a_sentence_boundary(owner):
    answer = "The sea is big. It is blue and deep. Fish live in it."
    cands = OwnModelRefiner(owner, max_new_tokens=8).refine("Tell me about the sea", answer,
                                                           "Too long: one sentence.", k=3, seed=1)
    original = [c for c in cands if c.strategy.startswith("original")]
    assert [(c.text, c.strategy) for c in original] == [("The sea is big.", "original+cut")]
    assert all(len(c.text.split(". ")) == 1 for c in cands)


def test_adapter_is_off_while_refining_and_on_again_after(fresh):
    from peft.tuners.lora import LoraLayer

    from lf_widgets.trainer import TrainConfig

    owner = fresh.model
    owner.call(lambda: owner.ensure_adapter(TrainConfig()))
    states = []  # per forward pass: were the LoRA layers disabled?

    def install():
        layers = [m for m in owner.model.modules() if isinstance(m, LoraLayer)]
        assert layers
        hook = owner.model.get_base_model().register_forward_pre_hook(
            lambda *_: states.append(all(m.disable_adapters for m in layers)))
        return layers, hook

    layers, hook = owner.call(install)
    try:
        OwnModelRefiner(owner, max_new_tokens=4).refine("Say hi", "Hello.", AHOY, k=2, seed=0)
    finally:
        owner.call(hook.remove)
    assert states and all(states)  # every forward of the refinement: adapter off
    assert owner.call(lambda: not any(m.disable_adapters for m in layers))  # back on
    assert owner.has_adapter and owner.adapter_step == 0


def test_cancel_stops_the_refiner(owner):
    from concurrent.futures import CancelledError

    from lf_widgets._worker import Cancelled

    job = OwnModelRefiner(owner, max_new_tokens=400).submit("Say hi", "Hello.", "Funnier", k=50)
    job.cancel()  # queued: it never starts; running: it stops at the next token
    with pytest.raises((Cancelled, CancelledError)):
        job.result(timeout=120)


@pytest.mark.parametrize("kwargs, field", [
    ({"template": "no fields here"}, "template"), ({"template": "{answer} {oops}"}, "template"),
    ({"temperatures": []}, "temperatures"), ({"temperatures": (0.3, -1)}, "temperatures"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
])
def test_bad_refiner_options_name_the_field(owner, kwargs, field):
    with pytest.raises(ValueError, match=field):
        OwnModelRefiner(owner, **kwargs)


@pytest.mark.parametrize("kwargs, field", [
    ({"k": 0}, "k"), ({"k": 1.5}, "k"), ({"k": True}, "k"), ({"critique": " "}, "critique"),
    ({"seed": "x"}, "seed"),
])
def test_bad_refine_arguments_name_them(owner, kwargs, field):
    args = {"k": 2, "critique": AHOY, **kwargs}
    with pytest.raises(ValueError, match=field):
        OwnModelRefiner(owner).submit("Say hi", "Hello.", args.pop("critique"), **args)


# -- a local folder -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from lf_widgets.models import tiny_model

    folder = tmp_path_factory.mktemp("refiner") / "tiny-refiner"
    model, tok = tiny_model(seed=1)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_local_folder_refiner_has_its_own_owner(tiny_folder, owner):
    refiner = LocalRefiner(tiny_folder, max_new_tokens=6)
    try:
        assert refiner.owner is not owner and refiner.name == "local:tiny-refiner"
        threads = []
        cands = refiner.refine("Say hi", "Hello.", AHOY, k=2, seed=0,
                               on_candidate=lambda i, c: threads.append(threading.current_thread()))
        assert threads == [refiner.owner.worker.thread] * 2
        assert [c.refiner for c in cands] == ["local:tiny-refiner"] * 2
        assert all(c.text.startswith("Ahoy!") for c in cands)
    finally:
        refiner.close()


def test_local_refiner_needs_a_path():
    with pytest.raises(ValueError, match="path_or_id"):
        LocalRefiner(None)


# -- a remote server ------------------------------------------------------------------------
def _rewriting_server(reply):
    """An OpenAI-compatible server on 127.0.0.1 answering every chat with ``reply(request)``."""
    def handle(req, server):
        if req["path"].endswith("/models"):
            return 200, {"object": "list", "data": [{"id": "m1"}]}
        n = req["json"].get("n", 1)
        return 200, {"object": "chat.completion", "choices": [
            {"index": i, "message": {"role": "assistant", "content": reply(req["json"])},
             "finish_reason": "stop"} for i in range(n)]}
    return FakeServer(handle)


@pytest.fixture
def server():
    s = _rewriting_server(lambda body: f"Rewritten at {body['temperature']}.")
    yield s
    s.stop()


def test_remote_refiner_against_a_real_http_server(server):
    refiner = RemoteRefiner(RemoteChatModel(server.url, "m1", api_key_env=None),
                            max_new_tokens=20)
    try:
        cands = refiner.refine("Say hi", "Hello.", AHOY, k=3, seed=5)
    finally:
        refiner.close()
    assert refiner.name == "remote:m1"
    # a chat API cannot continue a started answer: the phrase is put in front of the reply
    assert [c.text for c in cands] == ["Ahoy! Rewritten at 0.3.", "Ahoy! Hello.",
                                       "Ahoy! Rewritten at 0.7."]
    assert [c.strategy for c in cands] == ["prompted+prefix", "original+prefix",
                                           "few_shot+prefix"]
    chats = [r["json"] for r in server.requests if r["path"].endswith("/chat/completions")]
    assert [c["temperature"] for c in chats] == [0.3, 0.7] and [c["seed"] for c in chats] == [5, 6]
    assert all(c["max_tokens"] == 20 and len(c["messages"]) == 1 for c in chats)
    first, few_shot = (c["messages"][0]["content"] for c in chats)
    assert "Feedback: " + AHOY in first and "Answer: Hello." in first and "Say hi" in first
    assert FEW_SHOT[0][3] in few_shot and few_shot.endswith(first)  # examples, then the request


def test_remote_refiner_uses_an_overridden_template(server):
    template = "Q={prompt} A={answer} C={critique}"
    refiner = RemoteRefiner(RemoteChatModel(server.url, "m1", api_key_env=None), template)
    try:
        [cand] = refiner.refine("Say hi", "Hello.", "Make it funnier", k=1)
    finally:
        refiner.close()
    assert cand.strategy == "prompted" and cand.text == "Rewritten at 0.3."
    [chat] = [r["json"] for r in server.requests if r["path"].endswith("/chat/completions")]
    assert chat["messages"][0]["content"] == "Q=Say hi A=Hello. C=Make it funnier"


def test_remote_refiner_needs_a_remote_model():
    with pytest.raises(ValueError, match="remote"):
        RemoteRefiner("http://127.0.0.1:1/v1")


# -- which refiner --------------------------------------------------------------------------
def test_resolve_refiner(session, server, tiny_folder):
    own = resolve_refiner(None, session)
    assert isinstance(own, OwnModelRefiner) and own.owner is session.model
    assert resolve_refiner("own", session) is own  # one per session
    remote = RemoteChatModel(server.url, "m1", api_key_env=None)
    r = resolve_refiner(remote, session)
    assert isinstance(r, RemoteRefiner) and resolve_refiner(remote, session) is r
    local = resolve_refiner(str(tiny_folder), session)
    assert isinstance(local, LocalRefiner) and resolve_refiner(str(tiny_folder), session) is local
    assert resolve_refiner(own, session) is own
    with pytest.raises(ValueError, match="refiner"):
        resolve_refiner(42, session)
    r.close()
    local.close()
