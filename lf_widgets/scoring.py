"""Offline check without a person: does the tuned model prefer what people preferred?

On held-out feedback (see ``TrainConfig.holdout``), for base (adapter off) and tuned:
preference accuracy — the share of pairs where the model gives the chosen text the larger
log-prob — and the mean per-token log-prob of good samples. And the capability guard
(:mod:`lf_widgets.capability`): the NLL per token of general text held out from all feedback,
with a warning in ``df.attrs["warning"]`` when tuning made it worse than the documented threshold.
"""

from __future__ import annotations

import pandas as pd
import torch

from .batching import collate_pairs, collate_sft
from .capability import _measure as _capability
from .capability_texts import CAPABILITY_TEXTS
from .data import TrainingData, split_holdout
from .losses import sequence_logps

__all__ = ["evaluate", "CAPABILITY_ROW"]

CAPABILITY_ROW = "capability NLL per token"  # lower is better, unlike the rows above it


def _logps(model, batch: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
    batch = {k: v.to(device) for k, v in batch.items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logps(logits, batch["labels"])  # (B,), (B,)


def _score(owner, data: TrainingData, batch_size: int) -> dict[str, float]:
    model, pad, device = owner.model, owner.pad_id, owner.device
    wins, token_logps, tokens = [], 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(data.pairs), batch_size):
            chunk = data.pairs[i:i + batch_size]
            logps, _ = _logps(model, collate_pairs(chunk, pad), device)  # (2B,)
            wins += (logps[:len(chunk)] > logps[len(chunk):]).tolist()
        for i in range(0, len(data.sft), batch_size):
            logps, n = _logps(model, collate_sft(data.sft[i:i + batch_size], pad), device)
            token_logps += logps.sum().item()
            tokens += int(n.sum())
    return {"preference accuracy": sum(wins) / len(wins) if wins else float("nan"),
            "log-prob per token of good samples": token_logps / tokens if tokens else float("nan")}


def evaluate(owner, store, *, holdout: float = 0.0, batch_size: int = 8,
             capability: bool = True) -> pd.DataFrame:
    """Base vs tuned on the held-out part of the feedback in ``store`` (all when ``holdout`` is 0).

    ``owner`` is the :class:`~lf_widgets.policy.LocalModel`; the scoring runs on its thread.
    Returns a DataFrame indexed by metric with columns base, tuned, change, examples, split
    ("held out" or "in sample": with no hold-out the numbers flatter the tuned model). With
    ``capability`` a last row, :data:`CAPABILITY_ROW`, gives the NLL per token of the package's
    general texts (split "general text", examples = texts; lower is better);
    ``df.attrs["capability"]`` holds :func:`~lf_widgets.capability.capability_nll`'s dict and
    ``df.attrs["warning"]`` its warning (None when within
    :data:`~lf_widgets.capability.CAPABILITY_WARN`).
    """
    return owner.call(lambda: _evaluate(owner, store, holdout, batch_size, capability),
                      name="evaluate")


def _evaluate(owner, store, holdout: float, batch_size: int, capability: bool) -> pd.DataFrame:
    from .data import build_examples

    data = build_examples(store, owner.tokenizer)
    if holdout > 0:
        data = TrainingData(sft=split_holdout(data.sft, holdout)[1],
                            pairs=split_holdout(data.pairs, holdout)[1])
    with owner.use("base"):
        base = _score(owner, data, batch_size)
    tuned = _score(owner, data, batch_size) if owner.has_adapter else base
    counts = {"preference accuracy": len(data.pairs),
              "log-prob per token of good samples": len(data.sft)}
    df = pd.DataFrame({"base": base, "tuned": tuned}).rename_axis("metric")
    df["change"] = df["tuned"] - df["base"]
    df["examples"] = pd.Series(counts)
    df["split"] = "held out" if holdout > 0 else "in sample"
    return _with_capability(df, owner, batch_size) if capability else df


def _with_capability(df: pd.DataFrame, owner, batch_size: int) -> pd.DataFrame:
    guard = _capability(owner, CAPABILITY_TEXTS, batch_size)  # on the model's thread already
    df.loc[CAPABILITY_ROW] = [guard["base"], guard["tuned"], guard["tuned"] - guard["base"],
                              guard["texts"], "general text"]
    df["examples"] = df["examples"].astype(int)
    df.attrs["capability"], df.attrs["warning"] = guard, guard["warning"]
    return df
