"""The shared log on a real PostgreSQL server (started by the tests, tests/postgres.py): roles,
the server's refusal to let one annotator record or undo as another, two processes writing at
once, credentials kept out of everything shown. Skipped with a hint without the server binaries,
failed in CI."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import psycopg  # the test extra: a missing driver is an error, never a skip

from lf_widgets.io import import_feedback
from lf_widgets.store import FeedbackStore, SampleRecord
from lf_widgets.store_pg import PG_SCHEMA_VERSION, init_team


@pytest.fixture(scope="module")
def cluster():
    from tests.postgres import Cluster

    c = Cluster()
    yield c
    c.stop()


@pytest.fixture
def team(cluster):
    """A database set up by its owner for annotators alice and bob and reviewer carol."""
    db = cluster.new_database()
    init_team(cluster.url(db), ["alice", "bob"], ["carol"])
    for name in ("alice", "bob", "carol"):
        cluster.sql(f"ALTER ROLE {name} PASSWORD 'pw-{name}'")
    with FeedbackStore(cluster.url(db)) as lead:
        lead.add_samples([SampleRecord(f"answer {i}", prompt=f"q{i % 5}") for i in range(10)])
    return lambda who: cluster.url(db, who, f"pw-{who}")


def test_the_server_stamps_and_checks_the_annotator(team):
    with FeedbackStore(team("alice")) as alice, FeedbackStore(team("bob")) as bob:
        assert alice.role == "alice"
        mine = alice.record(1, "rating", 4, "alice")
        theirs = bob.record(1, "rating", 2, "bob")
        with pytest.raises(PermissionError, match="role 'alice'"):
            alice.record(1, "rating", 5, "bob")  # recording as bob
        with pytest.raises(PermissionError):
            alice.undo("bob")  # undoing bob's judgement under bob's name
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # ... or as herself, by hand
            alice.conn.execute("INSERT INTO events(kind, annotator, created_at, undoes)"
                               " VALUES ('undo', 'alice', 0, %s)", (theirs.id,))
        for statement in ("UPDATE events SET value = '1'", "DELETE FROM events"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                alice.conn.execute(statement)  # append-only
        with pytest.raises(PermissionError):
            alice.add_assignments("p", [("s:1", "alice", False)])  # the lead's work plan
        assert alice.undo("alice").id == mine.id  # her own: fine
        cur = alice.conn.execute("INSERT INTO events(sample_id, kind, value, created_at, subject)"
                                 " VALUES (2, 'rating', '3', 0, 's:2') RETURNING annotator")
        assert cur.fetchone()[0] == "alice"  # the default is the connected role
        ratings = bob.current_events(kinds=["rating"])
        assert ratings[["sample_id", "annotator", "value"]].values.tolist() == [
            [1, "bob", 2], [2, "alice", 3]]


def test_only_reviewers_adjudicate_and_only_as_themselves(team):
    with FeedbackStore(team("alice")) as alice, FeedbackStore(team("carol")) as carol:
        with pytest.raises(PermissionError):
            alice.adjudicate("s:1", "rating", 5, "alice")
        with pytest.raises(PermissionError):
            carol.adjudicate("s:1", "rating", 5, "dave")
        carol.adjudicate("s:1", "rating", 5, "carol")
        assert alice.adjudications()[["reviewer", "value"]].values.tolist() == [["carol", 5]]


_CLICKER = textwrap.dedent("""
    import os, sys
    from lf_widgets.store import FeedbackStore
    store = FeedbackStore(os.environ["LFW_URL"])
    print("ready", flush=True)
    sys.stdin.readline()  # both processes start clicking together
    errors = 0
    for i in range(500):
        try:
            store.record(1 + i % 10, "rating", 1 + i % 5, store.role)
        except Exception as err:
            errors += 1
            print(repr(err), file=sys.stderr)
    print("errors", errors, flush=True)
