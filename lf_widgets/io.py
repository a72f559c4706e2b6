"""Import and export of feedback: CSV (also the seed's Chinese headers), JSONL, Parquet, DataFrames.

Every row is checked before anything is stored: one bad row rejects the whole file with a
message that names the row, the line (CSV, JSONL) and the column, and nothing is imported. The
checked rows are then written 10,000 per transaction (each well under a second, so other
kernels' clicks get in between); a kernel killed midway leaves whole transactions, and importing
the file again adds exactly the rest (rows already in the log are skipped).

What an import accepts
----------------------
- Columns (spaces around names and case do not matter): ``text``/``生成文本`` and
  ``rating``/``评分`` are required; ``annotator``/``user_id``/``用户ID``, ``prompt``/``提示``,
  ``critique``/``批评``, ``correction``/``修正`` and ``truncated`` are optional. The columns our
  exports add (``sample_id``, ``judged_at``, ``model``, ``adapter_step``, ``source``, and
  ``correction_meta`` of JSONL and Parquet files) are ignored: an import brings judgements,
  and the log computes a correction's edit distance itself. Any other column is an error
  naming the closest known one, unless ``extra_columns="ignore"``.
- Text fields hold text: a number, list, object, boolean or bytes there (a JSONL value, a
  Parquet or DataFrame column of ints or bytes, a numeric annotator) is an error. A cell holds
  at most :data:`MAX_CELL_CHARS` characters (1 Mi). Control characters other than tab, newline
  and carriage return (NUL, the rest of C0, DEL, C1) and lone surrogates are rejected, not
  stripped: they are almost always a broken file, and changing text silently would hide that.
- Ratings are whole numbers 1-5: ``4``, ``4.0``, or text of ASCII or full-width digits
  (``"4"``, ``"４"``, ``"4.0"``, as Excel in Chinese locales writes them). Booleans, fractions
  (``4.5``), other digit scripts (``"٤"``, ``"४"``, ``"④"``) and words are errors.
- JSONL: one JSON object per line (blank lines skipped); ``NaN`` and repeated keys are errors.
- CSV: UTF-8 with or without a byte-order mark. One leading single quote before a formula
  character is removed from each cell: it is the quote :func:`export_feedback` adds, so a CSV
  export re-imports exactly (see :func:`export_feedback`).
- Identity: a judgement is (prompt, sample text, annotator, kind, value). A row whose
  judgements the log already holds adds nothing, so importing the same rows twice adds nothing
  the second time (:class:`ImportResult` counts them). This holds even if the judgement was
  since replaced or undone: an import never overrides what was judged after it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from . import _import_checks as checks
from ._bulk_import import ImportRow
from ._files import atomic_file
from ._import_checks import COLUMN_ALIASES, MAX_CELL_CHARS, FeedbackImportError
from .store import FeedbackStore, check_annotator

__all__ = ["FeedbackImportError", "ImportResult", "import_feedback", "export_feedback",
           "read_feedback", "COLUMN_ALIASES", "EXPORT_KINDS", "MAX_CELL_CHARS"]

EXPORT_KINDS = ("csv", "jsonl", "parquet")
_JUDGEMENTS = ("rating", "critique", "correction")
# A correction's provenance (FeedbackStore.feedback): JSON text in JSONL and Parquet (exact:
# pandas' JSON writer rounds floats to 10 digits, and Parquet would make one struct of dicts
# with different keys), not in CSV (the seed's columns, unchanged)
_META_COLUMN = "correction_meta"


class ImportResult(int):
    """The number of rows an import added (it is that int), with what it found already there.

    Attributes: ``added`` (rows that added a sample or a judgement), ``already_present`` (rows
    the log held already: nothing added), ``rows`` (both), ``samples_added``,
    ``events_added``, ``source`` (what was imported).
    """

    def __new__(cls, added: int, already_present: int, samples_added: int, events_added: int,
                source: str) -> ImportResult:
        self = super().__new__(cls, added)
        self.added, self.already_present = added, already_present
        self.rows = added + already_present
        self.samples_added, self.events_added, self.source = samples_added, events_added, source
        return self

    def __getnewargs__(self):  # copy and pickle rebuild it with its counts
        return (self.added, self.already_present, self.samples_added, self.events_added,
                self.source)

    @property
    def message(self) -> str:
        """One line for people: ``"fb.csv: 3 rows imported, 2 already in the log."``."""
        return (f"{self.source}: {self.added} row{'s' * (self.added != 1)} imported, "
                f"{self.already_present} already in the log.")

    def __repr__(self) -> str:
        return (f"ImportResult(added={self.added}, already_present={self.already_present}, "
                f"samples_added={self.samples_added}, events_added={self.events_added}, "
                f"source={self.source!r})")

    __str__ = int.__repr__  # print("imported", result) prints the number, as an int would


def import_feedback(store: FeedbackStore, source: str | os.PathLike | pd.DataFrame, *,
                    default_annotator: str = "import", extra_columns: str = "error"
                    ) -> ImportResult:
    """Import judgements from a CSV, JSONL or Parquet file, or a DataFrame, into ``store``.

    See the module docstring for what is accepted. Rows with the same prompt and text become
    one sample judged by each annotator. A row with an empty rating must carry a critique or
    a correction, or no annotator at all (an unjudged sample, as exports write them).

    Parameters
    ----------
    store : FeedbackStore
        The log to import into.
    source : str, Path or DataFrame
        A ``.parquet`` or ``.jsonl`` file, any other file as CSV, or a DataFrame.
    default_annotator : str
        Who judged the rows that name nobody (or that have no annotator column).
    extra_columns : {"error", "ignore"}
        What a column nobody knows does: stop the import (default: a misspelt ``critque``
        would lose every critique) or be left out.

    Returns
    -------
    ImportResult
        The rows added (an int), and ``already_present``: rows the log held already.

    Raises
    ------
    FeedbackImportError
        On the first bad row, naming row, line and column; nothing is stored.
    """
    default_annotator = check_annotator(default_annotator)
    if extra_columns not in checks.EXTRA_COLUMNS:
        raise ValueError(f"extra_columns must be one of {checks.EXTRA_COLUMNS}, "
                         f"got {extra_columns!r}")
    name, header, rows = _read(source)  # parsing and checks hold no lock on the log
    header = [h for h in header if h.strip().casefold() != _META_COLUMN]  # ours: ignored
    columns = checks.map_columns(name, header, extra_columns)
    parsed = [_parse_row(row, columns, default_annotator) for row in rows]
    if not parsed:
        raise FeedbackImportError(f"{name} has a header but no rows. Nothing was imported.")
    done = store.import_rows(parsed, source=f"import:{name}")
    return ImportResult(done.rows_added, done.rows_present, done.samples_added,
                        done.events_added, name)


def _read(source: Any) -> tuple[str, list[str], list[checks.Row]]:
    if isinstance(source, pd.DataFrame):
        return ("DataFrame", *checks.read_frame("DataFrame", source))
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no such feedback file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            df = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise FeedbackImportError(f"{path.name} is not a readable Parquet file ({err}). "
                                      "Nothing was imported.") from None
        return (path.name, *checks.read_frame(path.name, df))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # accepts UTF-8 with or without a byte-order mark
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise FeedbackImportError(
            f"{path.name}: line {line} is not valid UTF-8 (byte {err.start}); save the file as "
            f"UTF-8 and import it again. Nothing was imported.") from None
    reader = checks.read_jsonl if suffix == ".jsonl" else checks.read_csv
    return (path.name, *reader(path.name, text))


def _parse_row(row: checks.Row, columns: dict[str, str], default_annotator: str) -> ImportRow:
    def cell(field: str, check=checks.text_cell) -> Any:
        return check(row.values.get(columns[field]), row.where, columns[field]) \
            if field in columns else None

    text = cell("text")
    if text is None:
        raise FeedbackImportError(f"{row.where}, column {columns['text']!r}: the text is empty. "
                                  "Nothing was imported.")
    values = {"rating": cell("rating", checks.rating_cell), "critique": cell("critique"),
              "correction": cell("correction")}
    annotator = cell("annotator")
    judgements = tuple((k, values[k]) for k in _JUDGEMENTS if values[k] is not None)
    if not judgements and annotator is not None:
        raise FeedbackImportError(f"{row.where}, column {columns['rating']!r}: the rating is "
                                  "empty and the row has no critique or correction. "
                                  "Nothing was imported.")
    if judgements:
        annotator = default_annotator if annotator is None else check_annotator(annotator)
    return ImportRow(cell("prompt"), text, annotator, judgements,
                     bool(cell("truncated", checks.truncated_cell)))


def export_feedback(df: pd.DataFrame, kind: str, path: str | os.PathLike) -> Path:
    """Write a feedback DataFrame as CSV (UTF-8), JSONL or Parquet (mode 0600, never half).

    In CSV, a text cell that a spreadsheet would run as a formula (it starts with ``=``, ``+``,
    ``-``, ``@``, tab or carriage return; OWASP's CSV-injection list) gets a leading single
    quote, so Excel, LibreOffice and Sheets show it as text. A cell that already starts with
    quotes before such a character gets one more, so :func:`read_feedback` and
    :func:`import_feedback` remove exactly one and read the original back. JSONL and Parquet
    keep the exact text. :func:`read_feedback` reads any of them back.

    ``correction_meta`` (a correction's provenance) is written to JSONL and Parquet, not to CSV,
    whose columns stay those of the seed's files.
    """
    if kind not in EXPORT_KINDS:
        raise ValueError(f"kind must be one of {EXPORT_KINDS}, got {kind!r}")
    if _META_COLUMN in df.columns:
        df = df.drop(columns=_META_COLUMN) if kind == "csv" else df.assign(**{_META_COLUMN: [
            json.dumps(m, ensure_ascii=False) if isinstance(m, dict) else None
            for m in df[_META_COLUMN]]})
    with atomic_file(path) as tmp:
        if kind == "csv":
            # RFC 4180 line ends: the csv writer quotes a field holding any character of
            # the line end, and with "\n" alone a lone "\r" went unquoted and split the row
            _map_text(df, checks.neutralise_formula).to_csv(tmp, index=False, encoding="utf-8",
                                                            lineterminator="\r\n")
        elif kind == "jsonl":
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            df.to_parquet(tmp, index=False)
    return Path(path)


def _map_text(df: pd.DataFrame, change) -> pd.DataFrame:
    """A copy of ``df`` with ``change`` applied to every text cell and column name."""
    out = df.rename(columns=lambda c: change(c) if isinstance(c, str) else c)
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]) and not pd.api.types.is_bool_dtype(out[col]):
            out[col] = out[col].map(lambda v: change(v) if isinstance(v, str) else v)
    return out


_INT_COLUMNS = ("sample_id", "rating", "adapter_step")
_TEXT_COLUMNS = ("prompt", "text", "annotator", "critique", "correction", "model", "source")


def read_feedback(path: str | os.PathLike) -> pd.DataFrame:
    """Read a file written by :func:`export_feedback` back with the same column types."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
        df = _map_text(df, checks.restore_formula)
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
        elif col == _META_COLUMN:  # JSON text, or missing
            df[col] = pd.Series([json.loads(m) if isinstance(m, str) else
                                 m if isinstance(m, dict) else None for m in df[col]],
                                index=df.index, dtype=object)
    return df
