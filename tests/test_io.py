"""CSV / JSONL / Parquet import and export of feedback."""

import csv
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lf_widgets import _bulk_import
from lf_widgets.io import (MAX_CELL_CHARS, FeedbackImportError, export_feedback, import_feedback,
                           read_feedback)
from lf_widgets.store import FeedbackStore, SampleRecord

SEED_CSV = Path(__file__).parent / "data" / "feedback_data.csv"


@pytest.fixture
def store():
    with FeedbackStore(":memory:") as s:
        yield s


def write(tmp_path, name, text, encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


def test_seed_csv_imports(store):
    assert import_feedback(store, SEED_CSV) == 3
    fb = store.feedback().sort_values("sample_id")
    assert fb.text.tolist() == ["这是一个很好的文章。", "我不喜欢这个文章。", "这个文章很有趣。"]
    assert fb.rating.tolist() == [4, 1, 5]
    assert fb.annotator.tolist() == ["1", "2", "3"]
    assert fb.source.unique().tolist() == ["import:feedback_data.csv"]


def test_english_headers_with_bom_and_optional_columns(store, tmp_path):
    p = write(tmp_path, "fb.csv",
              "\ufeffuser_id,prompt,text,rating,critique,correction\n"
              'ann,Say hi,"Hello, ""world""",5,,\n'
              "bob,Say hi,\"Hello, \"\"world\"\"\",2,too formal,Hi!\n"
              "ann,Say bye,Bye,,rude,\n")
    assert import_feedback(store, p) == 3
    fb = store.feedback()
    one = fb[fb.text == 'Hello, "world"'].set_index("annotator")
    assert one.sample_id.nunique() == 1  # same prompt+text: one sample, two annotators
    assert one.loc["bob", "critique"] == "too formal" and one.loc["bob", "correction"] == "Hi!"
    assert one.loc["ann", "rating"] == 5
    bye = fb[fb.text == "Bye"].iloc[0]
    assert pd.isna(bye.rating) and bye.critique == "rude" and bye.prompt == "Say bye"


def test_missing_annotator_column_uses_default(store, tmp_path):
    p = write(tmp_path, "fb.csv", "text,rating\nok,3\n")
    import_feedback(store, p, default_annotator="zoe")
    assert store.feedback().annotator.tolist() == ["zoe"]


@pytest.mark.parametrize("body,match", [
    ("用户ID,生成文本,评分\n1,好,4\n2,坏,six\n", r"row 2 \(line 3\), column '评分'.*'six'"),
    ("用户ID,生成文本,评分\n1,好,4\n2,坏,7\n", r"row 2 \(line 3\), column '评分'"),
    ("用户ID,生成文本,评分\n1,好,4.5\n", r"row 1 \(line 2\), column '评分'"),
    ("用户ID,生成文本,评分\n1,好,4\n2,  ,3\n", r"row 2 \(line 3\), column '生成文本'.*empty"),
    ("用户ID,生成文本,评分\n1,好,4\n2,坏,\n", r"row 2 \(line 3\), column '评分'.*empty"),
    ("用户ID,生成文本\n1,好\n", r"missing column 'rating' or '评分'"),
    ("用户ID,生成文本,评分\n1,好,4,extra\n", r"row 1 \(line 2\): 4 fields"),
    ("用户ID,生成文本,评分\n", r"no rows"),
])
def test_bad_file_imports_nothing_and_names_the_place(store, tmp_path, body, match):
    import_feedback(store, SEED_CSV)  # something already there must stay as it was
    before = store.events()
    p = write(tmp_path, "bad.csv", body)
    with pytest.raises(FeedbackImportError, match=match):
        import_feedback(store, p)
    pd.testing.assert_frame_equal(store.events(), before)
    assert len(store.samples()) == 3


def test_unreadable_encoding(store, tmp_path):
    p = write(tmp_path, "gbk.csv", "用户ID,生成文本,评分\n1,好文章,4\n", encoding="gbk")
    with pytest.raises(FeedbackImportError, match=r"line 1 is not valid UTF-8.*Nothing was imported"):
        import_feedback(store, p)
    assert store.samples().empty


def test_jsonl_import_with_bad_line(store, tmp_path):
    good = json.dumps({"text": "a", "rating": 3}) + "\n"
    p = write(tmp_path, "x.jsonl", good + "{not json\n")
    with pytest.raises(FeedbackImportError, match="line 2 is not valid JSON"):
        import_feedback(store, p)
    p = write(tmp_path, "y.jsonl", good + json.dumps({"text": "b", "rating": 9}) + "\n")
    with pytest.raises(FeedbackImportError, match=r"row 2 \(line 2\), column 'rating'"):
        import_feedback(store, p)
    assert store.samples().empty


def test_missing_file(store, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        import_feedback(store, tmp_path / "nope.csv")


@pytest.fixture
def rich_store(store):
    import_feedback(store, SEED_CSV)
    a, b, c = store.add_samples([
        SampleRecord('comma, "quote"\nnew line', prompt="p1", model="tiny", adapter_step=3),
        SampleRecord("<img src=x onerror=alert(1)>", prompt="中文提示"),
        SampleRecord("never judged", prompt="p1")])
    store.record(a, "rating", 2, "ann")
    store.record(a, "critique", "too long", "ann")
    store.record(a, "correction", "short", "bob")
    store.record(b, "rating", 5, "bob")
    return store


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_export_round_trip(rich_store, tmp_path, kind):
    df = rich_store.feedback()
    path = export_feedback(df, kind, tmp_path / f"out.{kind}")
    if kind == "csv":  # the seed's columns: a correction's provenance stays out of CSV
        df = df.drop(columns="correction_meta")
    pd.testing.assert_frame_equal(read_feedback(path), df)


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_export_then_import_reproduces_judgements(rich_store, tmp_path, kind):
    df = rich_store.feedback()
    path = export_feedback(df, kind, tmp_path / f"out.{kind}")
    with FeedbackStore(":memory:") as fresh:
        import_feedback(fresh, path)
        cols = ["prompt", "text", "annotator", "rating", "critique", "correction"]
        key = ["text", "annotator"]
        got = fresh.feedback()[cols].sort_values(key, na_position="first").reset_index(drop=True)
        want = df[cols].sort_values(key, na_position="first").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want)


def test_export_rejects_unknown_kind(rich_store, tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        export_feedback(rich_store.feedback(), "xlsx", tmp_path / "x.xlsx")


# -- hardening (issue 10): each class of bad input, named by row/line and column ------------

def jsonl(tmp_path, *records, name="x.jsonl"):
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    return write(tmp_path, name, "\n".join(lines) + "\n")


def assert_rejected(store, source, match, **options):
    before = (store.samples(), store.events())
    with pytest.raises(FeedbackImportError, match=match):
        import_feedback(store, source, **options)
    pd.testing.assert_frame_equal(store.samples(), before[0])
    pd.testing.assert_frame_equal(store.events(), before[1])


def test_cells_past_the_csv_modules_limit_import_up_to_a_documented_limit(store, tmp_path):
    big = "长" * 200_000  # over Python's csv default of 131,072
    p = write(tmp_path, "big.csv", f'text,rating\nshort,3\n"{big}",4\n')
    assert import_feedback(store, p) == 2
    assert store.feedback().text.str.len().max() == 200_000
    huge = "x" * (MAX_CELL_CHARS + 1)
    p = write(tmp_path, "huge.csv", f'text,rating,critique\nok,3,\nfine,4,"{huge}"\n')
    assert_rejected(store, p, r"huge.csv, row 2 \(line 3\), column 'critique': 1,048,577 "
                              r"characters, more than the 1,048,576")
    assert_rejected(store, jsonl(tmp_path, {"text": huge, "rating": 1}),
                    r"row 1 \(line 1\), column 'text': 1,048,577 characters")


@pytest.mark.parametrize("line,holds", [("5", "a number 5"), ("null", "null"),
                                        ("[1, 2]", r"a list \[1, 2\]"), ('"text"', "a string"),
                                        ("true", "true")])
def test_jsonl_lines_must_be_objects(store, tmp_path, line, holds):
    p = jsonl(tmp_path, {"text": "a", "rating": 3}, line)
    assert_rejected(store, p, rf"x.jsonl: line 2 holds {holds}.*; each line must be a JSON object")


def test_jsonl_nan_and_repeated_keys_are_not_json(store, tmp_path):
    assert_rejected(store, jsonl(tmp_path, '{"text": "a", "rating": NaN}'),
                    r"line 1 is not valid JSON \(NaN is not JSON\)")
    assert_rejected(store, jsonl(tmp_path, {"text": "a"}, '{"text": "b", "rating": 2, "rating": 5}'),
                    r"line 2 is not valid JSON \(key 'rating' appears twice\)")


def test_jsonl_text_with_unicode_line_separators_round_trips(store, tmp_path):
    # JSON allows U+2028 unescaped and pandas writes it so; splitlines() would cut the line
    text = "one\u2028two\u2029three"
    import_feedback(store, jsonl(tmp_path, {"text": text, "rating": 4, "annotator": "ann"}))
    path = export_feedback(store.feedback(), "jsonl", tmp_path / "out.jsonl")
    with FeedbackStore(":memory:") as fresh:
        import_feedback(fresh, path)
        assert fresh.feedback().text.tolist() == [text]


@pytest.mark.parametrize("record,column,got", [
    ({"text": 12345, "rating": 3}, "text", "a number 12345"),
    ({"text": {"a": 1}, "rating": 3}, "text", r"an object \{'a': 1\}"),
    ({"text": ["x"], "rating": 3}, "text", r"a list \['x'\]"),
    ({"text": "ok", "rating": 3, "annotator": 7}, "annotator", "a number 7"),
    ({"text": "ok", "rating": 3, "critique": True}, "critique", r"true \(a boolean\)"),
    ({"text": "ok", "rating": 3, "prompt": 1.5}, "prompt", "a number 1.5"),
])
def test_non_text_in_text_fields_jsonl(store, tmp_path, record, column, got):
    p = jsonl(tmp_path, {"text": "fine", "rating": 1}, record)
    assert_rejected(store, p, rf"x.jsonl, row 2 \(line 2\), column '{column}': expected text, "
                              rf"got {got}")


def test_non_text_in_parquet_and_dataframe_columns(store, tmp_path):
    p = tmp_path / "ints.parquet"
    pd.DataFrame({"text": [12345, 2], "rating": [3, 4]}).to_parquet(p)
    assert_rejected(store, p, r"ints.parquet, row 1, column 'text': expected text, got a number")
    p = tmp_path / "bytes.parquet"
    pd.DataFrame({"text": ["ok", "fine"], "rating": [3, 4], "critique": [None, b"\x00x"]}
                 ).to_parquet(p)
    assert_rejected(store, p, r"bytes.parquet, row 2, column 'critique': expected text, got "
                              r"binary data")
    df = pd.DataFrame({"text": ["a", "b"], "rating": [3, 4], "user_id": [1, 2]})
    assert_rejected(store, df, r"DataFrame, row 1, column 'user_id': expected text, got a number")
    df["user_id"] = ["1", "2"]  # the same as text is fine; numbers are fine where numbers go
    df["rating"] = np.array([3, 4], dtype=np.int64)
    assert import_feedback(store, df) == 2
    assert store.feedback().set_index("annotator").rating.to_dict() == {"1": 3, "2": 4}
    assert store.samples().source.unique().tolist() == ["import:DataFrame"]


@pytest.mark.parametrize("bad,code", [("\x00", "0000"), ("\x07", "0007"), ("\x1b", "001B"),
                                      ("\x7f", "007F"), ("\x85", "0085")])
def test_control_characters_are_rejected_not_stored(store, tmp_path, bad, code):
    p = write(tmp_path, "c.csv", f'text,rating,critique\nok,3,\nfine,4,"ab{bad}c"\n')
    assert_rejected(store, p, rf"c.csv, row 2 \(line 3\), column 'critique': character 3 is the "
                              rf"control character U\+{code}; only tab, newline")


def test_lone_surrogates_are_rejected_and_tab_newline_cr_kept(store, tmp_path):
    assert_rejected(store, jsonl(tmp_path, '{"text": "a\\ud800b", "rating": 2}'),
                    r"row 1 \(line 1\), column 'text': character 2 is the control character "
                    r"U\+D800")
    kept = "a\tb\nc\rd"
    import_feedback(store, jsonl(tmp_path, {"text": kept, "rating": 2}))
    assert store.feedback().text.tolist() == [kept]


def test_unknown_columns_are_named_with_the_closest_known_one(store, tmp_path):
    p = write(tmp_path, "typo.csv", "user_id,text,rating,critque\nann,hi,2,too short\n")
    assert_rejected(store, p, r"typo.csv: unknown column 'critque' \(did you mean 'critique'\?\)"
                              r".*extra_columns='ignore'")
    assert_rejected(store, write(tmp_path, "blank.csv", "text,rating,\nhi,2,x\n"),
                    r"column 3 has no name")
    assert import_feedback(store, p, extra_columns="ignore") == 1
    assert store.feedback().critique.isna().all()
    with pytest.raises(ValueError, match="extra_columns must be one of"):
        import_feedback(store, p, extra_columns="drop")
    # names are matched without surrounding spaces and case
    assert import_feedback(store, write(tmp_path, "caps.csv", " Text ,RATING\nyo,5\n")) == 1


def test_ratings_accept_ascii_fullwidth_and_point_zero_only(store, tmp_path):
    good = ["4", "４", "4.0", " 3 ", "５．０", "1"]
    p = write(tmp_path, "ok.csv", "text,rating\n" + "".join(f"t{i},{r}\n" for i, r in enumerate(good)))
    assert import_feedback(store, p) == len(good)
    assert store.feedback().sort_values("sample_id").rating.tolist() == [4, 4, 4, 3, 5, 1]
    import_feedback(store, jsonl(tmp_path, {"text": "j", "rating": 2.0}))
    for bad in ["٤", "४", "④", "⁴", "True", "4.5", "0", "6", "4e0", "+4", "９" * 5000]:
        p = write(tmp_path, "bad.csv", f"text,rating\nok,3\nno,{bad}\n")
        assert_rejected(store, p, r"row 2 \(line 3\), column 'rating': the rating must be a "
                                  r"whole number from 1 to 5")
    for bad in [True, 4.5, "٣", [4]]:
        assert_rejected(store, jsonl(tmp_path, {"text": "j2", "rating": bad}),
                        r"row 1 \(line 1\), column 'rating': the rating must be a whole number")


def test_importing_the_same_rows_again_adds_nothing_and_says_so(store, tmp_path):
    first = import_feedback(store, SEED_CSV)
    events = store.events()
    again = import_feedback(store, SEED_CSV)
    assert (first, first.already_present) == (3, 0)
    assert (again, again.already_present, again.events_added) == (0, 3, 0)
    assert "0 rows imported, 3 already in the log" in again.message
    pd.testing.assert_frame_equal(store.events(), events)
    # one row changed, one new, one repeated inside the file: only the first two add anything
    p = write(tmp_path, "more.csv", "用户ID,生成文本,评分\n1,这是一个很好的文章。,4\n"
                                    "2,我不喜欢这个文章。,2\n9,新的。,5\n9,新的。,5\n")
    more = import_feedback(store, p)
    assert (more, more.already_present, more.samples_added, more.events_added) == (2, 2, 1, 2)
    # an import never overrides a judgement made since: the log keeps the later click
    [sid] = store.feedback().query("annotator == '2'").sample_id
    store.record(int(sid), "rating", 3, "2")
    assert import_feedback(store, p) == 0
    assert store.current(int(sid), "2") == {"rating": 3}


def test_session_import_csv_is_idempotent(session, tmp_path):
    assert session.import_csv(SEED_CSV) == 3
    again = session.import_csv(SEED_CSV)
    assert (again, again.already_present) == (0, 3)
    assert len(session.store.events()) == 3


def test_unjudged_rows_and_truncated_samples(store, tmp_path):
    p = write(tmp_path, "u.csv", "prompt,text,rating,truncated\np,cut off,,true\np,whole,,False\n")
    assert import_feedback(store, p) == 2
    assert store.samples().set_index("text").truncated.to_dict() == {"cut off": True, "whole": False}
    assert import_feedback(store, p).already_present == 2
    assert_rejected(store, write(tmp_path, "t.csv", "text,rating,truncated\nx,1,maybe\n"),
                    r"row 1 \(line 2\), column 'truncated': expected true or false")


def test_lookup_uses_the_migration_3_index(tmp_path):
    with FeedbackStore(tmp_path / "fb.sqlite") as s:
        plan = s.conn.execute("EXPLAIN QUERY PLAN SELECT id FROM samples WHERE prompt_id IS ? "
                              "AND text = ? ORDER BY id LIMIT 1", (None, "x")).fetchall()
        assert "samples_prompt_text" in " ".join(str(tuple(r)) for r in plan)


def test_a_writer_between_snapshot_and_write_is_caught_up(tmp_path, monkeypatch):
    # Lookups run without the write lock; a sample and a judgement another connection adds
    # meanwhile must be found, not duplicated.
    path = tmp_path / "fb.sqlite"
    p = write(tmp_path, "fb.csv", "user_id,prompt,text,rating\nann,P,same,4\nann,Q,new,2\n")
    snapshot = _bulk_import._snapshot

    def snapshot_then_other_writer(conn, keys):
        known = snapshot(conn, keys)
        with FeedbackStore(path) as other:
            [sid] = other.add_samples([SampleRecord("same", prompt="P")])
            other.record(sid, "rating", 4, "ann")
        return known

    with FeedbackStore(path) as s:
        monkeypatch.setattr(_bulk_import, "_snapshot", snapshot_then_other_writer)
        result = import_feedback(s, p)
        assert (result, result.already_present, result.samples_added) == (1, 1, 1)
        assert sorted(s.samples().text) == ["new", "same"] and len(s.events()) == 2


def test_judgements_written_meanwhile_count_only_when_they_are_the_same(tmp_path, monkeypatch):
    path = tmp_path / "fb.sqlite"
    p = write(tmp_path, "fb.csv", "user_id,text,rating\nann,a,4\nann,b,2\n")
    with FeedbackStore(path) as s:
        a, b = s.add_samples([SampleRecord("a"), SampleRecord("b")])
        snapshot = _bulk_import._snapshot

        def snapshot_then_clicks(conn, keys):
            known = snapshot(conn, keys)
            with FeedbackStore(path) as other:
                other.record(a, "rating", 4, "ann")  # the same as row 1: not added twice
                other.record(b, "rating", 5, "zoe")  # someone else's click: changes nothing
            return known

        monkeypatch.setattr(_bulk_import, "_snapshot", snapshot_then_clicks)
        result = import_feedback(s, p)
        assert (result, result.already_present, result.events_added) == (1, 1, 1)
        ev = s.events()
        assert sorted(zip(ev.sample_id, ev.annotator, ev.value)) == [(a, "ann", 4), (b, "ann", 2),
                                                                     (b, "zoe", 5)]


def test_chunked_writes_give_the_same_log_as_one_transaction(tmp_path, monkeypatch):
    # rows 1 and 4 are the same judgement, row 5 adds a critique to row 2's sample: across
    # chunks of two rows they must count and store exactly as in one transaction
    p = write(tmp_path, "c.csv", "user_id,prompt,text,rating,critique\nann,P,a,4,\nann,P,b,2,\n"
                                 "bob,Q,c,5,\nann,P,a,4,\nann,P,b,2,vague\n")
    cols = ["sample_id", "prompt", "text", "annotator", "rating", "critique"]
    with FeedbackStore(":memory:") as whole:
        one = import_feedback(whole, p)
        want = whole.feedback()[cols]
    monkeypatch.setattr(_bulk_import, "CHUNK_ROWS", 2)
    with FeedbackStore(":memory:") as chunked:
        writes = []
        atomic = chunked.atomic
        monkeypatch.setattr(chunked, "atomic", lambda: writes.append(1) or atomic())
        many = import_feedback(chunked, p)
        pd.testing.assert_frame_equal(chunked.feedback()[cols], want)
    assert len(writes) == 3  # three transactions: other writers got in between
    assert repr(many) == repr(one) and (many, many.already_present) == (4, 1)


_HOLD_LOCK = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
con.execute("ROLLBACK")
"""


def test_open_while_another_process_writes_waits_then_says_busy(tmp_path):
    path = tmp_path / "fb.sqlite"
    FeedbackStore(path).close()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(TimeoutError, match=rf"feedback log .*fb.sqlite is busy.*timeout=0.2 s"):
            FeedbackStore(path, timeout=0.2)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with FeedbackStore(path, timeout=0.2) as s:  # free again: opens at once
        assert s.samples().empty
    with pytest.raises(ValueError, match="timeout must be"):
        FeedbackStore(path, timeout=float("nan"))


FORMULAS = ["=1+1", "+cmd|' /C calc'!A0", "-2", "@SUM(A1)", "\tx", "\rx", "'=already quoted",
            "''+two", "plain 'quote", "a=b"]


def test_csv_export_neutralises_formulas_and_round_trips(store, tmp_path):
    store.add_samples([SampleRecord(t, prompt="=HYPERLINK(\"http://x\")") for t in FORMULAS])
    df = store.feedback()
    path = export_feedback(df, "csv", tmp_path / "out.csv")
    with open(path, newline="", encoding="utf-8") as f:
        cells = {row["text"]: row["prompt"] for row in csv.DictReader(f)}
    assert set(cells.values()) == {"'=HYPERLINK(\"http://x\")"}
    assert sorted(cells) == sorted(["'" + t for t in FORMULAS[:8]] + FORMULAS[8:])
    pd.testing.assert_frame_equal(read_feedback(path), df.drop(columns="correction_meta"))
    with FeedbackStore(":memory:") as fresh:  # re-import, export again: no quote piles up
        import_feedback(fresh, path)
        assert sorted(fresh.feedback().text) == sorted(FORMULAS)
        again = export_feedback(fresh.feedback(), "csv", tmp_path / "again.csv")
        assert sorted(read_feedback(again).text) == sorted(FORMULAS)
    for kind in ("jsonl", "parquet"):  # exact text there
        other = export_feedback(df, kind, tmp_path / f"out.{kind}")
        assert sorted(read_feedback(other).text) == sorted(FORMULAS)
        if kind == "jsonl":
            assert "'=1+1" not in other.read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_exports_are_private(rich_store, tmp_path, kind):
    old = os.umask(0o022)
    try:
        path = export_feedback(rich_store.feedback(), kind, tmp_path / f"out.{kind}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [f"out.{kind}"]  # no temporary left
