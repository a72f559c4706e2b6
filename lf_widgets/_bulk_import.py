"""Adding many checked rows to the feedback log without locking anyone else out for long.

The identity of an imported judgement is (prompt, sample text, annotator, kind, value). A row
whose judgements the log already holds (whether or not later events replaced or undid them)
adds nothing, so importing a file twice, or a file holding the same row twice, adds each
judgement once and never overrides what was judged since.

The rows are written :data:`CHUNK_ROWS` at a time. For each chunk, lookups and planning (ids
included) run outside the write lock and the rows are staged in this connection's TEMP tables;
the write transaction only checks that nobody wrote since (else it catches up and plans again),
then copies the staged rows in with one statement per table. A process killed between chunks
leaves whole chunks; importing the same rows again adds exactly the rest. See :meth:`lf_widgets.store.FeedbackStore.import_rows`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .store import JUDGEMENT_KINDS, subject_of

if TYPE_CHECKING:
    import sqlite3

    from .store import FeedbackStore

#: Rows per write transaction: about 0.1 s of write lock on an idle 2-core machine and 0.3 s
#: on a loaded one (benchmarks/bench_import.py), so another kernel's click never waits long.
CHUNK_ROWS = 10_000
_CHUNK = 500  # ids per "IN (...)" query: well under SQLite's limit on bound variables
_CACHE_SIZE = -65536  # page cache while importing: 64 MiB (SQLite: negative means KiB)
_JUDGED = (f"SELECT sample_id, annotator, kind, value FROM events WHERE kind IN "
           f"({','.join(repr(k) for k in JUDGEMENT_KINDS)})")


@dataclass(frozen=True)
class ImportRow:
    """One checked row: a sample (prompt + text) and the judgements an annotator made of it."""

    prompt: str | None  # the prompt it answers; None when the file has none
    text: str  # the judged text
    annotator: str | None  # who judged it; None only for an unjudged sample
    judgements: tuple[tuple[str, Any], ...] = ()  # (kind, value): rating, critique, correction
    truncated: bool = False  # the sample was cut off at max_new_tokens (new samples only)


@dataclass(frozen=True)
class BulkImport:
    """What :func:`import_rows` did."""

    rows_added: int  # rows that added a sample or at least one judgement
    rows_present: int  # rows the log already held entirely
    samples_added: int
    events_added: int


@dataclass
class _Known:
    """What the log holds of the rows being imported, as of ``last_ids``."""

    last_ids: tuple[int, int, int]  # largest prompt, sample and event ids seen
    prompts: dict[str, int] = field(default_factory=dict)  # prompt text -> id
    samples: dict[tuple[str | None, str], int] = field(default_factory=dict)  # key -> oldest id
    judged: set[tuple[int, str, str, str]] = field(default_factory=set)  # identities

    def add_judged(self, conn: sqlite3.Connection, query: str, args: Sequence[Any]) -> None:
        self.judged.update(tuple(r) for r in conn.execute(query, args))


@dataclass(frozen=True)
class _Plan:
    """The rows to insert, ids included: valid while the log's largest ids stay the same."""

    prompts: list[tuple]
    samples: list[tuple]
    events: list[tuple]
    rows_added: int


