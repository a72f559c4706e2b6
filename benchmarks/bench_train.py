"""Training-step benchmark: our LoRA DPO / KTO / SFT steps against TRL's trainers, side by side.

One process, one model (the offline default, fp32 on CPU; bf16 on CUDA), the same synthetic
feedback, the same LoRA (r=8, alpha=16, dropout 0, all linear layers), batch size, sequence lengths,
learning rate, optimizer (AdamW), beta (0.1), max_length and gradient clipping, gradient
checkpointing off on both sides. Printed: examples/s (pairs/s for DPO) for each side, the ratio
ours/TRL against its target, and the model-FLOPs utilisation (MFU) of our steps against a matmul
peak measured in the same run.

How each side is timed
----------------------
* Ours: the real ``Session.train`` path. A Session is built on the loaded model with a temporary
  feedback log filled with synthetic rated samples (token ids stored, so prompts and completions
  have exactly the requested lengths); ``session.train(objective, ...)`` queues its steps as jobs
  on the model owner's thread (``LocalModel``'s worker), each one ``lf_widgets.step.train_step``,
  and each step's ``StepMetrics.seconds`` is the step as the trainer times it (collate, reference
  log-probs or cache look-up, forward, backward, clipping, optimizer step). A listener on the
  ``"step"`` event (called on that thread) reads the owner's reference cache's miss counter after
  every step, so each step is known to have computed reference log-probs (first epoch) or not
  (steady state). Where memory is small (Binder) the trainer runs each batch in passes of at most
  ``CPU_PASS_TOKENS`` padded tokens; ``--one-pass`` also times the whole batch in one pass
  (``pass_tokens=0``), as TRL runs it.
* TRL: ``DPOTrainer`` (default, and with ``precompute_ref_log_probs=True``), ``KTOTrainer`` and
  ``SFTTrainer`` on a fresh copy of the same base model, with the same LoRA as ``peft_config``,
  given a ``datasets.Dataset`` built in memory whose chat-template tokenisation gives exactly the
  same token ids as ours (checked). A ``TrainerCallback`` times ``on_step_begin`` ->
  ``on_step_end`` (forward, backward, clipping, optimizer step; data loading is outside the window,
  which favours TRL slightly). TRL's ``train()`` runs on the main thread, as a script runs it
  (``--trl-thread owner`` runs it, and the matmul peaks, on our model owner's thread instead:
  both sides then share one thread and one OpenMP team).
* Warm-up steps are dropped; the first segment of each contender drops ``--warmup`` steps, later
  segments one (a new run builds a new optimizer). The contenders run in interleaved segments
  (ours, TRL, TRL, ours, ...) so load from other processes hits both; figures are medians of
  per-step examples/s.
* DPO and KTO: ours first runs one full epoch over the pool (reference log-probs computed and
  cached: "first epoch"), then the interleaved segments measure the steady state (DPO: every
  reference cached; KTO: the matched rows and the fixed KL partners cached).
* MFU counts 4·N·T FLOPs for a LoRA forward+backward over T tokens (N = base-model parameters),
  plus 2·N·T for every no-grad forward (KTO's KL rows, reference rows on a cache miss); the peak
  is the best of large ``torch.mm`` in the training dtype, timed at the start, before every
  segment and at the end (their median shows how busy the machine was).
* CPU-time columns (CPU only) repeat the medians with process CPU seconds instead of wall seconds:
  less sensitive to other processes' load, though not immune. Where our steps (owner's thread)
  use fewer CPU-seconds per wall-second than TRL's (main thread), this column also shows what
  the two threads' OpenMP teams cost.
* On CUDA our steps are timed by the trainer without a final synchronize (its ``.item()`` calls
  synchronize inside the step; only the small LoRA optimizer update may spill into the next step);
  TRL's callback synchronizes.

Usage
-----
    python benchmarks/bench_train.py                       # default model, all objectives
    python benchmarks/bench_train.py --objectives dpo --steps 12
    python benchmarks/bench_train.py --quick               # tiny model, seconds: a smoke test
    python benchmarks/bench_train.py --device cuda         # bf16, on a GPU machine
    python benchmarks/bench_train.py --profile             # + step parts and torch.profiler tables
    python benchmarks/bench_train.py --trl-thread owner    # TRL on our model's thread too
    python benchmarks/bench_train.py --one-pass            # + ours with the whole batch in one pass
"""

from __future__ import annotations

import os

# Offline and quiet, before transformers / datasets / TRL are imported.
for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "WANDB_DISABLED": "true"}.items():
    os.environ.setdefault(_k, _v)

import argparse
import contextlib
import copy
import gc
import io
import logging
import math
import random
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)  # TRL/transformers/peft chatter; errors still raise

TARGETS = {  # (comparison key, minimum ratio ours / TRL): issue 9's acceptance
    "dpo": ("TRL DPOTrainer (default)", 2.0),
    "dpo_pre": ("TRL DPOTrainer (precompute_ref_log_probs)", 1.5),
    "kto": ("TRL KTOTrainer", 1.6),
    "sft": ("TRL SFTTrainer", 1.1),
}
MFU_TARGET = 0.55
LR, BETA = 2e-4, 0.1
LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target": "all-linear"}


