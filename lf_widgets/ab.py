"""Blind A/B tests: samples from two contenders, sides shuffled per item, votes in the log.

A contender is ``"base"`` (the adapter disabled: no second copy of the model), ``"tuned"`` (the
current adapter) or the path of a saved adapter / checkpoint folder. Which side shows which
contender lives only here, in the kernel, and in the votes written to the log — never in a
widget's state — until the person asks for the reveal.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .evaluation import ABResult, ab_summary
from .sampling import SamplingConfig
from .panels._pair import PairItem
from .store import SampleRecord

__all__ = ["ABTest", "build_test", "assign_sides", "votes_frame", "summarise"]


@dataclass
class ABTest:
    """One blind comparison: its items and the hidden side assignment."""

    test_id: str  # written with every vote, so results can be grouped per test
    contenders: tuple[str, str]  # e.g. ("base", "tuned")
    items: list[PairItem] = field(default_factory=list)
    hidden: list[tuple[str, str]] = field(default_factory=list)  # per item: (left, right) contender

    def __repr__(self) -> str:  # never print the assignment by accident
        return f"ABTest({self.test_id!r}, {self.contenders[0]!r} vs {self.contenders[1]!r}, {len(self.items)} items)"


def assign_sides(n_items: int, contenders: tuple[str, str], rng: random.Random) -> list[tuple[str, str]]:
    """For each item, which contender is shown left (A) and right (B): a fair coin each."""
    a, b = contenders
    return [(a, b) if rng.random() < 0.5 else (b, a) for _ in range(n_items)]


@contextlib.contextmanager
def contender(session, name: str) -> Iterator[int | None]:
    """Put the session's model in ``name``'s state (under the model lock); yields its adapter step."""
    from peft import PeftModel

    model = session.model
    with session.model_lock:
        if name == "base":
            ctx = model.disable_adapter() if isinstance(model, PeftModel) else contextlib.nullcontext()
            with ctx:
                yield None
            return
        if not isinstance(model, PeftModel):
            raise ValueError(f"contender {name!r} needs an adapter: train() first, or start the "
                             "Session with adapter=<folder>")
        if name == "tuned":
            yield session.adapter_step
            return
        path = Path(name)
        if not (path / "adapter_config.json").is_file():
            raise ValueError(f"contender must be 'base', 'tuned' or an adapter folder; {name!r} is none")
        adapter = "ab-" + hashlib.blake2b(str(path.resolve()).encode(), digest_size=6).hexdigest()
        if adapter not in model.peft_config:
            model.load_adapter(str(path), adapter_name=adapter, is_trainable=False)
        previous = model.active_adapter
        model.set_adapter(adapter)
        try:
            from .trainer import ADAPTER_META
            import json

            meta_file = path / ADAPTER_META
            yield json.loads(meta_file.read_text()).get("step") if meta_file.is_file() else None
        finally:
            model.set_adapter(previous)  # also makes the training adapter trainable again


def build_test(session, prompts: Sequence[str], n: int, contenders: tuple[str, str],
               config: SamplingConfig, seed: int | None = None) -> ABTest:
    """Generate one sample per contender for each prompt × n, store them, shuffle sides."""
    if len(contenders) != 2 or contenders[0] == contenders[1]:
        raise ValueError(f"models must name two different contenders, got {contenders!r}")
    test = ABTest(uuid.uuid4().hex[:12], tuple(contenders))
    repeated = [p for p in prompts for _ in range(n)]
    outputs = {}
    from .generation import sample_completions

    for name in contenders:
        with contender(session, name) as step:
            completions = [c for batch in sample_completions(
                session.model, session.tokenizer, repeated, 1, config, lock=session.model_lock,
                progress=False) for c in batch]
        records = [SampleRecord(text=c.text, prompt=c.prompt, token_ids=c.token_ids,
                                model=session.model_name, adapter_step=step,
                                params={**config.as_params(), "contender": name,
                                        "ab_test": test.test_id})
                   for c in completions]
        ids = session.store.add_samples(records)
        outputs[name] = [session._sample(i, r) for i, r in zip(ids, records)]
    rng = random.Random(seed) if seed is not None else random.SystemRandom()
    test.hidden = assign_sides(len(repeated), test.contenders, rng)
    for i, (left, right) in enumerate(test.hidden):
        test.items.append(PairItem(repeated[i], outputs[left][i], outputs[right][i]))
    return test


def votes_frame(store, test_id: str | None = None) -> pd.DataFrame:
    """Current A/B votes (undone ones removed): one row per vote with the winner named."""
    ev = store.events(active_only=True)
    ev = ev[ev["kind"] == "ab_vote"]
    rows = []
    for e in ev.itertuples():
        v = e.value
        if test_id is not None and v.get("test") != test_id:
            continue
        winner = {"a": v["left"], "b": v["right"]}.get(v["choice"], v["choice"])
        rows.append({"test": v.get("test"), "item": v.get("item"), "left": v["left"],
                     "right": v["right"], "choice": v["choice"], "winner": winner,
                     "reason": v.get("reason"), "annotator": e.annotator,
                     "left_sample": e.sample_id, "right_sample": v["other"], "voted_at": e.created_at})
    columns = ["test", "item", "left", "right", "choice", "winner", "reason", "annotator",
               "left_sample", "right_sample", "voted_at"]
    return pd.DataFrame(rows, columns=columns)


def summarise(votes: pd.DataFrame, contenders: tuple[str, str]) -> ABResult:
    """Win rate, Wilson interval and sign test of contender B against A (see evaluation)."""
    a, b = contenders
    return ab_summary(votes["winner"].tolist(), a=a, b=b)
