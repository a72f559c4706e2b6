"""The Session's events: who listens to what. Plain Python, thread-safe enough for our use
(listeners are added from the cell, called from the cell or the model's thread)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

__all__ = ["Events", "EVENTS"]

log = logging.getLogger("lf_widgets.session")

#: Every event a Session emits, and its payload.
EVENTS = {
    "samples": "list of new Sample, just stored",
    "generated": "_requests.Generated(request_id, slot, sample): a sample of a request",
    "partial": "_requests.Partial(request_id, slot, prompt, text): text so far",
    "generation": "the _requests.GenerationRequest whose progress or state changed",
    "judgement": "the store.Event just committed",
    "undo": "the store.Event just cancelled",
    "step": "metrics.StepMetrics of a training step",
    "train_state": "metrics.TrainState (starting, running, pausing, paused, stopping, stopped, "
                   "done, failed)",
    "revision": "revisions.Revision(sample_id, index, candidate, request): a suggested revision "
                "of a sample was written (suggest_revisions); index 0-based, in order",
    "revisions_done": "revisions.RevisionsDone(sample_id, candidates, request): the refiner "
                      "stopped (request.state: done, cancelled or failed, request.error)",
}


class Events:
    """Listeners per event name; a failing listener is logged, never raised into the emitter."""

    def __init__(self):
        self._listeners: dict[str, list[Callable]] = defaultdict(list)

    def on(self, name: str, callback: Callable[[Any], None]) -> Callable[[], None]:
        if name not in EVENTS:
            raise ValueError(f"no event {name!r}; the events are {sorted(EVENTS)}")
        self._listeners[name].append(callback)
        return lambda: self._listeners[name].remove(callback)

    def emit(self, name: str, payload: Any) -> None:
        for callback in list(self._listeners[name]):
            try:
                callback(payload)
            except Exception:  # a broken view must never lose the user's data or the step
                log.exception("listener for %r failed", name)