# -- measurement helpers ---------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 5) -> tuple[float, float]:
    """Best FLOP/s of ``reps`` n×n @ n×n ``torch.mm`` in ``dtype`` on ``device``, and the best
    FLOP per CPU-second of the process (the same matmuls; CPU only, else nan)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up (thread pool, cuBLAS handle)
    _sync(device)
    best = best_cpu = math.inf
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return 2 * n**3 / best, (2 * n**3 / best_cpu if device.type == "cpu" and best_cpu > 0 else math.nan)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


@dataclass
class Steps:
    """Per-step measurements of one contender."""

    name: str
    seconds: list[float] = field(default_factory=list)  # wall clock
    cpu: list[float] = field(default_factory=list)  # process CPU seconds (all threads)
    examples: list[int] = field(default_factory=list)
    flops: list[float] = field(default_factory=list)
    misses: list[int] = field(default_factory=list)  # reference rows computed (ours only)

    def add(self, seconds, cpu, examples, flops=0.0, misses=0):
        self.seconds.append(seconds)
        self.cpu.append(cpu)
        self.examples.append(examples)
        self.flops.append(flops)
        self.misses.append(misses)

    @property
    def n(self) -> int:
        return len(self.seconds)

    @property
    def rate(self) -> float:  # median examples/s
        return median([e / s for e, s in zip(self.examples, self.seconds)])

    @property
    def flop_rate(self) -> float:  # median FLOP/s
        return median([f / s for f, s in zip(self.flops, self.seconds)])

    @property
    def step_s(self) -> float:
        return median(self.seconds)

    @property
    def cpu_rate(self) -> float:  # median examples per CPU-second (robust to other processes' load)
        return median([e / c for e, c in zip(self.examples, self.cpu) if c > 0])

    @property
    def cpu_flop_rate(self) -> float:  # median FLOP per CPU-second
        return median([f / c for f, c in zip(self.flops, self.cpu) if c > 0])


# -- synthetic feedback of controlled token length ------------------------------------------------------
class Synth:
    """Prompts and completions whose chat-template tokenisation has exactly the requested lengths.

    Text is made of single-token words (" the", " model", ...) that re-encode to themselves, so a
    text of k words is k tokens inside the template. Prompt length counts the whole chat-template
    prompt (system turn, user turn, assistant header: 30 tokens of SmolLM2's 32 by default);
    completion length counts the assistant content plus ``<|im_end|>`` and the newline after it,
    exactly the completion ids TRL derives from the same conversation.
    """

    def __init__(self, tok, prompt_len: int, completion_len: int, seed: int = 0):
        from lf_widgets.generation import chat_prompt_ids

        self.tok, self._prompt_ids = tok, chat_prompt_ids
        self.rng = random.Random(seed)
        self.words = self._word_pool(tok)
        if len(self.words) < 20:
            raise RuntimeError(f"tokenizer has only {len(self.words)} single-token words")
        self.overhead = len(chat_prompt_ids(tok, ""))
        self.prompt_len = max(prompt_len, self.overhead + 1)
        self.completion_len = max(completion_len, 4)
        self._seen: set[str] = set()

    @staticmethod
    def _word_pool(tok) -> list[str]:
        words = []
        for i, t in enumerate(tok.convert_ids_to_tokens(list(range(min(len(tok), 20000))))):
            if t and t[0] == "Ġ" and 2 <= len(t) - 1 <= 8 and t[1:].isascii() and t[1:].isalpha():
                w = " " + t[1:]
                if tok.encode(w, add_special_tokens=False) == [i]:
                    words.append(w)
        return words

    def new_pool(self) -> None:
        self._seen.clear()  # prompts are unique within one pool

    def _text(self, k: int) -> str:
        return "".join(self.rng.choice(self.words) for _ in range(max(k, 1))).strip()

    def _chat_ids(self, messages) -> list[int]:
        out = self.tok.apply_chat_template(messages, tokenize=True)
        return list(out["input_ids"] if hasattr(out, "keys") else out)

    def prompt(self) -> tuple[str, list[int]]:
        k = self.prompt_len - self.overhead
        for _ in range(50):
            text = self._text(k)
            ids = self._prompt_ids(self.tok, text)
            if text not in self._seen and len(ids) == self.prompt_len:
                self._seen.add(text)
                return text, ids
            k += 1 if len(ids) < self.prompt_len else -1 if len(ids) > self.prompt_len else 0
        raise RuntimeError(f"could not build a {self.prompt_len}-token prompt")

    def completion(self, prompt: str, prompt_ids: list[int]) -> tuple[str, list[int]]:
        """Assistant text and the ids after ``prompt_ids`` in the full conversation."""
        k = self.completion_len - 2
        for _ in range(50):
            text = self._text(k)
            full = self._chat_ids([{"role": "user", "content": prompt},
                                   {"role": "assistant", "content": text}])
            ids = full[len(prompt_ids):]
            if full[:len(prompt_ids)] == prompt_ids and len(ids) == self.completion_len:
                return text, ids
            k += 1 if len(ids) < self.completion_len else -1
        raise RuntimeError(f"could not build a {self.completion_len}-token completion")


@dataclass
class Pool:
    """One objective's synthetic data, in both forms: feedback-log rows and a TRL dataset."""

    objective: str
    rows: list[dict]  # TRL dataset rows (conversational)
    samples: list[tuple[str, str, list[int], int]]  # (prompt, text, token_ids, rating) for our store
    tokens: int  # prompt+completion tokens of all training sequences (chosen and rejected for DPO)


def make_pool(objective: str, synth: Synth, n: int) -> Pool:
    """``n`` examples (DPO: pairs) for ``objective``.

    DPO: n prompts, each with a sample rated 5 and one rated 1 -> n pairs.
    KTO: n/2 prompts, each with a 5 and a 1 -> n/2 desirable + n/2 undesirable, interleaved in the
    TRL dataset (TRL's KTO samples sequentially, so every batch holds both kinds).
    SFT: n prompts, each with a sample rated 5 -> n targets.
    """
    def user(p):
        return [{"role": "user", "content": p}]

    def assistant(c):
        return [{"role": "assistant", "content": c}]

    rows, samples, tokens = [], [], 0
    synth.new_pool()
    if objective == "dpo":
        for _ in range(n):
            p, pids = synth.prompt()
            (c, cids), (r, rids) = synth.completion(p, pids), synth.completion(p, pids)
            rows.append({"prompt": user(p), "chosen": assistant(c), "rejected": assistant(r)})
            samples += [(p, c, cids, 5), (p, r, rids, 1)]
            tokens += 2 * len(pids) + len(cids) + len(rids)
    elif objective == "kto":
        for _ in range((n + 1) // 2):
            p, pids = synth.prompt()
            (c, cids), (r, rids) = synth.completion(p, pids), synth.completion(p, pids)
            rows += [{"prompt": user(p), "completion": assistant(c), "label": True},
                     {"prompt": user(p), "completion": assistant(r), "label": False}]
            samples += [(p, c, cids, 5), (p, r, rids, 1)]
            tokens += 2 * len(pids) + len(cids) + len(rids)
    else:
        for _ in range(n):
            p, pids = synth.prompt()
            c, cids = synth.completion(p, pids)
            rows.append({"prompt": user(p), "completion": assistant(c)})
            samples.append((p, c, cids, 5))
            tokens += len(pids) + len(cids)
    return Pool(objective, rows, samples, tokens)


# -- our side: the real Session.train path ------------------------------------------------------------
class Ours:
    def __init__(self, objective: str, model, tok, pool: Pool, folder: Path, args, n_params: int):
        import lf_widgets as lfw
        from lf_widgets.store import SampleRecord

        self.objective, self.args, self.n_params = objective, args, n_params
        self.session = lfw.Session((model, tok), store=folder / f"{objective}.sqlite",
                                   annotator="bench", resume=False)
        ids = self.session.store.add_samples(
            [SampleRecord(text=t, prompt=p, token_ids=list(tids), model="bench") for p, t, tids, _ in pool.samples])
        for sid, (*_, rating) in zip(ids, pool.samples):
            self.session.store.record(sid, "rating", rating, "bench")
        self.row_len = synth_row_len(args)
        self._pending: list = []
        self._last_misses = 0
        self.session.on("step", self._on_step)
        self.segments = 0

    def _on_step(self, m) -> None:  # the model owner's thread, right after the step
        cpu = time.process_time()  # CPU since the previous step event: this step (+ a log write)
        cache = self.session.model.reference_cache
        misses = cache.misses - self._last_misses
        self._last_misses = cache.misses
        self._pending.append((m, misses, cpu - self._last_cpu))
        self._last_cpu = cpu

    def examples(self):
        from lf_widgets.data import build_examples

        owner = self.session.model  # the tokenizer is used on the model's thread only
        data = owner.call(lambda: build_examples(self.session.store, owner.tokenizer,
                                                 max_length=self.args.max_length))
        return {"dpo": data.pairs, "kto": data.kto, "sft": data.sft}[self.objective]

    def segment(self, steps: int, skip: int, into: Steps, pass_tokens: int | None = None) -> None:
        """One ``session.train`` run of ``steps`` steps; the first ``skip`` are warm-up.

        ``pass_tokens``: the trainer's default (None: passes of CPU_PASS_TOKENS on a CPU) or 0,
        the whole batch in one forward/backward pass as TRL runs it.
        """
        self._pending = []
        self._last_cpu = time.process_time()
        extra = {"holdout": 0.0} if "holdout" in _config_fields() else {}
        if "pass_tokens" in _config_fields():
            extra["pass_tokens"] = pass_tokens
        run = self.session.train(self.objective, steps=steps, lr=LR, batch_size=self.args.batch_size,
                                 optimizer="adamw", beta=BETA, max_length=self.args.max_length,
                                 lora_r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                 target_modules=LORA["target"], refresh_every=10**6, checkpoint_every=0,
                                 seed=self.segments, **extra)
        self.segments += 1
        run.wait()
        for m, misses, cpu in self._pending[skip:]:
            if m.skipped:
                continue
            n = self.n_params
            nograd_tokens = m.tokens if self.objective == "kto" else 0  # KTO: the KL rows, no grad
            flops = 4 * n * m.tokens + 2 * n * nograd_tokens + 2 * n * misses * self.row_len
            into.add(m.seconds, cpu, m.examples, flops, misses)

    def close(self) -> None:
        self.session.close()


def _config_fields() -> set[str]:
    from dataclasses import fields

    from lf_widgets.trainer import TrainConfig

    return {f.name for f in fields(TrainConfig)}


def synth_row_len(args) -> int:
    return args.prompt_len_actual + args.completion_len_actual


# -- TRL's side --------------------------------------------------------------------------------------------
def _timer_callback(device: torch.device):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[tuple[float, float]] = []  # (wall, CPU) seconds per step
            self._t0 = self._c0 = 0.0

        def on_step_begin(self, args, state, control, **kw):
            _sync(device)
            self._t0, self._c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            _sync(device)
            self.times.append((time.perf_counter() - self._t0, time.process_time() - self._c0))

    return StepTimer()


class TRLSide:
    """One TRL trainer, built once; ``segment`` calls ``train()`` again for more steps."""

    def __init__(self, kind: str, model, tok, pool: Pool, folder: Path, args, device: torch.device,
                 n_params: int, precompute: bool = False):
        from datasets import Dataset
        from peft import LoraConfig

        self.kind, self.args, self.device, self.n_params = kind, args, device, n_params
        self.precompute_s = 0.0
        self.timer = _timer_callback(device)
        lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                          target_modules=LORA["target"], task_type="CAUSAL_LM")
        common = {
            "output_dir": str(folder / f"trl-{kind}{'-pre' if precompute else ''}"), "report_to": [],
            "per_device_train_batch_size": args.batch_size, "gradient_accumulation_steps": 1,
            "learning_rate": LR, "lr_scheduler_type": "constant", "warmup_steps": 0, "optim": "adamw_torch",
            "weight_decay": 0.0, "max_grad_norm": 1.0, "max_steps": 1, "max_length": args.max_length,
            "gradient_checkpointing": False, "bf16": device.type == "cuda", "fp16": False,
            "use_cpu": device.type == "cpu", "save_strategy": "no", "eval_strategy": "no",
            "logging_steps": 10**6, "logging_strategy": "no", "dataloader_num_workers": 0,
            "dataloader_pin_memory": False, "disable_tqdm": True, "seed": 0, "push_to_hub": False,
            "use_liger_kernel": False, "pad_to_multiple_of": None,
        }
        dataset = Dataset.from_list(pool.rows)
        if kind == "dpo":
            from trl import DPOConfig, DPOTrainer

            side = self

            class TimedDPO(DPOTrainer):  # times TRL's precompute pass (its __init__ runs it)
                def _precompute_ref_logps(self, *a, **k):
                    t0 = time.perf_counter()
                    out = super()._precompute_ref_logps(*a, **k)
                    side.precompute_s += time.perf_counter() - t0
                    return out

            cfg = DPOConfig(**common, beta=BETA, loss_type=["sigmoid"], padding_free=False,
                            precompute_ref_log_probs=precompute)
            self.trainer = TimedDPO(model=model, args=cfg, train_dataset=dataset, processing_class=tok,
                                    peft_config=lora, callbacks=[self.timer])
        elif kind == "kto":
            from trl import KTOConfig, KTOTrainer

            cfg = KTOConfig(**common, beta=BETA, loss_type="kto", desirable_weight=1.0,
                            undesirable_weight=1.0, precompute_ref_log_probs=False)
            self.trainer = KTOTrainer(model=model, args=cfg, train_dataset=dataset, processing_class=tok,
                                      peft_config=lora, callbacks=[self.timer])
        else:
            from trl import SFTConfig, SFTTrainer

            cfg = SFTConfig(**common, packing=False, padding_free=False, completion_only_loss=True,
                            assistant_only_loss=False, loss_type="nll", shuffle_dataset=False)
            self.trainer = SFTTrainer(model=model, args=cfg, train_dataset=dataset, processing_class=tok,
                                      peft_config=lora, callbacks=[self.timer])

    def tokens(self) -> int:
        """Prompt+completion tokens of TRL's tokenised dataset (to check it equals ours)."""
        ds = self.trainer.train_dataset
        if self.kind == "dpo":
            return sum(2 * len(p) + len(c) + len(r)
                       for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"]))
        if self.kind == "kto":
            return sum(len(p) + len(c) for p, c in zip(ds["prompt_ids"], ds["completion_ids"]))
        return sum(len(x) for x in ds["input_ids"])

    def segment(self, steps: int, skip: int, into: Steps) -> None:
        self.trainer.args.max_steps = steps
        self.timer.times = []
        with contextlib.redirect_stdout(io.StringIO()):  # the final {'train_runtime': ...} line
            self.trainer.train()
        b, n, L = self.args.batch_size, self.n_params, synth_row_len(self.args)
        if self.kind == "dpo":
            grad_rows, nograd_rows = 2 * b, 0 if self.trainer.args.precompute_ref_log_probs else 2 * b
        elif self.kind == "kto":
            grad_rows, nograd_rows = b, 3 * b  # policy KL rows + reference main and KL rows
        else:
            grad_rows, nograd_rows = b, 0
        flops = (4 * grad_rows + 2 * nograd_rows) * n * L
        for wall, cpu in self.timer.times[skip:]:
            into.add(wall, cpu, b, flops)

    def close(self) -> None:
        self.trainer = None


# -- profiling of our step (optional) -------------------------------------------------------------------
def profile_ours(ours: Ours, steps: int = 4, top: int = 18) -> str:
    """Where our step's time goes (steady state, the same batch), on the model owner's thread:
    the step's parts, the update's parts, and a torch.profiler table."""
    owner = ours.session.model
    examples = ours.examples()[: ours.args.batch_size]
    cfg = ours.session.training.config  # the last run's, pass size resolved

    def work():
        from lf_widgets import step as _step

        model = owner.model
        params = owner.trainable_parameters()
        opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)

        def one():
            return _step.train_step(model, ours.objective, examples, pad_id=owner.pad_id,
                                    device=owner.device, cache=owner.reference_cache, config=cfg,
                                    params=params, optimizer=opt)

        model.train()
        try:
            one()  # warm (and fill the cache)
            return "\n".join([step_parts(one, steps), update_parts(model, one, params),
                              profiler_table(one, owner.device, 2, top)])
        finally:
            model.eval()

    return owner.call(work, name="profile")


@contextlib.contextmanager
def _timed(owner_module, name: str, times: dict, label):
    """Replace ``owner_module.name`` for the block by a wrapper adding its wall time to
    ``times[label(*args)]``."""
    real = getattr(owner_module, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            key = label(*args) if callable(label) else label
            times[key] = times.get(key, 0.0) + time.perf_counter() - t0

    setattr(owner_module, name, wrapper)
    try:
        yield
    finally:
        setattr(owner_module, name, real)


def step_parts(one, steps: int) -> str:
    """Wall time of the step's parts, from wrappers around step.py's own functions."""
    from lf_widgets import step as _step

    inside = {"get": False}  # a forward inside the reference look-up computes reference rows
    REF, LOOKUP = "forward, reference rows (cache misses)", "reference cache look-up (net)"

    def forward_label(*_a):
        return REF if inside["get"] else ("forward, with grad" if torch.is_grad_enabled()
                                          else "forward, no grad (KTO's KL rows)")

    real_get = _step.ReferenceCache.get

    def get(self, *a, **k):
        inside["get"] = True
        try:
            return real_get(self, *a, **k)
        finally:
            inside["get"] = False

    totals: dict[str, list[float]] = {}
    for _ in range(steps):
        times: dict[str, float] = {}
        _step.ReferenceCache.get = get
        try:
            with _timed(_step, "forward_logps", times, forward_label), \
                    _timed(_step.ReferenceCache, "get", times, LOOKUP), \
                    _timed(torch.Tensor, "backward", times, "backward"), \
                    _timed(_step, "_update", times, "update: clip, snapshot, AdamW, checks"):
                t0 = time.perf_counter()
                one()
                whole = time.perf_counter() - t0
        finally:
            _step.ReferenceCache.get = real_get
        if LOOKUP in times:
            times[LOOKUP] -= times.get(REF, 0.0)
        times["rest (collate, losses, .item(), stats)"] = whole - sum(times.values())
        times["whole step"] = whole
        for k, v in times.items():
            totals.setdefault(k, []).append(v)
    whole = median(totals["whole step"])
    lines = [f"our step's parts (median of {steps} steady steps, wall):"]
    for k, v in sorted(totals.items(), key=lambda kv: -median(kv[1])):
        lines.append(f"  {k:<45} {median(v) * 1000:8.1f} ms  {median(v) / whole:6.1%}")
    return "\n".join(lines)


def update_parts(model, one, params) -> str:
    """The update's parts on the real LoRA parameters and gradients: what ``step._update`` does
    (clip, snapshot, AdamW, delta and finiteness checks), and the same with torch's foreach
    kernels (one call per list instead of one Python-level op per parameter)."""
    from lf_widgets import step as _step

    grads = []

    def capture(params, optimizer, count, max_grad_norm):  # the real gradients of a real step
        grads.append([p.grad.detach().clone() for p in params])
        return 0.0, 0.0, "captured"

    real = _step._update
    _step._update = capture
    try:
        one()
    finally:
        _step._update = real
    g = grads[0]

    def set_grads():
        for p, gi in zip(params, g):
            p.grad = gi.clone()

    def loop_checks(before):
        delta = math.sqrt(sum(float((p.detach() - b).double().pow(2).sum()) for p, b in zip(params, before)))
        size = math.sqrt(sum(float(b.double().pow(2).sum()) for b in before))
        return delta, size, all(bool(torch.isfinite(p).all()) for p in params)

    def foreach_checks(before):
        with torch.no_grad():
            deltas = torch._foreach_sub([p.detach() for p in params], before)
            delta = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(deltas)).double())
            size = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(before)).double())
        # a non-finite parameter makes its delta's norm non-finite: no separate isfinite pass
        return float(delta), float(size), math.isfinite(float(delta))

    def parts(foreach: bool, reps: int = 5) -> dict[str, float]:
        opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0, foreach=foreach)
        saved = [p.detach().clone() for p in params]
        out: dict[str, list[float]] = {}
        for _ in range(reps):
            set_grads()
            t = [time.perf_counter()]
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=foreach)
            t.append(time.perf_counter())
            before = [p.detach().clone() for p in params]
            t.append(time.perf_counter())
            opt.step()
            t.append(time.perf_counter())
            (foreach_checks if foreach else loop_checks)(before)
            t.append(time.perf_counter())
            for k, a, b in zip(("clip_grad_norm_", "snapshot (clone)", "AdamW step",
                                "delta, size, finiteness"), t, t[1:]):
                out.setdefault(k, []).append(b - a)
            out.setdefault("total", []).append(t[-1] - t[0])
            opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p, b in zip(params, saved):
                p.copy_(b)
        return {k: median(v) for k, v in out.items()}

    loop, fe = parts(False), parts(True)
    n = sum(p.numel() for p in params)
    lines = [f"the update's parts ({len(params)} LoRA tensors, {n / 1e6:.2f}M numbers; median of 5):",
             f"  {'part':<26} {'as step.py (per tensor)':>24} {'foreach kernels':>16}"]
    for k in loop:
        lines.append(f"  {k:<26} {loop[k] * 1000:21.1f} ms {fe[k] * 1000:13.1f} ms")
    return "\n".join(lines)


