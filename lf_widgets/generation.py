"""Batched, streaming sampling with the tokenizer's chat template (runs on the model's thread).

One ``model.generate`` call per batch of prompts, each prompt asked for ``n`` samples at once
(``num_return_sequences``), so the overhead over a plain ``generate`` is tokenising and decoding
only. A small streamer sees every new token: a sample whose end-of-turn token arrives is handed
over at once (the person can rate it while the others are still being written), and the text of
the unfinished ones is decoded for display at most every ``partial_every_s`` seconds.

The completion token ids are kept exactly as sampled, so training later scores the very tokens
the person judged, with no re-tokenisation drift.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from transformers.generation.streamers import BaseStreamer

from ._goal import goal_prompt
from .sampling import Completion, SamplingConfig, chat_prompt_ids, check_count

__all__ = ["SamplingConfig", "Completion", "chat_prompt_ids", "generation_prompt_ids",
           "stream_completions", "pad_id", "stop_ids"]

OnSample = Callable[[int, Completion], None]  # (slot, finished completion)
OnPartial = Callable[[int, str], None]  # (slot, text so far)


def pad_id(tokenizer) -> int:
    """The one pad-id rule: the tokenizer's pad token, else its end-of-sequence token."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def stop_ids(model, tokenizer) -> set[int]:
    """Token ids that end a turn (the generation config's and the tokenizer's EOS)."""
    eos = model.generation_config.eos_token_id
    eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    return {t for t in eos + [tokenizer.eos_token_id] if t is not None}


def generation_prompt_ids(tokenizer, prompt: str, goal: str | None = None) -> list[int]:
    """The ids a local generation starts from: ``prompt`` as the user turn — with ``goal``, first
    put through ``critique_data.HINDSIGHT_TEMPLATE`` — plus the assistant header.

    The one place a goal enters a prompt, for every local generation path; the sample keeps the
    person's ``prompt`` text (the goal is in its params).
    """
    return chat_prompt_ids(tokenizer, goal_prompt(prompt, goal))


def _left_pad(rows: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, r in enumerate(rows):  # left padding: every row's last token is its generation start
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


class _RowStreamer(BaseStreamer):
    """Collects each row's tokens as generate() produces them; finishes rows at their stop token."""

    def __init__(self, finish: Callable[[int, list[int], bool], None], stop: set[int],
                 partial: Callable[[int, list[int]], None] | None, every_s: float,
                 check: Callable[[], None] | None):
        self.finish, self.stop, self.partial, self.every_s = finish, stop, partial, every_s
        self.check = check
        self.rows: list[list[int]] | None = None
        self.done: set[int] = set()
        self._last = time.monotonic()

    def put(self, value: torch.Tensor) -> None:
        if value.dim() == 2:  # generate() first hands over the (expanded) prompt
            self.rows = [[] for _ in range(value.shape[0])]
            return
        if self.check is not None:
            self.check()  # raises to stop generate() at this token: a cancelled job
        for row, token in enumerate(value.tolist()):  # (B*n,)
            if row in self.done:
                continue  # generate() pads a finished row; those tokens are not the sample's
            self.rows[row].append(token)
            if token in self.stop:
                self.done.add(row)
                self.finish(row, self.rows[row], False)
        if self.partial is not None and time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            for row, tokens in enumerate(self.rows):
                if row not in self.done and tokens:
                    self.partial(row, tokens)

    def end(self) -> None:
        for row, tokens in enumerate(self.rows or ()):
            if row not in self.done:  # ran into max_new_tokens: no end-of-turn token
                self.done.add(row)
                self.finish(row, tokens, True)


def stream_completions(model, tokenizer, prompts: Sequence[str], n: int = 4,
                       config: SamplingConfig = SamplingConfig(), *, on_sample: OnSample,
                       on_partial: OnPartial | None = None, check: Callable[[], None] | None = None,
                       adapter_step: int | None = None, partial_every_s: float = 0.2) -> int:
    """Sample ``n`` completions per prompt, handing each over as soon as it is finished.

    Slot ``i * n + k`` is the ``k``-th sample of ``prompts[i]``. ``on_sample(slot, completion)``
    is called once per slot, in the order the samples finish; ``on_partial(slot, text)`` now and
    then with the text so far of unfinished ones. ``check()`` is called at every token and may
    raise to stop (the samples already handed over stay). Call on the model's thread only.
    Returns the number of samples handed over.
    """
    n = check_count(n)
    pad, stop = pad_id(tokenizer), stop_ids(model, tokenizer)
    device = next(model.parameters()).device
    handed = 0
    for start in range(0, len(prompts), config.batch_size):
        batch = list(prompts[start:start + config.batch_size])

        def finish(row, tokens, truncated, batch=batch, start=start):
            nonlocal handed
            text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
            handed += 1
            on_sample(start * n + row, Completion(batch[row // n], text, list(tokens),
                                                  truncated=truncated, adapter_step=adapter_step))

        def partial(row, tokens, start=start):
            on_partial(start * n + row, tokenizer.decode(tokens, skip_special_tokens=True).strip())

        streamer = _RowStreamer(finish, stop, partial if on_partial else None, partial_every_s,
                                check)
        ids, mask = _left_pad([generation_prompt_ids(tokenizer, p, config.goal) for p in batch],
                              pad)
        with torch.inference_mode():
            if config.seed is not None:
                torch.manual_seed(config.seed)
            model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device),
                max_new_tokens=config.max_new_tokens, do_sample=config.temperature > 0,
                temperature=config.temperature if config.temperature > 0 else None,
                top_p=config.top_p if config.temperature > 0 else None, top_k=None,
                num_return_sequences=n, pad_token_id=pad, streamer=streamer)
    return handed
