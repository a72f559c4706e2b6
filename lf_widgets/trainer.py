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

import torch

from . import batching as _batching, data as _data
from .data import TrainingData, build_examples, choose_objective, length_batches, split_holdout
from .losses import dpo_loss, kto_loss, sequence_logps, sft_loss
from .metrics import StepMetrics, TrainState

__all__ = ["TrainConfig", "TrainingRun", "prepare_run", "wrap_lora", "save_adapter",
           "load_adapter", "apply_update", "ADAPTER_META"]

ADAPTER_META = "lf_widgets.json"  # written beside PEFT's files: step, objective, run id


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs to know; the defaults suit a 135M model on a CPU."""

    objective: str = "auto"  # "auto" picks from the feedback: dpo > kto > sft (see data.choose_objective)
    steps: int = 20  # optimizer steps in this run; a CPU step on the default model is ~1-4 s
    lr: float = 2e-4  # LoRA tolerates ~10x the full fine-tuning rate
    batch_size: int = 4  # examples (DPO: pairs) per step
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


def _sft_step(model, examples, pad_id, device, cache, config):
    batch = _to(_batching.collate_sft(examples, pad_id), device)
    logps, n_tokens = _forward_logps(model, batch)
    loss = sft_loss(logps, n_tokens)
    target_logp = (logps.detach() / n_tokens.clamp(min=1)).mean().item()  # per token
    return loss, int(batch["attention_mask"].sum()), {"target_logp": target_logp}


def _dpo_step(model, examples, pad_id, device, cache, config):
    batch = _to(_batching.collate_pairs(examples, pad_id), device)  # 2B rows: chosen, then rejected
    b = len(examples)
    keys = [_data.sequence_key(e.prompt_ids, e.chosen_ids) for e in examples] + \
           [_data.sequence_key(e.prompt_ids, e.rejected_ids) for e in examples]
    ref = cache.get(model, batch, keys)  # (2B,)
    logps, _ = _forward_logps(model, batch)  # (2B,)
    out = dpo_loss(logps[:b], logps[b:], ref[:b], ref[b:], beta=config.beta)
    extras = {"reward_margin": out.margins.mean().item(), "pair_accuracy": out.accuracies.mean().item(),
              "chosen_reward": out.chosen_rewards.mean().item(),
              "rejected_reward": out.rejected_rewards.mean().item()}
    return out.losses.mean(), int(batch["attention_mask"].sum()), extras


def _kto_step(model, examples, pad_id, device, cache, config):
    batch = _to(_batching.collate_kto(examples, pad_id), device)
    good = batch["desirable"]  # (B,) bool
    keys = [e.key for e in examples]
    kl_keys = [_data.sequence_key(e.prompt_ids, examples[(i + 1) % len(examples)].completion_ids)
               for i, e in enumerate(examples)]  # the same rotation as collate_kto
    ref = cache.get(model, batch, keys)
    ref_kl = cache.get(model, batch, kl_keys, prefix="kl_")
    logps, _ = _forward_logps(model, batch)
    with torch.no_grad():  # the KL estimate is a baseline, not a training signal (as in TRL)
        policy_kl, _ = _forward_logps(model, batch, prefix="kl_")
    out = kto_loss(logps[good], logps[~good], ref[good], ref[~good], policy_kl, ref_kl, beta=config.beta)
    extras = {"kl": out.kl.item()}
    if out.chosen_rewards.numel():
        extras["desirable_reward"] = out.chosen_rewards.mean().item()
    if out.rejected_rewards.numel():
        extras["undesirable_reward"] = out.rejected_rewards.mean().item()
    return out.losses.mean(), int(batch["attention_mask"].sum()), extras


_STEPS = {"sft": (_sft_step, "sft"), "dpo": (_dpo_step, "pairs"), "kto": (_kto_step, "kto")}


def apply_update(loss: torch.Tensor, params, optimizer, max_grad_norm: float
                 ) -> tuple[bool, str, float]:
    """Backward, clip, step — or skip the update when the loss or gradient is not finite.

    Returns (skipped, note, gradient norm). The caller zeroes the gradients afterwards.
    """
    if not torch.isfinite(loss):
        return True, f"skipped: loss is {loss.item()}", float("nan")
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm).item()
    if not math.isfinite(norm):
        return True, f"skipped: gradient norm is {norm}", norm
    optimizer.step()
    return False, "", norm


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
        step_fn, pool_name = _STEPS[self.objective]
        device = next(session.model.parameters()).device
        pad_id = session.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = session.tokenizer.eos_token_id
        params = [p for p in session.model.parameters() if p.requires_grad]
        optimizer = _OPTIMIZERS[cfg.optimizer](params, cfg.lr)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
        rng = random.Random(cfg.seed)
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
                    with autocast:
                        loss, tokens, extras = step_fn(session.model, examples, pad_id, device,
                                                       self._cache, cfg)
                    skipped, note, _ = apply_update(loss, params, optimizer, cfg.max_grad_norm)
                finally:
                    optimizer.zero_grad(set_to_none=True)
                    session.model.eval()
                if not skipped:
                    session.adapter_step = (session.adapter_step or 0) + 1
            seconds = time.perf_counter() - t0
            elapsed = time.perf_counter() - t_start
            m = StepMetrics(self.run_id, session.adapter_step or 0, run_step, cfg.steps, self.objective,
                            float("nan") if skipped else loss.item(), cfg.lr, len(examples), tokens,
                            seconds, elapsed, elapsed / run_step * (cfg.steps - run_step),
                            skipped, note, extras)
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

