"""Hand the feedback to a bigger machine: a self-contained TRL training job in one folder.

:func:`export_training_job` writes::

    folder/
      data.jsonl     the feedback as TRL records (exports.build_records, trl-sft/-dpo/-kto)
      config.yaml    a plain TRL config: model, dataset, LoRA, optimiser, output_dir=adapter
      train.py       a ~40-line launcher around TRL's trainer, reading config.yaml
      command.txt    the one-line command, run inside the folder
      README.txt     what is here, how to run it, how to load the result
      base_model/    only when the base model lives in no folder (the tiny test model): a copy

Run it inside the folder (``cd folder && <command.txt>``)::

    accelerate launch --multi_gpu --num_processes 2 train.py --config config.yaml

and load the result with ``Session(model=…, adapter="folder/adapter")``.

The examples are built once (:func:`lf_widgets.feedback.text_examples`): the objective is chosen
from the very examples data.jsonl holds. Every file is written atomically and privately (0600;
the folder, when this creates it, and base_model/ 0700) through :mod:`lf_widgets._files`.

Why a launcher and not ``trl sft --config config.yaml``: config.yaml *is* a TRL CLI config (the
launcher parses it with TRL's own parser, so ``trl sft|dpo|kto --config config.yaml`` reads it the
same way), but on CPUs TRL's scripts hang now and then at exit, after the adapter is saved: a
torch.distributed/gloo teardown race (pytorch#75097), seen in 1 of 5 SFT and 2 of 5 KTO runs
with 2 processes. The launcher waits for every process, writes ``adapter/lf_widgets.json``
(step, objective, number of processes) and leaves with ``os._exit(0)``.

Why ``--multi_gpu`` on a CPU: ``accelerate launch --cpu --num_processes 2`` starts *one* process
(accelerate's multi-CPU launch needs MPI). ``--multi_gpu`` makes accelerate start the processes
with torchrun; ``use_cpu: true`` in the config then makes each one a CPU (gloo) rank.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._files import FOLDER_MODE, atomic_file, atomic_folder
from .exports import ScrubConfig, ScrubReport, build_records, write_jsonl
from .feedback import OBJECTIVES, choose_objective, text_examples

__all__ = ["OBJECTIVES", "Job", "export_training_job"]

# What each TRL trainer reads; the metadata columns (sample ids, annotators, critiques) stay home.
COLUMNS = {"sft": ["prompt", "completion"], "dpo": ["prompt", "chosen", "rejected"],
           "kto": ["prompt", "completion", "label"]}
_TRAINERS = {"sft": "SFTTrainer", "dpo": "DPOTrainer", "kto": "KTOTrainer"}
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class Job:
    """A training job written to ``folder``: run ``command`` there (see ``README.txt``)."""

    folder: Path
    command: str  # one line, run with the job folder as the working directory
    config_path: Path  # config.yaml (TRL config)
    data_path: Path  # data.jsonl
    records: int  # training records in data.jsonl
    objective: str = "sft"  # "sft", "dpo" or "kto"
    base_model: str = ""  # model_name_or_path in the config: a folder (relative to folder) or hub id
    reason: str = ""  # why this objective (says so for objective="auto")
    scrub_report: ScrubReport | None = None

    @property
    def adapter_path(self) -> Path:
        """Where the trained adapter will be: ``folder/adapter``."""
        return self.folder / "adapter"


_LAUNCHER = '''\
"""Fine-tune a LoRA adapter on data.jsonl with TRL's __TRAINER__ (written by lf_widgets).

