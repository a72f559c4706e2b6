"""Training-file exports (TRL SFT/DPO/KTO, OpenAI SFT/DPO) and PII scrubbing."""

import json
from collections import Counter

import pytest

from lf_widgets.data import build_examples
from lf_widgets.exports import (EXPORT_FORMATS, ScrubConfig, export_training, scrub_text,
                                to_dataset, training_records)
from lf_widgets.store import FeedbackStore, SampleRecord

PROMPT, PROMPT2 = "Say hi", "Write a poem about the sea"
CORRECTION = "Hello! How can I help you today?"


@pytest.fixture
def feedback(session):
    """Four samples of one prompt rated 5/1/4/2, a correction, a critique, a preference on a
    second prompt, and an import without a prompt rated 5."""
    a, b, c, d = session.generate(PROMPT, n=4, max_new_tokens=6, seed=0, progress=False)
    p, q = session.generate(PROMPT2, n=2, max_new_tokens=6, seed=1, progress=False)
    for sample, rating in zip((a, b, c, d), (5, 1, 4, 2)):
        session.record_rating(sample.sample_id, rating)
    session.record_correction(d.sample_id, CORRECTION)
    session.record_critique(b.sample_id, "too short")
    session.store.record(p.sample_id, "preference", {"other": q.sample_id, "choice": "a"}, "ann")
    [imp] = session.store.add_samples([SampleRecord(text="An imported answer.", source="import:x")])
    session.store.record(imp, "rating", 5, "bob")
    texts = {s.sample_id: s.text for s in (a, b, c, d, p, q)}
    assert all(t.strip() for t in texts.values()) and len(set(texts.values())) == 6
    return session, dict(a=a, b=b, c=c, d=d, p=p, q=q, imp=imp)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def user(text):
    return [{"role": "user", "content": text}]


def bot(text):
    return [{"role": "assistant", "content": text}]


# -- the mapping ----------------------------------------------------------------------------------
def test_records_follow_the_training_mapping(feedback):
    s, ids = feedback
    data = build_examples(s.store, s.tokenizer)  # what training itself builds
    sft, _ = training_records(s.store, "trl-sft")
    dpo, _ = training_records(s.store, "trl-dpo")
    kto, _ = training_records(s.store, "trl-kto")
    assert (len(sft), len(dpo), len(kto)) == (len(data.sft), len(data.pairs), len(data.kto)) == (4, 8, 6)
    assert Counter(r["source"] for r in sft) == Counter(e.source for e in data.sft)
    assert Counter(r["source"] for r in dpo) == {"ratings": 6, "correction": 1, "preference": 1}
    assert Counter(r["label"] for r in kto) == {True: 4, False: 2}
    a, b, d = ids["a"], ids["b"], ids["d"]
    by_id = {r["sample_id"]: r for r in sft if r["source"] == "rating"}
    assert by_id[a.sample_id]["prompt"] == user(PROMPT)
    assert by_id[a.sample_id]["completion"] == bot(a.text)  # the stored text, not a decoding
    assert by_id[ids["imp"]]["prompt"] == user("")  # imports: an empty user turn, as in training
    assert by_id[ids["imp"]]["annotators"] == ["bob"]
    [fix] = [r for r in sft if r["source"] == "correction"]
    assert fix["completion"] == bot(CORRECTION) and fix["sample_id"] == d.sample_id
    [pair] = [r for r in dpo if r["source"] == "correction"]
    assert pair["chosen"] == bot(CORRECTION) and pair["rejected"] == bot(d.text)
    assert pair["chosen_sample_id"] is None and pair["rejected_sample_id"] == d.sample_id
    [pref] = [r for r in dpo if r["source"] == "preference"]
    assert pref["prompt"] == user(PROMPT2)
    assert (pref["chosen"], pref["rejected"]) == (bot(ids["p"].text), bot(ids["q"].text))
    [bad] = [r for r in kto if r["sample_id"] == b.sample_id]
    assert bad["label"] is False and bad["critiques"] == ["too short"]
    assert bad["annotators"] == ["ann"]


def test_undo_and_plain_form(tmp_path):
    with FeedbackStore(":memory:") as store:
        x, y = store.add_samples([SampleRecord(text="Fine answer."), SampleRecord(text="Meh.")])
        store.record(x, "rating", 5, "ann")
        store.record(y, "rating", 4, "ann")
        store.undo("ann")  # y's rating is gone
        records, _ = training_records(store, "trl-sft")
        assert records == [{"prompt": "", "completion": "Fine answer.", "sample_id": x,
                            "source": "rating", "annotators": ["ann"], "critiques": []}]
        chat, _ = training_records(store, "trl-sft", chat=True)
        assert chat[0]["prompt"] == user("") and chat[0]["completion"] == bot("Fine answer.")
        with pytest.raises(ValueError, match="DPO needs preference pairs"):
            export_training(store, "trl-dpo", tmp_path / "none.jsonl")
        assert not (tmp_path / "none.jsonl").exists()
        with pytest.raises(ValueError, match="kind must be one of"):
            training_records(store, "csv")