def profiler_table(one, device, steps: int, top: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            one()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return (f"torch.profiler ({steps} steps):\n"
            + prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=40))


# -- the run ---------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6, help="measured steps per contender and phase")
    p.add_argument("--warmup", type=int, default=1, help="warm-up steps dropped at each contender's start")
    p.add_argument("--rounds", type=int, default=3, help="interleaved segments per contender")
    p.add_argument("--batch-size", type=int, default=4, help="examples per step (DPO: pairs)")
    p.add_argument("--prompt-len", type=int, default=32,
                   help="prompt tokens, chat template included (SmolLM2's template alone is 30)")
    p.add_argument("--completion-len", type=int, default=64, help="completion tokens, <|im_end|>\\n included")
    p.add_argument("--max-length", type=int, default=512, help="max_length on both sides")
    p.add_argument("--objectives", default="dpo,kto,sft", help="comma-separated subset of dpo,kto,sft")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--model", default=None, help="default (SmolLM2-135M-Instruct), tiny, or a folder")
    p.add_argument("--quick", action="store_true", help="tiny model, few steps: a smoke test")
    p.add_argument("--smoke", action="store_true", help="same as --quick")
    p.add_argument("--profile", action="store_true",
                   help="print where our step's time goes: its parts, the update's parts, torch.profiler")
    p.add_argument("--trl-thread", choices=("main", "owner"), default="main",
                   help="where TRL's train() and the matmul peaks run: the main thread (as a script "
                        "runs TRL), or our model owner's thread (one thread, one OpenMP team for both)")
    p.add_argument("--one-pass", action="store_true",
                   help="also time our steps with the whole batch in one forward/backward pass "
                        "(pass_tokens=0, as TRL runs it): what the CPU default's split costs")
    args = p.parse_args(argv)
    args.objectives = [o.strip().lower() for o in args.objectives.split(",") if o.strip()]
    bad = [o for o in args.objectives if o not in ("dpo", "kto", "sft")]
    if bad:
        p.error(f"unknown objective(s): {', '.join(bad)}")
    if args.quick or args.smoke:
        args.quick = True
        args.model = args.model or "tiny"
        args.steps, args.warmup, args.rounds = 1, 1, 1
        args.completion_len = min(args.completion_len, 16)
        args.prompt_len = 0  # the template's minimum
    args.model = args.model or "default"
    if args.batch_size < 2 and "kto" in args.objectives:
        p.error("KTO needs --batch-size >= 2 (TRL's KL estimate mismatches completions within a batch)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import datasets
    import transformers

    from lf_widgets.models import load_model, model_tag

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t_start = time.perf_counter()

    base, tok = load_model(None if args.model == "default" else args.model, device=device)
    dtype = next(base.parameters()).dtype
    n_params = args.n_params = sum(p.numel() for p in base.parameters())
    peak_n = 512 if args.quick else 2048 if device.type == "cpu" else 8192
    peaks = [matmul_peak(device, dtype, peak_n)]
    peak = peaks[0][0]

    synth = Synth(tok, args.prompt_len, args.completion_len)
    args.prompt_len_actual, args.completion_len_actual = synth.prompt_len, synth.completion_len
    m = max(1, math.ceil(args.steps / args.rounds))  # measured steps per segment
    W = args.warmup
    B = args.batch_size
    print(f"bench_train: {model_tag(base)} ({n_params / 1e6:.1f}M params, {dtype}) on {device}"
          f"{f' ({torch.get_num_threads()} threads)' if device.type == 'cpu' else ''}; "
          f"batch {B}; prompt {synth.prompt_len} + completion {synth.completion_len} tokens; "
          f"LoRA r={LORA['r']} alpha={LORA['alpha']} all-linear; lr {LR}; beta {BETA}; "
          f"{args.rounds} interleaved rounds x {m} measured steps (+ warm-up); ours on the model "
          f"owner's thread, TRL on {'the main thread' if args.trl_thread == 'main' else 'the same thread'}")
    print(f"matmul peak ({peak_n}x{peak_n} {str(dtype).removeprefix('torch.')} torch.mm, best of 5): "
          f"{peak / 1e9:.1f} GFLOP/s")
    sys.stdout.flush()

    results = {}  # objective -> dict of Steps and notes
    with tempfile.TemporaryDirectory(prefix="bench_train-") as tmp:
        folder = Path(tmp)
        os.environ.setdefault("HF_DATASETS_CACHE", str(folder / "hf-datasets"))
        for objective in args.objectives:
            t_obj = time.perf_counter()
            has_ref = objective in ("dpo", "kto")
            # DPO/KTO: one epoch = W + m steps, so the first epoch is the warm-up plus m measured steps.
            pool = make_pool(objective, synth, B * (W + m))
            ours = Ours(objective, copy.deepcopy(base), tok, pool, folder, args, n_params)
            trl_sides = {"trl": TRLSide(objective, copy.deepcopy(base), tok, pool, folder, args, device,
                                        n_params)}
            if objective == "dpo":
                trl_sides["trl_pre"] = TRLSide(objective, copy.deepcopy(base), tok, pool, folder, args,
                                               device, n_params, precompute=True)
            res = {"ours": Steps("ours"), "first": Steps("ours first epoch"), "one_pass": Steps("one_pass"),
                   **{k: Steps(k) for k in trl_sides},
                   "same_tokens": all(s.tokens() == pool.tokens for s in trl_sides.values()),
                   "ours_tokens_ok": _our_tokens(ours, objective) == pool.tokens}
            started = set()
            if has_ref:  # ours: one full epoch first, every reference computed and cached
                ours.segment(W + m, W, res["first"])
                _progress(objective, "first epoch ours", res["first"], 0)
                started.add("ours")
            order = ["ours", *trl_sides, *(["one_pass"] if args.one_pass else [])]
            # TRL and the peaks on the main thread, or on our owner's thread (--trl-thread owner)
            there = (lambda fn: fn()) if args.trl_thread == "main" else ours.session.model.call
            for r in range(args.rounds):
                for name in (order if r % 2 == 0 else order[::-1]):
                    skip = 1 if name in started else W
                    started.add(name)
                    peaks.append(there(lambda: matmul_peak(device, dtype, peak_n, reps=2)))
                    key = name if name in res else "ours"
                    before = res[key].n
                    if name == "ours":
                        ours.segment(skip + m, skip, res["ours"])
                    elif name == "one_pass":
                        ours.segment(skip + m, skip, res["one_pass"], pass_tokens=0)
                    else:
                        there(lambda: trl_sides[name].segment(skip + m, skip, res[name]))
                    _progress(objective, f"round {r + 1} {name}", res[key], before)
            if "trl_pre" in trl_sides:
                res["precompute_s"] = trl_sides["trl_pre"].precompute_s
            if has_ref:
                res["ours_misses"] = median(res["ours"].misses) if res["ours"].n else float("nan")
            if args.profile:
                res["profile"] = profile_ours(ours)
            res["seconds"] = time.perf_counter() - t_obj
            ours.close()
            for s in trl_sides.values():
                s.close()
            del ours, trl_sides
            gc.collect()
            results[objective] = res
            print(f"  {objective}: done in {res['seconds']:.0f} s", flush=True)
        peaks.append(matmul_peak(device, dtype, peak_n))

    print_table(results, peaks, args, device)
    for objective, res in results.items():
        if "profile" in res:
            print(f"\nprofile of our {objective.upper()} step (steady state):\n{res['profile']}")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0


def _progress(objective: str, label: str, steps: Steps, before: int) -> None:
    wall, cpu = steps.seconds[before:], steps.cpu[before:]
    print(f"  {objective} {label}: {len(wall)} steps, s/step " + " ".join(f"{w:.2f}" for w in wall)
          + " (CPU s " + " ".join(f"{c:.2f}" for c in cpu) + ")", flush=True)


def _our_tokens(ours: Ours, objective: str) -> int:
    ex = ours.examples()
    if objective == "dpo":
        return sum(2 * len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids) for e in ex)
    return sum(len(e.prompt_ids) + len(e.completion_ids) for e in ex)


