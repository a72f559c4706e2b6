"""The rules of :mod:`lf_widgets.selection`, as pure functions of scored candidates (no model).

Which candidates of a prompt's pool are near-duplicates, how many picks are random, and which
``n`` are shown: the module doc of :mod:`lf_widgets.selection` says why each rule is what it is.
"""

from __future__ import annotations

import difflib
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

__all__ = ["SIMILARITY", "PoolSample", "near_duplicates", "distinct_prompts", "random_counts",
           "choose", "unsureness"]

SIMILARITY = 0.9  # two texts more similar than this (0..1) are near-duplicates


@dataclass(frozen=True)
class PoolSample:
    """One candidate of a prompt's pool, with what the selection knew about it."""

    prompt: str
    index: int  # its place in the prompt's pool, in generation order
    text: str
    token_ids: tuple[int, ...]  # completion ids as sampled (what was scored)
    truncated: bool = False
    adapter_step: int | None = None  # the adapter step that wrote it
    duplicate_of: int | None = None  # index of the earlier candidate it nearly repeats
    reward: float | None = None  # β (log π_θ − log π_ref); None: no adapter, or not scored
    entropy: float | None = None  # mean next-token entropy over its tokens (nats); None: not scored
    pick: str | None = None  # "margin" | "entropy" | "random" | "duplicate"; None: not shown
    sample_id: int | None = None  # its id in the log, once shown (and so stored)


# -- near-duplicates ----------------------------------------------------------------------------
def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


@lru_cache(maxsize=1)
def _ratio():
    try:
        from rapidfuzz.fuzz import ratio

        return lambda a, b: ratio(a, b) / 100
    except ImportError:  # rapidfuzz is a dependency; difflib gives a similar ratio without it
        return lambda a, b: difflib.SequenceMatcher(None, a, b).ratio()


def near_duplicates(texts: Sequence[str], similarity: float = SIMILARITY) -> list[int | None]:
    """For each text, the index of an earlier distinct text it nearly repeats (None: distinct).

    Equal after case folding and whitespace collapsing, or a similarity ratio above
    ``similarity`` (rapidfuzz's ``fuzz.ratio``, else difflib's, on the folded texts).
    """
    ratio, kept, out = _ratio(), [], []
    for text in texts:
        folded = _fold(text)
        twin = next((i for i, k in kept if k == folded or ratio(k, folded) > similarity), None)
        out.append(twin)
        if twin is None:
            kept.append((len(out) - 1, folded))
    return out


def distinct_prompts(prompts: Sequence[str], similarity: float = SIMILARITY
                     ) -> tuple[list[str], list[str]]:
    """(prompts kept, near-duplicate prompts skipped), first occurrences kept, order kept."""
    twins = near_duplicates(prompts, similarity)
    return ([p for p, t in zip(prompts, twins) if t is None],
            [p for p, t in zip(prompts, twins) if t is not None])


# -- the choice (pure: no model) ----------------------------------------------------------------
def random_counts(prompts: int, n: int, share: float, unit: str, rng: random.Random) -> list[int]:
    """How many of each prompt's ``n`` picks are random: ``⌊share × picks⌋`` in all, placed by
    ``rng``. A pick is a sample (``unit="sample"``, picks = prompts × n) or a whole prompt's
    pair (``"pair"``, picks = prompts)."""
    total = prompts * n if unit == "sample" else prompts
    chosen = rng.sample(range(total), int(share * total + 1e-9))
    counts = [0] * prompts
    for k in chosen:
        if unit == "sample":
            counts[k // n] += 1
        else:
            counts[k] = n
    return counts


def _tightest(distinct: list[PoolSample], k: int) -> list[PoolSample]:
    """The ``k`` candidates with the smallest reward spread, nearest the median first."""
    if k <= 0:
        return []
    ranked = sorted(distinct, key=lambda c: c.reward)
    median = statistics.median(c.reward for c in ranked)
    windows = [ranked[i:i + k] for i in range(max(len(ranked) - k + 1, 1))]
    best = min(windows, key=lambda w: (w[-1].reward - w[0].reward,
                                       abs(statistics.fmean(c.reward for c in w) - median)))
    return sorted(best, key=lambda c: abs(c.reward - median))


def choose(pool: Sequence[PoolSample], n: int, basis: str, n_random: int = 0,
           rng: random.Random | None = None) -> list[PoolSample]:
    """The ``n`` candidates of one prompt's pool to show, in display order, ``pick`` set.

    ``basis``: "margin" (needs ``reward``), "entropy" (needs ``entropy``) or "random".
    ``n - n_random`` picks follow the basis (module doc), then ``n_random`` are drawn at random
    from the other distinct candidates; near-duplicates (``duplicate_of``) only fill up a pool
    with fewer than ``n`` distinct candidates.
    """
    rng = rng or random.Random()
    distinct = [c for c in pool if c.duplicate_of is None]
    n_random = n if basis == "random" else min(n_random, n)
    if basis == "margin":
        sure = _tightest(distinct, n - n_random)
    elif basis == "entropy":
        sure = sorted(distinct, key=lambda c: -c.entropy)[:n - n_random]
    elif basis == "random":
        sure = []
    else:
        raise ValueError(f"basis must be 'margin', 'entropy' or 'random', got {basis!r}")
    taken = {c.index for c in sure}
    rest = [c for c in distinct if c.index not in taken]
    extra = rng.sample(rest, min(n_random, len(rest)))
    out = [replace(c, pick=basis) for c in sure] + [replace(c, pick="random") for c in extra]
    taken = {c.index for c in out}
    fill = [c for c in pool if c.index not in taken][:n - len(out)]
    return out + [replace(c, pick="duplicate") for c in fill]


def unsureness(picks: list[PoolSample], basis: str) -> float:
    """Sort key of a prompt's picks: smallest reward spread, or highest mean entropy, first."""
    if basis == "margin":
        rewards = [c.reward for c in picks if c.reward is not None]
        return max(rewards) - min(rewards) if rewards else float("inf")
    if basis == "entropy":
        return -statistics.fmean([c.entropy for c in picks if c.entropy is not None] or [0.0])
    return 0.0
