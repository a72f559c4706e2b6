"""The LoRA adapter on disk and on the model: attach, save, load, check.

Folders are standard PEFT folders (``adapter_config.json`` + safetensors weights), loadable by
``PeftModel.from_pretrained`` anywhere, plus our ``lf_widgets.json`` (step, objective, run id,
config). They are written through :func:`lf_widgets._files.atomic_folder`: never half a folder,
and private (0700 / 0600). An adapter with a non-finite weight is never written.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from ._files import atomic_folder

__all__ = ["ADAPTER_META", "wrap_lora", "save_adapter", "load_adapter", "read_meta",
           "adapter_is_finite", "NonFiniteAdapter", "resume_latest"]

ADAPTER_META = "lf_widgets.json"  # written beside PEFT's files: step, objective, run id


class NonFiniteAdapter(ValueError):
    """An adapter whose weights hold NaN or inf: never saved, never resumed."""


def wrap_lora(model, config):
    """Return ``model`` with a trainable LoRA adapter (the model itself if it has one already).

    ``config`` is a :class:`~lf_widgets.trainer.TrainConfig` (its ``lora_*`` fields and seed).
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    if isinstance(model, PeftModel):
        return model
    torch.manual_seed(config.seed)  # LoRA's A matrices are random; B starts at zero
    targets = config.target_modules
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, task_type="CAUSAL_LM",
                      target_modules=targets if isinstance(targets, str) else list(targets))
    with warnings.catch_warnings():  # peft reads a property transformers 5 deprecated; not ours
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        return get_peft_model(model, lora)


def adapter_is_finite(model) -> bool:
    """True when every trainable (adapter) weight is finite. Cheap: ~2M numbers on 135M/r=8."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.requires_grad)


def save_adapter(model, path: str | os.PathLike, meta: dict) -> Path:
    """Write the adapter as a standard PEFT folder (safetensors), atomically and privately.

    Raises :class:`NonFiniteAdapter` (and writes nothing) when a weight is NaN or inf.
    """
    if not adapter_is_finite(model):
        raise NonFiniteAdapter(f"not saving {path}: the adapter has non-finite weights")
    with atomic_folder(path) as tmp:
        # save_embedding_layers=False: "auto" would ask the hub whether the vocabulary grew
        # (a network call, and we never resize embeddings: LoRA leaves them frozen)
        model.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)
        (tmp / ADAPTER_META).write_text(json.dumps(meta, indent=2))
    return Path(path)


def read_meta(path: str | os.PathLike) -> dict:
    """Our metadata of an adapter folder ({} for a folder written elsewhere)."""
    meta = Path(path) / ADAPTER_META
    return json.loads(meta.read_text()) if meta.is_file() else {}


def load_adapter(model, path: str | os.PathLike):
    """Attach a saved adapter to a base model, trainable; returns (peft_model, meta dict).

    Raises :class:`NonFiniteAdapter` for an adapter with NaN or inf weights.
    """
    from peft import PeftModel

    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{path} is not a PEFT adapter folder (no adapter_config.json)")
    with warnings.catch_warnings():  # the same peft read of a deprecated property as wrap_lora
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        peft_model = PeftModel.from_pretrained(model, path, is_trainable=True)
    if not adapter_is_finite(peft_model):
        peft_model.unload()  # leave the caller's model as it was (LoRA layers taken out again)
        raise NonFiniteAdapter(f"{path} holds non-finite adapter weights")
    return peft_model, read_meta(path)


def resume_latest(owner, checkpoints) -> Path | None:
    """Attach the latest complete, finite checkpoint of ``checkpoints`` (the store's table) to
    ``owner`` (a LocalModel), saying so; returns its folder, or None when there is none."""
    for path in reversed(checkpoints["path"].tolist() if not checkpoints.empty else []):
        if not (Path(path) / "adapter_config.json").is_file():
            continue  # removed, or never finished
        try:
            owner.call(lambda path=path: owner.load_adapter(path), name="resume")
        except NonFiniteAdapter:
            print(f"lf_widgets: skipping checkpoint {path}: its weights are not finite")
            continue
        print(f"lf_widgets: resuming from checkpoint {path} (adapter step {owner.adapter_step}); "
              "Session(resume=False) starts from the base model")
        return Path(path)
    return None
