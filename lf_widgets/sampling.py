"""How to sample, and what a sample is: plain Python, no torch.

Panels, the store, imports, exports and the remote source all use these records, so they live
here rather than beside the torch code that produces local samples (``generation.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from ._goal import check_goal

__all__ = ["SamplingConfig", "Completion", "Sample", "chat_prompt_ids", "check_prompts", "check_count",
           "sampling_config"]


def _is_int(value) -> bool:
    # numpy integers are accepted (they are what DataFrame columns hold); bools are not numbers here
    return not isinstance(value, bool) and hasattr(value, "__index__")


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample; stored with every sample as its provenance."""

    max_new_tokens: int = 64  # completion length cap; 64 keeps a CPU round of 4 samples ~5 s
    temperature: float = 0.8  # 0 means greedy decoding (one sample per prompt makes sense then)
    top_p: float = 0.95  # nucleus sampling; 1.0 turns it off
    seed: int | None = None  # fixes torch's RNG before each batch, for reproducible demos
    batch_size: int = 8  # prompts per generate() call; each brings n rows, so 8×4 = 32 sequences
    goal: str | None = None  # experimental: condition on the feedback wanted, e.g. "Starts with
    # 'Ahoy!'": the prompt goes through critique_data.HINDSIGHT_TEMPLATE (as hindsight training
    # does) before the chat template; the stored sample keeps the person's prompt. See Session.goal

    def __post_init__(self):
        for name in ("max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and not _is_int(self.seed):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")
        check_goal(self.goal)

    def as_params(self) -> dict:
        params = asdict(self)
        if params["goal"] is None:  # provenance of goal-conditioned samples only; others as before
            del params["goal"]
        return params


@dataclass(frozen=True)
class Completion:
    """One sampled completion of one prompt."""

    prompt: str  # the user turn as the person wrote it
    text: str  # decoded completion, special tokens removed
    token_ids: list[int]  # completion ids up to and including the end-of-turn token ([] if unknown)
    truncated: bool = False  # cut off at max_new_tokens: no end-of-turn token at its end
    adapter_step: int | None = None  # adapter step that wrote it, read on the model's thread


@dataclass(frozen=True)
class Sample:
    """A stored sample, as the panels show it."""

    sample_id: int  # row id in the feedback log
    prompt: str | None  # the prompt it answers (None for imported rows without one)
    text: str  # what the model wrote
    model: str | None = None  # which model wrote it
    adapter_step: int | None = None  # which adapter step (None: the base model)
    truncated: bool = False  # cut off at max_new_tokens


def chat_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of ``prompt`` as a user turn plus the assistant header (the generation prompt)."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                            add_generation_prompt=True, tokenize=True)
        # transformers 5 returns a BatchEncoding-like mapping; 4.x a plain list.
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    return tokenizer(prompt, add_special_tokens=True)["input_ids"]


def check_prompts(prompts, name: str = "prompts") -> list[str]:
    """``prompts`` as a non-empty list of non-empty strings, or a ValueError naming the bad one."""
    if isinstance(prompts, str):
        prompts = [prompts]
    elif prompts is None or not hasattr(prompts, "__iter__"):
        raise ValueError(f"{name} must be a string or a list of strings, got {prompts!r}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError(f"{name} is empty: give at least one prompt")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"{name}[{i}] must be a non-empty string, got {p!r}")
    return prompts


def check_count(value, name: str = "n") -> int:
    """``value`` as a positive int (numpy integers too), or a ValueError naming ``name``."""
    if not _is_int(value) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def sampling_config(config: SamplingConfig | None = None, **options) -> SamplingConfig:
    """``config`` (or the defaults) with ``options`` on top; unknown names are an error."""
    known = {f.name for f in fields(SamplingConfig)}
    if unknown := sorted(set(options) - known):
        raise TypeError(f"unknown sampling option(s) {unknown}; SamplingConfig has {sorted(known)}")
    return replace(config or SamplingConfig(), **options)
