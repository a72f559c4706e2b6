"""Training-job handoff: a folder with TRL data, config and launcher that really trains.

The end-to-end tests run the job's command exactly as written (``accelerate launch`` with two
CPU processes, offline), then load the adapter into a Session. ~25-40 s each on 2 cores.
"""

import json
import os
import signal
import stat
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import lf_widgets as lfw
from lf_widgets.feedback import text_examples
from lf_widgets.handoff import COLUMNS, Job, export_training_job
from lf_widgets.models import tiny_model
from lf_widgets.store import SampleRecord

PROMPTS = ("Say hi", "Write a poem about the sea")


ANSWERS = (("Hello!", "Go away.", "Hi, how can I help?", "What?"),
           ("Waves roll in, waves roll out.", "No.", "The sea is deep and blue.", "Water."))


@pytest.fixture
def rated(session):
    """Two prompts, four samples each, rated 5/1/4/2: SFT, DPO and KTO examples all exist.

    Stored as generation stores a finished sample (its ids end with <|im_end|>): the tiny random
    model's own samples are cut off at max_new_tokens, and those are no SFT targets.
    """
    tok = session.tokenizer
    for prompt, answers in zip(PROMPTS, ANSWERS):
        ids = session.store.add_samples([
            SampleRecord(text, prompt, tok(text, add_special_tokens=False)["input_ids"] + [2])
            for text in answers])
        for sample_id, rating in zip(ids, (5, 1, 4, 2)):
            session.record_rating(sample_id, rating)
    return session


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def parse_config(job):
    """Parse config.yaml with TRL's own CLI parser, refusing unknown keys (as `trl <cmd>` would)."""
    import importlib

    parser = importlib.import_module(f"trl.scripts.{job.objective}").make_parser()
    *_, leftover_config, leftover_cli = parser.parse_args_and_config(
        ["--config", str(job.config_path)], return_remaining_strings=True,
        separate_remaining_strings=True)
    assert leftover_config == leftover_cli == []
    return parser.parse_args_and_config(["--config", str(job.config_path)])


# -- the folder -----------------------------------------------------------------------------------
@pytest.mark.parametrize("objective", ["sft", "dpo", "kto"])
def test_job_folder_is_a_trl_config_with_data(rated, tmp_path, objective):
    job = export_training_job(rated, tmp_path / "job", objective=objective, steps=3, lr=1e-3,
                              batch_size=2, max_length=256)
    assert isinstance(job, Job) and job.objective == objective
    folder = job.folder
    assert {p.name for p in folder.iterdir()} >= {"data.jsonl", "config.yaml", "train.py",
                                                  "command.txt", "README.txt", "base_model"}
    assert job.command == (folder / "command.txt").read_text().strip() == (
        "accelerate launch --multi_gpu --num_processes 2 train.py --config config.yaml")
    assert job.command in (folder / "README.txt").read_text()
    # private, like the feedback log: files 0600, folders 0700
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "base_model").stat().st_mode) == 0o700
    for path in [*folder.iterdir(), *(folder / "base_model").iterdir()]:
        assert path.is_dir() or stat.S_IMODE(path.stat().st_mode) == 0o600, path
    records = read_jsonl(job.data_path)
    assert len(records) == job.records == {"sft": 4, "dpo": 12, "kto": 8}[objective]
    assert all(list(r) == COLUMNS[objective] for r in records)  # no annotators, no sample ids
    assert records[0]["prompt"] == [{"role": "user", "content": PROMPTS[0]}]

    _, args, model_args, data_args = parse_config(job)
    assert model_args.model_name_or_path == job.base_model == "base_model"
    assert (model_args.use_peft, model_args.lora_r, model_args.lora_alpha,
            model_args.lora_target_modules) == (True, 8, 16, "all-linear")
    assert (args.learning_rate, args.per_device_train_batch_size, args.max_steps,
            args.max_length, args.seed) == (1e-3, 2, 3, 256, 0)
    assert args.output_dir == "adapter" and args.save_strategy == "no" and args.report_to == []
    assert args.use_cpu and not args.bf16 and not args.gradient_checkpointing
    [dataset] = data_args.datasets
    assert (dataset.path, dataset.data_files, dataset.columns) == ("json", "data.jsonl",
                                                                    COLUMNS[objective])
    if objective != "sft":
        assert args.beta == 0.1

    # the copied base model is the session's model, weights and chat template included
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(folder / "base_model")
    tok = AutoTokenizer.from_pretrained(folder / "base_model")
    assert tok.chat_template == rated.tokenizer.chat_template
    ids = torch.tensor([rated.tokenizer.encode("What is the capital of France?")])
    owner = rated.model  # the session's model owner: its model is used on its own thread
    with torch.no_grad():
        torch.testing.assert_close(base(ids).logits, owner.call(lambda: owner.model(ids).logits))


