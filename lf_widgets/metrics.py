"""Frozen records the training thread emits; plain Python, so panels can use them without torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["StepMetrics", "TrainState"]


@dataclass(frozen=True)
class StepMetrics:
    """What one training step did, emitted as the ``"step"`` event of a Session."""

    run_id: str  # one id per session.train() call
    step: int  # global adapter step after this one (continues across runs and restarts)
    run_step: int  # 1-based step within this run
    total_steps: int  # steps this run will take if not stopped
    objective: str  # "sft", "dpo" or "kto"
    loss: float  # NaN when the step was skipped
    lr: float  # learning rate used
    examples: int  # examples (pairs for DPO) in the batch
    tokens: int  # non-padding tokens processed, policy forward only
    seconds: float  # wall time of this step
    elapsed_s: float  # since the run started
    eta_s: float  # estimated seconds left in the run
    skipped: bool = False  # True: non-finite loss or gradient, no update applied
    note: str = ""  # why it was skipped, or other news for the status line
    # objective-specific numbers: DPO reward_margin, pair_accuracy, chosen_reward,
    # rejected_reward; KTO desirable_reward, undesirable_reward, kl; SFT target_logp
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def as_row(self) -> dict[str, Any]:
        """Flat dict (extras inlined), for DataFrames and the store."""
        row = asdict(self)
        row.update(row.pop("extras"))
        row["tokens_per_s"] = self.tokens_per_s
        return row


@dataclass(frozen=True)
class TrainState:
    """A change of the training run's state, emitted as the ``"train_state"`` event."""

    run_id: str
    state: str  # "starting", "running", "pausing", "paused", "stopping", "stopped", "done", "failed"
    objective: str | None = None  # chosen objective, once known
    reason: str = ""  # why this objective (from choose_objective), or the error message
    step: int = 0  # global adapter step at this moment
