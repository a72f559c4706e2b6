"""LocalModel: the one owner of a local model and everything that changes it.

It holds the model, tokenizer, device, the LoRA adapter and its step, the reference log-prob
cache and the contenders of A/B tests, and it runs every piece of torch work on its own thread
(:class:`~lf_widgets._worker.Worker`): generation, training steps, reference log-probs, scoring,
the stepper. Nobody else touches the model, so there is no model lock, and a sample's adapter
step is read on the thread that wrote it.

It offers the same ``complete(prompts, n, config)`` contract as
:class:`~lf_widgets.remote.RemoteChatModel`, so a Session has one path for local and remote.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from . import adapters
from ._worker import BACKGROUND, INTERACTIVE, Job, Worker
from .sampling import Completion, SamplingConfig, check_prompts

__all__ = ["LocalModel"]

_DONE = object()  # end of a complete() stream


class LocalModel:
    """A local causal LM with an optional LoRA adapter, owned by one torch thread.

    Parameters
    ----------
    model, tokenizer
        A loaded model (chat-ready, see :func:`lf_widgets.models.load_model`) and its tokenizer.
    name : str, optional
        Short name recorded with every sample (default: from the model's path).
    """

    def __init__(self, model, tokenizer, *, name: str | None = None):
        from .generation import pad_id
        from .models import model_tag
        from .step import ReferenceCache

        self._model, self.tokenizer = model, tokenizer
        self.tag = name or model_tag(model)
        self.endpoint = None  # a local model has no URL (RemoteChatModel has one)
        self.pad_id = pad_id(tokenizer)
        self.device = next(model.parameters()).device
        self.context_length = getattr(model.config, "max_position_embeddings", None)  # tokens
        self.adapter_step: int | None = None  # LoRA updates applied so far (None: no adapter)
        self.adapter_path: Path | None = None  # folder the adapter was loaded from, if any
        self.reference_cache = ReferenceCache()  # the base is frozen: computed once per example
        self.visits: Counter = Counter()  # example key -> steps of this adapter that trained on it
        self.seen_events: set[int] = set()  # ids of the judgements this adapter was trained on
        self.worker = Worker(f"lf-torch-{self.tag}")

    @classmethod
    def load(cls, spec=None, *, device=None, dtype=None) -> LocalModel:
        """Load ``spec`` (see :func:`lf_widgets.models.load_model`): None = the offline default."""
        from .models import load_model

        return cls(*load_model(spec, device=device, dtype=dtype))

    def __repr__(self) -> str:
        return f"LocalModel({self.tag!r}, device={self.device}, adapter_step={self.adapter_step})"

    # -- the thread ----------------------------------------------------------------------------
    def submit(self, fn: Callable[[Job], Any], *, name: str = "job",
               background: bool = False) -> Job:
        """Run ``fn(job)`` on the model's thread; interactive jobs go before background ones."""
        return self.worker.submit(fn, name=name, priority=BACKGROUND if background else INTERACTIVE)

    def call(self, fn: Callable[[], Any], *, name: str = "call") -> Any:
        """Run ``fn()`` on the model's thread and wait for its result."""
        return self.worker.call(fn, name=name)

    @property
    def model(self):
        """The model itself: only for code running on the model's thread (a job)."""
        if not self.worker.on_thread():
            raise RuntimeError("the model is used only on its own thread: submit a job "
                               "(LocalModel.submit / call) instead")
        return self._model

    @property
    def has_adapter(self) -> bool:
        from peft import PeftModel

        return isinstance(self._model, PeftModel)

    def close(self) -> None:
        """Finish queued jobs and end the model's thread."""
        self.worker.close()

    # -- generation ----------------------------------------------------------------------------
    def stream(self, job: Job, prompts: Sequence[str], n: int, config: SamplingConfig, *,
               on_sample: Callable[[int, Completion], None],
               on_partial: Callable[[int, str], None] | None = None,
               contender: str = "tuned") -> int:
        """On the model's thread: sample as :func:`~lf_widgets.generation.stream_completions`,
        as ``contender`` ("base", "tuned" or an adapter folder). Returns samples handed over."""
        from .generation import stream_completions

        with self.use(contender) as step:
            return stream_completions(self.model, self.tokenizer, prompts, n, config,
                                      on_sample=on_sample, on_partial=on_partial,
                                      check=job.check, adapter_step=step)

    def complete(self, prompts: str | Sequence[str], n: int = 1,
                 config: SamplingConfig = SamplingConfig(), *, progress: bool = False
                 ) -> Iterator[list[Completion]]:
        """Yield completions as they finish (lists of one), like ``RemoteChatModel.complete``.

        Usable from any thread: the sampling runs on the model's thread. Closing the iterator
        early (or an interrupt while waiting) cancels the rest.
        """
        prompts = check_prompts(prompts)
        out: queue.Queue = queue.Queue()
        job = self.submit(lambda job: self.stream(job, prompts, n, config,
                                                  on_sample=lambda _slot, c: out.put(c)),
                          name="complete")
        job.future.add_done_callback(lambda _f: out.put(_DONE))
        try:
            while (item := out.get()) is not _DONE:
                yield [item]
            job.result()  # re-raise a failure
        finally:
            if not job.future.done():
                job.cancel()

    # -- adapter and contenders (on the model's thread) ----------------------------------------
    def ensure_adapter(self, config) -> None:
        """Attach a fresh trainable LoRA adapter if there is none (``config``: a TrainConfig)."""
        self._model = adapters.wrap_lora(self.model, config)
        self._model.eval()
        if self.adapter_step is None:
            self.adapter_step = 0

    def count_update(self) -> int:
        """Called by the step that changed the adapter; returns the new adapter step."""
        self.adapter_step = (self.adapter_step or 0) + 1
        return self.adapter_step

    def trainable_parameters(self) -> list:
        return [p for p in self.model.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def use(self, contender: str = "tuned") -> Iterator[int | None]:
        """Put the model in ``contender``'s state for the block; yields its adapter step.

        "base": the adapter disabled (no second copy of the model); "tuned": the current
        adapter (the base model when there is none); a folder: a saved adapter, loaded once.
        """
        model = self.model
        if contender == "base":
            with model.disable_adapter() if self.has_adapter else contextlib.nullcontext():
                yield None
            return
        if contender == "tuned":
            yield self.adapter_step if self.has_adapter else None
            return
        path = Path(contender)
        if not (path / "adapter_config.json").is_file():
            raise ValueError(f"contender must be 'base', 'tuned' or an adapter folder; "
                             f"{contender!r} is none")
        if not self.has_adapter:
            raise ValueError(f"contender {contender!r} needs an adapter: train() first, or "
                             "start the Session with adapter=<folder>")
        name = "ab-" + hashlib.blake2b(str(path.resolve()).encode(), digest_size=6).hexdigest()
        if name not in model.peft_config:
            model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        previous = model.active_adapter
        model.set_adapter(name)
        try:
            yield adapters.read_meta(path).get("step")
        finally:
            model.set_adapter(previous)  # also makes the training adapter trainable again

    def save_adapter(self, path, meta: dict) -> Path:
        """Write the adapter (PEFT folder, safetensors) with ``meta``; on the model's thread."""
        if not self.has_adapter:
            raise RuntimeError("there is no adapter yet: train() first")
        return adapters.save_adapter(self.model, path, {"step": self.adapter_step,
                                                        "base_model": self.tag, **meta})

    def load_adapter(self, path) -> dict:
        """Attach a saved adapter (replacing the current one); continue from its step."""
        base = self.model.unload() if self.has_adapter else self.model
        try:
            self._model, meta = adapters.load_adapter(base, path)
        except Exception:
            self._model = base
            raise
        self._model.eval()
        self.adapter_step = meta.get("step") or 0
        self.adapter_path = Path(path)
        self.visits = Counter(meta.get("visits") or {})
        self.seen_events = set(meta.get("judgements", {}).get("ids") or [])
        return meta
