"""PreferencePanel: pick the better of two samples of one prompt; each choice is a DPO pair."""

from __future__ import annotations

import random
from collections.abc import Sequence

from ._pair import PairItem, PairPanel

__all__ = ["PreferencePanel", "pair_up"]


def pair_up(samples: Sequence, seed: int | None = None) -> list[PairItem]:
    """Pair consecutive samples of the same prompt, each pair's sides in random order."""
    rng = random.Random(seed)
    by_prompt: dict = {}
    for s in samples:
        by_prompt.setdefault(s.prompt, []).append(s)
    items = []
    for prompt, group in by_prompt.items():
        for first, second in zip(group[0::2], group[1::2]):
            left, right = (first, second) if rng.random() < 0.5 else (second, first)
            items.append(PairItem(prompt, left, right))
    return items


class PreferencePanel(PairPanel):
    """Two samples side by side (random sides); A / B / tie / both bad, with a reason.

    Each choice is a ``preference`` event: ``sample_id`` is the left sample, the value names the
    right one and the choice, so "a" means left ≻ right.
    """

    def __init__(self, session, items: Sequence[PairItem], **kwargs):
        super().__init__(session, items, title="Which answer is better?", **kwargs)

    def _record(self, index: int, choice: str, reason: str | None):
        item = self.items[index]
        return self._session.record_preference(item.left.sample_id, item.right.sample_id, choice,
                                               reason=reason)