def import_rows(store: FeedbackStore, rows: Sequence[ImportRow], *, source: str,
                chunk_rows: int | None = None) -> BulkImport:
    """Add ``rows`` to ``store``, ``chunk_rows`` (default :data:`CHUNK_ROWS`) per write
    transaction; see the module docstring."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    totals = [0, 0, 0, 0]
    for start in range(0, len(rows), chunk_rows):
        # the next chunk is planned without the lock: other writers get in meanwhile
        done = _import_chunk(store, rows[start:start + chunk_rows], source)
        totals = [t + d for t, d in zip(totals, dataclasses.astuple(done))]
    return BulkImport(*totals)


def _import_chunk(store: FeedbackStore, rows: Sequence[ImportRow], source: str) -> BulkImport:
    keys = list(dict.fromkeys((r.prompt, r.text) for r in rows))
    conn = store.conn
    known = _snapshot(conn, keys)
    plan = _plan(known, keys, rows, source)  # outside the lock: the slow part in Python
    with _import_cache(conn), _staging(conn):
        _stage(conn, plan)
        with store.atomic():
            if _stale(conn, known, plan):  # another writer added what the plan must know
                _catch_up(conn, known, keys)
                plan = _plan(known, keys, rows, source)
                _stage(conn, plan)
            # one statement per table, all in SQLite's C code: the lock is held for the
            # B-tree work only
            conn.executemany("INSERT INTO prompts(id, text, created_at) VALUES (?, ?, ?)",
                             plan.prompts)
            conn.execute("INSERT INTO samples(id, prompt_id, text, source, truncated, created_at)"
                         " SELECT * FROM temp.lfw_import_samples ORDER BY id")
            conn.execute("INSERT INTO events(sample_id, kind, value, annotator, created_at,"
                         " undoes, subject) SELECT sample_id, kind, value, annotator, created_at,"
                         " NULL, subject FROM temp.lfw_import_events ORDER BY rowid")
    return BulkImport(plan.rows_added, len(rows) - plan.rows_added, len(plan.samples),
                      len(plan.events))


@contextlib.contextmanager
def _import_cache(conn: sqlite3.Connection) -> Iterator[None]:
    # SQLite's default 2 MiB page cache spills a large transaction's pages to the WAL before
    # the commit and re-reads them: with 64 MiB the write takes about half the time.
    old = [conn.execute(f"PRAGMA {db}.cache_size").fetchone()[0] for db in ("main", "temp")]
    for db in ("main", "temp"):
        conn.execute(f"PRAGMA {db}.cache_size = {_CACHE_SIZE}")
    try:
        yield
    finally:
        for db, size in zip(("main", "temp"), old):
            conn.execute(f"PRAGMA {db}.cache_size = {size}")


@contextlib.contextmanager
def _staging(conn: sqlite3.Connection) -> Iterator[None]:
    # TEMP tables belong to this connection alone: filling them takes no lock on the log.
    conn.execute("CREATE TEMP TABLE lfw_import_samples (id INTEGER PRIMARY KEY, prompt_id,"
                 " text, source, truncated, created_at)")
    conn.execute("CREATE TEMP TABLE lfw_import_events (sample_id, kind, value, annotator,"
                 " created_at, subject)")
    try:
        yield
    finally:
        conn.execute("DROP TABLE temp.lfw_import_samples")
        conn.execute("DROP TABLE temp.lfw_import_events")


def _stage(conn: sqlite3.Connection, plan: _Plan) -> None:
    conn.execute("DELETE FROM temp.lfw_import_samples")
    conn.execute("DELETE FROM temp.lfw_import_events")
    conn.executemany("INSERT INTO temp.lfw_import_samples VALUES (?, ?, ?, ?, ?, ?)",
                     plan.samples)
    conn.executemany("INSERT INTO temp.lfw_import_events VALUES (?, ?, ?, ?, ?, ?)",
                     plan.events)


def _last_ids(conn: sqlite3.Connection) -> tuple[int, int, int]:
    # The log is append-only and ids are never reused, so unchanged largest ids mean that
    # nothing was written.
    return tuple(conn.execute(
        "SELECT (SELECT COALESCE(MAX(id), 0) FROM prompts), (SELECT COALESCE(MAX(id), 0) FROM"
        " samples), (SELECT COALESCE(MAX(id), 0) FROM events)").fetchone())


def _stale(conn: sqlite3.Connection, known: _Known, plan: _Plan) -> bool:
    """Whether what others wrote since the snapshot changes the plan: prompts or samples (the
    planned ids would collide; rare) or one of the planned judgements (it would be added
    twice). Other judgements, such as another kernel's clicks meanwhile, change nothing."""
    last_prompt, last_sample, last_event = known.last_ids
    now_prompt, now_sample, now_event = _last_ids(conn)
    if (now_prompt, now_sample) != (last_prompt, last_sample):
        return True
    if now_event == last_event:
        return False
    planned = {(sid, annotator, kind, value) for sid, kind, value, annotator, *_ in plan.events}
    return any(tuple(r) in planned for r in conn.execute(_JUDGED + " AND id > ?", (last_event,)))


