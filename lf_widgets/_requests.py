"""A generation in progress: which slots have arrived, how far it is, how long it may take.

Plain Python (no torch): panels hold a :class:`GenerationRequest` and listen to the Session's
``"partial"``, ``"generated"`` and ``"generation"`` events for its id.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["GenerationRequest", "Partial", "Generated", "start_request"]

_ids = itertools.count(1)


@dataclass(frozen=True)
class Partial:
    """The text so far of a sample still being written (the ``"partial"`` event)."""

    request_id: int
    slot: int  # i * n + k: the k-th sample of the request's i-th prompt
    prompt: str
    text: str


@dataclass(frozen=True)
class Generated:
    """A sample that was finished and stored (the ``"generated"`` event)."""

    request_id: int
    slot: int
    sample: Any  # lf_widgets.session.Sample


class GenerationRequest:
    """``n`` samples for each of ``prompts``, produced in the background.

    ``samples`` fills in as they arrive (slot -> Sample); :meth:`wait` blocks until the end and
    returns them in slot order; :meth:`cancel` stops at the next token (finished samples stay).
    """

    def __init__(self, prompts: Sequence[str], n: int, *, label: str = ""):
        self.id = next(_ids)
        self.prompts, self.n, self.label = list(prompts), n, label
        self.total = len(self.prompts) * n
        self.samples: dict[int, Any] = {}
        self.state = "queued"  # queued -> running -> done | cancelled | failed
        self.error: BaseException | None = None
        self.queued_at, self.started_at, self.first_token_at = time.monotonic(), None, None
        self.job = None  # set by whoever runs it
        self._done = threading.Event()

    def __repr__(self) -> str:
        return f"GenerationRequest({self.progress_text()})"

    def prompt_of(self, slot: int) -> str:
        return self.prompts[slot // self.n]

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def progress_text(self) -> str:
        """E.g. "3 of 8 samples · ~40 s left" (the ETA from the pace so far)."""
        got = len(self.samples)
        head = f"{got} of {self.total} samples"
        if self.state in ("done", "cancelled", "failed"):
            tail = {"done": "done", "cancelled": "stopped", "failed": f"failed: {self.error}"}
            return f"{head} · {tail[self.state]}"
        if self.started_at is None:
            return f"{head} · waiting for the model (training step or earlier request)"
        if not got:
            return f"{head} · writing…"
        pace = (time.monotonic() - self.started_at) / got
        return f"{head} · ~{pace * (self.total - got):.0f} s left"

    def wait(self, timeout: float | None = None) -> list:
        """Block until finished; the samples in slot order. Ctrl-C cancels (keeps finished ones)."""
        if self.job is not None:
            try:
                self.job.result(timeout)
            except KeyboardInterrupt:
                pass  # Job.result cancelled the job and waited for it
            except Exception:  # noqa: S110 -- the state below says what happened
                pass
        self._done.wait(timeout)
        if self.state == "failed" and self.error is not None:
            raise self.error
        return [self.samples[k] for k in sorted(self.samples)]

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def finish(self, state: str, error: BaseException | None = None) -> None:
        self.state, self.error = state, error
        self._done.set()


def start_request(request: GenerationRequest, *, worker, source, store, emit, config, contender,
                  params: dict, on_sample=None) -> None:
    """Queue ``request``'s sampling on ``worker`` (the model's thread, or the remote one).

    Each finished sample is stored at once (with ``params`` as provenance), handed to
    ``on_sample(slot, sample)`` and announced (``"samples"``, ``"generated"``, ``"generation"``);
    text so far as ``"partial"``. ``source`` is a LocalModel (``stream``) or a RemoteChatModel
    (``complete``): the same path for both.
    """
    from .sampling import Sample
    from .store import SampleRecord

    def stored(slot: int, c) -> None:  # on the worker thread
        # A server returns no token ids: None, not [], so training tokenises the text instead.
        record = SampleRecord(text=c.text, prompt=c.prompt, token_ids=c.token_ids or None,
                              model=source.tag, adapter_step=c.adapter_step, params=params,
                              truncated=c.truncated)
        sample = Sample(store.add_samples([record])[0], c.prompt, c.text, source.tag,
                        c.adapter_step, c.truncated)
        request.samples[slot] = sample
        if request.first_token_at is None:
            request.first_token_at = time.monotonic()
        if on_sample is not None:
            on_sample(slot, sample)
        emit("samples", [sample])
        emit("generated", Generated(request.id, slot, sample))
        emit("generation", request)

    def partial(slot: int, text: str) -> None:
        if request.first_token_at is None:
            request.first_token_at = time.monotonic()
        emit("partial", Partial(request.id, slot, request.prompt_of(slot), text))

    def run(job):
        request.started_at, request.state = time.monotonic(), "running"
        emit("generation", request)
        if hasattr(source, "stream"):
            return source.stream(job, request.prompts, request.n, config, on_sample=stored,
                                 on_partial=partial, contender=contender)
        slot = 0
        for batch in source.complete(request.prompts, request.n, config, progress=False):
            for c in batch:
                job.check()
                stored(slot, c)
                slot += 1

    request.job = worker.submit(run, name=f"generate-{request.id}")
    request.job.future.add_done_callback(when_done(request, emit))


def when_done(request: GenerationRequest, emit):
    """The callback that ends ``request`` when its job's future ends (done, cancelled, failed)."""

    def finished(future) -> None:
        from ._worker import Cancelled

        error = None if future.cancelled() else future.exception()
        stopped = future.cancelled() or isinstance(error, (Cancelled, KeyboardInterrupt))
        state = "cancelled" if stopped else "failed" if error is not None else "done"
        request.finish(state, error if state == "failed" else None)
        emit("generation", request)

    return finished
