"""The shared feedback log on PostgreSQL, for a team: ``FeedbackStore("postgresql://…")``.

Same API and rules as the SQLite log (:mod:`lf_widgets.store`): append-only events, the one
current-judgement rule as the ``current_events`` view, numbered migrations
(:mod:`lf_widgets._migrations_pg`), every judgement committed before the call returns
(PostgreSQL's default ``synchronous_commit = on``: the commit is on the server's disk).

Driver: psycopg 3, directly. The parts that make a shared log safe are PostgreSQL's own —
roles, ``current_user`` defaults, row-level security, advisory locks — and SQLAlchemy Core
would add a layer without hiding any of them; the SQLite log keeps its tuned sqlite3 path
(WAL, busy timeout, the bulk import's TEMP tables). Shared queries live once in
:mod:`lf_widgets._store_base`.

Credentials: everything libpq reads — the URL, ``PG*`` environment variables, ``~/.pgpass``
(or ``$PGPASSFILE``), a service file. The password is kept only in this object's private
connection string: ``path``, ``repr`` and every message name user, host, port and database.

Nobody records as someone else: each annotator connects as their own role; the server stamps
and checks the annotator of every event against that role (see the migrations), and a refused
write raises :class:`PermissionError`. ``role`` is the connected role, the Session's default
annotator on this log.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from ._migrations_pg import PG_MIGRATIONS
from .store import JUDGEMENT_KINDS, FeedbackStore, SampleRecord

__all__ = ["PgFeedbackStore", "PG_SCHEMA_VERSION", "public_url"]

PG_SCHEMA_VERSION = len(PG_MIGRATIONS)
_MIGRATION_LOCK = 0x1F_EEDBAC  # advisory lock key: one process migrates at a time


def public_url(conninfo: str) -> str:
    """``postgresql://user@host:port/dbname`` of a URL or conninfo, without its password."""
    parts = conninfo_to_dict(conninfo)
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


