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
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

__all__ = ["SamplingConfig", "Completion", "chat_prompt_ids", "sample_completions"]


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample; stored with every sample as its provenance."""

    max_new_tokens: int = 64  # completion length cap; 64 keeps a CPU round of 4 samples ~5 s
    temperature: float = 0.8  # 0 means greedy decoding (one sample per prompt makes sense then)
    top_p: float = 0.95  # nucleus sampling; 1.0 turns it off
    seed: int | None = None  # fixes torch's RNG before each batch, for reproducible demos
    batch_size: int = 8  # prompts per generate() call; each brings n rows, so 8×4 = 32 sequences

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    def as_params(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Completion:
    """One sampled completion of one prompt."""

    prompt: str  # the user turn as the person wrote it
    text: str  # decoded completion, special tokens removed
    token_ids: list[int]  # completion ids up to and including the end-of-turn token


def chat_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of ``prompt`` as a user turn plus the assistant header (the generation prompt)."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                            add_generation_prompt=True, tokenize=True)
        # transformers 5 returns a BatchEncoding-like mapping; 4.x a plain list.
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    return tokenizer(prompt, add_special_tokens=True)["input_ids"]


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
