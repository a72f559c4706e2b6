"""The capability guard: NLL per token of general text, base vs tuned, and its warning."""

import math

import pytest
import torch
import torch.nn.functional as F

from lf_widgets.capability import CAPABILITY_WARN, capability_nll, capability_warning
from lf_widgets.capability_texts import CAPABILITY_TEXTS
from lf_widgets.scoring import CAPABILITY_ROW
from tests.helpers import finished_samples


def _by_hand(owner, texts):
    """Plain cross-entropy over each text's tokens after the first, one text at a time."""
    def run():
        total, tokens = 0.0, 0
        with torch.no_grad():
            for text in texts:
                ids = torch.tensor([owner.tokenizer(text, add_special_tokens=False)["input_ids"]])
                logits = owner.model(input_ids=ids).logits[0, :-1]  # (T-1, V)
                total += F.cross_entropy(logits.float(), ids[0, 1:], reduction="sum").item()
                tokens += ids.shape[1] - 1
        return total / tokens
    return owner.call(run)


def _train(s, steps=3, lr=1e-2):
    for i, x in enumerate(finished_samples(s, ["hello", "world"], n=2, max_new_tokens=6)):
        s.record_rating(x.sample_id, 5)
    s.train("sft", steps=steps, lr=lr, checkpoint_every=0).wait(60)


def test_texts_are_shipped_varied_and_plain():
    assert len(CAPABILITY_TEXTS) >= 40 and len(set(CAPABILITY_TEXTS)) == len(CAPABILITY_TEXTS)
    assert all(20 <= len(t.split()) <= 80 for t in CAPABILITY_TEXTS)


def test_no_adapter_base_equals_tuned_and_matches_plain_cross_entropy(session):
    out = capability_nll(session.model, texts=CAPABILITY_TEXTS[:5], batch_size=2)
    assert out["base"] == out["tuned"] and out["change"] == 0 and out["warning"] is None
    assert out["texts"] == 5 and out["tokens"] > 0
    assert out["base"] == pytest.approx(_by_hand(session.model, CAPABILITY_TEXTS[:5]), rel=1e-5)
    # the batch size changes nothing (padding is not scored)
    assert capability_nll(session.model, texts=CAPABILITY_TEXTS[:5], batch_size=5)["base"] == \
        pytest.approx(out["base"], rel=1e-5)


def test_tuned_differs_base_stays_the_frozen_model(fresh):
    before = capability_nll(fresh.model)["base"]
    _train(fresh)
    out = capability_nll(fresh.model)
    assert out["base"] == pytest.approx(before, rel=1e-6) and out["tuned"] != out["base"]
    assert out["change"] == pytest.approx((out["tuned"] - out["base"]) / out["base"])
    # tuned by hand: the adapter on; base by hand: the adapter off (not a cached number)
    assert out["tuned"] == pytest.approx(_by_hand(fresh.model, CAPABILITY_TEXTS), rel=1e-5)
    with_base = fresh.model.call(lambda: _base_by_hand(fresh.model))
    assert out["base"] == pytest.approx(with_base, rel=1e-5)


def _base_by_hand(owner):
    with owner.use("base"):
        return _by_hand(owner, CAPABILITY_TEXTS)  # inline: already on the model's thread


def test_warning_threshold_is_relative_and_documented():
    assert CAPABILITY_WARN == 0.05
    assert capability_warning(2.0, 2.0 * 1.049) is None
    assert capability_warning(2.0, 1.5) is None  # better is never a warning
    text = capability_warning(2.0, 2.2)
    assert "+10.0%" in text and "5%" in text
    assert capability_warning(float("nan"), 3.0) is None


def test_bad_texts_are_refused(session):
    with pytest.raises(ValueError):
        capability_nll(session.model, texts=[])
    with pytest.raises(ValueError):
        capability_nll(session.model, texts=["fine", "  "])
    with pytest.raises(ValueError):
        capability_nll(session.model, batch_size=0)


def test_evaluate_has_the_capability_row_and_warning(fresh):
    _train(fresh)
    df = fresh.evaluate()
    row = df.loc[CAPABILITY_ROW]
    assert row["split"] == "general text" and row["examples"] == len(CAPABILITY_TEXTS)
    guard = df.attrs["capability"]
    assert (row["base"], row["tuned"]) == (guard["base"], guard["tuned"])
    assert row["change"] == pytest.approx(guard["tuned"] - guard["base"])
    assert df.attrs["warning"] == guard["warning"]
    # the feedback rows are still there, in sample
    assert (df.drop(index=CAPABILITY_ROW).split == "in sample").all()


def test_evaluate_carries_the_warning_beyond_the_threshold(fresh, monkeypatch):
    # The tiny model's logits are near uniform whatever a LoRA does (its final norm and tiny
    # tied embeddings bound them), so it cannot lose 5 %: lower the threshold to see the wiring.
    from lf_widgets import capability

    _train(fresh, steps=2)
    assert fresh.evaluate().attrs["warning"] is None
    monkeypatch.setattr(capability, "CAPABILITY_WARN", -0.5)
    df = fresh.evaluate()
    assert df.attrs["capability"]["warning"] == df.attrs["warning"]
    assert "capability" in df.attrs["warning"] and "-50%" in df.attrs["warning"]