# -- TRL files train ------------------------------------------------------------------------------
def _load(path, tmp_path):
    from datasets import load_dataset

    return load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))


def _args(config_cls, tmp_path, **kw):
    return config_cls(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2,
                      report_to=[], save_strategy="no", use_cpu=True, logging_steps=1,
                      disable_tqdm=True, dataloader_num_workers=0, max_length=128, **kw)


def _train(trainer):
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 2 and losses and all(x == x for x in losses)


def test_trl_sft_file_trains(feedback, tmp_path):
    from trl import SFTConfig, SFTTrainer

    from lf_widgets.models import tiny_model

    s, _ = feedback
    result = export_training(s.store, "trl-sft", tmp_path / "sft.jsonl")
    assert result.records == 4 and result.path == tmp_path / "sft.jsonl"
    ds = _load(result.path, tmp_path)
    assert len(ds) == 4 and {"prompt", "completion", "sample_id", "annotators"} <= set(ds.column_names)
    model, tok = tiny_model(seed=1)
    _train(SFTTrainer(model=model, args=_args(SFTConfig, tmp_path), train_dataset=ds,
                      processing_class=tok))


def test_trl_dpo_file_trains(feedback, tmp_path):
    from trl import DPOConfig, DPOTrainer

    from lf_widgets.models import tiny_model

    s, _ = feedback
    ds = _load(export_training(s.store, "trl-dpo", tmp_path / "dpo.jsonl").path, tmp_path)
    assert len(ds) == 8 and {"prompt", "chosen", "rejected"} <= set(ds.column_names)
    model, tok = tiny_model(seed=1)
    ref, _ = tiny_model(seed=1)  # an instance: TRL would otherwise load "tiny" from the hub
    _train(DPOTrainer(model=model, ref_model=ref, args=_args(DPOConfig, tmp_path), train_dataset=ds,
                      processing_class=tok))


def test_trl_kto_file_trains(feedback, tmp_path):
    from trl import KTOConfig, KTOTrainer

    from lf_widgets.models import tiny_model

    s, _ = feedback
    ds = _load(export_training(s.store, "trl-kto", tmp_path / "kto.jsonl").path, tmp_path)
    assert sorted(ds["label"]) == [False, False, True, True, True, True]
    model, tok = tiny_model(seed=1)
    ref, _ = tiny_model(seed=1)  # an instance: TRL would otherwise load "tiny" from the hub
    _train(KTOTrainer(model=model, ref_model=ref, args=_args(KTOConfig, tmp_path), train_dataset=ds,
                      processing_class=tok))


def test_to_dataset(feedback):
    s, _ = feedback
    ds = to_dataset(s.store, "trl-kto")
    assert len(ds) == 6 and ds.features["label"].dtype == "bool"


# -- OpenAI files ---------------------------------------------------------------------------------
def test_openai_sft_file(feedback, tmp_path):
    s, ids = feedback
    lines = read_jsonl(export_training(s.store, "openai-sft", tmp_path / "o.jsonl").path)
    assert len(lines) == 4
    for line in lines:
        assert set(line) == {"messages"}
        assert [m["role"] for m in line["messages"]] == ["user", "assistant"]
        assert all(set(m) == {"role", "content"} and isinstance(m["content"], str)
                   for m in line["messages"])
    pairs = {(line["messages"][0]["content"], line["messages"][1]["content"]) for line in lines}
    assert pairs == {(PROMPT, ids["a"].text), (PROMPT, ids["c"].text), (PROMPT, CORRECTION),
                     ("", "An imported answer.")}


def test_openai_dpo_file(feedback, tmp_path):
    s, ids = feedback
    lines = read_jsonl(export_training(s.store, "openai-dpo", tmp_path / "o.jsonl").path)
    assert len(lines) == 8
    for line in lines:
        assert set(line) == {"input", "preferred_output", "non_preferred_output"}
        assert set(line["input"]) == {"messages"}
        assert [m["role"] for m in line["input"]["messages"]] == ["user"]
        for key in ("preferred_output", "non_preferred_output"):
            assert [set(m) for m in line[key]] == [{"role", "content"}]
            assert line[key][0]["role"] == "assistant"
    assert {"input": {"messages": user(PROMPT)}, "preferred_output": bot(CORRECTION),
            "non_preferred_output": bot(ids["d"].text)} in lines
    assert {"input": {"messages": user(PROMPT2)}, "preferred_output": bot(ids["p"].text),
            "non_preferred_output": bot(ids["q"].text)} in lines


def test_file_is_utf8_and_replaced_atomically(tmp_path):
    with FeedbackStore(":memory:") as store:
        [x] = store.add_samples([SampleRecord(text="这是一个很好的文章。", prompt="写一句话")])
        store.record(x, "rating", 5, "用户1")
        path = tmp_path / "sft.jsonl"
        path.write_text("old", encoding="utf-8")
        export_training(store, "openai-sft", path)
        assert "这是一个很好的文章。" in path.read_bytes().decode("utf-8")  # not \u escapes
        assert [p.name for p in tmp_path.iterdir()] == ["sft.jsonl"]  # no temp file left


