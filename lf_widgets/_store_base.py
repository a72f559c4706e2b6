"""What both feedback logs (SQLite, :mod:`lf_widgets.store`; PostgreSQL,
:mod:`lf_widgets.store_pg`) share: the records, the checks every write goes through and every
read, written once in the SQL both servers understand.

A backend supplies its connections (``conn``, ``atomic()``), ``_rows(query, args)`` (columns,
rows), ``_insert(query, args)`` (the new row's id, inside a write transaction),
``find_sample``, ``add_prompt`` and ``add_samples``. Queries here use ``?`` placeholders
(sqlite3's); the PostgreSQL backend hands them to psycopg as ``%s`` (neither driver accepts the
other's style, and no query here holds a literal ``?`` or ``%``). ``_OTHER`` is the one
expression that differs: the other sample of a preference or vote, read from its JSON value.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ._judgements import check_annotator, check_id, check_meta, check_value, subject_of
from .edits import edit_distance, edit_ratio

__all__ = ["StoreBase", "Event", "SampleRecord", "JUDGEMENT_KINDS", "EVENT_KINDS",
           "ADJUDICATED_KINDS"]

#: Judgements that describe one sample; the current value of each is shown in ``feedback()``.
JUDGEMENT_KINDS = ("rating", "critique", "correction")
#: Every kind of event the log accepts ("rejection": suggested revisions turned down, migration 5).
EVENT_KINDS = JUDGEMENT_KINDS + ("preference", "ab_vote", "rejection", "undo")
#: What a reviewer may settle (``adjudications``, migration 4).
ADJUDICATED_KINDS = ("rating", "preference")


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
    meta: dict | None = None  # a correction's or rejection's provenance (events.meta), or None


class StoreBase:
    """The backend-neutral part of :class:`lf_widgets.store.FeedbackStore`."""

    path: str
    _OTHER = "json_extract(value, '$.other')"  # SQLite; store_pg overrides it

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeedbackStore({self.path!r})"

    # -- writes --------------------------------------------------------------------------------
    def record(self, sample_id: int | None, kind: str, value: Any, annotator: str, *,
               meta: Mapping[str, Any] | None = None) -> Event:
        """Append one judgement and commit it before returning.

        Parameters
        ----------
        sample_id : int or None
            The judged sample (for a preference: sample A; the value names the other one).
        kind : str
            One of :data:`EVENT_KINDS` other than ``"undo"`` (use :meth:`undo`).
        value : JSON-serialisable
            Rating 1–5, critique or correction text, a dict for preferences and votes, or for a
            rejection ``{"candidates": [str, ...], "refiner": str, "critique": str}``.
        annotator : str
            Who made the judgement; must not be empty. On PostgreSQL the server refuses a name
            other than the connected role's (:class:`PermissionError`).
        meta : dict, optional
            Corrections and rejections only: where the judgement came from, with the keys of
            :data:`lf_widgets._judgements.CORRECTION_META` (``via``, ``refiner``, ``critique``,
            ``candidate``, ``propagated_from``, …) or ``REJECTION_META``; an unknown key or a
            wrong type is a ValueError naming it. A correction's ``edit_distance`` and
            ``edit_ratio`` to the corrected sample's text are filled in when absent, so every
            correction of a sample carries them.
        """
        if kind not in EVENT_KINDS or kind == "undo":
            raise ValueError(f"kind must be one of {EVENT_KINDS[:-1]}, got {kind!r}")
        value = check_value(kind, value)
        meta = check_meta(kind, meta)
        annotator = check_annotator(annotator)
        if sample_id is not None:
            sample_id = check_id(sample_id, "sample_id")
        elif kind == "rejection":
            raise ValueError("a rejection needs the sample_id whose suggestions it turns down")
        if kind in ("preference", "ab_vote"):
            value["other"] = check_id(value.get("other"), "the other sample")
            if value["other"] == sample_id:
                raise ValueError(f"a {kind} needs two different samples, got {sample_id} twice")
        with self.atomic():
            if sample_id is not None:
                self._require_samples([sample_id], "sample_id")
            if kind in ("preference", "ab_vote"):
                self._require_samples([value["other"]], "the other sample")
            if kind == "correction" and sample_id is not None:
                meta = self._with_edit(sample_id, value, meta)
            return self._append(sample_id, kind, value, annotator, undoes=None, meta=meta)

    def _with_edit(self, sample_id: int, corrected: str, meta: dict | None) -> dict:
        """``meta`` with the correction's edit distance and ratio to the sample's text."""
        meta = dict(meta or {})
        if "edit_distance" not in meta or "edit_ratio" not in meta:
            [(original,)] = self._rows("SELECT text FROM samples WHERE id = ?", (sample_id,))[1]
            meta.setdefault("edit_distance", edit_distance(original, corrected))
            meta.setdefault("edit_ratio", edit_ratio(original, corrected))
        return meta

    def _require_samples(self, ids: Iterable[int], what: str) -> None:
        for sid in ids:
            if not self._rows("SELECT 1 FROM samples WHERE id = ?", (sid,))[1]:
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
        with self.atomic():
            query, args = self._filtered("SELECT * FROM current_events WHERE annotator = ?",
                                         [annotator], kinds, ids)
            columns, rows = self._rows(query + " ORDER BY id DESC LIMIT 1", args)
            if not rows:
                return None
            row = dict(zip(columns, rows[0]))
            self._append(row["sample_id"], "undo", None, annotator, undoes=row["id"])
            return _event(row)

    def _filtered(self, query: str, args: list, kinds, ids) -> tuple[str, list]:
        if kinds is not None:
            kinds = list(kinds)
            query += f" AND kind IN ({','.join('?' * len(kinds))})"
            args = args + kinds
        if ids is not None:
            marks = ",".join("?" * len(ids))
            query += (f" AND (sample_id IN ({marks}) OR (kind IN ('preference', 'ab_vote')"
                      f" AND {self._OTHER} IN ({marks})))")
            args = args + ids + ids
        return query, args

    def _append(self, sample_id, kind, value, annotator, undoes, meta=None) -> Event:
        now = time.time()
        subject = None if kind == "undo" else subject_of(kind, sample_id, value)
        with self.atomic():
            new_id = self._insert(
                "INSERT INTO events(sample_id, kind, value, annotator, created_at, undoes, subject,"
                " meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (sample_id, kind, json.dumps(value, ensure_ascii=False), annotator, now, undoes,
                 subject, None if meta is None else json.dumps(meta, ensure_ascii=False)))
        return Event(new_id, sample_id, kind, value, annotator, now, meta)

    def log_step(self, run_id: str, step: int, objective: str, loss: float | None,
                 metrics: Mapping[str, Any]) -> None:
        """Append one training step's metrics (the monitor's history after a restart)."""
        with self.atomic():
            self._insert("INSERT INTO train_steps(run_id, step, objective, loss, metrics,"
                         " created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                         (run_id, step, objective, loss, json.dumps(dict(metrics)), time.time()))

    def add_checkpoint(self, step: int, path: str | os.PathLike, objective: str | None) -> None:
        """Record a checkpoint folder that was completely written."""
        with self.atomic():
            self._insert("INSERT INTO checkpoints(step, path, objective, created_at)"
                         " VALUES (?, ?, ?, ?) RETURNING id",
                         (step, str(path), objective, time.time()))

    def add_assignments(self, plan: str, rows: Iterable[tuple[str, str, bool]]) -> int:
        """Write a work plan: ``(item, annotator, recheck)`` rows, in one transaction."""
        now, n = time.time(), 0
        with self.atomic():
            for item, annotator, recheck in rows:
                self._insert("INSERT INTO assignments(plan, item, annotator, recheck, created_at)"
                             " VALUES (?, ?, ?, ?, ?) RETURNING id",
                             (plan, item, check_annotator(annotator), int(recheck), now))
                n += 1
        return n

    def adjudicate(self, subject: str, kind: str, value: Any, reviewer: str,
                   note: str | None = None) -> int:
        """Record a reviewer's settled judgement of ``subject`` (it replaces earlier ones)."""
        if kind not in ADJUDICATED_KINDS:
            raise ValueError(f"kind must be one of {ADJUDICATED_KINDS}, got {kind!r}")
        with self.atomic():
            return self._insert(
                "INSERT INTO adjudications(subject, kind, value, reviewer, note, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (subject, kind, json.dumps(check_value(kind, value), ensure_ascii=False),
                 check_annotator(reviewer), note, time.time()))

    # -- reads ---------------------------------------------------------------------------------
    def _frame(self, query: str, args: Iterable[Any] = (), json_columns: tuple[str, ...] = ()
               ) -> pd.DataFrame:
        columns, raw = self._rows(query, tuple(args))
        rows = [dict(zip(columns, r)) for r in raw]
        for r in rows:  # decode JSON before pandas sees it (it would turn None into NaN)
            for c in json_columns:
                r[c] = None if r[c] is None else json.loads(r[c])
        df = pd.DataFrame(rows, columns=columns)
        for c in json_columns:
            df[c] = pd.Series([r[c] for r in rows], index=df.index, dtype=object)
        return df

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

    def prompts(self) -> pd.DataFrame:
        """Every prompt: id, text."""
        return self._frame("SELECT id, text FROM prompts ORDER BY id")

    def events(self, *, active_only: bool = False) -> pd.DataFrame:
        """The raw event log; ``active_only`` drops undo events and what they cancelled.

        ``value`` and ``meta`` are parsed (``meta``: a dict for corrections and rejections
        that carry one, else None)."""
        query = "SELECT * FROM events e"
        if active_only:
            query += (" WHERE kind != 'undo' AND NOT EXISTS"
                      " (SELECT 1 FROM events u WHERE u.undoes = e.id)")
        return _typed(self._frame(query + " ORDER BY id", json_columns=_EVENT_JSON))

    def current_events(self, *, kinds: Iterable[str] | None = None,
                       sample_ids: Iterable[int] | None = None,
                       annotator: str | None = None) -> pd.DataFrame:
        """The judgements in force (the ``current_events`` view), oldest first.

        One row per subject (sample; pair of samples; A/B item), annotator and kind: the latest
        such event that no undo cancelled (a rejection too: the latest per sample). Optionally
        only some ``kinds``, judgements touching ``sample_ids`` (either side of a preference or
        vote) or one ``annotator``. ``value`` and ``meta`` are parsed, as in :meth:`events`.
        """
        query, args = "SELECT * FROM current_events WHERE true", []
        if annotator is not None:
            query += " AND annotator = ?"
            args.append(annotator)
        ids = None if sample_ids is None else [int(i) for i in sample_ids]
        query, args = self._filtered(query, args, kinds, ids)
        return _typed(self._frame(query + " ORDER BY id", args, json_columns=_EVENT_JSON))

    def current(self, sample_id: int, annotator: str) -> dict[str, Any]:
        """The annotator's current judgements of one sample, e.g. ``{"rating": 4}``."""
        _, rows = self._rows(
            "SELECT kind, value FROM current_events WHERE sample_id = ? AND annotator = ? AND"
            " kind IN ('rating', 'critique', 'correction') ORDER BY id", (sample_id, annotator))
        return {kind: json.loads(value) for kind, value in rows}

    def assignments(self) -> pd.DataFrame:
        """Every work-plan row: id, plan, item, annotator, recheck, created_at."""
        df = self._frame("SELECT * FROM assignments ORDER BY id")
        df["recheck"] = df["recheck"].astype(bool)
        return df

    def adjudications(self) -> pd.DataFrame:
        """The adjudications in force: the latest per subject and kind."""
        return self._frame("SELECT * FROM current_adjudications ORDER BY id",
                           json_columns=("value",))

    def feedback(self) -> pd.DataFrame:
        """Current judgements: one row per sample × annotator, plus unjudged samples.

        Columns: sample_id, prompt, text, annotator, rating, critique, correction, judged_at,
        model, adapter_step, source, correction_meta. A sample nobody judged yet has one row
        with annotator NaN. ``correction_meta`` is the current correction's provenance (a dict
        with at least ``edit_distance`` and ``edit_ratio`` for corrections recorded since
        migration 5; see :meth:`record`), None without a correction.
        """
        samples = self.samples().drop(columns=["token_ids", "params", "created_at", "prompt_id"])
        ev = self.current_events(kinds=JUDGEMENT_KINDS)
        cols = ["sample_id", "annotator", *JUDGEMENT_KINDS, "judged_at"]
        metas: dict[tuple[int, str], dict] = {}
        if ev.empty:
            current = pd.DataFrame(columns=cols)
        else:
            latest = ev.sort_values("id").groupby(["sample_id", "annotator", "kind"]).tail(1)
            current = latest.pivot(index=["sample_id", "annotator"], columns="kind", values="value")
            current["judged_at"] = latest.groupby(["sample_id", "annotator"])["created_at"].max()
            current = current.reset_index().reindex(columns=cols)
            metas = {(int(e.sample_id), e.annotator): e.meta for e in latest.itertuples()
                     if e.kind == "correction" and isinstance(e.value, str) and e.value}
        current["sample_id"] = current["sample_id"].astype("Int64")
        current["rating"] = pd.to_numeric(current["rating"]).astype("Int64")
        out = samples.merge(current, on="sample_id", how="left")
        order = ["sample_id", "prompt", "text", "annotator", *JUDGEMENT_KINDS, "judged_at",
                 "model", "adapter_step", "source"]
        out = out[order].reset_index(drop=True)
        out["correction_meta"] = pd.Series(  # a dict or None (never NaN), as in current_events
            [metas.get((int(s), a)) if isinstance(a, str) else None
             for s, a in zip(out["sample_id"], out["annotator"])], index=out.index, dtype=object)
        for col in ("prompt", "text", "annotator", "critique", "correction", "model", "source"):
            # one missing-value convention (None) so exports read back equal; an emptied
            # critique or correction means "none"
            out[col] = out[col].astype(object).where(out[col].notna() & (out[col] != ""), None)
        out["judged_at"] = out["judged_at"].astype(float)
        out["sample_id"] = out["sample_id"].astype("Int64")
        return out

    def _thread_connection(self, connect):
        """This thread's connection, opened with ``connect()`` on first use; ``close()`` closes
        every thread's."""
        if self._closed:
            raise RuntimeError(f"the feedback store {self.path} is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect()
            with self._conn_lock:
                self._connections.append(conn)
        return conn

    def _closing(self, connections: list, errors: tuple) -> None:
        for conn in connections:
            with contextlib.suppress(*errors):
                conn.close()
        connections.clear()


_EVENT_JSON = ("value", "meta")  # the events columns that hold JSON


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df["undoes"] = df["undoes"].astype("Int64")
    df["sample_id"] = df["sample_id"].astype("Int64")
    return df


def _event(row: Mapping[str, Any]) -> Event:
    value, meta = (None if row[c] is None else json.loads(row[c]) for c in _EVENT_JSON)
    return Event(row["id"], row["sample_id"], row["kind"], value, row["annotator"],
                 row["created_at"], meta)
