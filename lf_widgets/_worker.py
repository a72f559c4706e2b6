"""One long-lived thread that runs every piece of torch work of a model, one job at a time.

Why one thread: on a 2-core machine two torch threads (a generation in the cell, a training step
in a worker) each start an OpenMP team, and the teams fight over the cores (SFT ran at 0.84x
TRL's speed that way). And the model's state (adapter on/off, train/eval mode, the adapter step
a sample is stamped with) is only ever read or changed by the thread that runs the model, so no
lock is needed and provenance cannot be mislabelled by a step finishing in between.

Jobs are plain callables. Interactive ones (a generation for a panel, a stepper step, scoring)
are taken before background ones (the next training step), so a person's click waits for at
most the step in progress. Plain Python: no torch import here.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["Job", "Worker", "Cancelled", "INTERACTIVE", "BACKGROUND"]

log = logging.getLogger(__name__)

INTERACTIVE, BACKGROUND = 0, 1  # queue priorities: lower runs first


class Cancelled(Exception):
    """Raised inside a job (by :meth:`Job.check`) once somebody asked it to stop."""


class Job:
    """A unit of work on the worker thread, with a future and a cancel flag it can poll."""

    def __init__(self, fn: Callable[[Job], Any], name: str):
        self.fn, self.name = fn, name
        self.future: Future = Future()
        self.cancel_requested = threading.Event()

    def cancel(self) -> None:
        """Ask the job to stop at its next :meth:`check` (a generation: at the next token)."""
        self.cancel_requested.set()
        self.future.cancel()  # a job still queued never starts

    def check(self) -> None:
        """Raise :class:`Cancelled` if the job was asked to stop."""
        if self.cancel_requested.is_set():
            raise Cancelled(self.name)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job; a KeyboardInterrupt here cancels it and waits for it to stop.

        The job then ends at its next check (whole samples kept), and the interrupt goes on up.
        """
        try:
            return self.future.result(timeout)
        except KeyboardInterrupt:
            self.cancel()
            _wait_quietly(self.future)
            raise


def _wait_quietly(future: Future) -> None:
    while True:
        try:
            future.exception()  # waits; returns instead of raising the job's error
            return
        except KeyboardInterrupt:  # a second Ctrl-C while the job winds down: keep waiting
            continue
        except Exception:  # cancelled before it started
            return


class Worker:
    """The thread that owns a model: ``submit(fn)`` runs ``fn(job)`` there, in priority order.

    Parameters
    ----------
    name : str
        Thread name (shown in tracebacks and by ``threading.enumerate()``).
    """

    def __init__(self, name: str = "lf-torch"):
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()  # FIFO within a priority
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._closed = False
        self.current: Job | None = None  # the job running now (read by progress displays)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def on_thread(self) -> bool:
        """True when called from the worker thread itself (a job calling other model code)."""
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable[[Job], Any], *, name: str = "job",
               priority: int = INTERACTIVE) -> Job:
        """Queue ``fn(job)``; returns the :class:`Job` (its ``result()`` waits for it)."""
        if self._closed:
            raise RuntimeError("this model's worker is closed")
        job = Job(fn, name)
        self._queue.put((priority, next(self._order), job))
        return job

    def call(self, fn: Callable[[], Any], *, name: str = "call") -> Any:
        """Run ``fn()`` on the worker thread and return its result (inline when already there)."""
        if self.on_thread():
            return fn()
        return self.submit(lambda job: fn(), name=name).result()

    def close(self, timeout: float | None = 30.0) -> None:
        """Let queued jobs finish, then end the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put((BACKGROUND + 1, next(self._order), None))
        if not self.on_thread():
            self._thread.join(timeout)

    def _main(self) -> None:
        while True:
            _, _, job = self._queue.get()
            if job is None:
                return
            if not job.future.set_running_or_notify_cancel():
                continue  # cancelled while queued
            self.current = job
            try:
                job.future.set_result(job.fn(job))
            except BaseException as err:  # a job's failure is its caller's, never the thread's
                job.future.set_exception(err)
            finally:
                self.current = None
