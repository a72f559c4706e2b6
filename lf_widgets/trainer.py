"""LoRA fine-tuning in a background thread, while the person keeps rating.

The worker thread owns nothing but its run: it reads examples from the feedback log, takes the
model lock for one step at a time (so generation can slip in between steps), and reports each step
as a frozen :class:`~lf_widgets.metrics.StepMetrics` through the session's events. It never
touches a widget.

Reference log-probs come from the same model with the adapter disabled (no second copy) and are
cached per example: the base is frozen, so they never change. TRL's default DPO loop recomputes
them every step; that forward pass is ~25 % of a DPO step on CPU.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import random
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch

from . import batching as _batching, data as _data
from ._memory import memory_limit
from .data import TrainingData, build_examples, choose_objective, length_batches, split_holdout
from .losses import dpo_loss, kto_kl_estimate, kto_loss, sequence_logps, sft_loss
from .metrics import StepMetrics, TrainState

__all__ = ["TrainConfig", "TrainingRun", "StepResult", "prepare_run", "train_step", "split_passes",
           "pass_tokens", "wrap_lora", "save_adapter", "load_adapter", "ADAPTER_META",
           "CPU_PASS_TOKENS", "SMALL_MEMORY"]

ADAPTER_META = "lf_widgets.json"  # written beside PEFT's files: step, objective, run id
# Padded tokens per forward/backward pass when TrainConfig.pass_tokens is None and the process
# may use at most SMALL_MEMORY (a CPU Binder kernel: 2 GB). A CPU step's memory is mostly
# activations, ~3 MB a token at its peak for the 135M model in fp32; 256 keeps the quickstart
# under 2 GB. Small passes cost speed (each re-reads every weight: DPO −38 % on 2 cores,
# benchmarks/README.md), so with more memory a batch runs in one pass.
CPU_PASS_TOKENS = 256
SMALL_MEMORY = 4 * 2**30


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs to know; the defaults suit a 135M model on a CPU."""

    objective: str = "auto"  # "auto" picks from the feedback: dpo > kto > sft (see data.choose_objective)
    steps: int = 20  # optimizer steps in this run; a CPU step on the default model is ~1-4 s
    lr: float = 2e-4  # LoRA tolerates ~10x the full fine-tuning rate
    batch_size: int = 4  # examples (DPO: pairs) per step
    pass_tokens: int | None = None  # padded tokens per forward/backward pass; a batch over it runs
    # in several passes whose gradients add up to the same update (less memory, a bit slower).
    # None: CPU_PASS_TOKENS on a CPU with at most SMALL_MEMORY for the process (Binder), else the
    # whole batch at once; 0: always the whole batch
    optimizer: str = "adamw"  # "adamw", "rmsprop" or "sgd"
    beta: float = 0.1  # DPO / KTO: strength of the pull towards the base model
    max_grad_norm: float = 1.0  # gradient clipping; keeps a few odd examples from wrecking the adapter
    max_length: int = 512  # prompt + completion tokens; longer ones are cut (data.build_examples)
    lora_r: int = 8  # adapter rank: 8 is plenty for style and preference
    lora_alpha: int = 16  # LoRA scale = alpha / r
    lora_dropout: float = 0.0  # 0 keeps steps deterministic for a seed
    target_modules: str | tuple[str, ...] = "all-linear"  # peft's shorthand: every linear but lm_head
    refresh_every: int = 5  # re-read the feedback every N steps, so new ratings join the pool
    checkpoint_every: int = 10  # automatic checkpoint every N steps (0: only at the end)
    holdout: float = 0.0  # share of examples kept out of training for session.evaluate()
    seed: int = 0  # batch order and LoRA initialisation

    def __post_init__(self):
        if self.objective not in ("auto", "sft", "dpo", "kto"):
            raise ValueError(f"objective must be 'auto', 'sft', 'dpo' or 'kto', got {self.objective!r}")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(_OPTIMIZERS)}, got {self.optimizer!r}")
        for name in ("steps", "batch_size", "lora_r", "refresh_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.pass_tokens is not None and self.pass_tokens < 0:
            raise ValueError(f"pass_tokens must be None, 0 or positive, got {self.pass_tokens}")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


_OPTIMIZERS: dict[str, Callable] = {
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=0.0),
    "rmsprop": lambda params, lr: torch.optim.RMSprop(params, lr=lr),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
}


