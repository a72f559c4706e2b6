"""Reading and checking imported feedback: every cell is checked before anything is stored.

Each reader (CSV, JSONL, Parquet, DataFrame) yields rows that know where they came from
(``"fb.csv, row 2 (line 3)"``), so every error names the row, the line where there is one, and
the column. :mod:`lf_widgets.io` documents what is accepted; this module enforces it.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import json
import math
import numbers
import re
import reprlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

#: Longest accepted text cell, in characters (1 Mi). Python's csv module stops at 128 Ki; a
#: whole book fits in 1 Mi, and a bigger cell is far more likely a broken quote in the file.
MAX_CELL_CHARS = 1 << 20

#: Accepted column names for each field (the seed's file uses 用户ID, 生成文本, 评分); matched
#: after stripping spaces and ignoring case.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "annotator": ("annotator", "user_id", "用户ID"),
    "text": ("text", "生成文本"),
    "rating": ("rating", "评分"),
    "prompt": ("prompt", "提示"),
    "critique": ("critique", "批评"),
    "correction": ("correction", "修正"),
    "truncated": ("truncated",),
}
REQUIRED = ("text", "rating")
#: Columns our own exports write that an import does not need: the log's ids, times and
#: provenance belong to the log (an imported sample's source is ``import:<file>``).
EXPORT_ONLY_COLUMNS = ("sample_id", "judged_at", "model", "adapter_step", "source")
EXTRA_COLUMNS = ("error", "ignore")

# Control characters (Unicode category Cc) other than tab, LF and CR, and lone surrogates
# (valid in JSON strings, not in UTF-8: SQLite could not store them).
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_FULL_WIDTH = str.maketrans("０１２３４５６７８９．", "0123456789.")
_RATING = re.compile(r"[0-9]+(?:\.0+)?")  # after full-width digits became ASCII
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no", "")
_NOTHING = " Nothing was imported."
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60


class FeedbackImportError(ValueError):
    """A file could not be imported; the message names the row and column. Nothing was stored."""


FeedbackImportError.__module__ = "lf_widgets.io"  # its public home, as tracebacks show it


@dataclass(frozen=True)
class Row:
    where: str  # "fb.csv, row 2 (line 3)": what an error message names
    values: dict[str, Any]  # column name -> cell as read


# -- CSV formulas ---------------------------------------------------------------------------
# OWASP's CSV-injection guidance: a cell starting with = + - @ tab or CR is a formula to a
# spreadsheet; a leading single quote makes it text. A cell that already starts with quotes
# before such a character gets one more, so removing one quote on the way back is exact.
_FORMULA = re.compile("'*[=+\\-@\t\r]")


def neutralise_formula(cell: str) -> str:
    """``cell`` as a spreadsheet shows it as text: ``"=1+1"`` -> ``"'=1+1"``."""
    return "'" + cell if _FORMULA.match(cell) else cell


def restore_formula(cell: str) -> str:
    """Undo :func:`neutralise_formula`: ``"'=1+1"`` -> ``"=1+1"``; other cells unchanged."""
    return cell[1:] if cell.startswith("'") and _FORMULA.match(cell, 1) else cell


# -- readers --------------------------------------------------------------------------------
_field_limit_lock = threading.Lock()


@contextlib.contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    # The csv module's limit is process-wide; raise it only while we read, and check cell
    # sizes ourselves so that the error can name the row and column.
    with _field_limit_lock:
        old = csv.field_size_limit(max(limit, csv.field_size_limit()))
        try:
            yield
        finally:
            csv.field_size_limit(old)


def read_csv(name: str, text: str) -> tuple[list[str], list[Row]]:
    """Header and rows of a CSV text; blank lines are skipped, one leading formula quote is
    removed from each cell (see :func:`restore_formula`)."""
    rows = []
    with _csv_field_limit(len(text) + 1):  # no field can be longer than the whole file
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader, None)
            if header is None:
                raise FeedbackImportError(f"{name} is empty." + _NOTHING)
            header = [restore_formula(h.strip()) for h in header]
            for number, cells in enumerate(reader, start=1):
                if not any(c.strip() for c in cells):
                    continue  # blank lines are not rows
                where = f"{name}, row {number} (line {reader.line_num})"
                if len(cells) != len(header):
                    raise FeedbackImportError(f"{where}: {len(cells)} fields, the header has "
                                              f"{len(header)}." + _NOTHING)
                rows.append(Row(where, dict(zip(header, map(restore_formula, cells)))))
        except csv.Error as err:
            raise FeedbackImportError(f"{name}, line {reader.line_num}: {err}." + _NOTHING) from None
    return header, rows


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    for k in keys:
        if keys.count(k) > 1:
            raise ValueError(f"key {k!r} appears twice")
    return dict(pairs)


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")


def read_jsonl(name: str, text: str) -> tuple[list[str], list[Row]]:
    """Header (every key seen) and rows of a JSON Lines text: one object per line."""
    rows = []
    # split on "\n" only: str.splitlines() also splits inside strings holding U+2028 and
    # other separators, which JSON allows unescaped (pandas writes them so)
    for i, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, object_pairs_hook=_no_duplicate_keys,
                                parse_constant=_not_json)
        except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
            reason = err.msg if isinstance(err, json.JSONDecodeError) else \
                "nested too deeply" if isinstance(err, RecursionError) else str(err)
            raise FeedbackImportError(f"{name}: line {i} is not valid JSON ({reason})."
                                      + _NOTHING) from None
        if not isinstance(record, dict):
            raise FeedbackImportError(
                f"{name}: line {i} holds {_kind_of(record)}; each line must be a JSON object "
                'with the columns as keys, e.g. {"text": "…", "rating": 4}.' + _NOTHING)
        rows.append(Row(f"{name}, row {len(rows) + 1} (line {i})",
                        {k.strip(): v for k, v in record.items()}))
    header = list(dict.fromkeys(k for r in rows for k in r.values))
    return header, rows


def read_frame(name: str, df: pd.DataFrame) -> tuple[list[str], list[Row]]:
    """Header and rows of a DataFrame (or of a Parquet file read as one)."""
    for position, column in enumerate(df.columns, start=1):
        if not isinstance(column, str):
            raise FeedbackImportError(f"{name}: column {position} is named {column!r}; column "
                                      "names must be text." + _NOTHING)
    header = [c.strip() for c in df.columns]
    if len(set(header)) < len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise FeedbackImportError(f"{name}: columns {dupes} appear more than once." + _NOTHING)
    records = df.to_dict("records")
    return header, [Row(f"{name}, row {i}", dict(zip(header, r.values())))
                    for i, r in enumerate(records, start=1)]


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (list, tuple)):
        return f"a list {_short.repr(value)}"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"binary data {_short.repr(bytes(value))}"
    if isinstance(value, numbers.Number):
        return f"a number {_short.repr(value)}"
    if isinstance(value, str):
        return f"a string {_short.repr(value)}"
    if isinstance(value, dict):
        return f"an object {_short.repr(value)}"
    return f"{type(value).__name__} {_short.repr(value)}"


# -- columns --------------------------------------------------------------------------------
_KNOWN = {alias.casefold(): field for field, aliases in COLUMN_ALIASES.items() for alias in aliases}
_KNOWN.update({c: None for c in EXPORT_ONLY_COLUMNS})  # known, and not imported


def map_columns(name: str, header: list[str], extra_columns: str) -> dict[str, str]:
    """``{field: column}`` for the fields present; an error for a missing required field, two
    columns of one field, or (unless ``extra_columns="ignore"``) a column nobody knows."""
    mapping: dict[str, str] = {}
    for position, column in enumerate(header, start=1):
        field = _KNOWN.get(column.casefold(), "?")
        if field == "?" and extra_columns == "error":
            raise FeedbackImportError(_unknown_column(name, position, column))
        if field in (None, "?"):
            continue
        if field in mapping:
            raise FeedbackImportError(f"{name}: columns {mapping[field]!r} and {column!r} both "
                                      f"mean {field!r}; keep one." + _NOTHING)
        mapping[field] = column
    missing = [f for f in REQUIRED if f not in mapping]
    if missing:
        names = " or ".join(repr(a) for f in missing for a in COLUMN_ALIASES[f])
        raise FeedbackImportError(f"{name}: missing column {names}; found {header}." + _NOTHING)
    return mapping


def _unknown_column(name: str, position: int, column: str) -> str:
    known = [a for aliases in COLUMN_ALIASES.values() for a in aliases] + list(EXPORT_ONLY_COLUMNS)
    if not column:
        what = f"column {position} has no name"
    else:
        close = difflib.get_close_matches(column.casefold(), [k.casefold() for k in known], n=1)
        hint = next((k for k in known if close and k.casefold() == close[0]), None)
        what = f"unknown column {column!r}" + (f" (did you mean {hint!r}?)" if hint else "")
    return (f"{name}: {what}; known columns are {', '.join(known)}. Rename it, or pass "
            "extra_columns='ignore' to import without it." + _NOTHING)


# -- cells ----------------------------------------------------------------------------------
def is_missing(value: Any) -> bool:
    """None, or pandas' missing markers (NaN in a float column, pd.NA, NaT)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) \
        and math.isnan(value)


