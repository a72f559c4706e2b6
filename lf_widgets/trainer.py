"""LoRA fine-tuning in the background, while the person keeps rating.

A run is a chain of jobs on the model owner's thread (:class:`~lf_widgets.policy.LocalModel`):
each job takes one step and queues the next as a *background* job, so a generation or a stepper
click queued meanwhile runs between two steps. The run reports each step as a frozen
:class:`~lf_widgets.metrics.StepMetrics` and each change of state as a
:class:`~lf_widgets.metrics.TrainState` through the ``emit`` callback; it never touches a widget.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from .metrics import StepMetrics, TrainState

__all__ = ["TrainConfig", "TrainingRun", "prepare_run", "training_data", "OPTIMIZERS"]

OPTIMIZERS = ("adamw", "rmsprop", "sgd")
DIVERGENCE_RATIO = 0.5  # an update moving the adapter by over half its size is a divergence sign


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
    nll_weight: float = 1.0  # DPO: + weight × NLL per token of the chosen answer (RPO; TRL's
    # rpo_alpha, 1.0 as the RPO paper), so the chosen answer's own probability does not fall while
    # it pulls ahead of the rejected one. Without it, pairs that differ by one phrase teach the
    # phrase and wreck the rest (bench_loop: "Ahoy! Ahoy! Ahoy! …"; 1 of 12 held-out answers sound
    # at 0, 11 of 12 at 1.0). 0: plain DPO (the step-by-step stepper's default, to teach its loss)
    max_epochs: float | None = 4.0  # an adapter sees each example at most this many times:
    # more passes over a few pairs drive the loss to zero and undo what was learnt. None: no cap
    retention_tolerance: float | None = 0.05  # stop, and put the adapter back, when the
    # adapter's hold on earlier examples it has already learnt (seen max_epochs times) falls by
    # more than this share of its value at the run's start (at least this much in absolute
    # terms). The hold is what does not saturate: DPO's mean reward margin, KTO's signed reward,
    # SFT's log-prob per token (a loss near zero hides a collapsing margin). Small, because a
    # small fall of the whole answers' margin can be a large change in what the model samples
    # (bench_loop's noisy annotator: one step took the margin 9.8 % down and the held-out share
    # from 100 % to 58 %), while feedback that agrees with the learnt raises it. A few new
    # judgements (a slip, a noisy annotator) must not undo what many earlier ones taught.
    # None: no check
    retention_examples: int = 16  # how many learnt examples the check measures (a seeded draw)
    retention_every: int = 2  # check every N steps and after the last one (a failed check puts
    # back the adapter of the last passed one: the run's start at the first check)
    exclude_ab_prompts: bool = True  # prompts of A/B tests stay out of training (they judge it)
    capability_every: int = 10  # measure NLL on general text (base vs tuned) every N steps and at
    # the end, for the monitor's capability line; 0: never (~1-3 s each on the default model, CPU)
    # -- learning from critiques (experimental, off by default; see lf_widgets.critique_data) --
    critique_weight: float = 0.0  # λ: + λ × mean NLL per token of the critiques of critiqued
    # samples given prompt + sample (feedback modelling), in SFT, DPO and KTO steps; 0: the step
    # is exactly the one without critiques (tested bit for bit)
    hindsight: bool = False  # critique-conditioned SFT (Chain of Hindsight / FCP): "prompt +
    # feedback it got" → the sample. SFT: these examples join the SFT pool; DPO / KTO: a plain
    # NLL term (weight 1) on them is added to each step, like an SFT batch beside the objective's
    min_edit_ratio: float = 0.0  # DPO pairs from corrections whose edit_ratio (edit distance /
    # longer length) is below this are dropped as "tiny edit" (weak pairs); SFT / KTO keep them

    def __post_init__(self):
        if self.objective not in ("auto", "sft", "dpo", "kto"):
            raise ValueError(f"objective must be 'auto', 'sft', 'dpo' or 'kto', got {self.objective!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        _check_numbers(self)


# field -> (smallest allowed, whether the smallest itself is allowed); ints must be ints
_INT_FIELDS = {"steps": 1, "batch_size": 1, "max_length": 2, "lora_r": 1, "refresh_every": 1,
               "checkpoint_every": 0, "seed": 0, "lora_alpha": 1, "capability_every": 0,
               "retention_examples": 1, "retention_every": 1}
_FLOAT_FIELDS = {"lr": (0.0, False), "beta": (0.0, False), "max_grad_norm": (0.0, False),
                 "lora_dropout": (0.0, True), "holdout": (0.0, True), "nll_weight": (0.0, True),
                 "critique_weight": (0.0, True), "min_edit_ratio": (0.0, True)}


def _check_numbers(config: TrainConfig) -> None:
    """Every numeric field finite and in range, with an error that names it (before any work)."""
    for name, low in _INT_FIELDS.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not hasattr(value, "__index__") or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    for name, (low, inclusive) in _FLOAT_FIELDS.items():
        value = getattr(config, name)
        ok = (not isinstance(value, bool) and isinstance(value, (int, float))
              and math.isfinite(value) and (value >= low if inclusive else value > low))
        if not ok:
            raise ValueError(f"{name} must be a finite number {'>=' if inclusive else '>'} {low}, "
                             f"got {value!r}")
    if config.lora_dropout >= 1 or config.holdout >= 1:
        raise ValueError("lora_dropout and holdout must be below 1")
    if config.min_edit_ratio > 1:
        raise ValueError(f"min_edit_ratio must be in [0, 1] (edit distance / longer length), "
                         f"got {config.min_edit_ratio!r}")
    tol = config.retention_tolerance
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float))
                            or not math.isfinite(tol) or tol < 0):
        raise ValueError(f"retention_tolerance must be None or a finite number >= 0, got {tol!r}")
    if not isinstance(config.hindsight, bool):
        raise ValueError(f"hindsight must be True or False, got {config.hindsight!r}")
    if config.max_epochs is not None and (isinstance(config.max_epochs, bool) or not isinstance(
            config.max_epochs, (int, float)) or not config.max_epochs > 0
            or not math.isfinite(config.max_epochs)):
        raise ValueError(f"max_epochs must be None or a finite number > 0, got {config.max_epochs!r}")
    if config.pass_tokens is not None and (not hasattr(config.pass_tokens, "__index__")
                                           or config.pass_tokens < 0):
        raise ValueError(f"pass_tokens must be None, 0 or a positive integer, got {config.pass_tokens!r}")


def make_config(config: TrainConfig | None = None, **options) -> TrainConfig:
    """``config`` (or the defaults) with ``options`` on top; unknown names are an error."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown training option(s) {unknown}; TrainConfig has {sorted(known)}")
    return replace(config or TrainConfig(), **options)


