"""The feedback log: one SQLite file, append-only events, every judgement committed at once.

Nothing is ever overwritten. A rating, a critique, a correction, a preference, a rejection of
suggested revisions or an undo is a new row in ``events`` (a correction's provenance and edit
distance in its ``meta``); the *current* judgement of a sample by an annotator is derived from
the events (the latest one of each kind that no later ``undo`` cancelled). That makes undo,
several annotators and an audit trail fall out of one table.

The store is usable on its own (``FeedbackStore(":memory:")`` in tests) and from any thread: each
thread opens its own connection, and one in-process lock serialises writers so that a training
thread logging a step never makes a rating click wait on ``SQLITE_BUSY``.

``FeedbackStore("postgresql://…")`` opens the shared team log instead
(:class:`lf_widgets.store_pg.PgFeedbackStore`, same API); what both share is in
:mod:`lf_widgets._store_base`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["FeedbackStore", "Event", "SampleRecord", "JUDGEMENT_KINDS", "EVENT_KINDS",
           "check_annotator", "subject_of"]

from ._judgements import check_annotator, subject_of
from ._migrations import MIGRATIONS as _MIGRATIONS, split_sql as _split_sql
from ._store_base import EVENT_KINDS, JUDGEMENT_KINDS, Event, SampleRecord, StoreBase

SCHEMA_VERSION = len(_MIGRATIONS)
_URL_SCHEMES = ("postgresql://", "postgres://")


def _is_url(path: Any) -> bool:
    return isinstance(path, str) and path.startswith(_URL_SCHEMES)


class FeedbackStore(StoreBase):
    """SQLite feedback log (WAL mode), safe to use from several threads.

    Parameters
    ----------
    path : str or Path
        Database file, created with mode 0600 if missing. ``":memory:"`` keeps everything in
        memory (for tests and throwaway demos).
    synchronous : {"FULL", "NORMAL"}
        SQLite's durability level. ``FULL`` (default) fsyncs each commit, so a judgement shown as
        saved survives a power cut, not only a killed kernel.
    timeout : float
        Seconds a write (and opening the log, which checks its schema in a write transaction)
        waits while another process holds the log's write lock, retrying meanwhile (SQLite's
        busy handler, sleeping 1-100 ms between tries). Opening raises :class:`TimeoutError`
        naming the log after that; an import holds the lock well under a second.
    """

    def __new__(cls, path: str | os.PathLike = "lf_feedback.sqlite", **options):
        if cls is FeedbackStore and _is_url(path):  # the shared team log
            from .store_pg import PgFeedbackStore

            return super().__new__(PgFeedbackStore)
        return super().__new__(cls)

    def __init__(self, path: str | os.PathLike = "lf_feedback.sqlite", *, synchronous: str = "FULL",
                 timeout: float = 30.0):
        if synchronous.upper() not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                or not 0 <= timeout < float("inf"):
            raise ValueError(f"timeout must be a finite number of seconds >= 0, got {timeout!r}")
        self._timeout = float(timeout)
        self._synchronous = synchronous.upper()
        self._memory = str(path) == ":memory:"
        self.path = str(path) if self._memory else str(Path(path).expanduser().resolve())
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._conn_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._closed = False
        if self._memory:
            # A private shared-cache database: every thread's connection sees the same data,
            # and the first connection keeps it alive until close().
            self._uri = f"file:lfw-{uuid.uuid4().hex}?mode=memory&cache=shared"
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # Create the file ourselves so that it is private from its first byte; SQLite gives
            # the -wal and -shm files the same permissions.
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            self._uri = Path(self.path).as_uri()
        try:
            self._migrate()
        except TimeoutError:
            self.close()
            raise

    # -- connections ---------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        return self._thread_connection(self._connect)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._uri, uri=True, timeout=self._timeout, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        if not self._memory:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        return conn

    def close(self) -> None:
        """Close every connection this store opened, in any thread."""
        with self._conn_lock:
            self._closing(self._connections, (sqlite3.Error,))
        self._closed = True

    @contextlib.contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: everything inside commits together or not at all."""
        with self._write_lock:
            conn = self.conn
            if conn.in_transaction:  # nested: the outer block owns the commit
                yield conn
                return
            try:
                conn.execute("BEGIN IMMEDIATE")  # waits up to timeout for other writers
            except sqlite3.OperationalError as err:
                # primary result code: SQLITE_BUSY_RECOVERY and friends are busy too
                if getattr(err, "sqlite_errorcode", 0) & 0xFF not in (sqlite3.SQLITE_BUSY,
                                                                       sqlite3.SQLITE_LOCKED):
                    raise
                raise TimeoutError(
                    f"the feedback log {self.path} is busy: another process held its write lock "
                    f"for more than timeout={self._timeout:g} s. Try again when that process is "
                    "done, or open it with a longer FeedbackStore(..., timeout=...).") from err
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self.atomic() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} was written by a newer lf_widgets (schema {version}, this one "
                    f"knows {SCHEMA_VERSION}); upgrade lf_widgets to open it")
            for number in range(version, SCHEMA_VERSION):
                for statement in _split_sql(_MIGRATIONS[number]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")

    # -- writes --------------------------------------------------------------------------------
    def add_prompt(self, text: str) -> int:
        """Return the id of ``text`` in ``prompts``, inserting it if new."""
        if not isinstance(text, str):
            raise TypeError(f"prompt must be a string, got {type(text).__name__}")
        with self.atomic() as conn:
            conn.execute("INSERT OR IGNORE INTO prompts(text, created_at) VALUES (?, ?)",
                         (text, time.time()))
            return conn.execute("SELECT id FROM prompts WHERE text = ?", (text,)).fetchone()[0]

    def add_samples(self, samples: Iterable[SampleRecord]) -> list[int]:
        """Insert samples in one transaction and return their ids (in order)."""
        ids = []
        with self.atomic() as conn:
            for s in samples:
                prompt_id = None if s.prompt is None else self.add_prompt(s.prompt)
                cur = conn.execute(
                    "INSERT INTO samples(prompt_id, text, token_ids, model, adapter_step, params,"
                    " source, truncated, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (prompt_id, s.text, None if s.token_ids is None else json.dumps(list(s.token_ids)),
                     s.model, s.adapter_step, json.dumps(dict(s.params), ensure_ascii=False),
                     s.source, int(bool(s.truncated)), time.time()))
                ids.append(cur.lastrowid)
        return ids

    def find_sample(self, text: str, prompt: str | None) -> int | None:
        """Id of the oldest sample with exactly this text and prompt, or None."""
        prompt_id = None
        if prompt is not None:
            found = self.conn.execute("SELECT id FROM prompts WHERE text = ?", (prompt,)).fetchone()
            if found is None:
                return None
            prompt_id = found[0]
        row = self.conn.execute(  # samples(prompt_id, text) is indexed (migration 3)
            "SELECT id FROM samples WHERE prompt_id IS ? AND text = ? ORDER BY id LIMIT 1",
            (prompt_id, text)).fetchone()
        return None if row is None else row[0]

    def _rows(self, query: str, args: Iterable[Any] = ()) -> tuple[list[str], list[tuple]]:
        cur = self.conn.execute(query, tuple(args))
        return [d[0] for d in cur.description], [tuple(r) for r in cur.fetchall()]

    def _insert(self, query: str, args: Iterable[Any]) -> int:
        with self.atomic() as conn:  # RETURNING id: SQLite >= 3.35, as PostgreSQL
            return conn.execute(query, tuple(args)).fetchone()[0]

    # -- bulk import (lf_widgets.io) ----------------------------------------------------------
    def import_rows(self, rows, *, source: str, chunk_rows: int | None = None):
        """Add checked import rows (:class:`lf_widgets._bulk_import.ImportRow`).

        Samples are found by prompt and text (the oldest such sample) or added with ``source``;
        a judgement the log already holds (same sample, annotator, kind and value) is not added
        again. Lookups run without the write lock; each write transaction holds at most
        ``chunk_rows`` rows (default 10,000: well under a second). Returns a
        :class:`lf_widgets._bulk_import.BulkImport` with the counts.
        """
        from ._bulk_import import import_rows  # it imports this module

        return import_rows(self, rows, source=source, chunk_rows=chunk_rows)
