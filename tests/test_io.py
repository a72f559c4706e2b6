"""CSV / JSONL / Parquet import and export of feedback."""

import json

import pandas as pd
import pytest

from lf_widgets.io import FeedbackImportError, export_feedback, import_feedback, read_feedback
from lf_widgets.store import FeedbackStore, SampleRecord

from pathlib import Path

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
