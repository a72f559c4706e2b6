"""Batched sampling with the tokenizer's chat template.

One ``model.generate`` call per batch of prompts, each prompt asked for ``n`` samples at once
(``num_return_sequences``), so the overhead over a plain ``generate`` is tokenising and
decoding only. The completion token ids are kept exactly as sampled, so training later scores the
very tokens the person judged, with no re-tokenisation drift.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from .sampling import Completion, SamplingConfig, chat_prompt_ids

__all__ = ["SamplingConfig", "Completion", "chat_prompt_ids", "sample_completions"]


def _left_pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, r in enumerate(rows):  # left padding: every row's last token is its generation start
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


def _trim(ids: list[int], stop_ids: set[int]) -> list[int]:
    """Cut after the first stop token, keeping it: SFT must learn to stop, too."""
    for i, t in enumerate(ids):
        if t in stop_ids:
            return ids[:i + 1]
    return ids


def sample_completions(model, tokenizer, prompts: Sequence[str], n: int = 4,
                       config: SamplingConfig = SamplingConfig(), *,
                       lock: threading.Lock | None = None, progress: bool = True,
                       ) -> Iterator[list[Completion]]:
    """Yield, batch by batch, ``n`` completions for each prompt (prompt-major order).

    The caller stores each yielded batch before asking for the next, so an interrupt between
    batches leaves no half-written rows.
    ``lock`` guards the model against a training step running at the same time.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop_ids = {t for t in _as_list(model.generation_config.eos_token_id) + [tokenizer.eos_token_id]
                if t is not None}
    device = next(model.parameters()).device
    batches = [list(prompts[i:i + config.batch_size])
               for i in range(0, len(prompts), config.batch_size)]
    bar = tqdm(total=len(prompts) * n, desc="generating", unit="sample", disable=not progress,
               leave=False)
    try:
        for batch in batches:
            ids, mask = _left_pad([chat_prompt_ids(tokenizer, p) for p in batch], pad_id)
            with (lock or contextlib.nullcontext()), torch.inference_mode():
                if config.seed is not None:
                    torch.manual_seed(config.seed)
                out = model.generate(
                    input_ids=ids.to(device), attention_mask=mask.to(device),
                    max_new_tokens=config.max_new_tokens, do_sample=config.temperature > 0,
                    temperature=config.temperature if config.temperature > 0 else None,
                    top_p=config.top_p if config.temperature > 0 else None, top_k=None,
                    num_return_sequences=n, pad_token_id=pad_id)
            new = out[:, ids.shape[1]:].tolist()  # (B*n, new_tokens), prompt-major order
            completions = []
            for row, tokens in enumerate(new):
                kept = _trim(tokens, stop_ids)
                completions.append(Completion(
                    prompt=batch[row // n],
                    text=tokenizer.decode(kept, skip_special_tokens=True).strip(),
                    token_ids=kept))
            bar.update(len(completions))
            yield completions
    finally:
        bar.close()


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]
