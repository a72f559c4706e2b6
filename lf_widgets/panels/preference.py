"""PreferencePanel: pick the better of two samples of one prompt; each choice is a DPO pair."""

from __future__ import annotations

import random
from collections.abc import Sequence

from ._pair import PairItem, PairPanel

__all__ = ["PreferencePanel", "pair_up"]

_SWAP = {"a": "b", "b": "a"}


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
    right one and the choice, so "a" means left ≻ right. With ``request`` (two samples per
    prompt being generated), a pair appears once both of its samples are written.
    """

    KIND = "preference"

    def __init__(self, session, samples: Sequence = (), *, request=None, seed: int | None = None,
                 **kwargs):
        self._rng, self._request = random.Random(seed), request
        total = len(request.prompts) if request is not None else None
        samples = list(samples)
        items = (samples if samples and isinstance(samples[0], PairItem)  # already paired
                 else pair_up(samples, seed) if request is None else [])
        super().__init__(session, items, title="Which answer is better?", total=total, **kwargs)
        if request is not None:
            self._unsubscribe.append(session.on("generated", self._on_generated))
            # arrived before we listened, in arrival order (select= puts the least-sure pair first)
            for slot in list(request.samples):
                self._pair_if_complete(slot)

    def wait(self, timeout: float | None = None) -> PreferencePanel:
        """Block until both samples of every pair are written (scripts, notebooks)."""
        if self._request is not None:
            self._request.wait(timeout)
        return self

    def _on_generated(self, generated) -> None:
        if generated.request_id == self._request.id:
            self._pair_if_complete(generated.slot)

    def _pair_if_complete(self, slot: int) -> None:
        with self._lock:
            first, second = slot - slot % 2, slot - slot % 2 + 1
            got = self._request.samples
            done = {(i.left.sample_id, i.right.sample_id) for i in self.items}
            if first in got and second in got:
                a, b = got[first], got[second]
                if (a.sample_id, b.sample_id) in done or (b.sample_id, a.sample_id) in done:
                    return
                left, right = (a, b) if self._rng.random() < 0.5 else (b, a)
                self.add_item(PairItem(a.prompt, left, right))

    def _record(self, index: int, choice: str, reason: str | None):
        item = self.items[index]
        return self._session.record_preference(item.left.sample_id, item.right.sample_id, choice,
                                               reason=reason)

    def _choices(self) -> dict[int, str]:
        df = self._session.judgements(self.sample_ids(), annotator=self._session.annotator,
                                      kinds=["preference"])
        shown = {(i.left.sample_id, i.right.sample_id): k for k, i in enumerate(self.items)}
        out = {}
        for e in df.itertuples(index=False):
            pair = (int(e.sample_id), int(e.value["other"]))
            if pair in shown:  # stored as shown
                out[shown[pair]] = e.value["choice"]
            elif pair[::-1] in shown:  # the same pair, stored the other way round
                out[shown[pair[::-1]]] = _SWAP.get(e.value["choice"], e.value["choice"])
        return out
