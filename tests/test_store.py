"""The feedback log on its own: events, current judgements, undo, threads, migrations.

Tests taking the ``store`` fixture run against both backends: SQLite and a real PostgreSQL
server the tests start themselves (tests/postgres.py; skipped with a hint where the server
binaries are missing, failed in CI)."""

import os
import sqlite3
import stat
import threading

import pandas as pd
import pytest

from lf_widgets.store import SCHEMA_VERSION, FeedbackStore, SampleRecord


@pytest.fixture(scope="module")
def cluster():
    from tests.postgres import Cluster

    c = Cluster()
    yield c
    c.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = FeedbackStore(tmp_path / "fb.sqlite")
    else:
        pg = request.getfixturevalue("cluster")
        s = FeedbackStore(pg.url(pg.new_database()))
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path):
    s = FeedbackStore(tmp_path / "fb.sqlite")
    yield s
    s.close()


def two_samples(store):
    return store.add_samples([SampleRecord("first", prompt="p", token_ids=[1, 2], model="m"),
                              SampleRecord("second", prompt="p", adapter_step=7)])


def test_file_is_private_and_in_wal_mode(sqlite_store):
    store = sqlite_store
    mode = stat.S_IMODE(os.stat(store.path).st_mode)
    assert mode == 0o600
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_samples_keep_token_ids_and_provenance(store):
    a, b = two_samples(store)
    df = store.samples().set_index("sample_id")
    assert df.loc[a, "token_ids"] == [1, 2] and df.loc[a, "model"] == "m"
    assert df.loc[b, "token_ids"] is None and df.loc[b, "adapter_step"] == 7
    assert store.conn.execute("SELECT COUNT(*) FROM prompts").fetchone()[0] == 1


def test_latest_judgement_wins_and_nothing_is_overwritten(store):
    a, _ = two_samples(store)
    store.record(a, "rating", 2, "ann")
    store.record(a, "rating", 5, "ann")
    store.record(a, "critique", "too long", "ann")
    row = store.feedback().query("sample_id == @a").iloc[0]
    assert (row.rating, row.critique, row.annotator) == (5, "too long", "ann")
    assert list(store.events()["value"]) == [2, 5, "too long"]


def test_two_annotators_on_one_sample(store):
    a, b = two_samples(store)
    store.record(a, "rating", 4, "ann")
    store.record(a, "rating", 1, "bob")
    fb = store.feedback()
    rows = fb[fb.sample_id == a].set_index("annotator")["rating"]
    assert rows.to_dict() == {"ann": 4, "bob": 1}
    unjudged = fb[fb.sample_id == b]
    assert len(unjudged) == 1 and unjudged.annotator.isna().all()


def test_undo_cancels_latest_of_that_annotator_only(store):
    a, b = two_samples(store)
    store.record(a, "rating", 3, "ann")
    store.record(b, "rating", 4, "ann")
    store.record(b, "rating", 2, "bob")
    undone = store.undo("ann")
    assert (undone.sample_id, undone.value) == (b, 4)
    fb = store.feedback()
    assert fb.query("sample_id == @b").set_index("annotator")["rating"].to_dict() == {"bob": 2}
    assert store.undo("ann").sample_id == a
    assert store.undo("ann") is None  # nothing left
    assert store.events()["kind"].tolist().count("undo") == 2
    assert len(store.events(active_only=True)) == 1


def test_undo_restores_previous_value(store):
    a, _ = two_samples(store)
    store.record(a, "rating", 3, "ann")
    store.record(a, "rating", 5, "ann")
    store.undo("ann", sample_id=a)
    assert store.feedback().query("sample_id == @a").rating.iloc[0] == 3


@pytest.mark.parametrize("kind,value", [("rating", 0), ("rating", 6), ("rating", 3.5),
                                        ("rating", True), ("critique", 3), ("preference", "a"),
                                        ("undo", None), ("nonsense", 1)])
def test_bad_values_are_refused(store, kind, value):
    a, _ = two_samples(store)
    with pytest.raises(ValueError):
        store.record(a, kind, value, "ann")
    assert store.events().empty