def test_job_options(rated, tmp_path):
    auto = export_training_job(rated, tmp_path / "auto", objective="auto")
    assert auto.objective == "dpo" and "DPO" in auto.reason
    _, args, _, _ = parse_config(auto)
    assert args.num_train_epochs == 3 and args.max_steps == -1 and args.learning_rate == 2e-4

    # a hub id or a model folder is referenced, not copied; epochs, extra TRL arguments
    hub = export_training_job(rated, tmp_path / "hub", model="HuggingFaceTB/SmolLM2-135M-Instruct",
                              epochs=1, trl_args={"gradient_accumulation_steps": 4},
                              num_processes=1, device="cuda", keep_metadata=True)
    assert hub.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert not (hub.folder / "base_model").exists()
    assert hub.command == "accelerate launch --num_processes 1 train.py --config config.yaml"
    import yaml  # a GPU config: TrainingArguments would refuse its bf16 on this CPU machine

    config = yaml.safe_load(hub.config_path.read_text())
    assert config["num_train_epochs"] == 1 and config["gradient_accumulation_steps"] == 4
    assert not {"use_cpu", "bf16", "gradient_checkpointing", "max_steps"} & set(config)
    assert "annotators" in read_jsonl(hub.data_path)[0]  # keep_metadata=True keeps them
    local = export_training_job(rated, tmp_path / "local", model=auto.folder / "base_model")
    assert local.base_model == str((auto.folder / "base_model").resolve())

    # scrubbing reaches the data
    [sample] = rated.generate("hi", n=1, max_new_tokens=4, seed=0, progress=False)
    rated.record_correction(sample.sample_id, "Mail me at jane.doe@example.com")
    job = export_training_job(rated, tmp_path / "scrub", objective="sft", scrub=True)
    text = job.data_path.read_text()
    assert "jane.doe" not in text and "[email]" in text and job.scrub_report.counts["email"] == 1

    with pytest.raises(ValueError, match="model="):
        export_training_job(rated.store, tmp_path / "x")
    assert export_training_job(rated.store, tmp_path / "store", model="org/model").records == 5
    with pytest.raises(ValueError, match="batch_size"):
        export_training_job(rated, tmp_path / "x", objective="kto", batch_size=1)
    with pytest.raises(ValueError, match="objective"):
        export_training_job(rated, tmp_path / "x", objective="ppo")


def test_examples_are_built_once_and_chosen_from_what_is_written(rated, tmp_path, monkeypatch):
    from lf_widgets import handoff

    calls = []
    monkeypatch.setattr(handoff, "text_examples",
                        lambda store, **kw: calls.append(store) or text_examples(store, **kw))
    job = export_training_job(rated, tmp_path / "job", objective="auto")
    assert calls == [rated.store]
    assert job.objective == "dpo" and job.records == 12
    assert "12 preference pairs (12 from ratings)" in job.reason


def test_no_feedback_says_what_to_add(session, tmp_path):
    with pytest.raises(ValueError, match="no examples"):
        export_training_job(session, tmp_path / "job", objective="dpo")


# -- really training ----------------------------------------------------------------------------
def run_job(job: Job, tmp_path, timeout: float = 300) -> str:
    """Run ``job.command`` as written, in the job folder, offline; returns stdout + stderr."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),  # no user accelerate config
           "TOKENIZERS_PARALLELISM": "false",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.Popen(job.command, shell=True, cwd=job.folder, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{job.command} ran past {timeout} s:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]
    return out


def logits(model, tokenizer):
    ids = tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[0]}],
                                        add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("objective", ["sft", "dpo", "kto"])
def test_job_trains_an_adapter_with_two_processes(rated, tmp_path, objective):
    job = export_training_job(rated, tmp_path / "job", objective=objective, steps=4, lr=2e-2,
                              batch_size=2)
    out = run_job(job, tmp_path)

    # two processes really trained (DDP over gloo), and the launcher said so
    assert "lf_widgets: process 0 of 2 (MULTI_CPU" in out
    assert "lf_widgets: process 1 of 2 (MULTI_CPU" in out
    adapter = job.adapter_path
    assert (adapter / "adapter_config.json").is_file()
    meta = json.loads((adapter / "lf_widgets.json").read_text())
    assert meta["num_processes"] == 2 and meta["step"] == 4 and meta["objective"] == objective
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (8, 16)
    weights = load_file(adapter / "adapter_model.safetensors")
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    assert len(lora_b) == 14 and any(w.abs().max() > 0 for w in lora_b)  # 7 linears x 2 layers

    # the adapter loads into a Session on the same base, changes its logits, and A/B tests
    base_model, base_tok = tiny_model(seed=0)
    tuned = lfw.Session(model=tiny_model(seed=0), store=tmp_path / "tuned.sqlite",
                        annotator="ann", adapter=adapter)
    try:
        assert tuned.adapter_step == 4
        owner = tuned.model  # the session's model owner: its model is used on its own thread

        def as_base():
            with owner.use("base"):  # the adapter disabled
                return logits(owner.model, tuned.tokenizer)

        tuned_logits = owner.call(lambda: logits(owner.model, tuned.tokenizer))
        base_logits = logits(base_model, base_tok)
        assert (tuned_logits - base_logits).abs().max() > 1e-3
        torch.testing.assert_close(owner.call(as_base), base_logits)
        panel = tuned.ab_test(list(PROMPTS), models=("base", "tuned"), display=False, seed=0,
                              max_new_tokens=4)
        assert panel.total == 2
        panel = tuned.ab_test(PROMPTS[0], models=("base", str(adapter)), display=False, seed=0,
                              max_new_tokens=4)
        assert panel.total == 1
    finally:
        tuned.close()
