"""Session verbs for learning from critiques: suggest → accept / edit / reject, provenance in the
log, the examples that come out, edit propagation (tiny model; a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import json

import pytest

from lf_widgets.edits import edit_distance, edit_ratio
from lf_widgets.feedback import text_examples
from lf_widgets.refine import Candidate
from lf_widgets.remote import RemoteChatModel
from lf_widgets.revisions import Revision, RevisionRequest, RevisionsDone, Suggestion

from .test_refine import AHOY, _rewriting_server, tiny_folder  # noqa: F401 (a fixture)


@pytest.fixture
def critiqued(session):
    """Two stored samples of one prompt; the first critiqued by the session's annotator."""
    samples = session.generate(["Say hi"], n=2, max_new_tokens=8, seed=0, progress=False)
    event = session.record_critique(samples[0].sample_id, AHOY)
    return samples, event


def _meta(session, event_id):
    ev = session.store.events()
    return ev[ev["id"] == event_id].iloc[0]["meta"]


def test_suggest_streams_then_accept_stores_full_provenance(session, critiqued, tmp_path):
    (sample, other), critique = critiqued
    sid = sample.sample_id
    seen = []  # (event, payload, was the request finished when it arrived?)
    session.on("revision", lambda r: seen.append(("revision", r, r.request.done)))
    session.on("revisions_done", lambda d: seen.append(("done", d, None)))
    request = session.suggest_revisions(sid, k=3, seed=0)
    assert isinstance(request, RevisionRequest)
    cands = request.wait(timeout=300)
    assert request.done and request.state == "done" and request.candidates == cands
    # one "revision" event per candidate, in order, each before the end; then "revisions_done"
    assert [kind for kind, *_ in seen] == ["revision"] * 3 + ["done"]
    assert [r for _, r, _ in seen[:3]] == [Revision(sid, i, c, request)
                                           for i, c in enumerate(cands)]
    assert all(not done for _, _, done in seen[:3])
    assert seen[3][1] == RevisionsDone(sid, cands, request)
    assert seen[0][1][:3] == (sid, 0, cands[0])  # (sample_id, index, candidate)
    assert all(c.text.startswith("Ahoy!") for c in cands)

    judged = []
    session.on("judgement", judged.append)
    event = session.accept_revision(sid, 1)
    assert judged == [event] and event.kind == "correction" and event.value == cands[1].text
    meta = _meta(session, event.id)
    assert meta == event.meta
    assert meta["via"] == "revision" and meta["refiner"] == cands[1].refiner
    assert meta["critique"] == AHOY and meta["critique_event"] == critique.id
    assert meta["candidate"] == 1 and meta["candidates"] == 3
    assert meta["strategy"] == cands[1].strategy and "candidate_text" not in meta
    assert meta["edit_distance"] == edit_distance(sample.text, cands[1].text)
    assert meta["edit_ratio"] == pytest.approx(edit_ratio(sample.text, cands[1].text))

    # it feeds training exactly as a correction does: SFT target, pair revision ≻ original, KTO
    data = text_examples(session.store)
    assert [(e.completion, e.source) for e in data.sft] == [(cands[1].text, "correction")]
    assert [(p.chosen, p.rejected, p.source) for p in data.pairs] == \
        [(cands[1].text, sample.text, "correction")]
    assert [(e.completion, e.desirable) for e in data.kto] == [(cands[1].text, True)]
    for example in (*data.sft, *data.pairs, *data.kto):  # the examples carry the provenance
        assert example.meta["via"] == "revision" and example.meta["refiner"] == cands[1].refiner
    for kind in ("trl-sft", "trl-dpo", "trl-kto"):  # and so do the exports
        path = session.export(kind, tmp_path / f"{kind}.jsonl").path
        [record] = [json.loads(line) for line in path.read_text().splitlines()]
        assert record["correction_meta"]["via"] == "revision"
        assert record["correction_meta"]["critique"] == AHOY
        assert record["correction_meta"]["candidate"] == 1