# -- PII ------------------------------------------------------------------------------------------
# Unicode addresses count as e-mails: they identify a person just as well.
EMAILS = ["a.b+c@ex-ample.co.uk", "张三@例子.中国", "john@doe.com", "josé@exemple.fr"]
PHONES = ["+1 (415) 555-0100", "415-555-0100", "+44 20 7946 0958", "13812345678",
          "+86 138 1234 5678"]
CLEAN = ["In 2024 I rated it 5 of 5.", "It costs 12.50 now, in version 1.2.3.",
         "Released 2024-01-15; order 12345; pi is 3.14159265; 1,234,567 users; 10:30 to 11:45.",
         "评分：5分，价格12.50元，2024年。"]


@pytest.mark.parametrize("text", EMAILS)
def test_email_scrubbed(text):
    assert scrub_text(f"mail {text} now", ScrubConfig()) == ("mail [email] now", Counter(email=1))


@pytest.mark.parametrize("text", PHONES)
def test_phone_scrubbed(text):
    assert scrub_text(f"call {text}, please", ScrubConfig()) == ("call [phone], please",
                                                                Counter(phone=1))


def test_pii_next_to_chinese_text_and_sentence_end():
    text, counts = scrub_text("电话13812345678。写信给john@doe.com谢谢，或john@doe.com.")
    assert text == "电话[phone]。写信给[email]谢谢，或[email]."
    assert counts == Counter(phone=1, email=2)


@pytest.mark.parametrize("text", CLEAN)
def test_text_without_pii_is_unchanged(text):
    assert scrub_text(text, ScrubConfig()) == (text, Counter())


def test_custom_patterns_and_replacement():
    config = ScrubConfig(phones=False, patterns={"ssn": r"\b\d{3}-\d{2}-\d{4}\b"},
                         replacement="<{name}>")
    text, counts = scrub_text("ssn 123-45-6789, call 415-555-0100, x@y.org", config)
    assert text == "ssn <ssn>, call 415-555-0100, <email>"
    assert counts == Counter(ssn=1, email=1)


def test_export_scrubs_every_text_field(tmp_path):
    with FeedbackStore(":memory:") as store:
        prompt = "Contact " + " and ".join(EMAILS[:2]) + "?"  # 2 e-mails
        good, bad = store.add_samples([
            SampleRecord(text=f"Write to {EMAILS[2]} or call {PHONES[0]} / {PHONES[1]}.", prompt=prompt),
            SampleRecord(text=f"Try {PHONES[2]}, {PHONES[3]} or {PHONES[4]}.", prompt=prompt),
            SampleRecord(text=CLEAN[0], prompt=CLEAN[1])])[:2]
        store.record(good, "rating", 5, "ann")
        store.record(bad, "rating", 1, "ann")
        store.record(bad, "critique", "never print a number like 13812345678", "ann")
        clean = store.find_sample(CLEAN[0], CLEAN[1])
        store.record(clean, "rating", 4, "ann")

        result = export_training(store, "trl-dpo", tmp_path / "dpo.jsonl", scrub=True)
        [pair] = [r for r in read_jsonl(result.path) if r["prompt"][0]["content"] != CLEAN[1]]
        assert pair["prompt"] == user("Contact [email] and [email]?")
        assert pair["chosen"] == bot("Write to [email] or call [phone] / [phone].")
        assert pair["rejected"] == bot("Try [phone], [phone] or [phone].")
        assert pair["rejected_critiques"] == ["never print a number like [phone]"]
        # 2 + 1 e-mails, 2 + 3 + 1 phones, in the one pair that has them
        assert result.scrub_report.counts == Counter(email=3, phone=6)
        assert result.scrub_report.records_changed == 1

        kto, report = training_records(store, "trl-kto", scrub=True)
        assert report.counts == Counter(email=2 * 2 + 1, phone=2 + 3 + 1)
        [clean_rec] = [r for r in kto if r["sample_id"] == clean]
        assert clean_rec["prompt"] == user(CLEAN[1]) and clean_rec["completion"] == bot(CLEAN[0])
        raw, off = training_records(store, "trl-kto")
        assert not off.enabled and off.total == 0 and raw[0]["prompt"] == user(prompt)


def test_every_format_is_listed():
    assert EXPORT_FORMATS == ("trl-sft", "trl-dpo", "trl-kto", "openai-sft", "openai-dpo")


def test_session_export_dispatch(session, tmp_path):
    samples = session.generate(["p"], n=2, max_new_tokens=4, seed=0, progress=False)
    session.record_rating(samples[0].sample_id, 5)
    result = session.export("openai-sft", tmp_path / "o.jsonl")
    assert result.records == 1 and result.path.is_file()
    assert session.to_dataset("trl-sft").num_rows == 1
    assert session.export("csv", tmp_path / "f.csv").is_file()
    with pytest.raises(ValueError, match="kind must be one of"):
        session.export("xlsx", tmp_path / "x.xlsx")