def test_empty_annotator_refused(store):
    a, _ = two_samples(store)
    with pytest.raises(ValueError, match="annotator"):
        store.record(a, "rating", 3, "  ")


def test_atomic_rolls_back_everything(store):
    with pytest.raises(RuntimeError):
        with store.atomic():
            [a] = store.add_samples([SampleRecord("x")])
            store.record(a, "rating", 3, "ann")
            raise RuntimeError("boom")
    assert store.samples().empty and store.events().empty


def test_threads_write_concurrently(store):
    [a] = store.add_samples([SampleRecord("x")])

    def click(who):
        for i in range(50):
            store.record(a, "rating", 1 + i % 5, who)

    threads = [threading.Thread(target=click, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.events()) == 200
    assert len(store._connections) >= 4  # each thread used its own connection


def test_memory_store_is_shared_between_threads():
    with FeedbackStore(":memory:") as s:
        [a] = s.add_samples([SampleRecord("x")])
        t = threading.Thread(target=s.record, args=(a, "rating", 4, "ann"))
        t.start()
        t.join()
        assert s.feedback().rating.iloc[0] == 4


def test_reopen_keeps_data_and_refuses_newer_schema(tmp_path):
    path = tmp_path / "fb.sqlite"
    with FeedbackStore(path) as s:
        [a] = s.add_samples([SampleRecord("x")])
        s.record(a, "rating", 4, "ann")
    with FeedbackStore(path) as s:
        assert s.feedback().rating.iloc[0] == 4
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(RuntimeError, match="newer lf_widgets"):
        FeedbackStore(path)


def test_closed_store_says_so(tmp_path):
    s = FeedbackStore(tmp_path / "x.sqlite")
    s.close()
    with pytest.raises(RuntimeError, match="closed"):
        s.feedback()


def test_feedback_columns(store):
    two_samples(store)
    assert list(store.feedback().columns) == [
        "sample_id", "prompt", "text", "annotator", "rating", "critique", "correction",
        "judged_at", "model", "adapter_step", "source", "correction_meta"]
    assert isinstance(store.feedback(), pd.DataFrame)


def test_a_write_blocked_past_the_timeout_says_so(tmp_path):
    import sqlite3

    from lf_widgets.store import FeedbackStore

    path = tmp_path / "busy.sqlite"
    FeedbackStore(path).close()
    blocker = sqlite3.connect(path, isolation_level=None)
    store = FeedbackStore(path, timeout=0.2)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        with pytest.raises(TimeoutError, match="busy"):
            store.add_prompt("x")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        store.close()


def test_checkpoints_training_history_and_team_tables(store):
    a, b = two_samples(store)
    store.log_step("run1", 1, "sft", 0.5, {"lr": 0.1})
    store.add_checkpoint(1, "/tmp/ck1", "sft")
    assert store.train_steps()[["run_id", "step", "loss", "lr"]].values.tolist() == [
        ["run1", 1, 0.5, 0.1]]
    assert store.checkpoints()["path"].tolist() == ["/tmp/ck1"]
    assert store.add_assignments("plan1", [(f"s:{a}", "ann", False), (f"s:{b}", "bob", True)]) == 2
    assert store.assignments()[["item", "annotator", "recheck"]].values.tolist() == [
        [f"s:{a}", "ann", False], [f"s:{b}", "bob", True]]
    store.adjudicate(f"s:{a}", "rating", 2, "rev")
    store.adjudicate(f"s:{a}", "rating", 5, "rev")  # the later one is in force
    assert store.adjudications()[["subject", "value", "reviewer"]].values.tolist() == [
        [f"s:{a}", 5, "rev"]]


def test_long_texts_and_sample_lookup(store):
    long = "x" * 10_000  # longer than a PostgreSQL B-tree entry may be
    [a] = store.add_samples([SampleRecord(long, prompt=long)])
    [b] = store.add_samples([SampleRecord("free", prompt=None)])
    assert store.find_sample(long, long) == a and store.find_sample("free", None) == b
    assert store.find_sample(long, None) is None and store.find_sample("free", "p") is None
    assert store.add_prompt(long) == store.add_prompt(long)
