"""What the training monitor says about a run, in words: plain functions of the run's steps.

:class:`RunTally` keeps the few numbers of one run that the status needs (steps taken, first
and last loss, time, ETA); :func:`progress_line` turns a state and a tally into the line beside
the progress bar. Pure Python, no widgets, so every sentence is checked without a front end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ACTIVE", "RunTally", "clock", "critique_line", "duration", "finite", "progress_line"]

# A run exists in these states: Start is off, and the line shows the run's live progress.
ACTIVE = frozenset({"starting", "running", "pausing", "paused", "stopping"})
ENDED = frozenset({"done", "stopped", "failed"})


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when missing or non-finite (never plot NaN / inf)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def clock(seconds: Any) -> str:
    """mm:ss (h:mm:ss past an hour); ``--:--`` when unknown."""
    seconds = finite(seconds)
    if seconds is None or seconds < 0:
        return "--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def duration(seconds: float) -> str:
    """A run's length as a person says it: "40 s", "2.5 min", "12 min"."""
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 9.95 else f"{minutes:.0f} min"


@dataclass
class RunTally:
    """The numbers of one run the status line needs, updated step by step."""

    run_id: str
    objective: str = ""
    total: int = 0  # steps the run will take if not stopped (0: no step seen yet)
    taken: int = 0  # run_step of the latest step seen
    first_loss: float | None = None  # first finite loss of the run
    last_loss: float | None = None
    elapsed_s: float = 0.0  # since the run started, at its latest step
    eta_s: float = math.nan
    tokens_per_s: float = 0.0

    def add(self, row: Mapping[str, Any]) -> None:
        """Count one step (a ``StepMetrics.as_row()`` dict) of this run."""
        self.objective = str(row.get("objective") or self.objective)
        # rows from an older log may lack a field: NaN in the history's DataFrame
        self.total = int(finite(row.get("total_steps")) or self.total)
        self.taken = max(self.taken, int(finite(row.get("run_step")) or 0))
        loss = finite(row.get("loss"))
        if loss is not None and not row.get("skipped"):
            self.first_loss = loss if self.first_loss is None else self.first_loss
            self.last_loss = loss
        self.elapsed_s = finite(row.get("elapsed_s")) or self.elapsed_s
        self.eta_s = finite(row.get("eta_s")) if finite(row.get("eta_s")) is not None else math.nan
        self.tokens_per_s = finite(row.get("tokens_per_s")) or 0.0

    def of_total(self, step: int) -> str:
        return f"step {step} of {self.total}" if self.total else f"step {step}"

    def live(self) -> str:
        """ "step 3 of 8 · ETA 01:23 · 512 tokens/s" (or that the first step is on its way)."""
        if not self.taken:
            return "working on step 1"
        return (f"{self.of_total(self.taken)} · ETA {clock(self.eta_s)} · "
                f"{self.tokens_per_s:,.0f} tokens/s")

    def finishing(self, state: str) -> str:
        """ "pausing — finishing step 4 of 8": the step in progress ends first, never cut."""
        return f"{state} — finishing {self.of_total(min(self.taken + 1, self.total or math.inf))}"

    def summary(self, state: str) -> str:
        """ "done · 8 steps · DPO · loss 0.69 → 0.41 · 3.0 min" — what the run did."""
        steps = f"{self.taken} step{'s' if self.taken != 1 else ''}"
        if self.total and self.taken != self.total:
            steps = f"{self.taken} of {self.total} steps"
        parts = [state, steps]
        if self.objective:
            parts.append(self.objective.upper())
        if self.first_loss is not None:
            parts.append(f"loss {self.first_loss:.3g} → {self.last_loss:.3g}")
        if self.taken:
            parts.append(duration(self.elapsed_s))
        return " · ".join(parts)


def progress_line(state: str, tally: RunTally | None, *, step_running: bool = True) -> str:
    """The line beside the progress bar for ``state`` and the current (or last) run's tally.

    Live numbers only while a run is going; after it, what it did — never a stale ETA.
    ``step_running`` is False when "stopping" comes from "paused": no step has to finish.
    """
    if state == "starting":
        return "starting…"
    if tally is None:
        return "no steps yet"
    if state in ("pausing", "stopping"):
        return tally.finishing(state) if step_running else state
    if state == "paused":
        return f"paused after {tally.of_total(tally.taken)}" if tally.taken else "paused"
    if state == "running":
        return tally.live()
    if state in ENDED:
        return tally.summary(state)
    return tally.summary("last run") if tally.taken else "no steps yet"


CAPABILITY_WARN = 0.05  # tuned NLL on general text worse than base by more than this: say so


def capability_line(row: Mapping[str, Any]) -> str:
    """E.g. "capability: NLL per token 2.41 (base 2.38, +1.3 %)" from a step's row, with a ⚠
    when general text got more than CAPABILITY_WARN harder for the tuned model."""
    tuned, base = finite(row.get("capability_nll")), finite(row.get("capability_base_nll"))
    if tuned is None:
        return ""
    if base is None or base <= 0:
        return f"capability: NLL per token on general text {tuned:.3f}"
    change = tuned / base - 1
    warn = " ⚠ the model got worse at general text" if change > CAPABILITY_WARN else ""
    return (f"capability: NLL per token on general text {tuned:.3f} (base {base:.3f}, "
            f"{change:+.1%}){warn}")


def critique_line(row: Mapping[str, Any]) -> str:
    """E.g. "critique NLL per token 3.12 on 4 critiques (λ-weighted in the loss) · hindsight: 3
    critique-conditioned examples, NLL 1.95" from a step's row; "" when neither term is on."""
    parts = []
    nll = finite(row.get("critique_nll"))
    if nll is not None:
        n = int(finite(row.get("critique_examples")) or 0)
        parts.append(f"critique NLL per token {nll:.3f} on {n} critique{'s' if n != 1 else ''} "
                     "(λ-weighted in the loss)")
    n = int(finite(row.get("hindsight_examples")) or 0)
    if n:
        hindsight_nll = finite(row.get("hindsight_nll"))
        tail = f", NLL {hindsight_nll:.3f}" if hindsight_nll is not None else " in the batch"
        parts.append(f"hindsight: {n} critique-conditioned example{'s' if n != 1 else ''}{tail}")
    return " · ".join(parts)