def test_edited_revision_stores_the_edit(session, critiqued):
    (sample, _), _ = critiqued
    request = session.suggest_revisions(sample.sample_id, k=2, seed=1)
    cands = request.wait(timeout=300)
    edited = "Ahoy! Hello, friend."
    event = session.accept_revision(sample.sample_id, 0, text=edited)
    meta = _meta(session, event.id)
    assert event.value == edited
    assert meta["via"] == "edited_revision" and meta["candidate_text"] == cands[0].text
    assert meta["edit_distance"] == edit_distance(sample.text, edited)
    # the candidate itself, unchanged, is a plain accepted revision; a Candidate works as an index
    again = session.accept_revision(sample.sample_id, cands[1], text=cands[1].text)
    meta = _meta(session, again.id)
    assert meta["via"] == "revision" and meta["candidate"] == 1
    assert session.judgements([sample.sample_id], kinds=["correction"])["value"].tolist() == \
        [cands[1].text]  # the latest correction is the one in force


def test_reject_stores_a_rejection_and_no_example(session, critiqued):
    (sample, _), critique = critiqued
    cands = session.suggest_revisions(sample.sample_id, k=2, seed=0).wait(timeout=300)
    event = session.reject_revisions(sample.sample_id)
    assert event.kind == "rejection"
    assert event.value == {"candidates": [c.text for c in cands], "refiner": cands[0].refiner,
                           "critique": AHOY}
    assert _meta(session, event.id)["critique_event"] == critique.id
    data = text_examples(session.store)
    assert not data.sft and not data.pairs and not data.kto
    with pytest.raises(ValueError, match="candidates"):
        session.reject_revisions(sample.sample_id, candidates=[])


def test_errors_name_the_argument(session, critiqued):
    (sample, other), _ = critiqued
    with pytest.raises(ValueError, match="sample_id"):
        session.suggest_revisions(10_000)
    with pytest.raises(ValueError, match="sample_id"):
        session.suggest_revisions("one")
    with pytest.raises(ValueError, match=f"sample {other.sample_id} has no critique"):
        session.suggest_revisions(other.sample_id)
    for k in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="k must be"):
            session.suggest_revisions(sample.sample_id, k=k)
    with pytest.raises(ValueError, match="critique"):
        session.suggest_revisions(sample.sample_id, critique="  ")
    with pytest.raises(ValueError, match="candidate"):
        session.accept_revision(sample.sample_id, 0)  # nothing suggested yet
    with pytest.raises(ValueError, match="no suggested revisions"):
        session.reject_revisions(sample.sample_id)
    session.suggest_revisions(sample.sample_id, k=2, seed=0).wait(timeout=300)
    with pytest.raises(ValueError, match="candidate must be from 0 to 1"):
        session.accept_revision(sample.sample_id, 2)
    with pytest.raises(ValueError, match="candidate"):
        session.accept_revision(sample.sample_id, "first")
    with pytest.raises(ValueError, match="text"):
        session.accept_revision(sample.sample_id, 0, text=" ")
    with pytest.raises(ValueError, match="refiner"):
        session.suggest_revisions(sample.sample_id, refiner=3.5)


def test_a_critique_given_explicitly_is_recorded_without_an_event(session, critiqued):
    (_, other), _ = critiqued
    request = session.suggest_revisions(other.sample_id, critique="End with 'Arr!'", k=1, seed=0)
    [cand] = request.wait(timeout=300)
    assert cand.text.endswith("Arr!") and "suffix" in cand.strategy
    meta = session.accept_revision(other.sample_id, 0).meta
    assert meta["critique"] == "End with 'Arr!'" and "critique_event" not in meta


