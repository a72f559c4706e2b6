"""Training-file exports (TRL SFT/DPO/KTO, OpenAI SFT/DPO) and PII scrubbing."""

import json
import stat
from collections import Counter
from typing import NamedTuple

import pytest

from lf_widgets.data import build_examples
from lf_widgets.exports import (EXPORT_FORMATS, NO_PROMPT, ScrubConfig, export_training,
                                scrub_text, to_dataset, training_records)
from lf_widgets.feedback import CUT_OFF
from lf_widgets.store import FeedbackStore, SampleRecord

PROMPT, PROMPT2 = "Say hi", "Write a poem about the sea"
CORRECTION = "Hello! How can I help you today?"
ANSWERS = {"a": "Hello!", "b": "Hi", "c": "Hey there, how are you?", "d": "Go away.",
           "p": "Waves roll in, waves roll out.", "q": "The sea is wet."}


class Sample(NamedTuple):
    sample_id: int
    text: str


class Feedback(NamedTuple):
    store: FeedbackStore
    tokenizer: object


def generated(tok, text, prompt, truncated=False):
    """A sample as generation stores it: its token ids, ending with <|im_end|> unless cut off."""
    ids = tok(text, add_special_tokens=False)["input_ids"] + ([] if truncated else [2])
    return SampleRecord(text=text, prompt=prompt, token_ids=ids, truncated=truncated)


@pytest.fixture
def feedback(tiny):
    """Four samples of one prompt rated 5/1/4/2, a correction, a critique, a preference on a
    second prompt, and an import without a prompt rated 5."""
    tok = tiny[1]
    store = FeedbackStore(":memory:")
    records = [generated(tok, ANSWERS[k], PROMPT if k in "abcd" else PROMPT2) for k in ANSWERS]
    ids = {k: Sample(i, ANSWERS[k]) for k, i in zip(ANSWERS, store.add_samples(records))}
    for key, rating in zip("abcd", (5, 1, 4, 2)):
        store.record(ids[key].sample_id, "rating", rating, "ann")
    store.record(ids["d"].sample_id, "correction", CORRECTION, "ann")
    store.record(ids["b"].sample_id, "critique", "too short", "ann")
    store.record(ids["p"].sample_id, "preference", {"other": ids["q"].sample_id, "choice": "a"}, "ann")
    [imp] = store.add_samples([SampleRecord(text="An imported answer.", source="import:x")])
    store.record(imp, "rating", 5, "bob")
    yield Feedback(store, tok), dict(ids, imp=imp)
    store.close()


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
                            "source": "rating", "annotators": ["ann"], "critiques": [],
                            "correction_meta": None}]
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
    result = export_training(s.store, "openai-sft", tmp_path / "o.jsonl")
    lines = read_jsonl(result.path)
    # the import has no prompt: OpenAI's format check refuses an empty user turn, so it is left
    # out (TRL files keep it, see test_records_follow_the_training_mapping) and counted
    assert len(lines) == result.records == 3 and result.left_out == Counter({NO_PROMPT: 1})
    for line in lines:
        assert set(line) == {"messages"}
        assert [m["role"] for m in line["messages"]] == ["user", "assistant"]
        assert all(set(m) == {"role", "content"} and isinstance(m["content"], str)
                   and m["content"].strip() for m in line["messages"])
    pairs = {(line["messages"][0]["content"], line["messages"][1]["content"]) for line in lines}
    assert pairs == {(PROMPT, ids["a"].text), (PROMPT, ids["c"].text), (PROMPT, CORRECTION)}


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


