"""The feedback log: one SQLite file, append-only events, every judgement committed at once.

Nothing is ever overwritten. A rating, a critique, a correction, a preference or an undo is a new
row in ``events``; the *current* judgement of a sample by an annotator is derived from the events
(the latest one of each kind that no later ``undo`` cancelled). That makes undo, several
annotators and an audit trail fall out of one table.

The store is usable on its own (``FeedbackStore(":memory:")`` in tests) and from any thread: each
thread opens its own connection, and one in-process lock serialises writers so that a training
thread logging a step never makes a rating click wait on ``SQLITE_BUSY``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["FeedbackStore", "Event", "SampleRecord", "JUDGEMENT_KINDS", "EVENT_KINDS",
           "check_annotator", "subject_of"]

#: Judgements that describe one sample; the current value of each is shown in ``feedback()``.
JUDGEMENT_KINDS = ("rating", "critique", "correction")
#: Every kind of event the log accepts.
EVENT_KINDS = JUDGEMENT_KINDS + ("preference", "ab_vote", "undo")


@dataclass(frozen=True)
class SampleRecord:
    """One text to be judged: a model sample, or a row brought in by an import."""

    text: str  # the completion the person judges
    prompt: str | None = None  # the user turn it answers; None for imports that carry no prompt
    token_ids: list[int] | None = None  # completion token ids as generated (no re-tokenisation drift)
    model: str | None = None  # short name of the model that wrote it ("SmolLM2-135M-Instruct")
    adapter_step: int | None = None  # training step of the adapter in use; None = base model
    params: Mapping[str, Any] = field(default_factory=dict)  # sampling parameters, for provenance
    source: str = "generated"  # "generated", "import:<file>", "correction", "remote:<url>" …
    truncated: bool = False  # cut off at max_new_tokens (no end-of-turn token): not an SFT target


@dataclass(frozen=True)
class Event:
    """A committed event, as returned by :meth:`FeedbackStore.record`."""

    id: int
    sample_id: int | None
    kind: str
    value: Any
    annotator: str
    created_at: float


from ._judgements import check_annotator, check_id, check_value as _check_value, subject_of
from ._migrations import MIGRATIONS as _MIGRATIONS, split_sql as _split_sql

SCHEMA_VERSION = len(_MIGRATIONS)


class FeedbackStore:
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
        if self._closed:
            raise RuntimeError(f"the feedback store {self.path} is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._uri, uri=True, timeout=self._timeout,
                                   isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            if not self._memory:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            self._local.conn = conn
            with self._conn_lock:
                self._connections.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection this store opened, in any thread."""
        with self._conn_lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._closed = True

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeedbackStore({self.path!r})"

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

    def record(self, sample_id: int | None, kind: str, value: Any, annotator: str) -> Event:
        """Append one judgement and commit it before returning.

        Parameters
        ----------
        sample_id : int or None
            The judged sample (for a preference: sample A; the value names the other one).
        kind : str
            One of :data:`EVENT_KINDS` other than ``"undo"`` (use :meth:`undo`).
        value : JSON-serialisable
            Rating 1–5, critique or correction text, or a dict for preferences and votes.
        annotator : str
            Who made the judgement; must not be empty.
        """
        if kind not in EVENT_KINDS or kind == "undo":
            raise ValueError(f"kind must be one of {EVENT_KINDS[:-1]}, got {kind!r}")
        value = _check_value(kind, value)
        annotator = check_annotator(annotator)
        if sample_id is not None:
            sample_id = check_id(sample_id, "sample_id")
        if kind in ("preference", "ab_vote"):
            value["other"] = check_id(value.get("other"), "the other sample")
            if value["other"] == sample_id:
                raise ValueError(f"a {kind} needs two different samples, got {sample_id} twice")
        with self.atomic():
            if sample_id is not None:
                self._require_samples([sample_id], "sample_id")
            if kind in ("preference", "ab_vote"):
                self._require_samples([value["other"]], "the other sample")
            return self._append(sample_id, kind, value, annotator, undoes=None)

    def _require_samples(self, ids: Iterable[int], what: str) -> None:
        for sid in ids:
            if self.conn.execute("SELECT 1 FROM samples WHERE id = ?", (sid,)).fetchone() is None:
                raise KeyError(f"{what} {sid!r}: there is no such sample in {self.path}")

    def undo(self, annotator: str, sample_id: int | None = None, *,
             sample_ids: Iterable[int] | None = None, kinds: Iterable[str] | None = None
             ) -> Event | None:
        """Cancel the annotator's latest judgement that is still in force.

        ``sample_id`` / ``sample_ids`` limit it to judgements on those samples (a preference or
        vote counts for both of its samples), ``kinds`` to those kinds: a panel undoes its own
        latest judgement, not one made in another panel. Returns the cancelled event, or None
        when there is nothing left to undo. The cancelled event stays in the log; an ``undo``
        event pointing at it is appended, and the judgement it had replaced (if any) is current
        again.
        """
        ids = None if sample_id is None and sample_ids is None else \
            [int(i) for i in ([sample_id] if sample_id is not None else sample_ids)]
        with self.atomic() as conn:
            query = "SELECT * FROM current_events WHERE annotator = ?"
            args: list[Any] = [annotator]
            if kinds is not None:
                kinds = list(kinds)
                query += f" AND kind IN ({','.join('?' * len(kinds))})"
                args += kinds
            if ids is not None:
                marks = ",".join("?" * len(ids))
                query += (f" AND (sample_id IN ({marks}) OR (kind IN ('preference', 'ab_vote')"
                          f" AND json_extract(value, '$.other') IN ({marks})))")
                args += ids + ids
            row = conn.execute(query + " ORDER BY id DESC LIMIT 1", args).fetchone()
            if row is None:
                return None
            self._append(row["sample_id"], "undo", None, annotator, undoes=row["id"])
            return _event(row)

    def _append(self, sample_id, kind, value, annotator, undoes) -> Event:
        now = time.time()
        subject = None if kind == "undo" else subject_of(kind, sample_id, value)
        with self.atomic() as conn:
            cur = conn.execute(
                "INSERT INTO events(sample_id, kind, value, annotator, created_at, undoes, subject)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sample_id, kind, json.dumps(value, ensure_ascii=False), annotator, now, undoes,
                 subject))
        return Event(cur.lastrowid, sample_id, kind, value, annotator, now)

    def log_step(self, run_id: str, step: int, objective: str, loss: float | None,
                 metrics: Mapping[str, Any]) -> None:
        """Append one training step's metrics (the monitor's history after a restart)."""
        with self.atomic() as conn:
            conn.execute("INSERT INTO train_steps(run_id, step, objective, loss, metrics, created_at)"
                         " VALUES (?, ?, ?, ?, ?, ?)",
                         (run_id, step, objective, loss, json.dumps(dict(metrics)), time.time()))

    def add_checkpoint(self, step: int, path: str | os.PathLike, objective: str | None) -> None:
        """Record a checkpoint folder that was completely written."""
        with self.atomic() as conn:
            conn.execute("INSERT INTO checkpoints(step, path, objective, created_at) VALUES (?, ?, ?, ?)",
                         (step, str(path), objective, time.time()))

    def checkpoints(self) -> pd.DataFrame:
        """Checkpoints, oldest first: id, step, path, objective, created_at."""
        return self._frame("SELECT * FROM checkpoints ORDER BY id")

    def train_steps(self) -> pd.DataFrame:
        """Every logged training step, metrics inlined as columns."""
        df = self._frame("SELECT run_id, step, objective, loss, metrics, created_at FROM train_steps"
                         " ORDER BY id", json_columns=("metrics",))
        if df.empty:
            return df.drop(columns="metrics")
        extra = pd.DataFrame(df.pop("metrics").tolist(), index=df.index)
        return df.join(extra.drop(columns=[c for c in extra.columns if c in df.columns]))

    # -- reads ---------------------------------------------------------------------------------
    def _frame(self, query: str, args: Iterable[Any] = (), json_columns: tuple[str, ...] = ()
               ) -> pd.DataFrame:
        cur = self.conn.execute(query, tuple(args))
        columns = [d[0] for d in cur.description]
        rows = [dict(zip(columns, r)) for r in cur.fetchall()]
        for r in rows:  # decode JSON before pandas sees it (it would turn None into NaN)
            for c in json_columns:
                r[c] = None if r[c] is None else json.loads(r[c])
        df = pd.DataFrame(rows, columns=columns)
        for c in json_columns:
            df[c] = pd.Series([r[c] for r in rows], index=df.index, dtype=object)
        return df

    def samples(self, prompt_id: int | None = None) -> pd.DataFrame:
        """All samples (of one prompt if given) with their prompt text and provenance."""
        query = ("SELECT s.id AS sample_id, s.prompt_id, p.text AS prompt, s.text, s.token_ids,"
                 " s.model, s.adapter_step, s.params, s.source, s.truncated, s.created_at"
                 " FROM samples s"
                 " LEFT JOIN prompts p ON p.id = s.prompt_id")
        df = self._frame(query + (" WHERE s.prompt_id = ?" if prompt_id is not None else "")
                         + " ORDER BY s.id", () if prompt_id is None else (prompt_id,),
                         json_columns=("token_ids", "params"))
        df["adapter_step"] = df["adapter_step"].astype("Int64")
        df["truncated"] = df["truncated"].astype(bool)
        return df

    def events(self, *, active_only: bool = False) -> pd.DataFrame:
        """The raw event log; ``active_only`` drops undo events and what they cancelled."""
        query = "SELECT * FROM events e"
        if active_only:
            query += (" WHERE kind != 'undo' AND NOT EXISTS"
                      " (SELECT 1 FROM events u WHERE u.undoes = e.id)")
        df = self._frame(query + " ORDER BY id", json_columns=("value",))
        df["undoes"] = df["undoes"].astype("Int64")
        df["sample_id"] = df["sample_id"].astype("Int64")
        return df

    def current_events(self, *, kinds: Iterable[str] | None = None,
                       sample_ids: Iterable[int] | None = None,
                       annotator: str | None = None) -> pd.DataFrame:
        """The judgements in force (the ``current_events`` view), oldest first.

        One row per subject (sample; pair of samples; A/B item), annotator and kind: the latest
        such event that no undo cancelled. Optionally only some ``kinds``, judgements touching
        ``sample_ids`` (either side of a preference or vote) or one ``annotator``.
        """
        query, args = "SELECT * FROM current_events WHERE 1", []
        if kinds is not None:
            kinds = list(kinds)
            query += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += kinds
        if annotator is not None:
            query += " AND annotator = ?"
            args.append(annotator)
        if sample_ids is not None:
            ids = [int(i) for i in sample_ids]
            marks = ",".join("?" * len(ids))
            query += (f" AND (sample_id IN ({marks}) OR (kind IN ('preference', 'ab_vote')"
                      f" AND json_extract(value, '$.other') IN ({marks})))")
            args += ids + ids
        df = self._frame(query + " ORDER BY id", args, json_columns=("value",))
        df["undoes"] = df["undoes"].astype("Int64")
        df["sample_id"] = df["sample_id"].astype("Int64")
        return df

    def current(self, sample_id: int, annotator: str) -> dict[str, Any]:
        """The annotator's current judgements of one sample, e.g. ``{"rating": 4}``."""
        rows = self.conn.execute(
            "SELECT kind, value FROM current_events WHERE sample_id = ? AND annotator = ? AND"
            " kind IN ('rating', 'critique', 'correction') ORDER BY id",
            (sample_id, annotator)).fetchall()
        return {kind: json.loads(value) for kind, value in rows}

    def feedback(self) -> pd.DataFrame:
        """Current judgements: one row per sample × annotator, plus unjudged samples.

        Columns: sample_id, prompt, text, annotator, rating, critique, correction, judged_at,
        model, adapter_step, source. A sample nobody judged yet has one row with annotator NaN.
        """
        samples = self.samples().drop(columns=["token_ids", "params", "created_at", "prompt_id"])
        ev = self.current_events(kinds=JUDGEMENT_KINDS)
        cols = ["sample_id", "annotator", *JUDGEMENT_KINDS, "judged_at"]
        if ev.empty:
            current = pd.DataFrame(columns=cols)
        else:
            latest = ev.sort_values("id").groupby(["sample_id", "annotator", "kind"]).tail(1)
            current = latest.pivot(index=["sample_id", "annotator"], columns="kind", values="value")
            current["judged_at"] = latest.groupby(["sample_id", "annotator"])["created_at"].max()
            current = current.reset_index().reindex(columns=cols)
        current["sample_id"] = current["sample_id"].astype("Int64")
        current["rating"] = pd.to_numeric(current["rating"]).astype("Int64")
        out = samples.merge(current, on="sample_id", how="left")
        order = ["sample_id", "prompt", "text", "annotator", *JUDGEMENT_KINDS, "judged_at",
                 "model", "adapter_step", "source"]
        out = out[order].reset_index(drop=True)
        for col in ("prompt", "text", "annotator", "critique", "correction", "model", "source"):
            # one missing-value convention (None) so exports read back equal; an emptied
            # critique or correction means "none"
            out[col] = out[col].astype(object).where(out[col].notna() & (out[col] != ""), None)
        out["judged_at"] = out["judged_at"].astype(float)
        out["sample_id"] = out["sample_id"].astype("Int64")
        return out

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


def _event(row: sqlite3.Row) -> Event:
    value = None if row["value"] is None else json.loads(row["value"])
    return Event(row["id"], row["sample_id"], row["kind"], value, row["annotator"],
                 row["created_at"])