def training_data(store, tokenizer, config: TrainConfig):
    """The examples a run trains on: the feedback log's, minus the held-out share.

    With ``config.hindsight`` the critique-conditioned examples (source "hindsight") are SFT
    examples in ``data.sft``; with ``config.critique_weight`` the feedback-modelling examples
    are ``data.critiques`` (see :mod:`lf_widgets.critique_data`). Both pass the same A/B-prompt
    and hold-out guards as the rest.
    """
    from .critique_data import add_critique_examples
    from .data import build_examples, split_holdout

    data = build_examples(store, tokenizer, max_length=config.max_length,
                          min_edit_ratio=config.min_edit_ratio)
    add_critique_examples(data, store, tokenizer, config)
    if config.exclude_ab_prompts:
        leave_out_ab_prompts(data, store)
    if config.holdout:
        for pool in ("sft", "pairs", "kto", "critiques"):
            setattr(data, pool, split_holdout(getattr(data, pool), config.holdout)[0])
    return data


AB_PROMPT = "prompt of an A/B test"  # drop reason in the cleaning summary


def ab_prompts(store) -> set[str]:
    """Prompts some A/B test was run on (their samples carry ``params["ab_test"]``)."""
    df = store.samples()
    if df.empty:
        return set()
    mine = df[df["params"].map(lambda p: bool(p.get("ab_test")))]
    return {p for p in mine["prompt"] if isinstance(p, str)}


def leave_out_ab_prompts(data, store) -> None:
    """The leak guard: examples on prompts of A/B tests stay out of training (counted)."""
    held = ab_prompts(store)
    if not held:
        return
    for objective, pool in (("sft", "sft"), ("dpo", "pairs"), ("kto", "kto")):
        kept = [e for e in getattr(data, pool) if e.prompt not in held]
        dropped = len(getattr(data, pool)) - len(kept)
        if dropped:
            data.dropped_by[objective][AB_PROMPT] += dropped
            setattr(data, pool, kept)
    if getattr(data, "critiques", None):  # not counted: the summary has no row for them
        data.critiques = [e for e in data.critiques if e.prompt not in held]