Run in this folder:  __COMMAND__
config.yaml is a plain TRL config; `trl __OBJECTIVE__ --config config.yaml` reads it too.
"""
import importlib
import json
import os
import sys
from pathlib import Path

OBJECTIVE = "__OBJECTIVE__"


def main(argv):
    import trl
    from trl import get_dataset, get_peft_config

    parser = importlib.import_module(f"trl.scripts.{OBJECTIVE}").make_parser()
    _, args, model_args, data_args = parser.parse_args_and_config(argv, fail_with_unknown_args=False)
    args.model_init_kwargs = {"dtype": model_args.dtype, **(args.model_init_kwargs or {})}
    trainer = trl.__TRAINER__(
        model=model_args.model_name_or_path, args=args, train_dataset=get_dataset(data_args)["train"],
        peft_config=get_peft_config(model_args))
    acc = trainer.accelerator
    print(f"lf_widgets: process {acc.process_index} of {acc.num_processes} "
          f"({acc.distributed_type.value}, {acc.device})", flush=True)
    result = trainer.train()
    trainer.save_model(args.output_dir)
    if acc.is_main_process:  # Session(adapter=...) reads the step from here
        meta = {"step": trainer.state.global_step, "objective": OBJECTIVE,
                "base_model": model_args.model_name_or_path, "num_processes": acc.num_processes,
                "train_loss": result.training_loss}
        Path(args.output_dir, "lf_widgets.json").write_text(json.dumps(meta, indent=2))
        print(f"lf_widgets: adapter saved to {args.output_dir}", flush=True)
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # everything is saved; skip the gloo teardown that can hang on CPUs (pytorch#75097)
'''


def export_training_job(session_or_store, folder: str | os.PathLike, *, objective: str = "sft",
                        model: str | os.PathLike | None = None, scrub: bool | ScrubConfig = False,
                        steps: int | None = None, epochs: float = 3.0, lr: float = 2e-4,
                        batch_size: int = 4, max_length: int = 512, lora_r: int = 8,
                        lora_alpha: int = 16, lora_dropout: float = 0.0,
                        target_modules: str | list[str] = "all-linear", beta: float = 0.1,
                        seed: int = 0, num_processes: int = 2, device: str | None = None,
                        copy_base: bool = False, keep_metadata: bool = False,
                        trl_args: dict[str, Any] | None = None) -> Job:
    """Write a self-contained TRL LoRA training job for the feedback into ``folder``.

    Parameters
    ----------
    session_or_store : Session or FeedbackStore
        Where the feedback is. A Session also gives the default base model.
    folder : path
        Created if missing; files of an earlier job there are replaced.
    objective : {"sft", "dpo", "kto", "auto"}
        Which TRL trainer and data format (trl-sft / trl-dpo / trl-kto); "auto" picks as
        ``Session.train`` does (``job.reason`` says why).
    model : str or path, optional
        Base model: a local folder or a hub id. Default: the session's base model — its folder
        when it was loaded from one (the default SmolLM2 model: its converted folder in
        ``models.cache_dir()``), its hub id when it came from the hub, else (the tiny test
        model, models passed in memory) a copy saved to ``folder/base_model``.
    scrub : bool or ScrubConfig
        Replace e-mail addresses and phone numbers in the data (see ``exports.scrub_text``).
    steps, epochs : optional
        ``steps`` optimizer steps (``max_steps``) if given, else ``epochs`` passes over the data.
    lr, batch_size, max_length
        Learning rate, examples per process per step (TRL's ``per_device_train_batch_size``:
        a step sees ``batch_size × num_processes``; KTO needs at least 2), tokens per example.
    lora_r, lora_alpha, lora_dropout, target_modules
        LoRA settings, defaults as ``trainer.TrainConfig``.
    beta : float
        DPO / KTO strength of the pull towards the base model.
    seed : int
    num_processes : int
        Processes ``accelerate launch`` starts (data parallel).
    device : {"cpu", "cuda"}, optional
        Where the job trains; default CUDA if this machine has it, else CPU. "cpu" writes
        ``use_cpu: true``, ``bf16: false`` and ``gradient_checkpointing: false`` (3.9 instead
        of 7.8 s a step for SmolLM2-135M on 2 cores); "cuda" leaves both to TRL (bf16, on).
    copy_base : bool
        Copy the session's base model into ``folder/base_model`` even if it has a folder or hub
        id, so the job folder travels alone.
    keep_metadata : bool
        Keep the metadata columns (sample ids, annotators, critiques, source) in data.jsonl;
        by default only the columns the trainer reads are written.
    trl_args : dict, optional
        More TRL / transformers training arguments for config.yaml (they win over ours), e.g.
        ``{"gradient_accumulation_steps": 4}``.

    Returns
    -------
    Job

    Raises
    ------
    ValueError
        Unknown objective, no feedback for it (the message says what to add), a store without
        ``model=``, or KTO with ``batch_size < 2``.
    """
    store, owner = _store_and_owner(session_or_store)
    objective, device = _check_options(owner, model, objective, num_processes, device)
    texts = text_examples(store)  # built once: the objective is chosen from what is written
    objective, reason = choose_objective(texts, objective)  # raises with what feedback to add
    if objective == "kto" and batch_size < 2:
        raise ValueError("KTO needs batch_size >= 2 (its KL estimate pairs examples within a batch)")

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)  # an existing one stays as it is
    data_path = folder / "data.jsonl"
    records, scrub_report, _ = build_records(texts, f"trl-{objective}", scrub=scrub)
    if not keep_metadata:
        records = [{k: r[k] for k in COLUMNS[objective]} for r in records]
    write_jsonl(records, data_path)
    base_model = _base_model(owner, model, folder, copy_base)
    config = _trl_config(
        objective, device, trl_args, model_name_or_path=base_model, lora_r=lora_r,
        lora_alpha=lora_alpha, lora_dropout=lora_dropout, lora_target_modules=target_modules,
        learning_rate=lr, per_device_train_batch_size=batch_size, max_length=max_length,
        **({"max_steps": steps} if steps is not None else {"num_train_epochs": epochs}),
        seed=seed, **({"beta": beta} if objective in ("dpo", "kto") else {}))
    config_path = folder / "config.yaml"
    _write_atomic(config_path, _yaml(config, objective))
    command = _command(num_processes)
    _write_atomic(folder / "train.py", _LAUNCHER.replace("__TRAINER__", _TRAINERS[objective])
                  .replace("__OBJECTIVE__", objective).replace("__COMMAND__", command))
    _write_atomic(folder / "command.txt", command + "\n")
    job = Job(folder, command, config_path, data_path, len(records), objective, base_model,
              reason, scrub_report)
    _write_atomic(folder / "README.txt", _readme(job, owner, config, num_processes, device))
    return job


# -- pieces -------------------------------------------------------------------------------------
def _store_and_owner(obj):
    """(store, model owner or None) of a Session or a FeedbackStore."""
    if hasattr(obj, "store") and hasattr(obj, "model"):  # a Session; a remote one has no weights
        return obj.store, obj.model if hasattr(obj.model, "call") else None
    if hasattr(obj, "samples") and hasattr(obj, "current_events"):  # a FeedbackStore
        return obj, None
    raise TypeError(f"expected a Session or a FeedbackStore, got {type(obj).__name__}")


def _check_options(owner, model, objective: str, num_processes: int, device: str | None
                   ) -> tuple[str, str]:
    """The objective (lower case) and device, once every option is known to be valid."""
    if owner is None and model is None:
        raise ValueError("exporting from a store or a remote model's session: pass model= "
                         "(a local model folder or hub id)")
    objective = objective.lower()
    if objective not in (*OBJECTIVES, "auto"):
        raise ValueError(f"objective must be 'sft', 'dpo', 'kto' or 'auto', got {objective!r}")
    if num_processes < 1:
        raise ValueError(f"num_processes must be at least 1, got {num_processes}")
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return objective, device


def _trl_config(objective: str, device: str, trl_args: dict | None, **settings) -> dict[str, Any]:
    """config.yaml's values: ``settings`` (TRL names) around the parts every job shares."""
    config: dict[str, Any] = {
        "model_name_or_path": settings.pop("model_name_or_path"),
        "datasets": [{"path": "json", "data_files": "data.jsonl", "split": "train",
                      "columns": COLUMNS[objective]}],
        "output_dir": "adapter",
        "use_peft": True,
        **settings,
        "logging_steps": 1,
        # the launcher (and TRL's scripts) save the final adapter into output_dir themselves;
        # "no" keeps checkpoint-N folders out of it
        "save_strategy": "no",
        "report_to": "none",
    }
    if device == "cpu":  # fp32; TRL's default gradient checkpointing doubles a CPU step's time
        config.update(use_cpu=True, bf16=False, gradient_checkpointing=False)
    config.update(trl_args or {})
    return config


