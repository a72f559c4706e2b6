"""The training half of :class:`lf_widgets.Session`: train, steer, checkpoint, evaluate, teach.

A mixin only to keep files short: the state stays in the one Session object (model, lock,
store, the current run), and these verbs use it exactly as the rest of Session does.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

__all__ = ["TrainingVerbs"]


class TrainingVerbs:
    """Verbs of a Session that train, steer training, save or load adapters, or evaluate."""

    # -- training ------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path | None:
        """Where automatic checkpoints go: ``<store>_checkpoints/`` beside the log (None in memory)."""
        if self.store.path == ":memory:":
            return None
        path = Path(self.store.path)
        return path.with_name(path.stem + "_checkpoints")

    def train(self, objective: str = "auto", steps: int = 20, *, lr: float = 2e-4,
              batch_size: int = 4, optimizer: str = "adamw", **options):
        """Fine-tune a LoRA adapter on the feedback, in a background thread; returns at once.

        Parameters
        ----------
        objective : {"auto", "sft", "dpo", "kto"}
            "auto" picks what the feedback supports and says why (``run.reason``).
        steps, lr, batch_size, optimizer
            See :class:`lf_widgets.trainer.TrainConfig`, which also takes ``**options``
            (beta, pass_tokens, lora_r, lora_alpha, max_length, checkpoint_every, seed, …).

        Returns
        -------
        lf_widgets.trainer.TrainingRun
            ``run.pause()``, ``run.resume()``, ``run.stop()``, ``run.wait()``; the steps arrive
            as ``"step"`` events (see :meth:`monitor`).

        Raises
        ------
        ValueError
            When the feedback does not support the objective (the message says what to add).
        RuntimeError
            When a run is still going.
        """
        from .trainer import TrainConfig, prepare_run, _ReferenceCache

        self._require_local_model("train()")
        if self._run is not None and not self._run.done:
            raise RuntimeError("a training run is still going: stop_training() or wait for it first")
        config = TrainConfig(objective=objective, steps=steps, lr=lr, batch_size=batch_size,
                             optimizer=optimizer, **options)
        if self._reference_cache is None:
            self._reference_cache = _ReferenceCache()
        self._run = prepare_run(self, config)
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
        """Offline check, no person needed: base vs tuned on held-out feedback.

        Preference accuracy (the preferred text gets the larger log-prob) and the mean per-token
        log-prob of good samples. ``holdout`` defaults to the last training run's
        ``holdout`` share; with 0 every example is used and the table says "in sample".
        """
        from .data import build_examples
        from .scoring import evaluate

        self._require_local_model("evaluate()")
        if holdout is None:
            holdout = self._run.config.holdout if self._run is not None else 0.0
        return evaluate(self, build_examples(self.store, self.tokenizer), holdout=holdout)

    def save_adapter(self, path: str | os.PathLike) -> Path:
        """Save the LoRA adapter as a standard PEFT folder (safetensors); loadable with
        ``PeftModel.from_pretrained`` or ``Session(adapter=path)``."""
        from peft import PeftModel

        from .trainer import save_adapter

        self._require_local_model("save_adapter()")
        if not isinstance(self.model, PeftModel):
            raise RuntimeError("there is no adapter yet: train() first")
        with self.model_lock:
            return save_adapter(self.model, path, {"step": self.adapter_step,
                                                   "base_model": self.model_name})

    def load_adapter(self, path: str | os.PathLike) -> None:
        """Attach a saved adapter (replacing the current one) and continue from its step."""
        from peft import PeftModel

        from .trainer import load_adapter

        self._require_local_model("load_adapter()")
        with self.model_lock:
            base = self.model.unload() if isinstance(self.model, PeftModel) else self.model
            self.model, meta = load_adapter(base, path)
            self.model.eval()
        self.adapter_step = meta.get("step") or 0
        self.adapter_path = Path(path)

    def _latest_checkpoint(self) -> Path | None:
        df = self.store.checkpoints()
        for path in reversed(df["path"].tolist() if not df.empty else []):
            if (Path(path) / "adapter_config.json").is_file():
                print(f"lf_widgets: resuming from checkpoint {path}")
                return Path(path)
        return None

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
        ``stepper.TEACHING_LR`` = 0.1, plain SGD) and TrainConfig fields. Returns the
        :class:`~lf_widgets.panels.stepper.StepperPanel`. DPO and KTO: :mod:`lf_widgets.stepper`.
        """
        from .panels.stepper import StepperPanel

        self._require_local_model("step_by_step()")
        return self._show(StepperPanel(self, sample, **options), display)

    def _stepper(self, sample, **options):
        """The kernel side of a StepperPanel (torch stays out of panels/)."""
        from .stepper import SampleStepper

        return SampleStepper(self, sample, **options)