class PgFeedbackStore(FeedbackStore):
    """The feedback log on a PostgreSQL server, safe to use from several threads and machines.

    Parameters
    ----------
    url : str
        ``postgresql://[user[:password]@]host[:port]/dbname[?options]``; what it leaves out
        comes from ``PG*`` environment variables and ``~/.pgpass``.
    synchronous : {"FULL", "NORMAL"}
        ``FULL``: each commit waits for the server's disk (``synchronous_commit = on``);
        ``NORMAL``: for the server only (``off``; a server crash may lose the last moments).
    timeout : float
        Seconds to wait for a connection, and for a lock another session holds.
    """

    _OTHER = "CAST(CAST(value AS jsonb) ->> 'other' AS bigint)"

    def __init__(self, url: str, *, synchronous: str = "FULL", timeout: float = 30.0):
        if synchronous.upper() not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        self._conninfo = url  # holds the password, if the URL has one: never shown
        self.path = public_url(url)
        self._timeout = float(timeout)
        self._commit = "on" if synchronous.upper() == "FULL" else "off"
        self._local = threading.local()
        self._connections: list[psycopg.Connection] = []
        self._conn_lock = threading.Lock()
        self._closed = False
        self.role = self._rows("SELECT current_user")[1][0][0]
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    @property
    def checkpoint_root(self) -> Path:
        """Where a Session on this log writes checkpoints: a local folder (the log is remote)."""
        dbname = conninfo_to_dict(self._conninfo).get("dbname") or "team"
        return Path.cwd() / f"lf_feedback_{dbname}_checkpoints"

    # -- connections ---------------------------------------------------------------------------
    @property
    def conn(self) -> psycopg.Connection:
        """This thread's connection (opened on first use)."""
        return self._thread_connection(self._connect)

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True,
                                   connect_timeout=max(1, round(self._timeout)))
        except psycopg.OperationalError as err:  # libpq's message names no password
            raise ConnectionError(f"cannot open the feedback log {self.path}: "
                                  f"{str(err).strip()}") from None
        # set here, not as the URL's "options": those stay the user's
        conn.execute("SELECT set_config('lock_timeout', %s, false),"
                     " set_config('synchronous_commit', %s, false)",
                     (f"{int(self._timeout * 1000)}ms", self._commit))
        return conn

    def close(self) -> None:
        """Close every connection this store opened, in any thread."""
        with self._conn_lock:
            self._closing(self._connections, (psycopg.Error,))
        self._closed = True

    @contextlib.contextmanager
    def atomic(self) -> Iterator[psycopg.Connection]:
        """A write transaction: everything inside commits together or not at all."""
        conn = self.conn
        if conn.info.transaction_status != TransactionStatus.IDLE:  # nested: outer commits
            yield conn
            return
        try:
            with conn.transaction():
                yield conn
        except pg_errors.InsufficientPrivilege as err:
            raise PermissionError(
                f"the server refused the write to {self.path}: connected as role "
                f"{self.role!r}, which may record, undo and adjudicate only as itself, and "
                f"may not change the work plan ({err.diag.message_primary})") from None
        except pg_errors.LockNotAvailable as err:
            raise TimeoutError(f"the feedback log {self.path} is busy: a lock was held for "
                               f"more than timeout={self._timeout:g} s") from err

    def _migrate(self) -> None:
        with self.atomic() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            exists = conn.execute("SELECT to_regclass('lfw_schema')").fetchone()[0]
            version = conn.execute("SELECT max(version) FROM lfw_schema").fetchone()[0] \
                if exists else 0
            if version > PG_SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} was written by a newer lf_widgets (schema {version}, this one "
                    f"knows {PG_SCHEMA_VERSION}); upgrade lf_widgets to open it")
            if version < PG_SCHEMA_VERSION:
                try:
                    self._upgrade(conn, exists, version)
                except pg_errors.InsufficientPrivilege as err:
                    raise PermissionError(
                        f"{self.path} holds schema {version}, this lf_widgets needs "
                        f"{PG_SCHEMA_VERSION}, and role {self.role!r} may not create tables: "
                        "the team lead runs `lf-widgets init-team` once") from err

    @staticmethod
    def _upgrade(conn: psycopg.Connection, exists: bool, version: int) -> None:
        if not exists:
            conn.execute("CREATE TABLE lfw_schema (version integer NOT NULL)")
        for number in range(version, PG_SCHEMA_VERSION):
            conn.execute(PG_MIGRATIONS[number])  # several statements: psycopg sends them as one
            conn.execute("INSERT INTO lfw_schema(version) VALUES (%s)", (number + 1,))

    # -- the backend hooks ---------------------------------------------------------------------
    def _rows(self, query: str, args: Iterable[Any] = ()) -> tuple[list[str], list[tuple]]:
        cur = self.conn.execute(query.replace("?", "%s"), tuple(args))
        return [d.name for d in cur.description], cur.fetchall()

    def _insert(self, query: str, args: Iterable[Any]) -> int:
        with self.atomic() as conn:
            return conn.execute(query.replace("?", "%s"), tuple(args)).fetchone()[0]

    def add_prompt(self, text: str) -> int:
        """Return the id of ``text`` in ``prompts``, inserting it if new."""
        if not isinstance(text, str):
            raise TypeError(f"prompt must be a string, got {type(text).__name__}")
        with self.atomic() as conn:
            conn.execute("INSERT INTO prompts(text, created_at) VALUES (%s, %s)"
                         " ON CONFLICT ((md5(text))) DO NOTHING", (text, time.time()))
            return conn.execute("SELECT id FROM prompts WHERE md5(text) = md5(%s)",
                                (text,)).fetchone()[0]

    def add_samples(self, samples: Iterable[SampleRecord]) -> list[int]:
        """Insert samples in one transaction and return their ids (in order)."""
        ids = []
        with self.atomic() as conn:
            for s in samples:
                prompt_id = None if s.prompt is None else self.add_prompt(s.prompt)
                ids.append(conn.execute(
                    "INSERT INTO samples(prompt_id, text, token_ids, model, adapter_step, params,"
                    " source, truncated, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " RETURNING id",
                    (prompt_id, s.text,
                     None if s.token_ids is None else json.dumps(list(s.token_ids)),
                     s.model, s.adapter_step, json.dumps(dict(s.params), ensure_ascii=False),
                     s.source, int(bool(s.truncated)), time.time())).fetchone()[0])
        return ids

    def find_sample(self, text: str, prompt: str | None) -> int | None:
        """Id of the oldest sample with exactly this text and prompt, or None."""
        same_prompt = "prompt_id IS NULL" if prompt is None else \
            "prompt_id = (SELECT id FROM prompts WHERE md5(text) = md5(%(prompt)s))"
        row = self.conn.execute(
            f"SELECT id FROM samples WHERE {same_prompt} AND md5(text) = md5(%(text)s)"
            " AND text = %(text)s ORDER BY id LIMIT 1", {"prompt": prompt, "text": text}
        ).fetchone()
        return None if row is None else row[0]

    # -- bulk import ---------------------------------------------------------------------------
    def import_rows(self, rows: Sequence, *, source: str, chunk_rows: int | None = None):
        """Add checked import rows, as :meth:`FeedbackStore.import_rows` does: samples found by
        prompt and text or added, judgements the log holds already skipped; one transaction per
        ``chunk_rows`` (default 1,000) rows, imports serialised by an advisory lock."""
        from ._bulk_import import BulkImport

        totals = [0, 0, 0, 0]
        step = chunk_rows or 1000
        for start in range(0, len(rows), step):
            with self.atomic() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK + 1,))
                done = self._import_chunk(rows[start:start + step], source)
            totals = [t + d for t, d in zip(totals, done)]
        return BulkImport(*totals)

    def _import_chunk(self, rows: Sequence, source: str) -> tuple[int, int, int, int]:
        added = present = new_samples = new_events = 0
        for row in rows:
            sid, fresh = self.find_sample(row.text, row.prompt), False
            if sid is None:
                [sid] = self.add_samples([SampleRecord(row.text, prompt=row.prompt,
                                                       source=source, truncated=row.truncated)])
                fresh, new_samples = True, new_samples + 1
            judged = {(k, v) for k, v in self._rows(
                "SELECT kind, value FROM events WHERE sample_id = ? AND annotator = ?",
                (sid, row.annotator))[1]}
            n = 0
            for kind, value in row.judgements:
                if kind in JUDGEMENT_KINDS and (kind, json.dumps(value, ensure_ascii=False)) \
                        not in judged:
                    self._append(sid, kind, value, row.annotator, undoes=None)
                    n += 1
            new_events += n
            added, present = (added + 1, present) if fresh or n else (added, present + 1)
        return added, present, new_samples, new_events