def print_table(results: dict, peaks: list[tuple[float, float]], args, device) -> None:
    """``peaks``: (FLOP/s, FLOP per CPU-second) of the matmuls at the start, before every segment
    and at the end; the peak is the best of them."""
    peak = max(p for p, _ in peaks)
    cpu_peak = max((c for _, c in peaks if not math.isnan(c)), default=math.nan)
    header = (f"{'objective':<9} {'ours':<27} {'vs':<42} {'ours ex/s':>9} {'TRL ex/s':>9} "
              f"{'ratio':>7} {'target':>7}  {'result':<6}  {'CPU-time ratio':>14}")
    print("\n" + header)
    print("-" * len(header))

    def row(obj, ours_label, vs_label, ours: Steps, other: Steps, target):
        if not ours.n or not other.n:
            print(f"{obj:<9} {ours_label:<27} {vs_label:<42} {'n/a':>9} {'n/a':>9} {'n/a':>7} "
                  f"{'':>7}  (no steps measured)")
            return
        ratio = ours.rate / other.rate
        verdict = "info" if target is None else ("met" if ratio >= target else "MISSED")
        tgt = "" if target is None else f">={target:.1f}x"
        cpu_ratio = f"{ours.cpu_rate / other.cpu_rate:.2f}x" if device.type == "cpu" else "n/a"
        print(f"{obj:<9} {ours_label:<27} {vs_label:<42} {ours.rate:>9.3f} {other.rate:>9.3f} "
              f"{ratio:>6.2f}x {tgt:>7}  {verdict:<6}  {cpu_ratio:>14}")

    for obj, res in results.items():
        O = obj.upper()
        if obj == "dpo":
            row(O, "steady (ref cached)", TARGETS["dpo"][0], res["ours"], res["trl"], TARGETS["dpo"][1])
            row(O, "steady (ref cached)", TARGETS["dpo_pre"][0], res["ours"], res["trl_pre"],
                TARGETS["dpo_pre"][1])
            row(O, "first epoch (ref computed)", TARGETS["dpo"][0], res["first"], res["trl"], None)
        elif obj == "kto":
            row(O, "steady (ref cached)", TARGETS["kto"][0], res["ours"], res["trl"], TARGETS["kto"][1])
            row(O, "first epoch (ref computed)", TARGETS["kto"][0], res["first"], res["trl"], None)
        else:
            row(O, "LoRA step", TARGETS["sft"][0], res["ours"], res["trl"], TARGETS["sft"][1])
        if res["one_pass"].n:
            vs = TARGETS[obj][0]
            row(O, "one pass (pass_tokens=0)", vs, res["one_pass"], res["trl"], None)
            row(O, "one pass (pass_tokens=0)", "ours (default passes)", res["one_pass"], res["ours"], None)

    loaded = median([p for p, _ in peaks])
    print(f"\nmodel-FLOPs utilisation: 4·N·T FLOPs per LoRA forward+backward, 2·N·T per no-grad forward, "
          f"N = {args.n_params / 1e6:.1f}M; peak = best of {len(peaks)} torch.mm timings "
          f"{peak / 1e9:.1f} GFLOP/s (median {loaded / 1e9:.1f}"
          f"{', the machine was busy' if loaded < 0.8 * peak else ''})")
    h2 = (f"{'objective':<9} {'step':<14} {'s/step':>7} {'GFLOP/s':>8} {'MFU':>6} {'target':>7}  {'result':<6}  "
          f"{'TRL MFU':>7}  {'MFU by CPU time':>15}")
    print(h2)
    print("-" * len(h2))
    for obj, res in results.items():
        for key, label, target in (("ours", "ours, steady" if obj in ("dpo", "kto") else "ours", True),
                                   ("one_pass", "ours, one pass", False)):
            s = res[key]
            if not s.n:
                continue
            mfu = s.flop_rate / peak
            trl_mfu = res["trl"].flop_rate / peak if res["trl"].n else float("nan")
            # FLOP per CPU-second of the step against the matmul's: robust to other processes' load
            cpu_mfu = f"{s.cpu_flop_rate / cpu_peak:.1%}" if device.type == "cpu" else "n/a"
            verdict = ("met" if mfu >= MFU_TARGET else "MISSED") if target else "info"
            print(f"{obj.upper():<9} {label:<14} {s.step_s:>7.3f} {s.flop_rate / 1e9:>8.1f} {mfu:>6.1%} "
                  f"{f'>={MFU_TARGET:.0%}' if target else '':>7}  {verdict:<6}  {trl_mfu:>7.1%}  {cpu_mfu:>15}")

    print()
    for obj, res in results.items():
        notes = [f"{res['ours'].n} steady + {res['first'].n} first-epoch steps ours",
                 ", ".join(f"{res[k].n} {k}" for k in ("trl", "trl_pre") if k in res),
                 "same token ids on both sides: " + ("yes" if res["same_tokens"] and res["ours_tokens_ok"]
                                                     else "NO (check the synthetic data)")]
        if "precompute_s" in res:
            notes.append(f"TRL precompute pass {res['precompute_s']:.1f} s (not in its ex/s)")
        if "ours_misses" in res:
            notes.append(f"ours reference rows computed per steady step: median {res['ours_misses']:g}")
        print(f"{obj.upper()}: " + "; ".join(notes))
    if device.type == "cpu":
        print("CPU-time ratio / MFU by CPU time: the same medians with process CPU seconds instead of "
              "wall seconds (less sensitive to other processes' load; our steps run on the model "
              f"owner's thread, TRL's on {'the main thread' if args.trl_thread == 'main' else 'the same one'}).")
    if args.quick:
        print("(--quick: tiny random model and very few steps; the figures mean nothing, the run "
              "checks that the benchmark works)")

if __name__ == "__main__":
    sys.exit(main())
