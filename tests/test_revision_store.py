"""The log's side of learning from critiques (issue 14): migration 5 (``events.meta``, the kind
``rejection``), correction provenance and edit distance, the current/undo rule for rejections,
and what the provenance becomes downstream: examples' ``meta``, the ``min_edit_ratio`` filter,
the cleaning summary and the exports. Store tests run on SQLite and a real PostgreSQL server
(tests/postgres.py; skipped with a hint without its binaries, failed in CI)."""

import json
import sqlite3

import pytest

from lf_widgets import store as store_module
from lf_widgets import store_pg
from lf_widgets._migrations import MIGRATIONS
from lf_widgets._migrations_pg import PG_MIGRATIONS
from lf_widgets.data import build_examples
from lf_widgets.edits import edit_distance, edit_ratio
from lf_widgets.exports import CORRECTION_COLUMNS, export_training, to_dataset, training_records
from lf_widgets.feedback import TINY_EDIT, text_examples
from lf_widgets.io import export_feedback, import_feedback, read_feedback
from lf_widgets.store import FeedbackStore, SampleRecord
from tests.test_store import cluster, store  # noqa: F401  (both backends, as the store tests)

Q = "Greet me"
ORIGINAL = "Hello there, how can I help you today?"
REVISION = {"via": "revision", "refiner": "own", "critique": "Start with 'Ahoy!'",
            "critique_event": 2, "candidate": 1, "candidates": 3, "strategy": "forced prefix"}


@pytest.fixture
def memory():
    s = FeedbackStore(":memory:")
    yield s
    s.close()


def answers(store, *texts, prompt=Q):
    return store.add_samples([SampleRecord(t, prompt=prompt, token_ids=None) for t in texts])


# -- migration 5: a log written by the previous version opens and upgrades --------------------
OLD_EVENTS = [  # (id, sample, kind, value, undoes): as lf_widgets with schema 4 wrote them
    (1, 1, "rating", 4, None), (2, 1, "critique", "too formal", None),
    (3, 1, "correction", "Ahoy! How can I help?", None), (4, 2, "rating", 2, None),
    (5, 2, "rating", 5, None), (6, 2, "undo", None, 5),
    (7, 1, "preference", {"other": 2, "choice": "a"}, None)]


def old_insert(run, placeholder):
    """Write OLD_EVENTS with the columns schema 4 had (no meta), as its record() did."""
    query = ("INSERT INTO events(id, sample_id, kind, value, annotator, created_at, undoes,"
             " subject) VALUES (" + ", ".join([placeholder] * 8) + ")")
    for eid, sid, kind, value, undoes in OLD_EVENTS:
        subject = None if kind == "undo" else store_module.subject_of(kind, sid, value)
        run(query, (eid, sid, kind, json.dumps(value), "ann", 1.0 + eid, undoes, subject))


def check_upgraded(s):
    ev = s.events()
    assert ev["id"].tolist() == [e[0] for e in OLD_EVENTS]
    assert ev["kind"].tolist() == [e[2] for e in OLD_EVENTS]
    assert ev["value"].tolist() == [e[3] for e in OLD_EVENTS]
    assert ev["undoes"].tolist()[5] == 5 and ev["meta"].isna().all()
    assert all(m is None for m in ev["meta"])  # None, not NaN
    current = s.current_events()
    assert current["id"].tolist() == [1, 2, 3, 4, 7]  # the undone rating 5 is gone, 2 is back
    fb = s.feedback().set_index("sample_id")
    assert fb.loc[1, "correction"] == "Ahoy! How can I help?" and fb.loc[2, "rating"] == 2
    assert fb.loc[1, "correction_meta"] is None  # written before meta existed
    # the upgraded log takes the new kind and meta, and ids go on after the old ones
    rejected = s.record(1, "rejection", {"candidates": ["Ahoy"], "refiner": "own",
                                         "critique": "too formal"}, "ann")
    fixed = s.record(2, "correction", "Ahoy!", "ann", meta={"via": "revision"})
    assert rejected.id == 8 and fixed.id == 9 and fixed.meta["edit_distance"] > 0
    assert s.undo("ann", kinds=["rejection"]).id == 8
    # old corrections still feed training, their provenance computed from the texts
    [sft] = [e for e in text_examples(s).sft if e.sample_id == 1 and e.source == "correction"]
    assert sft.meta["via"] == "typed" and sft.meta["correction_event"] == 3
    assert sft.meta["edit_distance"] == edit_distance("first answer", "Ahoy! How can I help?")