def test_propagate_a_pattern_edit(session):
    samples = session.generate(["Say hi", "Say bye"], n=2, max_new_tokens=8, seed=0,
                               progress=False)
    source, *others = samples
    correction = session.record_correction(source.sample_id, "Ahoy! " + source.text)
    suggestions = session.propagate_edit(correction)
    assert {s.sample_id for s in suggestions} == {s.sample_id for s in others}
    assert all(isinstance(s, Suggestion) and s.edit.describe() == "add 'Ahoy! ' at the start"
               for s in suggestions)
    by_id = {s.sample_id: s for s in suggestions}
    first = by_id[others[0].sample_id]
    assert first.text == "Ahoy! " + others[0].text and first.propagated_from == correction.id
    event = session.accept_revision(first.sample_id, first)
    meta = _meta(session, event.id)
    assert event.value == first.text
    assert meta["via"] == "propagated" and meta["propagated_from"] == correction.id
    assert meta["strategy"] == "pattern_edit:prefix"
    # a sample now corrected is not offered again; by sample id; limited to sample_ids
    assert {s.sample_id for s in session.propagate_edit(source.sample_id)} == \
        {s.sample_id for s in others[1:]}
    assert [s.sample_id for s in session.propagate_edit(
        correction, sample_ids=[others[2].sample_id])] == [others[2].sample_id]
    rejected = session.reject_revisions(others[1].sample_id, [by_id[others[1].sample_id]])
    assert rejected.value["refiner"] == "propagated"
    with pytest.raises(ValueError, match="sample_ids"):
        session.propagate_edit(correction, sample_ids=[10_000])
    with pytest.raises(ValueError, match="not for sample_id"):
        session.accept_revision(others[1].sample_id, by_id[others[2].sample_id])
    # a general rewrite is not propagated
    rewrite = session.record_correction(others[2].sample_id, "Something else entirely.")
    assert session.propagate_edit(rewrite) == []


def test_refiner_from_a_local_folder(session, critiqued, tiny_folder):  # noqa: F811
    (sample, _), _ = critiqued
    cands = session.suggest_revisions(sample.sample_id, k=2, refiner=str(tiny_folder),
                                      seed=0).wait(timeout=300)
    assert {c.refiner for c in cands} == {"local:tiny-refiner"}
    assert session.accept_revision(sample.sample_id, 0).meta["refiner"] == "local:tiny-refiner"
    session._close_refiners()


def test_refiner_on_a_remote_server(session, critiqued):
    (sample, _), _ = critiqued
    server = _rewriting_server(lambda body: "Ahoy! Hello from the server.")
    try:
        remote = RemoteChatModel(server.url, "m1", api_key_env=None)
        request = session.suggest_revisions(sample.sample_id, k=2, refiner=remote, seed=0)
        cands = request.wait(timeout=60)
        assert cands[0] == Candidate("Ahoy! Hello from the server.", "prompted", "remote:m1", 0.3)
        meta = session.accept_revision(sample.sample_id, 0).meta
        assert meta["refiner"] == "remote:m1" and meta["strategy"] == "prompted"
    finally:
        session._close_refiners()
        server.stop()


def test_a_remote_session_refines_with_its_own_endpoint(tmp_path):
    from lf_widgets import Session
    from lf_widgets.store import SampleRecord

    server = _rewriting_server(lambda body: "Ahoy! Remote.")
    s = Session(RemoteChatModel(server.url, "m1", api_key_env=None), store=tmp_path / "r.sqlite",
                annotator="ann")
    try:
        [sid] = s.store.add_samples([SampleRecord(text="Hello.", prompt="Say hi")])
        s.record_critique(sid, AHOY)
        cands = s.suggest_revisions(sid, k=1).wait(timeout=60)
        assert cands[0].refiner == "remote:m1" and cands[0].text == "Ahoy! Remote."
    finally:
        s.close()
        server.stop()


def test_critiques_to_review(session, critiqued):
    from lf_widgets.revisions import critiques_to_review

    (sample, _), critique = critiqued
    queue = critiques_to_review(session.store, "ann")
    assert queue["sample_id"].tolist() == [sample.sample_id]
    assert queue.iloc[0]["critique"] == AHOY and queue.iloc[0]["critique_event"] == critique.id
    assert critiques_to_review(session.store, "someone else").empty
    session.suggest_revisions(sample.sample_id, k=1, seed=0).wait(timeout=300)
    session.accept_revision(sample.sample_id, 0)
    assert critiques_to_review(session.store, "ann").empty


def test_review_critiques_shows_the_queue_panel(session, critiqued):
    panels = pytest.importorskip("lf_widgets.panels.critiques",
                                 reason="the PANELS helper's CritiqueQueuePanel is not there yet")
    panel = session.review_critiques(display=False)
    assert isinstance(panel, panels.CritiqueQueuePanel)
