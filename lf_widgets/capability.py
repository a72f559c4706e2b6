"""The capability guard: did tuning make the model worse at ordinary text?

Feedback teaches a narrow thing (an opening, a length, a format); nothing in it says whether the
rest of the model suffered. :func:`capability_nll` scores general text held out from all feedback
(:data:`~lf_widgets.capability_texts.CAPABILITY_TEXTS`, shipped with the package) under the base
model (adapter off) and the tuned one: the mean negative log-likelihood per token. When the tuned
model's is worse by more than :data:`CAPABILITY_WARN` (relative), the result carries a warning.

It runs on the model owner's thread (inline when called from a job there, e.g. by the trainer
between steps); the base figure is computed once per owner and text set (the base is frozen).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from types import SimpleNamespace

import torch

from .capability_texts import CAPABILITY_TEXTS

__all__ = ["CAPABILITY_WARN", "capability_nll", "capability_warning"]

CAPABILITY_WARN = 0.05  # tuned NLL per token above base by more than 5 % (relative): warn. On
# SmolLM2-135M a few rounds of LoRA feedback move it by well under 1 %; 5 % is a clear break.

_BASE_NLL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # owner -> {texts: (nll, n)}


def capability_warning(base: float, tuned: float, threshold: float | None = None) -> str | None:
    """The warning to show when ``tuned`` NLL per token is worse than ``base`` by over
    ``threshold`` (relative; default :data:`CAPABILITY_WARN`), else None."""
    threshold = CAPABILITY_WARN if threshold is None else threshold
    if not base > 0 or not tuned > base * (1 + threshold):
        return None
    return (f"capability: the tuned model's loss per token on general text is "
            f"{(tuned - base) / base:+.1%} against base ({base:.3f} -> {tuned:.3f}), beyond the "
            f"{threshold:.0%} threshold: it may be forgetting ordinary language. Train fewer "
            f"steps, a lower lr, or add more varied feedback.")


def capability_nll(owner, texts: Sequence[str] | None = None, batch_size: int = 8) -> dict:
    """Mean per-token NLL of base (adapter off) and tuned on general held-out text.

    Parameters
    ----------
    owner : LocalModel
        The model owner; the scoring runs on its thread (``owner.call``).
    texts : sequence of str, optional
        Plain texts to score; default the package's :data:`CAPABILITY_TEXTS` (40 passages).
    batch_size : int
        Texts per forward pass.

    Returns
    -------
    dict
        ``base``, ``tuned`` (NLL per token, nats; equal when there is no adapter), ``change``
        (relative: (tuned - base) / base), ``tokens`` (scored tokens), ``texts`` (count) and
        ``warning`` (a sentence when ``change`` exceeds :data:`CAPABILITY_WARN`, else None).
    """
    texts = tuple(CAPABILITY_TEXTS if texts is None else texts)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError("texts must be a non-empty sequence of non-empty strings")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    return owner.call(lambda: _measure(owner, texts, batch_size), name="capability")


def _measure(owner, texts: tuple[str, ...], batch_size: int) -> dict:
    examples = _examples(owner.tokenizer, texts)
    cached = _BASE_NLL.setdefault(owner, {})
    if texts not in cached:
        with owner.use("base"):
            cached[texts] = _nll(owner, examples, batch_size)
    base, tokens = cached[texts]
    tuned = _nll(owner, examples, batch_size)[0] if owner.has_adapter else base
    change = (tuned - base) / base if base > 0 else float("nan")
    return {"base": base, "tuned": tuned, "change": change, "tokens": tokens,
            "texts": len(texts), "warning": capability_warning(base, tuned)}


def _examples(tokenizer, texts: tuple[str, ...]) -> list[SimpleNamespace]:
    """Each text as a one-token "prompt" (its first token) and the rest scored, as collate_sft reads."""
    out = []
    for text in texts:
        ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) >= 2:
            out.append(SimpleNamespace(prompt_ids=ids[:1], completion_ids=ids[1:]))
    if not out:
        raise ValueError("no text is at least two tokens long")
    return out


def _nll(owner, examples: list, batch_size: int) -> tuple[float, int]:
    """(summed −log p / scored tokens, scored tokens), the model in eval mode for the pass."""
    from .batching import collate_sft
    from .step import forward_logps, to_device

    model = owner.model
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        with torch.inference_mode():
            for i in range(0, len(examples), batch_size):
                batch = to_device(collate_sft(examples[i:i + batch_size], owner.pad_id), owner.device)
                logps, n = forward_logps(model, batch)  # (B,), (B,)
                total -= float(logps.sum())
                tokens += int(n.sum())
    finally:
        model.train(was_training)
    return total / tokens, tokens