# -- the adapter ----------------------------------------------------------------------------------
def wrap_lora(model, config: TrainConfig):
    """Return ``model`` with a trainable LoRA adapter (the model itself if it has one already)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if isinstance(model, PeftModel):
        return model
    torch.manual_seed(config.seed)  # LoRA's A matrices are random; B starts at zero
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=(config.target_modules if isinstance(config.target_modules, str)
                                      else list(config.target_modules)), task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def save_adapter(model, path: str | os.PathLike, meta: dict) -> Path:
    """Write the adapter as a standard PEFT folder (safetensors), atomically.

    Written to a sibling temporary folder, then renamed, so a crash never leaves a half folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        # save_embedding_layers=False: "auto" would ask the hub whether the vocabulary grew
        # (a network call, and we never resize embeddings: LoRA leaves them frozen)
        model.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)
        (tmp / ADAPTER_META).write_text(json.dumps(meta, indent=2))
        if path.exists():  # replacing a folder is not atomic; move the old one aside first
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_adapter(model, path: str | os.PathLike):
    """Attach a saved adapter to a base model, trainable; returns (peft_model, meta dict)."""
    from peft import PeftModel

    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{path} is not a PEFT adapter folder (no adapter_config.json)")
    peft_model = PeftModel.from_pretrained(model, path, is_trainable=True)
    meta_file = path / ADAPTER_META
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return peft_model, meta