def _snapshot(conn: sqlite3.Connection, keys: Iterable[tuple[str | None, str]]) -> _Known:
    # No read transaction: the largest ids are read first, so whatever another writer adds
    # during the lookups has larger ids and is caught up under the lock (and a long read
    # transaction would hold up WAL checkpoints, or lock a shared-cache ":memory:" log).
    known = _Known(_last_ids(conn))
    for prompt, text in keys:
        if prompt is not None and prompt not in known.prompts:
            row = conn.execute("SELECT id FROM prompts WHERE text = ?", (prompt,)).fetchone()
            if row is not None:
                known.prompts[prompt] = row[0]
        if prompt is not None and prompt not in known.prompts:
            continue  # a new prompt has no samples yet
        row = conn.execute(  # the samples_prompt_text index (migration 3)
            "SELECT id FROM samples WHERE prompt_id IS ? AND text = ? ORDER BY id LIMIT 1",
            (known.prompts.get(prompt), text)).fetchone()
        if row is not None:
            known.samples[(prompt, text)] = row[0]
    ids = list(known.samples.values())
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i:i + _CHUNK]
        known.add_judged(conn, _JUDGED + f" AND sample_id IN ({','.join('?' * len(chunk))})",
                         chunk)
    return known


def _catch_up(conn: sqlite3.Connection, known: _Known, keys: list) -> None:
    """Inside the write lock: add what other writers wrote after ``known.last_ids``."""
    last_prompt, last_sample, last_event = known.last_ids
    wanted = set(keys)
    prompts = {p for p, _ in keys}
    for pid, text in conn.execute("SELECT id, text FROM prompts WHERE id > ?", (last_prompt,)):
        if text in prompts:
            known.prompts[text] = pid
    for sid, prompt, text in conn.execute(
            "SELECT s.id, p.text, s.text FROM samples s LEFT JOIN prompts p ON p.id = s.prompt_id"
            " WHERE s.id > ? ORDER BY s.id", (last_sample,)):
        if (prompt, text) in wanted:
            known.samples.setdefault((prompt, text), sid)
    known.add_judged(conn, _JUDGED + " AND id > ?", (last_event,))
    known.last_ids = _last_ids(conn)


def _plan(known: _Known, keys: list, rows: Sequence[ImportRow], source: str) -> _Plan:
    last_prompt, last_sample, _ = known.last_ids
    now = time.time()
    prompts, samples = dict(known.prompts), dict(known.samples)  # known stays as read
    new_prompts, new_samples = [], []
    truncated = {(r.prompt, r.text) for r in rows if r.truncated}
    for key in keys:
        if key in samples:
            continue
        prompt, text = key
        if prompt is not None and prompt not in prompts:
            prompts[prompt] = last_prompt + len(new_prompts) + 1
            new_prompts.append((prompts[prompt], prompt, now))
        samples[key] = last_sample + len(new_samples) + 1
        new_samples.append((samples[key], prompts.get(prompt), text, source,
                            int(key in truncated), now))
    events, rows_added = _new_events(samples, set(known.judged), rows, last_sample, now)
    return _Plan(new_prompts, new_samples, events, rows_added)


def _new_events(samples: dict, judged: set, rows: Sequence[ImportRow], last_sample: int,
                now: float) -> tuple[list[tuple], int]:
    """Event rows to insert, and how many import rows added something."""
    events, rows_added, seen = [], 0, set()
    for row in rows:
        sid = samples[(row.prompt, row.text)]
        added = sid > last_sample and sid not in seen  # the row that brought a new sample
        seen.add(sid)
        for kind, value in row.judgements:
            stored = json.dumps(value, ensure_ascii=False)  # as FeedbackStore.record stores it
            identity = (sid, row.annotator, kind, stored)
            if identity in judged:
                continue
            judged.add(identity)
            events.append((sid, kind, stored, row.annotator, now, subject_of(kind, sid, value)))
            added = True
        rows_added += added
    return events, rows_added