def test_a_schema_4_sqlite_log_opens_and_upgrades(tmp_path, monkeypatch):
    path = tmp_path / "old.sqlite"
    with monkeypatch.context() as m:  # the previous version: migrations 1-4
        m.setattr(store_module, "_MIGRATIONS", MIGRATIONS[:4])
        m.setattr(store_module, "SCHEMA_VERSION", 4)
        with FeedbackStore(path) as old:
            answers(old, "first answer", "second answer")
            with old.atomic() as conn:
                old_insert(conn.execute, "?")
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 4
    con.close()
    with FeedbackStore(path) as s:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 5
        assert s.conn.execute("PRAGMA foreign_key_check").fetchall() == []
        indexes = {r[0] for r in s.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")}
        assert {"events_sample", "events_undoes", "events_subject"} <= indexes
        check_upgraded(s)
        with pytest.raises(sqlite3.IntegrityError):  # the rebuilt table keeps its references
            s._insert("INSERT INTO events(kind, annotator, created_at, undoes) VALUES"
                      " ('undo', 'ann', 0, 999) RETURNING id", ())


def test_a_version_1_postgresql_log_upgrades_and_annotators_keep_reading(cluster, monkeypatch):
    db = cluster.new_database()
    with monkeypatch.context() as m:  # the previous version: PostgreSQL schema 1
        m.setattr(store_pg, "PG_MIGRATIONS", PG_MIGRATIONS[:1])
        m.setattr(store_pg, "PG_SCHEMA_VERSION", 1)
        store_pg.init_team(cluster.url(db), ["alice"])
        with FeedbackStore(cluster.url(db)) as old:
            answers(old, "first answer", "second answer")
            with old.atomic() as conn:
                old_insert(lambda q, a: conn.execute(q, a), "%s")
            conn.execute("SELECT setval(pg_get_serial_sequence('events', 'id'), 7)")
    cluster.sql("ALTER ROLE alice PASSWORD 'pw-alice'")
    with FeedbackStore(cluster.url(db)) as lead:  # the lead opens it first: the upgrade
        assert lead._rows("SELECT max(version) FROM lfw_schema")[1][0][0] == 2
        check_upgraded(lead)
    with FeedbackStore(cluster.url(db, "alice", "pw-alice")) as alice:  # grants survived
        assert len(alice.current_events()) == 6
        event = alice.record(2, "rejection", {"candidates": [], "refiner": "own",
                                              "critique": "x"}, "alice")
        assert alice.current_events(kinds=["rejection"])["id"].tolist() == [event.id]


# -- meta: checked, stored, read back --------------------------------------------------------
@pytest.mark.parametrize("meta, names", [
    ({"refinr": "own"}, "'refinr'"),
    ({"candidate": "1"}, "'candidate'"),
    ({"candidate": True}, "'candidate'"),
    ({"edit_ratio": float("nan")}, "'edit_ratio'"),
    ({"edit_ratio": 1.5}, "'edit_ratio'"),
    ({"via": "guessed"}, "'via'"),
    ({"critique": 3}, "'critique'"),
    ({"candidate": 3, "candidates": 3}, "'candidate'"),
    ({"propagated_from": 1.5}, "'propagated_from'"),
    (["via", "typed"], "meta must be a dict"),
])
def test_bad_correction_meta_is_refused_naming_the_key(memory, meta, names):
    [a] = answers(memory, ORIGINAL)
    with pytest.raises(ValueError, match=names):
        memory.record(a, "correction", "Ahoy!", "ann", meta=meta)
    assert memory.events().empty


def test_meta_belongs_to_corrections_and_rejections_only(memory):
    [a] = answers(memory, ORIGINAL)
    with pytest.raises(ValueError, match="corrections and rejections only.*rating"):
        memory.record(a, "rating", 4, "ann", meta={"via": "typed"})
    with pytest.raises(ValueError, match="unknown rejection meta key 'via'"):
        memory.record(a, "rejection", {"candidates": [], "refiner": "own", "critique": "c"},
                      "ann", meta={"via": "typed"})
    assert memory.record(a, "rating", 4, "ann").meta is None


@pytest.mark.parametrize("value, names", [
    ({"candidates": ["x"], "refiner": "own"}, "needs 'critique'"),
    ({"candidates": "x", "refiner": "own", "critique": "c"}, "'candidates' must be a list"),
    ({"candidates": ["x", 2], "refiner": "own", "critique": "c"}, "'candidates'"),
    ({"candidates": [], "refiner": None, "critique": "c"}, "'refiner' must be a string"),
    ({"candidates": [], "refiner": "own", "critique": "c", "score": 1}, "key 'score'"),
    ("no thanks", "rejection value must be a dict"),
])
def test_bad_rejections_are_refused(memory, value, names):
    [a] = answers(memory, ORIGINAL)
    with pytest.raises(ValueError, match=names):
        memory.record(a, "rejection", value, "ann")
    with pytest.raises(ValueError, match="needs the sample_id"):
        memory.record(None, "rejection", {"candidates": [], "refiner": "own", "critique": "c"},
                      "ann")


def test_corrections_carry_their_edit_distance_and_provenance(store):
    a, b, c = answers(store, ORIGINAL, "Hi", "Good day")
    typed = store.record(a, "correction", "Ahoy! " + ORIGINAL, "ann")
    assert typed.meta == {"edit_distance": 6, "edit_ratio": 6 / (len(ORIGINAL) + 6)}
    accepted = store.record(b, "correction", "Ahoy! Hi", "ann", meta=REVISION)
    assert accepted.meta == {**REVISION, "edit_distance": edit_distance("Hi", "Ahoy! Hi"),
                             "edit_ratio": edit_ratio("Hi", "Ahoy! Hi")}
    given = store.record(c, "correction", "Ahoy!", "ann",
                         meta={"via": "propagated", "propagated_from": typed.id,
                               "edit_distance": 99})
    assert given.meta["edit_distance"] == 99  # what the caller measured is kept
    assert given.meta["edit_ratio"] == edit_ratio("Good day", "Ahoy!")  # the missing one filled
    ev = store.events().set_index("id")
    assert ev.loc[accepted.id, "meta"] == accepted.meta
    assert store.current_events(kinds=["correction"]).set_index("id").loc[
        given.id, "meta"] == given.meta
    store.record(a, "rating", 3, "ann")
    assert store.events().set_index("id").loc[typed.id + 3, "meta"] is None
    fb = store.feedback().set_index("sample_id")
    assert list(fb.columns)[-1] == "correction_meta"
    assert fb.loc[a, "correction_meta"] == typed.meta and fb.loc[b, "correction_meta"] == accepted.meta
    store.record(b, "correction", "", "ann")  # emptied: no correction, no meta
    assert store.feedback().set_index("sample_id").loc[b, "correction_meta"] is None
    assert store.undo("ann", kinds=["correction"]).meta["edit_ratio"] == 1.0  # "" vs "Hi"


def test_a_rejection_follows_the_current_judgement_rule(store):
    a, b = answers(store, ORIGINAL, "Hi")
    first = store.record(a, "rejection", {"candidates": ["Ahoy 1", "Ahoy 2"], "refiner": "own",
                                          "critique": "Start with 'Ahoy!'"}, "ann",
                         meta={"critique_event": 1, "strategies": ["rewrite", "few-shot"]})
    later = store.record(a, "rejection", {"candidates": ["Ahoy 3"], "refiner": "own",
                                          "critique": "Start with 'Ahoy!'"}, "ann")
    bobs = store.record(a, "rejection", {"candidates": ["x"], "refiner": "own",
                                         "critique": "c"}, "bob")
    store.record(b, "rejection", {"candidates": ["y"], "refiner": "own", "critique": "c"}, "ann")
    current = store.current_events(kinds=["rejection"], sample_ids=[a])
    assert current["id"].tolist() == [later.id, bobs.id]  # the latest per sample and annotator
    assert set(current["subject"]) == {f"s:{a}"}
    assert store.undo("ann", sample_id=a).id == later.id  # undo brings the earlier one back
    back = store.current_events(kinds=["rejection"], sample_ids=[a], annotator="ann")
    assert back["id"].tolist() == [first.id]
    assert back["meta"].iloc[0] == {"critique_event": 1, "strategies": ["rewrite", "few-shot"]}
    assert "rejection" not in store.feedback().columns
    assert store.current(a, "ann") == {}  # no rating, critique or correction


# -- downstream: examples, the edit-aware filter, the summary ---------------------------------
def provenance_log(store):
    """A typed correction, two accepted revisions, one propagated edit, a rating of 5, a tiny
    edit and a rejection of two suggestions."""
    ids = answers(store, ORIGINAL, "Hi", "Good day", "Greetings", "Well hello", "Howdy partner")
    store.record(ids[0], "correction", "Ahoy! " + ORIGINAL, "ann")
    store.record(ids[1], "correction", "Ahoy! Hi", "ann", meta=REVISION)
    store.record(ids[2], "correction", "Ahoy! Good day", "ann", meta={**REVISION, "candidate": 0})
    store.record(ids[3], "correction", "Ahoy! Greetings", "ann",
                 meta={"via": "propagated", "propagated_from": 1})
    store.record(ids[4], "rating", 5, "ann")
    store.record(ids[5], "correction", "Howdy partner!", "ann")  # one character: a tiny edit
    store.record(ids[4], "rejection", {"candidates": ["Ahoy 1", "Ahoy 2"], "refiner": "own",
                                       "critique": "c"}, "ann")
    return ids


def test_examples_from_corrections_carry_their_provenance(memory):
    ids = provenance_log(memory)
    texts = text_examples(memory)
    by_sample = {e.sample_id: e for e in texts.sft}
    assert by_sample[ids[1]].meta["refiner"] == "own" and by_sample[ids[1]].meta["candidate"] == 1
    assert by_sample[ids[3]].meta["propagated_from"] == 1
    assert by_sample[ids[0]].meta["via"] == "typed"
    assert by_sample[ids[4]].meta is None  # from a rating
    assert all(p.meta["via"] for p in texts.pairs)  # every pair here comes from a correction
    assert {k.sample_id: k.meta for k in texts.kto}[ids[2]]["via"] == "revision"
    # a rejection is no example: without it the examples are the same
    assert len(texts.sft) == 6 and len(texts.pairs) == 5 and len(texts.kto) == 6
    assert (texts.rejections, texts.rejected_suggestions) == (1, 2)
    summary = texts.summary()
    assert summary.loc["sft", "corrections"] == "2 typed, 2 accepted revisions, 1 propagated"
    assert summary["rejected suggestions"].tolist() == [2, 2, 2]
    assert "corrections: 2 typed, 2 accepted revisions, 1 propagated" in repr(texts)
    assert "rejected suggestions: 2 (1 sample)" in repr(texts)


def test_token_examples_carry_the_same_meta(memory, tiny):
    ids = provenance_log(memory)
    data = build_examples(memory, tiny[1])
    [pair] = [p for p in data.pairs if p.rejected_sample_id == ids[2]]
    assert pair.meta["via"] == "revision" and pair.meta["candidate"] == 0
    assert {e.sample_id: e.meta for e in data.sft}[ids[4]] is None
    assert data.summary().loc["kto", "corrections"] == "2 typed, 2 accepted revisions, 1 propagated"
    assert data.rejected_suggestions == 2


def test_min_edit_ratio_drops_only_pairs_from_tiny_edits(memory, tiny):
    ids = provenance_log(memory)
    plain, zero = text_examples(memory), text_examples(memory, min_edit_ratio=0.0)
    assert (plain.sft, plain.pairs, plain.kto) == (zero.sft, zero.pairs, zero.kto)
    assert plain.dropped == zero.dropped and TINY_EDIT not in plain.dropped
    tiny_ratio = edit_ratio("Howdy partner", "Howdy partner!")  # 1/14
    strict = text_examples(memory, min_edit_ratio=0.1)
    assert tiny_ratio < 0.1 < edit_ratio("Hi", "Ahoy! Hi")
    assert [p.rejected_sample_id for p in plain.pairs if p not in strict.pairs] == [ids[5]]
    assert strict.dropped_by["dpo"][TINY_EDIT] == 1 and strict.min_edit_ratio == 0.1
    assert (strict.sft, strict.kto) == (plain.sft, plain.kto)  # SFT and KTO keep the edit
    data = build_examples(memory, tiny[1], min_edit_ratio=0.1)
    assert len(data.pairs) == len(strict.pairs) and data.summary().loc["dpo", f"dropped: {TINY_EDIT}"] == 1
    for bad in (-0.1, 1.5, "0.2", True):
        with pytest.raises(ValueError, match="min_edit_ratio"):
            text_examples(memory, min_edit_ratio=bad)


# -- exports ------------------------------------------------------------------------------------
def test_training_exports_carry_the_provenance(memory, tmp_path):
    ids = provenance_log(memory)
    for kind in ("trl-sft", "trl-dpo", "trl-kto"):
        path = export_training(memory, kind, tmp_path / f"{kind}.jsonl").path
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert lines == training_records(memory, kind)[0]  # the file is the records
        assert all(list(r["correction_meta"]) == list(CORRECTION_COLUMNS)
                   for r in lines if r["source"] == "correction")
        side = "rejected_sample_id" if kind == "trl-dpo" else "sample_id"
        meta = {r[side]: r["correction_meta"] for r in lines}
        assert meta[ids[1]]["via"] == "revision" and meta[ids[1]]["refiner"] == "own"
        assert meta[ids[1]]["critique"] == REVISION["critique"] and meta[ids[1]]["candidate"] == 1
        assert meta[ids[1]]["edit_distance"] == edit_distance("Hi", "Ahoy! Hi")
        assert meta[ids[3]]["propagated_from"] == 1 and meta[ids[3]]["refiner"] is None
        assert meta[ids[0]]["via"] == "typed"
        if kind != "trl-dpo":
            assert meta[ids[4]] is None  # rated, not corrected
    dataset = to_dataset(memory, "trl-sft")
    rows = {r["sample_id"]: r["correction_meta"] for r in dataset}
    assert rows[ids[1]]["strategy"] == "forced prefix" and rows[ids[4]] is None
    openai, _ = training_records(memory, "openai-sft")
    assert all(set(r) == {"messages"} for r in openai)  # OpenAI's schema has no room for it


def test_feedback_files_keep_the_seeds_csv_columns_and_round_trip_meta(memory, tmp_path):
    provenance_log(memory)
    df = memory.feedback()
    csv = export_feedback(df, "csv", tmp_path / "fb.csv")
    assert "correction_meta" not in read_feedback(csv).columns
    for kind in ("jsonl", "parquet"):
        path = export_feedback(df, kind, tmp_path / f"fb.{kind}")
        assert read_feedback(path)["correction_meta"].tolist() == df["correction_meta"].tolist()
        with FeedbackStore(":memory:") as fresh:  # our own column is no unknown column
            assert import_feedback(fresh, path) == len(df)
            assert fresh.feedback()["correction"].tolist() == df["correction"].tolist()