""")


def test_two_annotators_in_two_processes_lose_nothing(team):
    procs = [subprocess.Popen([sys.executable, "-c", _CLICKER], text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env={**os.environ, "LFW_URL": team(who)})
             for who in ("alice", "bob")]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert [o.split()[-1] for o in outputs] == ["0", "0"]
    with FeedbackStore(team("carol")) as store:
        events = store.events()
    assert events["annotator"].value_counts().to_dict() == {"alice": 500, "bob": 500}
    assert events["id"].is_unique


def test_credentials_are_never_shown(team, cluster, tmp_path, monkeypatch):
    url = team("alice")
    with FeedbackStore(url) as store:
        shown = [repr(store), store.path, json.dumps(store.events().to_dict())]
        assert store.path == f"postgresql://alice@127.0.0.1:{cluster.port}/{url.rsplit('/', 1)[1]}"
    with pytest.raises(ConnectionError) as refused:
        FeedbackStore(url.replace("pw-alice", "wrong-secret"))
    shown.append(str(refused.value))
    assert not any("pw-alice" in s or "wrong-secret" in s for s in shown)
    assert "password authentication failed" in str(refused.value)
    pgpass = tmp_path / "pgpass"  # libpq reads the password from ~/.pgpass or $PGPASSFILE
    pgpass.write_text(f"127.0.0.1:{cluster.port}:*:alice:pw-alice\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    with FeedbackStore(url.replace(":pw-alice", "")) as store:
        assert store.role == "alice"


def test_annotators_cannot_migrate_and_newer_schemas_are_refused(cluster):
    db = cluster.new_database()
    cluster.sql("CREATE ROLE eve LOGIN PASSWORD 'pw-eve'")
    with pytest.raises(PermissionError, match="init-team"):
        FeedbackStore(cluster.url(db, "eve", "pw-eve"))
    FeedbackStore(cluster.url(db)).close()
    cluster.sql(f"INSERT INTO lfw_schema VALUES ({PG_SCHEMA_VERSION + 1})", dbname=db)
    with pytest.raises(RuntimeError, match="newer lf_widgets"):
        FeedbackStore(cluster.url(db))


def test_init_team_from_the_command_line(cluster, capsys):
    from lf_widgets.cli import main

    db = cluster.new_database()
    assert main(["init-team", cluster.url(db), "--annotators", "dan"]) == 0
    printed = capsys.readouterr().out
    assert 'CREATE ROLE "dan" LOGIN' in printed and cluster.password not in printed
    cluster.sql("ALTER ROLE dan PASSWORD 'pw-dan'")
    with FeedbackStore(cluster.url(db, "dan", "pw-dan")) as dan:
        [sid] = dan.add_samples([SampleRecord("a", prompt="p")])
        assert dan.record(sid, "rating", 3, "dan").annotator == "dan"


def test_the_lead_imports_a_teams_file_once(cluster, tmp_path):
    import pandas as pd

    rows = pd.DataFrame({"prompt": ["q", "q", "r"], "text": ["x", "x", "y"],
                         "annotator": ["ann", "bob", "ann"], "rating": [4, 2, 5],
                         "critique": ["fine", None, None]})
    with FeedbackStore(cluster.url(cluster.new_database())) as lead:
        assert import_feedback(lead, rows) == 3
        again = import_feedback(lead, rows)
        assert again == 0 and again.already_present == 3
        fb = lead.feedback().sort_values(["sample_id", "annotator"])
        assert fb[["text", "annotator", "rating", "critique"]].values.tolist() == [
            ["x", "ann", 4, "fine"], ["x", "bob", 2, None], ["y", "ann", 5, None]]


def test_missing_server_binaries_skip_locally_and_fail_in_ci(monkeypatch):
    from tests import postgres

    monkeypatch.setattr(postgres, "find_bin", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run"):
        postgres.require_binaries()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y postgresql"):
        postgres.require_binaries()