# -- one step ---------------------------------------------------------------------------------------
def _forward_logps(model, batch: dict, prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    labels = batch[f"{prefix}labels"]  # (B, T), -100 on prompt and padding
    scored = (labels != -100).any(dim=0).nonzero()
    # Logits only from the position before the first completion token on: the vocabulary
    # projection and its log-softmax are most of a step's memory, and the prompt needs neither.
    keep = labels.shape[1] - int(scored[0]) + 1 if len(scored) else 1
    logits = model(input_ids=batch[f"{prefix}input_ids"],
                   attention_mask=batch[f"{prefix}attention_mask"],
                   logits_to_keep=keep).logits  # (B, keep, V)
    return sequence_logps(logits, labels[:, -keep:])  # (B,), (B,)


class _ReferenceCache:
    """Reference (adapter-off) log-probs per example key, computed once each."""

    def __init__(self):
        self.values: dict[str, float] = {}
        self.hits = self.misses = 0

    def get(self, model, batch: dict, keys: list[str], prefix: str = "") -> torch.Tensor:
        first = {}  # key -> first row holding it: a sequence shared by two pairs runs once
        for i, k in enumerate(keys):
            if k not in self.values:
                first.setdefault(k, i)
        missing = list(first.values())
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            rows = {k: v[missing] for k, v in batch.items() if k.startswith(prefix) and v.dim() == 2}
            with torch.no_grad(), model.disable_adapter():
                logps, _ = _forward_logps(model, rows, prefix)
            for i, value in zip(missing, logps.tolist()):
                self.values[keys[i]] = value
        device = batch[f"{prefix}input_ids"].device
        return torch.tensor([self.values[k] for k in keys], dtype=torch.float32, device=device)


class _Pass(NamedTuple):
    """What one forward pass over part of a step's batch gives the step."""

    loss_sum: torch.Tensor  # () the summed loss of these examples (SFT: over their tokens)
    count: int  # what the step's loss is averaged over: examples, or (SFT) completion tokens
    tokens: int  # attention tokens in the pass, for throughput figures
    stats: dict[str, torch.Tensor]  # per-example values (detached), averaged over the step


def _sft_pass(model, examples, pad_id, device, cache, config, kl=None) -> _Pass:
    batch = _to(_batching.collate_sft(examples, pad_id), device)
    logps, n_tokens = _forward_logps(model, batch)
    # the sum of sft_loss(reduction="token_mean") over passes, before the step divides by all tokens
    return _Pass(sft_loss(logps, n_tokens, reduction="sum"), int(n_tokens.sum()),
                 int(batch["attention_mask"].sum()),
                 {"target_logp": logps.detach() / n_tokens.clamp(min=1)})  # per token


def _dpo_pass(model, examples, pad_id, device, cache, config, kl=None) -> _Pass:
    batch = _to(_batching.collate_pairs(examples, pad_id), device)  # 2B rows: chosen, then rejected
    b = len(examples)
    keys = [_data.sequence_key(e.prompt_ids, e.chosen_ids) for e in examples] + \
           [_data.sequence_key(e.prompt_ids, e.rejected_ids) for e in examples]
    ref = cache.get(model, batch, keys)  # (2B,)
    logps, _ = _forward_logps(model, batch)  # (2B,)
    out = dpo_loss(logps[:b], logps[b:], ref[:b], ref[b:], beta=config.beta)
    return _Pass(out.losses.sum(), b, int(batch["attention_mask"].sum()),
                 {"reward_margin": out.margins, "pair_accuracy": out.accuracies,
                  "chosen_reward": out.chosen_rewards, "rejected_reward": out.rejected_rewards})


def _kto_kl(model, examples, pad_id, device, cache) -> torch.Tensor:
    """KTO's reference point z₀ for the whole step's batch (mismatched rows, no gradient).

    Computed once per step, before the passes, so that splitting the batch changes nothing.
    """
    batch = _to(_batching.collate_kto(examples, pad_id), device)
    kl_keys = [_data.sequence_key(e.prompt_ids, partner)  # fixed partners: cached after one epoch
               for e, partner in zip(examples, _batching.kl_completions(examples))]
    ref_kl = cache.get(model, batch, kl_keys, prefix="kl_")
    with torch.no_grad():  # the KL estimate is a baseline, not a training signal (as in TRL)
        policy_kl, _ = _forward_logps(model, batch, prefix="kl_")
    return kto_kl_estimate(policy_kl, ref_kl)


def _kto_pass(model, examples, pad_id, device, cache, config, kl=None) -> _Pass:
    batch = _to(_batching.collate_sft(examples, pad_id), device)
    good = torch.tensor([e.desirable for e in examples], dtype=torch.bool, device=device)  # (B,)
    ref = cache.get(model, batch, [e.key for e in examples])
    logps, _ = _forward_logps(model, batch)
    out = kto_loss(logps[good], logps[~good], ref[good], ref[~good], None, None, beta=config.beta,
                   kl=kl)  # z₀ of the whole batch, not of this pass
    stats = {"kl": kl.expand(len(examples))}
    if out.chosen_rewards.numel():
        stats["desirable_reward"] = out.chosen_rewards
    if out.rejected_rewards.numel():
        stats["undesirable_reward"] = out.rejected_rewards
    return _Pass(out.losses.sum(), len(examples), int(batch["attention_mask"].sum()), stats)


_PASSES = {"sft": (_sft_pass, "sft"), "dpo": (_dpo_pass, "pairs"), "kto": (_kto_pass, "kto")}


class StepResult(NamedTuple):
    loss: float  # the batch's loss (NaN when the update was skipped for a non-finite loss)
    tokens: int  # attention tokens over all passes
    extras: dict[str, float]  # objective-specific means over the batch (reward margin, ...)
    skipped: bool  # True when the loss or gradient was not finite and nothing was updated
    note: str  # why it was skipped
    grad_norm: float  # before clipping
    passes: int  # forward/backward passes the batch was split into


def split_passes(examples, max_tokens: int | None) -> list[list]:
    """Cut a step's batch, in order, into passes of at most ``max_tokens`` padded tokens.

    A pass costs rows × its longest row (a DPO pair is two rows); an example longer than the
    limit gets a pass of its own. ``None`` or 0: the whole batch in one pass.
    """
    if not max_tokens:
        return [list(examples)]
    passes, current, width = [], [], 0
    for example in examples:
        lengths = _batching._row_lengths(example)
        new_width = max(width, *lengths)
        if current and (len(current) + 1) * len(lengths) * new_width > max_tokens:
            passes.append(current)
            current, new_width = [], max(lengths)
        current.append(example)
        width = new_width
    return passes + [current]


def small_memory(device: torch.device) -> bool:
    """True for a CPU process that may use at most SMALL_MEMORY (a Binder kernel)."""
    if torch.device(device).type != "cpu":
        return False
    limit = memory_limit()
    return limit is not None and limit <= SMALL_MEMORY


def release_memory() -> None:
    """Hand memory that malloc keeps after a step back to the OS (glibc only; else nothing).

    A step frees hundreds of MB of activations; glibc keeps most of it in its arenas, so a kernel
    would sit at its training peak for good. ``malloc_trim`` costs ~30-90 ms on 2 cores.
    """
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim  # noqa: B018 (musl, macOS: no such function)
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc = None


def pass_tokens(config: TrainConfig, device: torch.device) -> int | None:
    """The pass size a run uses: the config's; for None, small passes only on a CPU whose
    process may use at most SMALL_MEMORY (the cgroup limit counts: see ``_memory``)."""
    if config.pass_tokens is not None:
        return config.pass_tokens
    return CPU_PASS_TOKENS if small_memory(device) else None


def train_step(model, objective: str, examples, *, pad_id: int, device, cache, config: TrainConfig,
               params=None, optimizer=None) -> StepResult:
    """One step on ``examples``: the loss of the batch, and (with an optimizer) one update.

    The batch runs as :func:`split_passes` of at most :func:`pass_tokens` tokens; each pass's
    summed loss is backpropagated and the gradients are divided by the batch's count at the end,
    so the update equals the one-pass update while only one pass's activations are alive
    (on a CPU, activations dominate a step's memory: ~1.3 MB a token on the 135M model).
    An update whose loss or gradient norm is not finite is skipped. Without an optimizer it only
    measures (no gradients). The caller holds the model lock and sets train/eval mode.
    """
    step_pass, _ = _PASSES[objective]
    update = optimizer is not None
    device = torch.device(device)
    # bf16 autocast on CUDA for the forward passes only (backward runs outside it, as PyTorch advises)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with autocast:
        kl = _kto_kl(model, examples, pad_id, device, cache) if objective == "kto" else None
    total, count, tokens, stats = 0.0, 0, 0, {}
    parts = split_passes(examples, pass_tokens(config, device))
    skip_note = ""
    with torch.enable_grad() if update else torch.no_grad():
        for part in parts:
            with autocast:
                out = step_pass(model, part, pad_id, device, cache, config, kl)
            loss_sum = out.loss_sum.detach().item()
            count, tokens, total = count + out.count, tokens + out.tokens, total + loss_sum
            for name, values in out.stats.items():
                stats.setdefault(name, []).append(values.float().cpu())
            if not math.isfinite(loss_sum):
                skip_note = f"skipped: loss is {loss_sum}"
                if update:
                    break  # the update will be dropped: no need for the other passes
            elif update:
                out.loss_sum.backward()  # gradients add up over passes
    loss = total / max(count, 1)
    extras = {name: torch.cat(v).mean().item() for name, v in stats.items()}
    if not update:
        return StepResult(loss, tokens, extras, bool(skip_note), skip_note, float("nan"), len(parts))
    if skip_note:
        optimizer.zero_grad(set_to_none=True)
        return StepResult(float("nan"), tokens, extras, True, skip_note, float("nan"), len(parts))
    for p in params:
        if p.grad is not None:
            p.grad.div_(max(count, 1))  # sum of pass losses -> the batch mean
    norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm).item()
    if not math.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        return StepResult(float("nan"), tokens, extras, True, f"skipped: gradient norm is {norm}",
                          norm, len(parts))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss, tokens, extras, False, "", norm, len(parts))


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


