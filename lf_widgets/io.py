"""Import and export of feedback: CSV (also the seed's Chinese headers), JSONL and Parquet.

Imports are atomic: every row is checked first, and one bad row rejects the whole file with a
message that names the row, the line and the column. Nothing is half-imported.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .store import FeedbackStore, SampleRecord

__all__ = ["FeedbackImportError", "import_feedback", "export_feedback", "read_feedback",
           "COLUMN_ALIASES", "EXPORT_KINDS"]

#: Accepted header names for each field (the seed's file uses 用户ID, 生成文本, 评分).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "annotator": ("annotator", "user_id", "用户ID"),
    "text": ("text", "生成文本"),
    "rating": ("rating", "评分"),
    "prompt": ("prompt", "提示"),
    "critique": ("critique", "批评"),
    "correction": ("correction", "修正"),
}
REQUIRED = ("text", "rating")
EXPORT_KINDS = ("csv", "jsonl", "parquet")


class FeedbackImportError(ValueError):
    """A file could not be imported; the message names the row and column. Nothing was stored."""


@dataclass(frozen=True)
class _Row:
    number: int  # 1-based data row (the header is not counted)
    line: int  # line in the file where the row ends (CSV); equals number for JSONL
    values: dict[str, Any]


def _clean(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text if text.strip() else None


def _read_rows(path: Path) -> tuple[list[str], Iterator[_Row]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        df = pd.read_parquet(path)
        rows = (_Row(i + 1, i + 2, dict(r)) for i, r in enumerate(df.to_dict("records")))
        return list(df.columns), rows
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # accepts UTF-8 with or without a byte-order mark
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise FeedbackImportError(
            f"{path.name}: line {line} is not valid UTF-8 (byte {err.start}); save the file as "
            f"UTF-8 and import it again. Nothing was imported.") from None
    if suffix == ".jsonl":
        records = []
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                records.append(_Row(len(records) + 1, i + 1, json.loads(line)))
            except json.JSONDecodeError as err:
                raise FeedbackImportError(f"{path.name}: line {i + 1} is not valid JSON ({err.msg})."
                                          " Nothing was imported.") from None
        columns = list(dict.fromkeys(k for r in records for k in r.values))
        return columns, iter(records)
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise FeedbackImportError(f"{path.name} is empty. Nothing was imported.")
    header = [h.strip() for h in header]

    def rows() -> Iterator[_Row]:
        for number, cells in enumerate(reader, start=1):
            if not any(c.strip() for c in cells):
                continue  # blank lines are not rows
            if len(cells) != len(header):
                raise FeedbackImportError(
                    f"{path.name}, row {number} (line {reader.line_num}): {len(cells)} fields, the"
                    f" header has {len(header)}. Nothing was imported.")
            yield _Row(number, reader.line_num, dict(zip(header, cells)))
    return header, rows()


def _map_columns(path: Path, header: list[str]) -> dict[str, str]:
    mapping = {}
    for field, aliases in COLUMN_ALIASES.items():
        found = [h for h in header if h in aliases]
        if len(found) > 1:
            raise FeedbackImportError(f"{path.name}: columns {found} all mean {field!r}; keep one.")
        if found:
            mapping[field] = found[0]
    missing = [f for f in REQUIRED if f not in mapping]
    if missing:
        names = " or ".join(repr(a) for f in missing for a in COLUMN_ALIASES[f])
        raise FeedbackImportError(f"{path.name}: missing column {names}; found {header}. "
                                  "Nothing was imported.")
    return mapping


def _parse_rating(raw: Any) -> int | None:
    text = _clean(raw)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"rating must be an integer from 1 to 5, got {text!r}") from None
    if not number.is_integer() or not 1 <= number <= 5:
        raise ValueError(f"rating must be an integer from 1 to 5, got {text!r}")
    return int(number)


def import_feedback(store: FeedbackStore, path: str | os.PathLike, *,
                    default_annotator: str = "import") -> int:
    """Import judgements from CSV, JSONL or Parquet into ``store``; returns the rows imported.

    Columns (English or the seed's Chinese names): ``text``/``生成文本`` and ``rating``/``评分``
    are required; ``annotator``/``user_id``/``用户ID``, ``prompt``, ``critique`` and
    ``correction`` are optional. Rows with the same prompt and text become one sample judged by
    each annotator. A row with an empty rating must carry a critique or a correction, or no
    annotator at all (an unjudged sample, as exports write them).

    Raises
    ------
    FeedbackImportError
        On the first bad row, naming row, line and column; nothing is stored.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such feedback file: {path}")
    header, rows = _read_rows(path)
    cols = _map_columns(path, header)
    parsed = []
    for row in rows:
        def cell(field: str, _row=row) -> str | None:
            return _clean(_row.values.get(cols[field])) if field in cols else None

        where = f"{path.name}, row {row.number} (line {row.line})"
        text = cell("text")
        if text is None:
            raise FeedbackImportError(f"{where}, column {cols['text']!r}: the text is empty. "
                                      "Nothing was imported.")
        try:
            rating = _parse_rating(row.values.get(cols["rating"]))
        except ValueError as err:
            raise FeedbackImportError(f"{where}, column {cols['rating']!r}: {err}. "
                                      "Nothing was imported.") from None
        annotator, critique, correction = cell("annotator"), cell("critique"), cell("correction")
        if rating is None and critique is None and correction is None and annotator is not None:
            raise FeedbackImportError(f"{where}, column {cols['rating']!r}: the rating is empty "
                                      "and the row has no critique or correction. Nothing was imported.")
        parsed.append((cell("prompt"), text, annotator, rating, critique, correction))

    if not parsed:
        raise FeedbackImportError(f"{path.name} has a header but no rows. Nothing was imported.")
    with store.atomic():  # one transaction: all rows or none
        for prompt, text, annotator, rating, critique, correction in parsed:
            sample_id = store.find_sample(text, prompt)
            if sample_id is None:
                [sample_id] = store.add_samples([SampleRecord(text=text, prompt=prompt,
                                                              source=f"import:{path.name}")])
            who = annotator or default_annotator
            for kind, value in (("rating", rating), ("critique", critique),
                                ("correction", correction)):
                if value is not None:
                    store.record(sample_id, kind, value, who)
    return len(parsed)


def export_feedback(df: pd.DataFrame, kind: str, path: str | os.PathLike) -> Path:
    """Write a feedback DataFrame as CSV (UTF-8), JSONL or Parquet; :func:`read_feedback` reads it back."""
    if kind not in EXPORT_KINDS:
        raise ValueError(f"kind must be one of {EXPORT_KINDS}, got {kind!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")  # write aside, then rename: never a half file
    if kind == "csv":
        df.to_csv(tmp, index=False, encoding="utf-8")
    elif kind == "jsonl":
        df.to_json(tmp, orient="records", lines=True, force_ascii=False)
    else:
        df.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


_INT_COLUMNS = ("sample_id", "rating", "adapter_step")
_TEXT_COLUMNS = ("prompt", "text", "annotator", "critique", "correction", "model", "source")


def read_feedback(path: str | os.PathLike) -> pd.DataFrame:
    """Read a file written by :func:`export_feedback` back with the same column types."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    elif suffix == ".jsonl":
        df = pd.read_json(path, orient="records", lines=True, dtype=False)
    elif suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        raise ValueError(f"cannot tell the format of {path.name}: use .csv, .jsonl or .parquet")
    for col in df.columns:
        if col in _INT_COLUMNS:
            df[col] = pd.to_numeric(df[col]).astype("Int64")
        elif col in _TEXT_COLUMNS:
            df[col] = df[col].astype(object).where(df[col].notna(), None)
        elif col == "judged_at":
            df[col] = pd.to_numeric(df[col]).astype(float)
    return df
