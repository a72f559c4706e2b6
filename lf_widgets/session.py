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
from typing import Any

import pandas as pd

from . import io as _io
from ._session_training import TrainingVerbs
from .sampling import SamplingConfig
from .remote import RemoteChatModel, RemoteModelError
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


class Session(TrainingVerbs):
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
    adapter : str or Path, optional
        A saved LoRA adapter folder (``save_adapter`` or a checkpoint) to start from.
    resume : bool
        With no ``adapter``, continue from the latest automatic checkpoint recorded in the
        store, if any (so a kernel restart loses no training).
    """

    def __init__(self, model: Any = None, store: str | os.PathLike | FeedbackStore = "lf_feedback.sqlite",
                 annotator: str | None = None, *, device=None, dtype=None,
                 adapter: str | os.PathLike | None = None, resume: bool = True):
        from .models import load_model, model_tag  # torch-heavy: only when a Session is made

        self.remote: RemoteChatModel | None = None  # set when samples come from an endpoint
        if isinstance(model, RemoteChatModel):
            if adapter is not None:
                raise ValueError("adapter= needs a local model; a RemoteChatModel has no "
                                 "weights here")
            self.remote = model
            self.model = self.tokenizer = None
            self.model_name = model.tag
        elif isinstance(model, tuple):
            self.model, self.tokenizer = model
            self.model_name = model_tag(self.model)
        else:
            self.model, self.tokenizer = load_model(model, device=device, dtype=dtype)
            self.model_name = model_tag(self.model)
        self.store = store if isinstance(store, FeedbackStore) else FeedbackStore(store)
        self.annotator = (annotator or _default_annotator()).strip()
        self.adapter_step: int | None = None  # set by training; recorded with every sample
        # One lock for the model: a training step and a generation never interleave on it.
        self.model_lock = threading.RLock()
        self._listeners: dict[str, list[Callable]] = defaultdict(list)
        self._run = None  # the current or last TrainingRun
        self._reference_cache = None  # reference log-probs, shared by every run (base is frozen)
        if adapter is None and resume and self.remote is None:
            adapter = self._latest_checkpoint()
        if adapter is not None:
            self.load_adapter(adapter)

    def __repr__(self) -> str:
        return (f"Session(model={self.model_name!r}, store={self.store.path!r}, "
                f"annotator={self.annotator!r})")

    # -- events --------------------------------------------------------------------------------
    def on(self, name: str, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Call ``callback(payload)`` on event ``name``; returns a function that unsubscribes.

        Events: ``"samples"`` (list of new :class:`Sample`), ``"judgement"`` (an :class:`Event`
        just committed), ``"undo"`` (the cancelled :class:`Event`), and from the training thread
        ``"step"`` (:class:`~lf_widgets.metrics.StepMetrics`) and ``"train_state"``
        (:class:`~lf_widgets.metrics.TrainState`).
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
            params = {**config.as_params(), "n": n}
            if self.remote is not None:
                batches = self.remote.complete(prompts, n, config, progress=progress)
                params["endpoint"] = self.remote.endpoint
            else:
                from .generation import sample_completions

                batches = sample_completions(self.model, self.tokenizer, prompts, n, config,
                                             lock=self.model_lock, progress=progress)
            for batch in batches:
                step = self.adapter_step
                # A server returns no token ids: store None, not [] (data.py reads a list as
                # the completion's ids), so training and scoring tokenise the text instead.
                records = [SampleRecord(text=c.text, prompt=c.prompt,
                                        token_ids=c.token_ids or None, model=self.model_name,
                                        adapter_step=step, params=params) for c in batch]
                ids = self.store.add_samples(records)
                new = [self._sample(i, r) for i, r in zip(ids, records)]
                out.extend(new)
                self._emit("samples", new)
        except KeyboardInterrupt:
            print(f"Interrupted: kept the {len(out)} samples already generated and stored.")
        except RemoteModelError:
            if out:
                print(f"Stopped by an error: kept the {len(out)} samples already generated "
                      "and stored.")
            raise
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

    def record_preference(self, sample_a: int, sample_b: int, choice: str, *,
                          reason: str | None = None, annotator: str | None = None) -> Event:
        """Say which of two samples of one prompt is better: "a", "b", "tie" or "both_bad".

        "a" means ``sample_a`` ≻ ``sample_b``; it becomes a DPO pair for training.
        """
        if choice not in ("a", "b", "tie", "both_bad"):
            raise ValueError(f"choice must be 'a', 'b', 'tie' or 'both_bad', got {choice!r}")
        value = {"other": int(sample_b), "choice": choice, "reason": reason}
        return self._record(sample_a, "preference", value, annotator)

    def record_ab_vote(self, test, index: int, choice: str, *, reason: str | None = None,
                       annotator: str | None = None) -> Event:
        """Record a blind vote on item ``index`` of an A/B test, with the hidden assignment."""
        if choice not in ("a", "b", "tie", "both_bad"):
            raise ValueError(f"choice must be 'a', 'b', 'tie' or 'both_bad', got {choice!r}")
        item, (left, right) = test.items[index], test.hidden[index]
        value = {"test": test.test_id, "item": index, "other": item.right.sample_id,
                 "choice": choice, "left": left, "right": right, "reason": reason}
        return self._record(item.left.sample_id, "ab_vote", value, annotator)

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
        return self._show(RatingPanel(self, samples), display)

    # -- comparing ------------------------------------------------------------------------------
    def compare(self, prompts: str | Sequence[str] | None = None, *, display: bool = True,
                seed: int | None = None, **sampling):
        """Show pairs of samples of the same prompt; pick the better (a DPO pair each).

        With ``prompts``, two samples per prompt are generated; without, stored samples of the
        same prompt are paired. Sides are shuffled (``seed`` makes it repeatable).
        """
        from .panels.preference import PreferencePanel, pair_up

        samples = self.samples() if prompts is None else self.generate(prompts, 2, **sampling)
        panel = PreferencePanel(self, pair_up(samples, seed))
        return self._show(panel, display)

    def ab_test(self, prompts: str | Sequence[str], n: int = 1,
                models: tuple[str, str] = ("base", "tuned"), *, display: bool = True,
                seed: int | None = None, max_new_tokens: int = 64, temperature: float = 0.8,
                top_p: float = 0.95, batch_size: int = 8):
        """Blind A/B test: one sample per contender for each prompt (× n), sides shuffled.

        ``models`` names two contenders: "base" (adapter off), "tuned" (current adapter) or a
        saved adapter/checkpoint folder. Generation holds the model lock, so it is safe while
        training runs. Returns the :class:`~lf_widgets.panels.abtest.ABTestPanel`.
        """
        from .ab import build_test
        from .panels.abtest import ABTestPanel

        self._require_local_model("ab_test()")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        config = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature,
                                top_p=top_p, batch_size=batch_size)
        test = build_test(self, prompts, n, tuple(str(m) for m in models), config, seed)
        return self._show(ABTestPanel(self, test), display)

    def ab_results(self, test_id: str | None = None) -> pd.DataFrame:
        """Every current A/B vote (of one test if given), with the winning contender named."""
        from .ab import votes_frame

        return votes_frame(self.store, test_id)

    def ab_summary(self, test_id: str):
        """Win rate, Wilson 95 % interval and sign test for one A/B test
        (:class:`~lf_widgets.evaluation.ABResult`; ``.sentence()`` says it in words)."""
        from .ab import summarise

        votes = self.ab_results(test_id)
        contenders = self._ab_contenders(test_id, votes)
        return summarise(votes, contenders)

    def _ab_contenders(self, test_id: str, votes: pd.DataFrame) -> tuple[str, str]:
        df = self.store.samples()
        mine = df[df["params"].map(lambda p: p.get("ab_test") == test_id)]
        names = list(dict.fromkeys(mine["params"].map(lambda p: p["contender"])))
        if len(names) != 2:
            raise ValueError(f"no A/B test {test_id!r} in this store")
        return names[0], names[1]

    def _show(self, panel, display: bool):
        if display:
            from IPython.display import display as _display
            _display(panel)
        return panel

    def _require_local_model(self, verb: str) -> None:
        if self.remote is not None:
            raise RuntimeError(
                f"{verb} needs a local model, and this session samples from {self.remote.tag} "
                f"at {self.remote.endpoint}, whose weights are not here. Export the feedback "
                "and fine-tune where the model lives: session.export('openai-sft', "
                "'train.jsonl', scrub=True) (or 'openai-dpo', 'trl-sft', 'trl-dpo', "
                "'trl-kto'); or open this store in a Session with a local model to train here.")

    def _sample(self, sample_id: int, record: SampleRecord) -> Sample:
        return Sample(sample_id, record.prompt, record.text, record.model, record.adapter_step)

    # -- import / export -----------------------------------------------------------------------
    def import_csv(self, path: str | os.PathLike, *, annotator: str | None = None) -> int:
        """Import judgements from a CSV file; see :func:`lf_widgets.io.import_feedback`."""
        return _io.import_feedback(self.store, path, default_annotator=annotator or self.annotator)

    def export(self, kind: str, path: str | os.PathLike, *, scrub=False, **options):
        """Write the feedback, or training data built from it, to ``path``.

        ``kind``: "csv", "jsonl", "parquet" (the feedback table; returns the Path), or a training
        format — "trl-sft", "trl-dpo", "trl-kto", "openai-sft", "openai-dpo" — built with the
        same rules as training (returns an :class:`~lf_widgets.exports.ExportResult`).
        ``scrub=True`` (or a :class:`~lf_widgets.exports.ScrubConfig`) replaces e-mail
        addresses and phone numbers in training exports and counts them.
        """
        from . import exports as _exports

        if kind in _exports.EXPORT_FORMATS:
            return _exports.export_training(self.store, kind, path, scrub=scrub, **options)
        if kind not in _io.EXPORT_KINDS:
            raise ValueError(f"kind must be one of {_io.EXPORT_KINDS + _exports.EXPORT_FORMATS}, "
                             f"got {kind!r}")
        return _io.export_feedback(self.feedback, kind, path)

    def export_training_job(self, folder: str | os.PathLike, objective: str = "sft", *,
                            model: str | None = None, **options):
        """Write a TRL LoRA training job for the feedback into ``folder`` (data.jsonl,
        config.yaml, train.py, command.txt, README.txt), for a bigger machine or several
        processes. Run ``job.command`` inside ``job.folder``; load the result with
        ``Session(adapter=job.adapter_path)``. See :func:`lf_widgets.handoff.export_training_job`.
        """
        from .handoff import export_training_job

        return export_training_job(self, folder, objective=objective, model=model, **options)

    def to_dataset(self, kind: str, **options):
        """Training records of ``kind`` (see :meth:`export`) as a ``datasets.Dataset``."""
        from . import exports as _exports

        return _exports.to_dataset(self.store, kind, **options)

    def close(self) -> None:
        """Close the feedback log's connections."""
        self.store.close()