HOLD_NAMES = {"dpo": "reward margin", "kto": "signed reward", "sft": "log-prob per token"}


def retention_hold(objective: str, extras: dict, examples) -> float:
    """The retention check's measure of how firmly learnt examples are held (higher: firmer).

    Not the loss: once a pair is learnt, DPO's loss is near zero and stays there while its margin
    shrinks by half, so a loss threshold notices a collapse only when it is complete (bench_loop's
    noisy annotator: 100 % -> 17 % before the loss rose by 0.1 nats). The margin, the signed KTO
    reward (desirable +, undesirable -) and SFT's log-prob per token do not saturate.
    """
    if objective == "dpo":
        return extras["reward_margin"]
    if objective == "kto":
        good = sum(e.desirable for e in examples)
        bad = len(examples) - good
        return (good * extras.get("desirable_reward", 0.0)
                - bad * extras.get("undesirable_reward", 0.0)) / max(len(examples), 1)
    return extras["target_logp"]


def retention_lost(start: float, hold: float, tolerance: float) -> bool:
    """Whether the hold fell by more than ``tolerance`` of its start (and at least ``tolerance``)."""
    return hold < start - tolerance * max(abs(start), 1.0)


class TrainingRun:
    """One ``session.train()`` call, as a chain of step jobs on the model's thread.

    Use :meth:`pause`, :meth:`resume`, :meth:`stop` and :meth:`wait`; read :attr:`state`,
    :attr:`objective`, :attr:`reason` and :attr:`metrics`.
    """

    def __init__(self, owner, store, emit: Callable[[str, object], None], config: TrainConfig,
                 data, reason: str, checkpoint_dir: Path | None):
        self.owner, self.store, self._emit = owner, store, emit
        self.config, self.objective, self.reason = config, config.objective, reason
        self.checkpoint_dir = checkpoint_dir
        self.run_id = uuid.uuid4().hex[:12]
        self.metrics: list[StepMetrics] = []
        self.state = "starting"
        self.error: BaseException | None = None
        self._data, self._batches = data, []
        self._last_checkpoint: int | None = None  # adapter step of this run's last checkpoint
        self._pause, self._stop, self._finished = threading.Event(), threading.Event(), threading.Event()
        self._lock = threading.Lock()  # state changes from the cell and the model's thread
        self._optimizer = self._rng = None
        self._guard_note = ""  # why the retention check stopped the run, for its summary
        self._retention = None  # learnt examples the retention check measures (None: no check)
        self._t_start = 0.0
        self.planned_steps = config.steps  # fewer when the overfitting guard says so
        self._events_noted = False  # provenance: judgement ids read once per data refresh
        # Extra terms' own batch orders (critique, hindsight), from their own RNG: the objective's
        # batches are the very ones a run without them takes
        self._aux_batches: dict[str, list] = {}
        self._aux_rng = random.Random(f"{config.seed}-aux")

    def __repr__(self) -> str:
        return (f"TrainingRun({self.objective}, state={self.state!r}, "
                f"step {len(self.metrics)}/{self.config.steps})")

    # -- steering (any thread) -----------------------------------------------------------------
    def start(self) -> TrainingRun:
        self._set_state("running")
        self._queue_step()
        return self

    def pause(self) -> None:
        """Finish the current step, then wait: "pausing" until the step ends, then "paused"."""
        with self._lock:
            if self.state != "running":
                return
            self._pause.set()
        self._set_state("pausing", self._finishing())

    def resume(self) -> None:
        with self._lock:
            state = self.state
            self._pause.clear()
        if state == "paused":
            self._set_state("running")
            self._queue_step()
        elif state == "pausing":  # the step job has not parked yet: it simply goes on
            self._set_state("running")

    def stop(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop after the current step (never in the middle of one) and write a checkpoint."""
        with self._lock:
            state = self.state
            self._stop.set()
        if state in ("starting", "running", "pausing", "paused"):
            self._set_state("stopping", self._finishing() if state != "paused" else "")
        if state == "paused":  # no step job is queued: queue one that ends the run
            self._queue_step()
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float | None = None) -> TrainingRun:
        """Block until the run ends; re-raises the error of a failed run."""
        self._finished.wait(timeout)
        if self.error is not None:
            raise RuntimeError(f"training failed: {self.error}") from self.error
        return self

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def _finishing(self) -> str:
        return f"finishing step {len(self.metrics) + 1} of {self.config.steps}"

    def _set_state(self, state: str, reason: str | None = None) -> None:
        with self._lock:
            self.state = state
        self._emit("train_state", TrainState(self.run_id, state, self.objective,
                                             self.reason if reason is None else reason,
                                             self.owner.adapter_step or 0))

    def _queue_step(self) -> None:
        self.owner.submit(self._step_job, name=f"train-{self.run_id}", background=True)

    # -- the loop, one step per job (the model's thread) ---------------------------------------
    def _step_job(self, job) -> None:
        try:
            if self._stop.is_set() or len(self.metrics) >= self.planned_steps:
                return self._end("stopped" if self._stop.is_set() else "done")
            if self._pause.is_set():  # park: resume() queues the next step
                return self._set_state("paused", f"after step {len(self.metrics)} of {self.config.steps}")
            self._step()
            self._queue_step()
        except BaseException as err:  # reported, never raised into a thread nobody joins
            self.error = err
            self._set_state("failed", f"{type(err).__name__}: {err}")
            self._finished.set()

    def _step(self) -> None:
        from . import step as _step
        from ._planning import release_memory, small_memory

        if self._optimizer is None:  # first step: read the memory limit once, make the optimizer
            self._prepare()
        cfg, owner, model = self.config, self.owner, self.owner.model
        run_step = len(self.metrics) + 1
        # New feedback joins the pool every refresh_every steps (from the next epoch of batches).
        if run_step > 1 and (run_step - 1) % cfg.refresh_every == 0:
            self._data, self._batches = training_data(self.store, owner.tokenizer, cfg), []
            self._events_noted, self._aux_batches = False, {}
        if not self._batches:
            from .batching import length_batches

            pool = getattr(self._data, _step.POOLS[self.objective])
            if cfg.max_epochs is not None:  # the overfitting guard: no example beyond max_epochs
                pool = [e for e in pool if owner.visits[e.key] < cfg.max_epochs]
            if not pool:
                self.planned_steps = len(self.metrics)
                return
            self._batches = length_batches(pool, cfg.batch_size, seed=self._rng.randrange(2**31))
        examples = self._batches.pop()
        self._note_seen(examples)
        t0 = time.perf_counter()
        model.train()
        try:
            result = _step.train_step(model, self.objective, examples, pad_id=owner.pad_id,
                                      device=owner.device, cache=owner.reference_cache, config=cfg,
                                      params=self._params, optimizer=self._optimizer,
                                      aux=self._aux_terms())
        finally:
            model.eval()
        if not result.skipped:
            owner.count_update()
        if small_memory(owner.device.type):
            release_memory()
        self._report(run_step, examples, result, time.perf_counter() - t0)
        if self._retention and (run_step % cfg.retention_every == 0 or run_step >= self.planned_steps):
            self._check_retention(run_step)
        if cfg.checkpoint_every and not result.skipped and owner.adapter_step % cfg.checkpoint_every == 0:
            self._checkpoint()

    def _aux_terms(self) -> list:
        """This step's extra terms (none unless critique_weight > 0 or hindsight with DPO/KTO).

        Each term's examples are a pool of their own, cycled in batches of ``batch_size``: every
        critique trains, whatever the objective's batch holds (under SFT a critiqued sample —
        usually a bad one — is never in the batch). ``max_epochs`` caps the objective's pool only.
        """
        from .batching import length_batches
        from .step import AuxTerm

        cfg, terms = self.config, []
        pools = {"critique": (cfg.critique_weight, getattr(self._data, "critiques", []))}
        if cfg.hindsight and self.objective != "sft":  # under SFT they are in the SFT pool
            pools["hindsight"] = (1.0, [e for e in self._data.sft if e.source == "hindsight"])
        for name, (weight, pool) in pools.items():
            if weight <= 0 or not pool:
                continue
            if not self._aux_batches.get(name):
                seed = self._aux_rng.randrange(2**31)
                self._aux_batches[name] = length_batches(pool, cfg.batch_size, seed=seed)
            terms.append(AuxTerm(name, weight, self._aux_batches[name].pop()))
        return terms

    def _note_seen(self, examples) -> None:
        """What this adapter learns from: example visits (overfitting guard) and the ids of the
        judgements in force now (provenance: an undone one makes the adapter stale)."""
        for e in examples:
            self.owner.visits[e.key] += 1
        if not self._events_noted:
            from .provenance import PROVENANCE_KINDS

            current = self.store.current_events(kinds=PROVENANCE_KINDS)["id"]
            self.owner.seen_events |= set(int(i) for i in current)
            self._events_noted = True

    def _prepare(self) -> None:
        import torch

        from ._planning import pass_tokens

        self._params = self.owner.trainable_parameters()
        make = {"adamw": lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=0.0),
                "rmsprop": lambda p, lr: torch.optim.RMSprop(p, lr=lr),
                "sgd": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9)}[self.config.optimizer]
        self._optimizer = make(self._params, self.config.lr)
        self._rng = random.Random(self.config.seed)
        # the memory limit is a few file reads: once per run, not once per step
        self.config = replace(self.config, pass_tokens=pass_tokens(self.config.pass_tokens,
                                                                   self.owner.device.type))
        self._t_start = time.perf_counter()
        self._start_retention()

    def _start_retention(self) -> None:
        """Measure the hold on earlier, learnt examples before the run's first update."""
        from . import step as _step

        cfg, owner = self.config, self.owner
        self._retention = None
        if cfg.retention_tolerance is None or cfg.max_epochs is None:
            return
        pool = getattr(self._data, _step.POOLS[self.objective])
        learnt = [e for e in pool if owner.visits[e.key] >= cfg.max_epochs]
        if not learnt:
            return
        learnt = random.Random(cfg.seed).sample(learnt, min(len(learnt), cfg.retention_examples))
        self._retention = learnt
        self._retention_start = self._retention_hold()
        self._good = ([p.detach().clone() for p in self._params], len(self.metrics))

    def _retention_hold(self) -> float:
        """How firmly the adapter holds the learnt examples; higher is firmer (see retention_hold)."""
        from . import step as _step

        owner = self.owner
        result = _step.train_step(owner.model, self.objective, self._retention, pad_id=owner.pad_id,
                                  device=owner.device, cache=owner.reference_cache,
                                  config=self.config)
        return retention_hold(self.objective, result.extras, self._retention)

    def _check_retention(self, run_step: int) -> None:
        import torch

        hold, start = self._retention_hold(), self._retention_start
        if not retention_lost(start, hold, self.config.retention_tolerance):
            self._good = ([p.detach().clone() for p in self._params], run_step)
            return
        weights, good_step = self._good
        with torch.no_grad():
            for p, w in zip(self._params, weights):
                p.copy_(w)
        self._stop.set()
        what = HOLD_NAMES[self.objective]
        self._guard_note = (
            f" · stopped after step {run_step}: the {what} on {len(self._retention)} earlier "
            f"examples fell from {start:.3g} to {hold:.3g} (by more than retention_tolerance="
            f"{self.config.retention_tolerance:g} of it): the new feedback undoes earlier feedback (a "
            "slip or a noisy judgement? undo it if it is wrong, or the earlier judgements if they "
            f"are outdated). The adapter is back to where it was after step {good_step} of this run")

    def _report(self, run_step: int, examples, result, seconds: float) -> None:
        cfg = self.config
        elapsed = time.perf_counter() - self._t_start
        note = result.note
        if not result.skipped and result.update_ratio > DIVERGENCE_RATIO:
            note = (f"⚠ diverging? this update moved the adapter by {result.update_ratio:.0%} of "
                    f"its size (lr={cfg.lr:g} may be too large)")
        extras = {**result.extras, "grad_norm": result.grad_norm, "update_ratio": result.update_ratio}
        if cfg.hindsight and self.objective == "sft":  # in the batch itself, not an extra term
            extras["hindsight_examples"] = sum(e.source == "hindsight" for e in examples)
        if cfg.capability_every and (run_step % cfg.capability_every == 0
                                     or run_step == self.planned_steps):
            from .capability import capability_nll

            guard = capability_nll(self.owner)  # on this thread: the model is ours right now
            extras.update(capability_nll=guard["tuned"], capability_base_nll=guard["base"])
            if guard["warning"]:
                note = f"{note} ⚠ {guard['warning']}".strip()
        m = StepMetrics(run_id=self.run_id, step=self.owner.adapter_step or 0, run_step=run_step,
                        total_steps=self.planned_steps, objective=self.objective, loss=result.loss,
                        lr=cfg.lr, examples=len(examples), tokens=result.tokens, seconds=seconds,
                        elapsed_s=elapsed,
                        eta_s=elapsed / run_step * max(self.planned_steps - run_step, 0),
                        skipped=result.skipped, note=note, extras=extras)
        self.metrics.append(m)
        self.store.log_step(self.run_id, m.step, m.objective, None if m.skipped else m.loss,
                            m.as_row())
        self._emit("step", m)

    def _end(self, state: str) -> None:
        self._checkpoint()
        self._set_state(state, self._summary(state))
        self._finished.set()

    def _summary(self, state: str) -> str:
        losses = [m.loss for m in self.metrics if not m.skipped]
        span = f" · loss {losses[0]:.3g} → {losses[-1]:.3g}" if losses else ""
        minutes = (time.perf_counter() - self._t_start) / 60 if self._t_start else 0.0
        return (f"{state} · {len(self.metrics)} of {self.config.steps} steps · "
                f"{self.objective.upper()}{span} · {minutes:.1f} min{self._guard_note}")

    def _checkpoint(self) -> None:
        from .adapters import NonFiniteAdapter
        from .provenance import provenance as _provenance

        step = self.owner.adapter_step
        if self.checkpoint_dir is None or not step or step == self._last_checkpoint:
            return
        path = self.checkpoint_dir / f"step-{step:06d}"
        try:
            self.owner.save_adapter(path, {"objective": self.objective, "run_id": self.run_id,
                                           "config": asdict(self.config),
                                           **_provenance(self.owner, self.store)})
        except NonFiniteAdapter:  # never written, never recorded, never resumed
            return
        self._last_checkpoint = step
        self.store.add_checkpoint(step, path, self.objective)