# -- the team lead's one-time setup (``lf-widgets init-team``) -----------------------------------
ANNOTATOR_GROUP, REVIEWER_GROUP = "lfw_annotator", "lfw_reviewer"


def team_sql(annotators: Sequence[str] = (), reviewers: Sequence[str] = ()) -> list:
    """The statements that let ``annotators`` (and ``reviewers``) use the log: two group roles,
    SELECT and INSERT for annotators (no UPDATE or DELETE: the log stays append-only), INSERT on
    adjudications for reviewers, and a LOGIN role per person (set each one's password with
    ``ALTER ROLE … PASSWORD``, or use the server's own authentication). Run by the owner of the
    tables, after the log was opened once (which creates them). Idempotent."""
    from psycopg import sql

    group, review = sql.Identifier(ANNOTATOR_GROUP), sql.Identifier(REVIEWER_GROUP)
    out = [sql.SQL(_CREATE_ROLE).format(name=sql.Literal(name), role=sql.Identifier(name),
                                        how=sql.SQL("NOLOGIN"))
           for name in (ANNOTATOR_GROUP, REVIEWER_GROUP)]
    out += [sql.SQL(s).format(group=group, review=review) for s in (
        "GRANT {group} TO {review}",
        "GRANT USAGE ON SCHEMA public TO {group}",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {group}",
        "GRANT INSERT ON prompts, samples, events, train_steps, checkpoints TO {group}",
        "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {group}",
        "GRANT INSERT ON adjudications TO {review}")]
    for name, member_of in [*((a, group) for a in annotators), *((r, review) for r in reviewers)]:
        out.append(sql.SQL(_CREATE_ROLE).format(name=sql.Literal(name), role=sql.Identifier(name),
                                                how=sql.SQL("LOGIN")))
        out.append(sql.SQL("GRANT {} TO {}").format(member_of, sql.Identifier(name)))
    return out


_CREATE_ROLE = ("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) "
                "THEN CREATE ROLE {role} {how}; END IF; END $$")


def init_team(url: str, annotators: Sequence[str] = (), reviewers: Sequence[str] = ()) -> list:
    """Create the log's tables (as the connecting owner) and run :func:`team_sql`; returns the
    statements run, as text (no passwords are ever part of them)."""
    with PgFeedbackStore(url) as store, store.atomic() as conn:
        statements = team_sql(annotators, reviewers)
        for statement in statements:
            conn.execute(statement)
        return [statement.as_string(conn) for statement in statements]
