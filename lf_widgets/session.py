"""The Session: what a notebook talks to. It wires a model source, a feedback log and events,
and delegates: the model owner (:class:`~lf_widgets.policy.LocalModel`, or a
:class:`~lf_widgets.remote.RemoteChatModel`) does the model work, the store keeps judgements,
the trainer trains. Panels are thin views over it: they call its verbs and listen to its events,
and every click has a method twin here, so notebooks, tests and panels share one code path.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from . import io as _io
from ._events import Events
from ._requests import GenerationRequest, start_request
from ._session_revisions import SessionRevisions
from .remote import RemoteChatModel
from .sampling import Sample, SamplingConfig, check_count, check_prompts, sampling_config
from .store import Event, FeedbackStore, check_annotator

__all__ = ["Session", "Sample"]

CHOICES = ("a", "b", "tie", "both_bad")


def default_annotator() -> str:
    """``$JUPYTERHUB_USER``, then ``$USER``, then the login name, then "anonymous"."""
    for name in (os.environ.get("JUPYTERHUB_USER"), os.environ.get("USER")):
        if name and name.strip():
            return name.strip()
    try:
        return getpass.getuser() or "anonymous"
    except Exception:  # getpass fails in some containers without a passwd entry
        return "anonymous"


class Session(SessionRevisions):
    """A model, a feedback log and a trainer, bound together for one notebook.

    Parameters
    ----------
    model : str, tuple, LocalModel, RemoteChatModel or None
        ``None``: the offline default model (or ``$LF_WIDGETS_MODEL``); ``"tiny"``: a tiny random
        model for tests; a local folder or hub id; an already loaded ``(model, tokenizer)``; or a
        :class:`~lf_widgets.remote.RemoteChatModel` (samples from an OpenAI-compatible server).
    store : str, Path or FeedbackStore
        The feedback log; a path is created if missing (mode 0600). A
        ``"postgresql://user@host/db"`` URL opens a team's shared log (README, "Working as a
        team").
    annotator : str, optional
        Who is judging; defaults to ``$JUPYTERHUB_USER``, then ``$USER`` (on PostgreSQL: the
        connected role, the name the server records).
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
        from ._worker import Worker

        self.annotator = check_annotator(default_annotator() if annotator is None else annotator)
        self._events = Events()
        self._run = None  # the current or last TrainingRun
        if isinstance(model, RemoteChatModel):
            if adapter is not None:
                raise ValueError("adapter= needs a local model; a RemoteChatModel has no weights here")
            self.model, self._remote_worker = model, Worker("lf-remote")  # HTTP off the cell's thread
        else:
            from .policy import LocalModel  # torch: only when a Session with a local model is made

            self.model = model if isinstance(model, LocalModel) else (
                LocalModel(*model) if isinstance(model, tuple)
                else LocalModel.load(model, device=device, dtype=dtype))
        self.store = store if isinstance(store, FeedbackStore) else FeedbackStore(store)
        if annotator is None and getattr(self.store, "role", None):  # PostgreSQL: the server
            self.annotator = self.store.role  # stamps each event with the connected role
        if adapter is not None:
            self.load_adapter(adapter)
        elif resume and self.local:
            self._resume()

    @property
    def goal(self) -> str | None:
        """Experimental: the feedback text generation conditions on (None: off, the default).

        E.g. ``"Starts with 'Ahoy!', as asked."`` — phrased as the feedback a good answer would
        get, since a model trained with ``train(hindsight=True)`` learnt which answers get which
        feedback (:mod:`lf_widgets.critique_data`). Every generation uses it unless the call
        passes ``goal=`` (``goal=None`` turns it off for that call); samples keep the person's
        prompt and record the goal in their params. A/B contender "tuned+goal" uses it too.
        """
        return getattr(self, "_goal", None)

    @goal.setter
    def goal(self, value: str | None) -> None:
        from ._goal import check_goal

        self._goal = check_goal(value, "Session.goal")

    def __repr__(self) -> str:
        return (f"Session(model={self.model_name!r}, store={self.store.path!r}, "
                f"annotator={self.annotator!r})")

    @property
    def local(self) -> bool:
        """True when the model's weights are here (training, A/B and the stepper need them)."""
        return not isinstance(self.model, RemoteChatModel)

    @property
    def model_name(self) -> str:
        return self.model.tag

    @property
    def tokenizer(self):
        """The local model's tokenizer (None for a remote source)."""
        return self.model.tokenizer if self.local else None

    @property
    def adapter_step(self) -> int | None:
        """LoRA updates applied so far (None: no adapter)."""
        return self.model.adapter_step if self.local else None

    # -- events --------------------------------------------------------------------------------
    def on(self, name: str, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Call ``callback(payload)`` on event ``name``; returns a function that unsubscribes.

        The events and their payloads: :data:`lf_widgets._events.EVENTS` (samples, generated,
        partial, generation, judgement, undo, step, train_state). Callbacks may run on the
        model's thread; one that fails is logged and never loses data.
        """
        return self._events.on(name, callback)

    def _emit(self, name: str, payload: Any) -> None:
        self._events.emit(name, payload)

    # -- generation ----------------------------------------------------------------------------
    def start_generation(self, prompts: str | Sequence[str], n: int = 4, *,
                         config: SamplingConfig | None = None, contender: str = "tuned",
                         params: dict | None = None, label: str = "",
                         on_sample: Callable[[int, Sample], None] | None = None,
                         select=None, pool: int = 3, random_share: float = 0.25, **sampling
                         ) -> GenerationRequest:
        """Start sampling in the background; returns the :class:`GenerationRequest` at once.

        Each sample is stored the moment it is finished, then announced (``"samples"`` and
        ``"generated"`` events). ``contender``: "base", "tuned" or an adapter folder (local
        models); ``params`` are extra provenance stored with each sample; ``on_sample(slot,
        sample)`` is called (on the model's thread) for each stored sample, before the events.

        ``select="margin"`` (local models): draw ``pool × n`` candidates per prompt and keep the
        ``n`` the adapter is least sure of, ``random_share`` of them at random, near-duplicate
        prompts and samples skipped; ``"random"``: the same pool, picked at random. The chosen
        samples arrive together once the pool is scored; only they are stored. Returns a
        :class:`~lf_widgets.selection.SelectionRequest`. See :mod:`lf_widgets.selection`.
        ``select=None`` (default): the plain generation.
        """
        from .selection import selection_config

        prompts, n = check_prompts(prompts), check_count(n)
        selection = selection_config(select, pool, random_share)
        goal = getattr(self, "goal", None)
        if goal is not None and "goal" not in sampling and getattr(config, "goal", None) is None:
            sampling["goal"] = goal  # the session's goal; a per-call goal= (even None) wins
        config = sampling_config(config, **sampling)
        if contender != "tuned":
            self._require_local_model("a contender other than 'tuned'")
        limit = getattr(self.model, "context_length", None)
        if limit is not None and config.max_new_tokens >= limit:
            raise ValueError(f"max_new_tokens={config.max_new_tokens} does not fit the model's "
                             f"context of {limit} tokens (prompt included)")
        stored = {**config.as_params(), "n": n, **(params or {})}
        if selection is not None:
            from .selection import start_selected

            beta = self._run.config.beta if self._run is not None else None  # the adapter's β
            return start_selected(prompts, n, selection, owner=self.model, store=self.store,
                                  emit=self._emit, config=config, contender=contender,
                                  params=stored, label=label, on_sample=on_sample, beta=beta)
        request = GenerationRequest(prompts, n, label=label)
        if not self.local:
            stored["endpoint"] = self.model.endpoint
        worker = self.model.worker if self.local else self._remote_worker
        start_request(request, worker=worker, source=self.model, store=self.store,
                      emit=self._emit, config=config, contender=contender, params=stored,
                      on_sample=on_sample)
        return request

    def generate(self, prompts: str | Sequence[str], n: int = 4, *,
                 config: SamplingConfig | None = None, progress: bool = True, select=None,
                 pool: int = 3, random_share: float = 0.25, **sampling) -> list[Sample]:
        """Sample ``n`` completions per prompt, store each with its token ids, return them.

        Blocks until done (for scripts; the panels use :meth:`start_generation`). ``sampling``:
        fields of :class:`~lf_widgets.sampling.SamplingConfig` (max_new_tokens, temperature,
        top_p, seed, batch_size). Interrupting (Kernel → Interrupt) stops at the next token and
        keeps, stored, every sample already finished; no half-written rows.

        ``select="margin"``: of ``pool × n`` candidates per prompt, return (and store) the ``n``
        the adapter is least sure of, ``random_share`` of them at random; ``"random"``: ``n``
        at random from the same pool (see :meth:`start_generation`, :mod:`lf_widgets.selection`).
        Interrupting before the pool is scored keeps nothing.
        """
        from tqdm.auto import tqdm

        request = self.start_generation(prompts, n, config=config, select=select, pool=pool,
                                        random_share=random_share, **sampling)
        if select is None:
            bar = tqdm(total=request.total, desc="generating", unit="sample",
                       disable=not progress, leave=False)
            stop = self.on("generated",
                           lambda g: bar.update(1) if g.request_id == request.id else None)
        else:
            bar = tqdm(total=request.candidates_total, desc="generating candidates",
                       unit="candidate", disable=not progress, leave=False)

            def pool_progress(r) -> None:  # candidates written, then scoring
                if r is request:
                    bar.n = r.candidates_done
                    bar.set_description("generating candidates" if r.phase == "writing"
                                        else "scoring")
                    bar.refresh()

            stop = self.on("generation", pool_progress)
        try:
            samples = request.wait()
        finally:
            stop()
            bar.close()
        if request.state == "cancelled":
            print("Interrupted before the candidates were scored: none was shown or stored."
                  if select is not None and not samples else
                  f"Interrupted: kept the {len(samples)} samples already generated and stored.")
        return samples

    def samples(self, prompt: str | None = None) -> list[Sample]:
        """Stored samples (of one prompt if given), oldest first."""
        df = self.store.samples()
        if prompt is not None:
            df = df[df["prompt"] == prompt]
        return [Sample(int(r.sample_id), r.prompt, r.text, r.model,
                       None if pd.isna(r.adapter_step) else int(r.adapter_step), bool(r.truncated))
                for r in df.itertuples()]

    # -- judgements ----------------------------------------------------------------------------
    def _record(self, sample_id: Any, kind: str, value: Any, annotator: str | None) -> Event:
        who = self.annotator if annotator is None else check_annotator(annotator)
        event = self.store.record(sample_id, kind, value, who)  # checks ids, values, samples
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

        "a" means ``sample_a`` ≻ ``sample_b``; it becomes a DPO pair for training. Choosing again
        on the same pair (either order) replaces the earlier choice.
        """
        _check_choice(choice)
        value = {"other": sample_b, "choice": choice, "reason": reason}
        return self._record(sample_a, "preference", value, annotator)

    def record_ab_vote(self, test, index: int, choice: str, *, reason: str | None = None,
                       annotator: str | None = None) -> Event:
        """Record a blind vote on item ``index`` of an A/B test; a new vote replaces the last."""
        _check_choice(choice)
        item, (left, right) = test.items[index], test.hidden[index]
        value = {"test": test.test_id, "item": index, "other": item.right.sample_id,
                 "choice": choice, "left": left, "right": right, "reason": reason}
        return self._record(item.left.sample_id, "ab_vote", value, annotator)

    def undo(self, sample_id: int | None = None, annotator: str | None = None, *,
             sample_ids: Sequence[int] | None = None, kinds: Sequence[str] | None = None
             ) -> Event | None:
        """Cancel the annotator's latest judgement in force (only on ``sample_id`` /
        ``sample_ids`` and of ``kinds`` if given); the one it replaced is current again."""
        who = self.annotator if annotator is None else check_annotator(annotator)
        event = self.store.undo(who, sample_id, sample_ids=sample_ids, kinds=kinds)
        if event is not None:
            self._emit("undo", event)
        return event

    def judgements(self, sample_ids: Sequence[int] | None = None, *,
                   annotator: str | None = None, kinds: Sequence[str] | None = None) -> pd.DataFrame:
        """The judgements in force (latest per subject, annotator and kind; undone ones gone)
        touching ``sample_ids``: the one source panels read their state from."""
        return self.store.current_events(kinds=kinds, sample_ids=sample_ids, annotator=annotator)

    @property
    def feedback(self) -> pd.DataFrame:
        """Every sample with its current rating / critique / correction per annotator, and
        ``seen_by_adapter``: whether the adapter in use was trained on that judgement."""
        from .provenance import with_seen_column

        return with_seen_column(self.store.feedback(), self.model.seen_events if self.local
                                else set(), self.store)

    # -- panels --------------------------------------------------------------------------------
    def rate(self, prompts: str | Sequence[str] | None = None, n: int = 4, *, display: bool = True,
             select=None, pool: int = 3, random_share: float = 0.25, **sampling):
        """Show the rating panel at once; with ``prompts``, ``n`` samples each stream into it.

        With ``prompts=None`` the panel shows the stored samples instead (e.g. imported ones).
        ``select="margin"``: choose what to rate — of ``pool × n`` candidates per prompt, show
        the ``n`` the adapter is least sure of (a quarter of them at random, ``random_share``),
        near-duplicates skipped; they appear once the pool is scored (see
        :mod:`lf_widgets.selection`). ``select=None`` (default): ``n`` plain samples.
        Returns the :class:`~lf_widgets.panels.rating.RatingPanel` (shown once, see ``display``).
        """
        from .panels.rating import RatingPanel
        from .selection import refuse_without_prompts

        if prompts is None:
            refuse_without_prompts(select)
            return self._show(RatingPanel(self, self.samples()), display)
        request = self.start_generation(prompts, n, label="rate", select=select, pool=pool,
                                        random_share=random_share, **sampling)
        return self._show(RatingPanel(self, request=request), display)

    def compare(self, prompts: str | Sequence[str] | None = None, *, display: bool = True,
                seed: int | None = None, select=None, pool: int = 3, random_share: float = 0.25,
                **sampling):
        """Show pairs of samples of the same prompt; pick the better (a DPO pair each).

        With ``prompts``, two samples per prompt stream in; without, stored samples of the same
        prompt are paired. Sides are shuffled (``seed`` makes it repeatable).
        ``select="margin"``: of ``pool × 2`` candidates per prompt, show the pair with the
        smallest implicit reward margin ``|r_a − r_b|`` (``random_share`` of the pairs at random),
        the least sure pair first (see :mod:`lf_widgets.selection`).
        """
        from .panels.preference import PreferencePanel
        from .selection import refuse_without_prompts, selection_config

        if prompts is None:
            refuse_without_prompts(select)
            return self._show(PreferencePanel(self, samples=self.samples(), seed=seed), display)
        selection = selection_config(select, pool, random_share, unit="pair")
        request = self.start_generation(prompts, 2, label="compare", select=selection,
                                        **sampling)
        return self._show(PreferencePanel(self, request=request, seed=seed), display)

    def ab_test(self, prompts: str | Sequence[str], n: int = 1,
                models: tuple[str, str] = ("base", "tuned"), *, display: bool = True,
                seed: int | None = None, **sampling):
        """Blind A/B test: one sample per contender for each prompt (× n), sides shuffled.

        ``models`` names two contenders: "base" (adapter off), "tuned" (current adapter) or a
        saved adapter/checkpoint folder. The panel shows an item once both answers are written.
        Returns the :class:`~lf_widgets.panels.abtest.ABTestPanel`.
        """
        from .ab import start_test
        from .panels.abtest import ABTestPanel

        self._require_local_model("ab_test()")
        needs_adapter = [m for m in models if str(m) != "base"]
        if needs_adapter and not self.model.has_adapter:  # said now, not later on the model's thread
            raise ValueError(f"contender {needs_adapter[0]!r} needs an adapter: train() first, or "
                             "start the Session with adapter=<folder>")
        test = start_test(self.start_generation, check_prompts(prompts), check_count(n),
                          tuple(str(m) for m in models), sampling_config(**sampling), seed)
        return self._show(ABTestPanel(self, test), display)

    def ab_results(self, test_id: str | None = None) -> pd.DataFrame:
        """Every vote in force (of one test if given), with the winning contender named."""
        from .ab import votes_frame

        return votes_frame(self.store, test_id)

    def ab_summary(self, test_id: str):
        """Win rate, Wilson 95 % interval and sign test for one A/B test
        (:class:`~lf_widgets.evaluation.ABResult`; ``.sentence()`` says it in words)."""
        from .ab import contenders_of, summarise
        from .provenance import leak_notes

        contenders = contenders_of(self.store, test_id)
        notes = leak_notes(self.model, self.store, test_id, contenders) if self.local else []
        return summarise(self.ab_results(test_id), contenders, notes)

    def monitor(self, *, display: bool = True, throttle_s: float = 0.25, **train_kwargs):
        """Show the training monitor: live loss and reward curves, progress, Start/Pause/Stop.

        ``train_kwargs`` are what the Start button passes to :meth:`train`.
        """
        from .panels.monitor import TrainingMonitor

        return self._show(TrainingMonitor(self, throttle_s=throttle_s, **train_kwargs), display)

    def step_by_step(self, sample, *, display: bool = True, **options):
        """Show one sample's per-token probabilities and its loss L = Σ −log p, with a
        "Take one step" button (one real SFT step on this sample: it changes the adapter).

        ``sample``: a :class:`Sample` or sample id. ``options``: ``lr`` (default
        ``stepper.TEACHING_LR`` = 0.1, plain SGD), ``feedback`` (a text, or True for the
        sample's current critique: the step is on the critique-conditioned example that
        ``train(hindsight=True)`` trains on, its prompt and the feedback as one user turn) and
        TrainConfig fields.
        """
        from .panels.stepper import StepperPanel

        self._require_local_model("step_by_step()")
        return self._show(StepperPanel(self, sample, **options), display)

    def _stepper(self, sample, *, feedback=None, **options):
        """The kernel side of a StepperPanel (torch stays out of panels/)."""
        from .stepper import SampleStepper

        if feedback is True:  # the sample's current critique by this session's annotator
            sample_id = int(getattr(sample, "sample_id", sample))
            feedback = self.store.current(sample_id, self.annotator).get("critique") or None
            if feedback is None:
                raise ValueError(f"feedback=True: sample {sample_id} has no critique by "
                                 f"{self.annotator!r}; record_critique() first, or pass the text")
        elif feedback is not None and (not isinstance(feedback, str) or not feedback.strip()):
            raise ValueError(f"feedback must be None, True or a non-empty text, got {feedback!r}")
        return SampleStepper(self.model, self.store, sample, feedback=feedback, **options)

    def _show(self, panel, display: bool):
        """Display ``panel`` now, once: as a cell's last expression it shows no second copy."""
        if display:
            from IPython.display import display as _display

            _display(panel)
            panel.shown = True
        return panel

    def _require_local_model(self, verb: str) -> None:
        if not self.local:
            raise RuntimeError(
                f"{verb} needs a local model, and this session samples from {self.model.tag} "
                f"at {self.model.endpoint}, whose weights are not here. Export the feedback "
                "and fine-tune where the model lives: session.export('openai-sft', "
                "'train.jsonl', scrub=True) (or 'openai-dpo', 'trl-sft', 'trl-dpo', "
                "'trl-kto'); or open this store in a Session with a local model to train here.")

    # -- training ------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path | None:
        """Where automatic checkpoints go: ``<store>_checkpoints/`` beside the log (None in memory)."""
        if self.store.path == ":memory:":
            return None
        if hasattr(self.store, "checkpoint_root"):  # a shared log on a server: a local folder
            return self.store.checkpoint_root
        path = Path(self.store.path)
        return path.with_name(path.stem + "_checkpoints")

    def train(self, objective: str | None = None, *, config=None, **options):
        """Fine-tune a LoRA adapter on the feedback in the background; returns at once.

        ``objective``: "auto" (default: picks what the feedback supports and says why in
        ``run.reason``), "sft", "dpo" or "kto". ``config`` and ``options``: a
        :class:`~lf_widgets.trainer.TrainConfig` and/or its fields (steps, lr, batch_size, beta,
        optimizer, …). Returns the :class:`~lf_widgets.trainer.TrainingRun` (``pause()``,
        ``resume()``, ``stop()``, ``wait()``); steps arrive as ``"step"`` events.
        Raises ValueError when the feedback does not support the objective (the message says
        what to add) and RuntimeError while a run is still going.
        """
        from .trainer import make_config, prepare_run

        self._require_local_model("train()")
        if objective is not None:
            options["objective"] = objective
        config = make_config(config, **options)  # validated before any work starts
        if self._run is not None and not self._run.done:
            raise RuntimeError("a training run is still going: stop_training() or wait for it first")
        self._run = prepare_run(self.model, self.store, self._emit, config, self.checkpoint_dir)
        return self._run.start()

    def pause_training(self) -> None:
        """Pause the running training after its current step."""
        if self._run is not None:
            self._run.pause()

    def resume_training(self) -> None:
        """Resume a paused training run."""
        if self._run is not None:
            self._run.resume()

    def stop_training(self, wait: bool = True) -> None:
        """Stop training after the current step; a checkpoint is written."""
        if self._run is not None:
            self._run.stop(wait=wait)

    @property
    def training(self):
        """The current or last :class:`~lf_widgets.trainer.TrainingRun` (None before any)."""
        return self._run

    def training_history(self) -> pd.DataFrame:
        """Every training step logged in the store (also those of earlier kernels)."""
        return self.store.train_steps()

    def evaluate(self, holdout: float | None = None) -> pd.DataFrame:
        """Offline check, no person needed: base vs tuned on held-out feedback (see
        :func:`lf_widgets.scoring.evaluate`); ``holdout`` defaults to the last run's share."""
        from .scoring import evaluate

        self._require_local_model("evaluate()")
        if holdout is None:
            holdout = self._run.config.holdout if self._run is not None else 0.0
        return evaluate(self.model, self.store, holdout=holdout)

    def save_adapter(self, path: str | os.PathLike) -> Path:
        """Save the LoRA adapter as a standard PEFT folder (safetensors, private); loadable with
        ``PeftModel.from_pretrained`` or ``Session(adapter=path)``. Its ``lf_widgets.json``
        records which judgements it was trained on (see :meth:`adapters`)."""
        from .provenance import provenance

        self._require_local_model("save_adapter()")
        meta = provenance(self.model, self.store)
        return self.model.call(lambda: self.model.save_adapter(path, meta), name="save adapter")

    def adapters(self) -> pd.DataFrame:
        """The checkpoints in the log and what each learnt from: ``judgements`` (how many),
        ``stale`` (some were undone or replaced since), ``current`` (the adapter in use)."""
        from .provenance import adapters_table

        return adapters_table(self.model if self.local else None, self.store)

    def adapter_staleness(self) -> str:
        """"" when the adapter in use learnt only from judgements still in force, else a warning."""
        from .provenance import staleness

        return staleness(self.model, self.store) if self.local else ""

    def load_adapter(self, path: str | os.PathLike) -> None:
        """Attach a saved adapter (replacing the current one) and continue from its step."""
        self._require_local_model("load_adapter()")
        self.model.call(lambda: self.model.load_adapter(path), name="load adapter")

    def _resume(self) -> None:
        from .adapters import resume_latest

        resume_latest(self.model, self.store.checkpoints())

    # -- teams -----------------------------------------------------------------------------------
    # Thin verbs over lf_widgets.team (work plans, progress, disagreements), lf_widgets.agreement
    # and the queue / team / review panels.
    def assign(self, items, annotators: Sequence[str], *, overlap: int = 2,
               seed: int | None = None, recheck: float = 0.0) -> pd.DataFrame:
        """Write a work plan: each item (sample, pair of samples or prompt) to ``overlap``
        annotators, balanced; see :func:`lf_widgets.team.assign`. Returns the plan."""
        from .team import assign

        return assign(self.store, items, annotators, overlap=overlap, seed=seed,
                      recheck=recheck)

    def progress(self):
        """The team's progress on its work plan (:class:`lf_widgets.team.Progress`)."""
        from .team import progress

        return progress(self.store)

    def queue(self, *, display: bool = True, seed: int | None = None):
        """This annotator's pending items first (their own work plan), with "k of m done" for
        them and the team (:class:`~lf_widgets.panels.queue.QueuePanel`)."""
        from .panels.queue import QueuePanel

        return self._show(QueuePanel(self, seed=seed), display)

    def agreement(self, *, n_boot: int = 1000, seed: int | None = 0) -> pd.DataFrame:
        """Inter-annotator agreement per kind, metric and annotator pair, with bootstrap
        intervals; see :func:`lf_widgets.agreement.agreement`."""
        from .agreement import agreement

        return agreement(self.store, n_boot=n_boot, seed=seed)

    def team(self, *, display: bool = True, n_boot: int = 200):
        """Per-annotator progress and a heatmap of pairwise agreement
        (:class:`~lf_widgets.panels.team.TeamPanel`)."""
        from .panels.team import TeamPanel

        return self._show(TeamPanel(self, n_boot=n_boot), display)

    def review(self, *, spread: int = 2, display: bool = True):
        """Items whose judges disagree, every judgement shown, for a reviewer to settle
        (:class:`~lf_widgets.panels.review.ReviewPanel`)."""
        from .panels.review import ReviewPanel

        return self._show(ReviewPanel(self, spread=spread), display)

    def adjudicate(self, item, value, *, note: str | None = None) -> int:
        """Settle an item: a rating 1–5 for a sample, or the winning sample id (or "tie") for a
        pair. It goes before the judges' own (adjudication > mean of ratings, > majority)."""
        from .team import adjudicate

        return adjudicate(self.store, item, value, self.annotator, note=note)

    # -- import / export -----------------------------------------------------------------------
    def import_csv(self, path: str | os.PathLike, *, annotator: str | None = None, **options) -> int:
        """Import judgements from a CSV/JSONL/Parquet file; see :func:`lf_widgets.io.import_feedback`."""
        who = self.annotator if annotator is None else check_annotator(annotator)
        return _io.import_feedback(self.store, path, default_annotator=who, **options)

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
        """Write a TRL LoRA training job for the feedback into ``folder``, for a bigger machine
        or several processes; see :func:`lf_widgets.handoff.export_training_job`."""
        from .handoff import export_training_job

        return export_training_job(self, folder, objective=objective, model=model, **options)

    def to_dataset(self, kind: str, **options):
        """Training records of ``kind`` (see :meth:`export`) as a ``datasets.Dataset``."""
        from . import exports as _exports

        return _exports.to_dataset(self.store, kind, **options)

    def close(self) -> None:
        """Stop training, end the model's thread, close the feedback log's connections."""
        self._close_refiners()  # a refiner from a folder or a server holds a model/thread of its own
        if self._run is not None and not self._run.done:
            self._run.stop(wait=True, timeout=120)
        if self.local:
            self.model.close()
        else:
            self._remote_worker.close()
            self.model.close()  # the kept-alive HTTP connections
        self.store.close()


def _check_choice(choice: str) -> None:
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {list(CHOICES)}, got {choice!r}")