def _base_model(owner, model, folder: Path, copy_base: bool) -> str:
    if model is not None:
        path = Path(model).expanduser()
        return str(path.resolve()) if path.is_dir() else str(model)
    name = owner.call(lambda: str(getattr(owner.model, "name_or_path", "") or ""),
                      name="model path")
    if not copy_base:
        if name and Path(name).expanduser().is_dir():
            return str(Path(name).expanduser().resolve())
        if _HUB_ID.match(name):
            return name
    _save_base(owner, folder / "base_model")
    return "base_model"


def _save_base(owner, dest: Path) -> None:
    """Save the base model (without any adapter) and its tokenizer to ``dest``, on the model's
    thread (the one that may touch it)."""
    from peft import PeftModel

    def save(tmp: Path) -> None:
        model = owner.model
        if isinstance(model, PeftModel):  # a copy without the LoRA layers; the live one stays
            model = copy.deepcopy(model).unload()
        model.save_pretrained(tmp)
        owner.tokenizer.save_pretrained(tmp)

    with atomic_folder(dest) as tmp:
        owner.call(lambda: save(tmp), name="save base model")


def _command(num_processes: int) -> str:
    # --multi_gpu: accelerate starts the processes with torchrun (on CPUs too, see the module doc)
    launch = "--multi_gpu " if num_processes > 1 else ""
    return f"accelerate launch {launch}--num_processes {num_processes} train.py --config config.yaml"