def test_openai_files_never_have_an_empty_user_turn(tmp_path):
    with FeedbackStore(":memory:") as store:
        imp, other = store.add_samples([SampleRecord(text="Imported answer."),
                                        SampleRecord(text="Fine.", prompt="Say something")])
        store.record(imp, "rating", 5, "ann")
        store.record(imp, "correction", "A better imported answer.", "ann")  # a pair, no prompt
        store.record(other, "rating", 5, "ann")
        sft = export_training(store, "openai-sft", tmp_path / "sft.jsonl")
        dpo_records, _ = training_records(store, "openai-dpo")
        assert dpo_records == []  # the one pair has no prompt
        with pytest.raises(ValueError, match="no openai-dpo record: its 1 examples have no prompt"):
            export_training(store, "openai-dpo", tmp_path / "dpo.jsonl")
        assert not (tmp_path / "dpo.jsonl").exists()
        trl, _ = training_records(store, "trl-dpo")  # TRL keeps it (plain form: no prompt)
        assert [r["prompt"] for r in trl] == [""]
    lines = read_jsonl(sft.path)
    assert [line["messages"] for line in lines] == [user("Say something") + bot("Fine.")]
    assert sft.records == 1 and sft.left_out == Counter({NO_PROMPT: 2})  # rating + correction


def test_cut_off_samples_are_no_target_in_any_export(tiny, tmp_path):
    tok = tiny[1]
    with FeedbackStore(":memory:") as store:
        cut, done, bad = store.add_samples([
            generated(tok, "The sea is", PROMPT2, truncated=True),
            generated(tok, "The sea is wide.", PROMPT2),
            generated(tok, "Sea sea sea sea", PROMPT2, truncated=True)])
        for sample, rating in ((cut, 5), (done, 4), (bad, 1)):
            store.record(sample, "rating", rating, "ann")
        store.record(cut, "correction", "The sea is deep.", "ann")
        sft, _ = training_records(store, "trl-sft")
        assert [(r["source"], r["completion"]) for r in sft] == [
            ("rating", bot("The sea is wide.")), ("correction", bot("The sea is deep."))]
        kto, _ = training_records(store, "trl-kto")
        assert [(r["completion"], r["label"]) for r in kto] == [
            (bot("The sea is wide."), True), (bot("Sea sea sea sea"), False),
            (bot("The sea is deep."), True)]  # cut off and bad is a fine bad example
        dpo = read_jsonl(export_training(store, "openai-dpo", tmp_path / "d.jsonl").path)
        # a pair may have cut-off sides: both end at the cut, the pair still says which is better
        assert sorted((r["preferred_output"][0]["content"], r["non_preferred_output"][0]["content"])
                      for r in dpo) == sorted([
            ("The sea is", "The sea is wide."), ("The sea is", "Sea sea sea sea"),
            ("The sea is wide.", "Sea sea sea sea"),
            ("The sea is deep.", "The sea is")])  # the correction ≻ the cut original
        result = export_training(store, "openai-sft", tmp_path / "s.jsonl")
        assert result.records == 2 and result.left_out == Counter({CUT_OFF: 1})
        assert not export_training(store, "trl-dpo", tmp_path / "t.jsonl").left_out
        # the training examples agree, and the cleaning summary says why
        data = build_examples(store, tok)
        assert (len(data.sft), len(data.pairs), len(data.kto)) == (len(sft), len(dpo), len(kto))
        assert data.summary()[f"dropped: {CUT_OFF}"].tolist() == [1, 0, 1]
        opted_in, _ = training_records(store, "trl-sft", truncated_targets=True)
        assert len(opted_in) == 3


def test_exports_are_private_files(tmp_path):
    with FeedbackStore(":memory:") as store:
        [x] = store.add_samples([SampleRecord(text="Fine answer.", prompt="q")])
        store.record(x, "rating", 5, "ann")
        for kind in EXPORT_FORMATS[:1] + EXPORT_FORMATS[3:4]:
            path = export_training(store, kind, tmp_path / "out" / f"{kind}.jsonl").path
            assert stat.S_IMODE(path.stat().st_mode) == 0o600


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
    # a correction: 4 tokens of the tiny random model are cut off, no SFT target themselves
    session.record_correction(samples[0].sample_id, "A complete answer.")
    result = session.export("openai-sft", tmp_path / "o.jsonl")
    assert result.records == 1 and result.path.is_file()
    assert session.to_dataset("trl-sft").num_rows == 1
    assert session.export("csv", tmp_path / "f.csv").is_file()
    with pytest.raises(ValueError, match="kind must be one of"):
        session.export("xlsx", tmp_path / "x.xlsx")