# -- the run ------------------------------------------------------------------------------------------
class TrainingRun:
    """One ``session.train()`` call: a worker thread and the handle to steer it.

    Use :meth:`pause`, :meth:`resume`, :meth:`stop` and :meth:`wait`; read :attr:`state`,
    :attr:`objective`, :attr:`reason` and :attr:`metrics`.
    """

    def __init__(self, session, config: TrainConfig, data: TrainingData, objective: str, reason: str):
        self.session, self.config = session, config
        self.objective, self.reason = objective, reason
        self.run_id = uuid.uuid4().hex[:12]
        self.metrics: list[StepMetrics] = []
        self.state = "starting"
        self.error: BaseException | None = None
        self._data = data
        self._last_checkpoint: int | None = None  # adapter step of this run's last checkpoint
        self._stop = threading.Event()
        self._running = threading.Event()  # cleared while paused
        self._running.set()
        self._cache = session._reference_cache  # shared across runs: the base never changes
        self._thread = threading.Thread(target=self._main, name=f"lf-train-{self.run_id}", daemon=True)

    def __repr__(self) -> str:
        return (f"TrainingRun({self.objective}, state={self.state!r}, "
                f"step {len(self.metrics)}/{self.config.steps})")

    # steering (any thread)
    def start(self) -> TrainingRun:
        self._thread.start()
        return self

    def pause(self) -> None:
        """Finish the current step, then wait."""
        if self.state == "running":
            self._running.clear()
            self._set_state("paused")

    def resume(self) -> None:
        if self.state == "paused":
            self._set_state("running")
            self._running.set()

    def stop(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop after the current step (never in the middle of one) and write a checkpoint."""
        if self.state in ("starting", "running", "paused"):
            self._set_state("stopping")
        self._stop.set()
        self._running.set()
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float | None = None) -> TrainingRun:
        """Block until the run ends; re-raises the error of a failed run."""
        self._thread.join(timeout)
        if self.error is not None:
            raise RuntimeError(f"training failed: {self.error}") from self.error
        return self

    @property
    def done(self) -> bool:
        return not self._thread.is_alive() and self.state in ("done", "stopped", "failed")

    def _set_state(self, state: str, reason: str | None = None) -> None:
        self.state = state
        self.session._emit("train_state", TrainState(self.run_id, state, self.objective,
                                                     self.reason if reason is None else reason,
                                                     self.session.adapter_step or 0))

    # the worker thread
    def _main(self) -> None:
        try:
            self._set_state("running")
            self._loop()
            self._checkpoint()
            self._set_state("stopped" if self._stop.is_set() else "done")
        except BaseException as err:  # reported, never raised into a thread that nobody joins
            self.error = err
            self._set_state("failed", reason=f"{type(err).__name__}: {err}")

    def _loop(self) -> None:
        session, cfg = self.session, self.config
        pool_name = _PASSES[self.objective][1]
        device = next(session.model.parameters()).device
        pad_id = session.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = session.tokenizer.eos_token_id
        params = [p for p in session.model.parameters() if p.requires_grad]
        optimizer = _OPTIMIZERS[cfg.optimizer](params, cfg.lr)
        rng = random.Random(cfg.seed)
        # The memory limit is read once per run, not once per step (it is a few file reads)
        cfg = replace(cfg, pass_tokens=pass_tokens(cfg, device) or 0)
        trim = small_memory(device)
        batches: list = []
        t_start = time.perf_counter()
        for run_step in range(1, cfg.steps + 1):
            self._running.wait()
            if self._stop.is_set():
                return
            if run_step > 1 and (run_step - 1) % cfg.refresh_every == 0:
                self._data = training_data(session, cfg)
                batches = []  # new feedback joins from the next epoch of batches
            if not batches:
                batches = length_batches(getattr(self._data, pool_name), cfg.batch_size,
                                         seed=rng.randrange(2**31))
            examples = batches.pop()
            t0 = time.perf_counter()
            with session.model_lock:  # generation waits for this step, and the other way round
                session.model.train()
                try:
                    result = train_step(session.model, self.objective, examples, pad_id=pad_id,
                                        device=device, cache=self._cache, config=cfg,
                                        params=params, optimizer=optimizer)
                finally:
                    optimizer.zero_grad(set_to_none=True)  # also after an error mid-step
                    session.model.eval()
                skipped = result.skipped
                if not skipped:
                    session.adapter_step = (session.adapter_step or 0) + 1
            if trim:
                release_memory()
            seconds = time.perf_counter() - t0
            elapsed = time.perf_counter() - t_start
            m = StepMetrics(self.run_id, session.adapter_step or 0, run_step, cfg.steps, self.objective,
                            result.loss, cfg.lr, len(examples), result.tokens,
                            seconds, elapsed, elapsed / run_step * (cfg.steps - run_step),
                            skipped, result.note, result.extras)
            self.metrics.append(m)
            session.store.log_step(self.run_id, m.step, m.objective,
                                   None if skipped else m.loss, m.as_row())
            session._emit("step", m)
            if cfg.checkpoint_every and not skipped and session.adapter_step % cfg.checkpoint_every == 0:
                self._checkpoint()


    def _checkpoint(self) -> None:
        folder = self.session.checkpoint_dir
        step = self.session.adapter_step
        if folder is None or not step or step == self._last_checkpoint:
            return
        self._last_checkpoint = step
        path = folder / f"step-{step:06d}"
        with self.session.model_lock:
            save_adapter(self.session.model, path, self._meta())
        self.session.store.add_checkpoint(step, path, self.objective)

    def _meta(self) -> dict:
        return {"step": self.session.adapter_step, "objective": self.objective, "run_id": self.run_id,
                "base_model": self.session.model_name, "config": asdict(self.config)}


def training_data(session, config: TrainConfig) -> TrainingData:
    """The examples a run trains on: the feedback log's, minus the held-out share."""
    data = build_examples(session.store, session.tokenizer, max_length=config.max_length)
    if config.holdout:
        for pool in ("sft", "pairs", "kto"):
            setattr(data, pool, split_holdout(getattr(data, pool), config.holdout)[0])
    return data


def prepare_run(session, config: TrainConfig) -> TrainingRun:
    """Build examples, choose the objective, attach LoRA; the caller starts the thread.

    Done on the caller's thread so that "not enough feedback" is an error the person sees at once.
    """
    data = training_data(session, config)
    objective, reason = choose_objective(data, config.objective)
    with session.model_lock:
        session.model = wrap_lora(session.model, config)
        session.model.eval()
    return TrainingRun(session, replace(config, objective=objective), data, objective, reason)