def text_cell(value: Any, where: str, column: str) -> str | None:
    """A text cell as stored, or None when empty; non-text, oversized cells and control
    characters are errors."""
    if is_missing(value):
        return None
    if not isinstance(value, str):
        raise FeedbackImportError(f"{where}, column {column!r}: expected text, got "
                                  f"{_kind_of(value)}." + _NOTHING)
    if len(value) > MAX_CELL_CHARS:
        raise FeedbackImportError(f"{where}, column {column!r}: {len(value):,} characters, more "
                                  f"than the {MAX_CELL_CHARS:,} a cell may hold." + _NOTHING)
    bad = _FORBIDDEN.search(value)
    if bad:
        raise FeedbackImportError(
            f"{where}, column {column!r}: character {bad.start() + 1} is the control character "
            f"U+{ord(bad.group()):04X}; only tab, newline and carriage return are accepted. "
            "Remove it and import again." + _NOTHING)
    return value if value.strip() else None


def rating_cell(value: Any, where: str, column: str) -> int | None:
    """A rating 1-5, or None when empty: an integer (4, 4.0, numpy ints), or text of ASCII or
    full-width digits ("4", "４", "4.0"). Booleans, fractions, other digit scripts are errors."""
    if is_missing(value):
        return None
    number = None
    if isinstance(value, str):
        digits = value.strip().translate(_FULL_WIDTH)
        if not digits:
            return None
        if _RATING.fullmatch(digits):
            whole = digits.split(".")[0].lstrip("0") or "0"
            number = int(whole) if len(whole) < 4 else 1000  # never parse a huge digit string
    elif isinstance(value, (bool, np.bool_)):
        pass  # True is an int to Python, not a rating
    elif isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        number = int(value)
    if number is None or not 1 <= number <= 5:
        got = repr(value) if isinstance(value, str) else _kind_of(value)
        raise FeedbackImportError(
            f"{where}, column {column!r}: the rating must be a whole number from 1 to 5 (ASCII "
            f"or full-width digits, 4 or 4.0), got {got}." + _NOTHING)
    return number


def truncated_cell(value: Any, where: str, column: str) -> bool:
    """Whether the sample was cut off at max_new_tokens: a boolean, 0/1, or true/false text."""
    if is_missing(value):
        return False
    if isinstance(value, (bool, np.bool_, numbers.Integral)) and int(value) in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().casefold() in _TRUE + _FALSE:
        return value.strip().casefold() in _TRUE
    raise FeedbackImportError(f"{where}, column {column!r}: expected true or false, got "
                              f"{_kind_of(value)}." + _NOTHING)