def prepare_run(owner, store, emit, config: TrainConfig, checkpoint_dir: Path | None) -> TrainingRun:
    """Build examples, choose the objective, attach LoRA; the caller starts the run.

    Done before the first step so that "not enough feedback" is an error the person sees at once.
    """
    from .critique_data import critique_note
    from .data import choose_objective

    if checkpoint_dir is not None:
        from ._files import clean_stale_in

        clean_stale_in(checkpoint_dir)  # half-written checkpoints a killed kernel left behind
    # on the model's thread, like every use of the tokenizer (HF tokenizers are not thread-safe)
    data = owner.call(lambda: training_data(store, owner.tokenizer, config), name="examples")
    objective, reason = choose_objective(data, config.objective)
    reason += critique_note(config, data, objective)
    owner.call(lambda: owner.ensure_adapter(config), name="attach adapter")
    config = replace(config, objective=objective)
    planned, why = step_budget(config, data, owner.visits)
    run = TrainingRun(owner, store, emit, config, data, reason + why, checkpoint_dir)
    run.planned_steps = planned
    return run


def step_budget(config: TrainConfig, data, visits) -> tuple[int, str]:
    """How many of ``config.steps`` the overfitting guard allows, and why fewer (or "").

    Each example may be trained on ``max_epochs`` times by one adapter: a pool of 2 pairs
    trained for 8 steps of 4 would see each pair 16 times, drive the loss to zero and undo what
    was learnt (seen: an opening phrase learnt to 100 % fell to 50 % after more rounds on the
    same pairs). Rounds on unchanged feedback then train nothing.
    """
    from .step import POOLS

    if config.max_epochs is None:
        return config.steps, ""
    pool = getattr(data, POOLS[config.objective])
    left = sum(max(0.0, config.max_epochs - visits[e.key]) for e in pool)
    per_step = max(min(config.batch_size, len(pool)), 1)  # a batch never repeats an example
    planned = min(config.steps, math.ceil(left / per_step))
    if planned >= config.steps:
        return config.steps, ""
    if planned == 0:
        return 0, (f" Nothing to train: this adapter has seen each of the {len(pool)} examples "
                   f"{config.max_epochs:g} times (max_epochs); more passes would overfit them. "
                   "Add feedback, or raise max_epochs.")
    return planned, (f" {planned} of {config.steps} steps: {len(pool)} examples × max_epochs="
                     f"{config.max_epochs:g} allow no more (more passes over the same feedback "
                     "overfit it); add feedback, or raise max_epochs.")