def _yaml(config: dict, objective: str) -> str:
    # JSON values are YAML: no PyYAML needed to write it, TRL's yaml.safe_load reads it back.
    lines = [f"# TRL {objective.upper()} config written by lf_widgets.handoff.",
             f"# Read by train.py, and as is by `trl {objective} --config config.yaml`."]
    lines += [f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in config.items()]
    return "\n".join(lines) + "\n"


def _load_lines(job: Job, owner) -> list[str]:
    """README's last part: how to load the trained adapter."""
    base, adapter = job.base_model, job.adapter_path
    if base == "base_model":
        load = f'Session(model="{job.folder / "base_model"}", adapter="{adapter}")'
    elif owner is not None and base == str(_default_folder()):
        load = f'Session(adapter="{adapter}")'
    else:
        load = f'Session(model="{base}", adapter="{adapter}")'
    return ["Load the result:", "  from lf_widgets import Session", f"  s = {load}",
            '  s.ab_test(prompts, models=("base", "tuned"))',
            f'or with peft: PeftModel.from_pretrained(<base model>, "{adapter}")']


def _readme(job: Job, owner, config: dict, num_processes: int, device: str) -> str:
    steps = (f"{config['max_steps']} steps" if "max_steps" in config
             else f"{config['num_train_epochs']:g} epochs")
    batch = config["per_device_train_batch_size"]
    scrubbed = ", scrubbed" if job.scrub_report is not None and job.scrub_report.enabled else ""
    multi = " --multi_gpu" if num_processes > 1 else ""
    lines = [
        f"LoRA {job.objective.upper()} training job, written by lf_widgets",
        "=" * 60,
        job.reason,
        "",
        "Files",
        f"  data.jsonl    {job.records} training records (TRL {job.objective} format{scrubbed})",
        (f"  config.yaml   TRL config: LoRA r={config['lora_r']} alpha={config['lora_alpha']}, "
         f"lr={config['learning_rate']:g}, {steps},"),
        f"                {batch} examples per process per step, max_length {config['max_length']}",
        f"  train.py      launcher: TRL's {_TRAINERS[job.objective]} + peft LoRA, reads config.yaml",
        ("  adapter/      after training: the PEFT adapter (adapter_config.json, "
         "adapter_model.safetensors)"),
        f"Base model: {job.base_model}",
        "",
        "Run, in this folder (needs trl, peft, accelerate, datasets):",
        f'  cd "{job.folder}"',
        f"  {job.command}",
        "",
        (f"  {num_processes} process(es) on {'the CPU' if device == 'cpu' else 'GPUs'}; "
         f"a step sees {batch} x {num_processes} examples."),
        "  --num_processes: one per GPU elsewhere (--multi_gpu only for 2 or more).",
    ]
    if device == "cpu":
        lines.append("  GPUs, from this CPU config: add --use_cpu false --bf16 true "
                     "--gradient_checkpointing true")
    lines += [
        "  Any config value can be overridden so, e.g. --learning_rate 1e-4 --max_steps 50.",
        (f"  TRL's CLI reads the same config: trl {job.objective} --config config.yaml{multi} "
         f"--num_processes {num_processes}"),
        "  (on CPUs it can hang at exit after saving, a gloo teardown race; train.py avoids it).",
        "  Offline machine: export HF_HUB_OFFLINE=1 first.",
        "",
        *_load_lines(job, owner),
    ]
    return "\n".join(lines) + "\n"


def _default_folder() -> Path:
    from .models import DEFAULT_MODEL, cache_dir

    return (cache_dir() / DEFAULT_MODEL).resolve()


def _write_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")
