"""The Session: the one owner of state (model, feedback log, trainer) and the public verbs.

Panels are thin views over a Session: they call its verbs and listen to its events. Everything a
click does, a method here does too, so notebooks, tests and panels share one code path.
"""

from __future__ import annotations

import getpass
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import io as _io
from .generation import SamplingConfig, sample_completions
from .store import Event, FeedbackStore, SampleRecord

__all__ = ["Session", "Sample"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """A stored sample, as the panels show it."""

    sample_id: int  # row id in the feedback log
    prompt: str | None  # the prompt it answers (None for imported rows without one)
    text: str  # what the model wrote
    model: str | None = None  # which model wrote it
    adapter_step: int | None = None  # which adapter step (None: the base model)


def _default_annotator() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser() or "anonymous"
    except Exception:  # getpass fails in some containers without a passwd entry
        return "anonymous"


class Session:
    """A model, a feedback log and (later) a trainer, bound together for one notebook.

    Parameters
    ----------
    model : str, tuple or None
        ``None``: the offline default model (or ``$LF_WIDGETS_MODEL``); ``"tiny"``: a tiny random
        model for tests; a local folder or hub id; or an already loaded ``(model, tokenizer)``.
    store : str, Path or FeedbackStore
        The feedback log; a path is created if missing (mode 0600).
    annotator : str, optional
        Who is judging; defaults to ``$USER``.
    device, dtype : optional
        Override the automatic choice (CUDA + bf16 when present, else CPU fp32).
    """

    def __init__(self, model: Any = None, store: str | os.PathLike | FeedbackStore = "lf_feedback.sqlite",
                 annotator: str | None = None, *, device=None, dtype=None):
        from .models import load_model, model_tag  # torch-heavy: only when a Session is made

        if isinstance(model, tuple):
            self.model, self.tokenizer = model
        else:
            self.model, self.tokenizer = load_model(model, device=device, dtype=dtype)
        self.model_name = model_tag(self.model)
        self.store = store if isinstance(store, FeedbackStore) else FeedbackStore(store)
        self.annotator = (annotator or _default_annotator()).strip()
        self.adapter_step: int | None = None  # set by training; recorded with every sample
        # One lock for the model: a training step and a generation never interleave on it.
        self.model_lock = threading.RLock()
        self._listeners: dict[str, list[Callable]] = defaultdict(list)

    def __repr__(self) -> str:
        return (f"Session(model={self.model_name!r}, store={self.store.path!r}, "
                f"annotator={self.annotator!r})")

    # -- events --------------------------------------------------------------------------------
    def on(self, name: str, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Call ``callback(payload)`` on event ``name``; returns a function that unsubscribes.

        Events: ``"samples"`` (list of new :class:`Sample`), ``"judgement"`` (an :class:`Event`
        just committed), ``"undo"`` (the cancelled :class:`Event`).
        """
        self._listeners[name].append(callback)
        return lambda: self._listeners[name].remove(callback)

    def _emit(self, name: str, payload: Any) -> None:
        for callback in list(self._listeners[name]):
            try:
                callback(payload)
            except Exception:  # a broken view must never lose the user's data or the step
                log.exception("listener for %r failed", name)

    # -- generation ----------------------------------------------------------------------------
    def generate(self, prompts: str | Sequence[str], n: int = 4, *, max_new_tokens: int = 64,
                 temperature: float = 0.8, top_p: float = 0.95, seed: int | None = None,
                 batch_size: int = 8, progress: bool = True) -> list[Sample]:
        """Sample ``n`` completions per prompt, store each with its token ids, return them.

        Samples are committed batch by batch: interrupting (Kernel → Interrupt) keeps the batches
        already done and returns them, and leaves no half-written rows.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"prompts[{i}] must be a non-empty string, got {p!r}")
        config = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature,
                                top_p=top_p, seed=seed, batch_size=batch_size)
        out: list[Sample] = []
        try:
            for batch in sample_completions(self.model, self.tokenizer, prompts, n, config,
                                            lock=self.model_lock, progress=progress):
                step = self.adapter_step
                records = [SampleRecord(text=c.text, prompt=c.prompt, token_ids=c.token_ids,
                                        model=self.model_name, adapter_step=step,
                                        params={**config.as_params(), "n": n}) for c in batch]
                ids = self.store.add_samples(records)
                new = [Sample(i, r.prompt, r.text, r.model, r.adapter_step)
                       for i, r in zip(ids, records)]
                out.extend(new)
                self._emit("samples", new)
        except KeyboardInterrupt:
            print(f"Interrupted: kept the {len(out)} samples already generated and stored.")
        return out

    def samples(self, prompt: str | None = None) -> list[Sample]:
        """Stored samples (of one prompt if given), oldest first."""
        df = self.store.samples()
        if prompt is not None:
            df = df[df["prompt"] == prompt]
        return [Sample(int(r.sample_id), r.prompt, r.text, r.model,
                       None if pd.isna(r.adapter_step) else int(r.adapter_step))
                for r in df.itertuples()]

    # -- judgements ----------------------------------------------------------------------------
    def _record(self, sample_id: int, kind: str, value: Any, annotator: str | None) -> Event:
        event = self.store.record(int(sample_id), kind, value, annotator or self.annotator)
        self._emit("judgement", event)
        return event

    def record_rating(self, sample_id: int, rating: int, annotator: str | None = None) -> Event:
        """Rate a sample 1–5; committed to the log before this returns."""
        return self._record(sample_id, "rating", rating, annotator)

    def record_critique(self, sample_id: int, text: str, annotator: str | None = None) -> Event:
        """Say in words what is wrong (or right) with a sample."""
        return self._record(sample_id, "critique", text, annotator)

    def record_correction(self, sample_id: int, text: str, annotator: str | None = None) -> Event:
        """Give the text the sample should have been; it becomes a training target."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a correction must be non-empty text")
        return self._record(sample_id, "correction", text, annotator)

    def undo(self, sample_id: int | None = None, annotator: str | None = None) -> Event | None:
        """Cancel the annotator's latest judgement (on ``sample_id`` if given); returns it."""
        event = self.store.undo(annotator or self.annotator, sample_id)
        if event is not None:
            self._emit("undo", event)
        return event

    @property
    def feedback(self) -> pd.DataFrame:
        """Every sample with its current rating / critique / correction per annotator."""
        return self.store.feedback()

    # -- panels --------------------------------------------------------------------------------
    def rate(self, prompts: str | Sequence[str] | None = None, n: int = 4, *, display: bool = True,
             **sampling):
        """Generate ``n`` samples per prompt and show the rating panel.

        With ``prompts=None`` the panel shows the stored samples instead (e.g. imported ones).
        Returns the :class:`~lf_widgets.panels.rating.RatingPanel`.
        """
        from .panels.rating import RatingPanel

        samples = self.samples() if prompts is None else self.generate(prompts, n, **sampling)
        panel = RatingPanel(self, samples)
        if display:
            from IPython.display import display as _display
            _display(panel)
        return panel

    # -- import / export -----------------------------------------------------------------------
    def import_csv(self, path: str | os.PathLike, *, annotator: str | None = None) -> int:
        """Import judgements from a CSV file; see :func:`lf_widgets.io.import_feedback`."""
        return _io.import_feedback(self.store, path, default_annotator=annotator or self.annotator)

    def export(self, kind: str, path: str | os.PathLike) -> Path:
        """Write the feedback as ``kind`` ("csv", "jsonl", "parquet") to ``path``."""
        return _io.export_feedback(self.feedback, kind, path)

    def close(self) -> None:
        """Close the feedback log's connections."""
        self.store.close()
