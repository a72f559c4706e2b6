"""Blind A/B tests: samples from two contenders, sides shuffled per item, votes in the log.

A contender is ``"base"`` (the adapter disabled: no second copy of the model), ``"tuned"`` (the
current adapter), ``"tuned+goal"`` (the current adapter, generating conditioned on the goal:
``goal=`` of the test, else ``Session.goal``; experimental, see :mod:`lf_widgets.critique_data`)
or the path of a saved adapter / checkpoint folder. Only "tuned+goal" generates with a goal. Which side shows which
contender lives only here, in the kernel, and in the votes written to the log — never in a
widget's state — until the person asks for the reveal.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from .evaluation import ABResult, ab_summary
from .sampling import SamplingConfig
from .panels._pair import PairItem

__all__ = ["ABTest", "start_test", "assign_sides", "votes_frame", "summarise", "contenders_of",
           "TUNED_GOAL"]

TUNED_GOAL = "tuned+goal"  # the contender spec: the tuned adapter with the goal


@dataclass
class ABTest:
    """One blind comparison: its items (filled in as both answers arrive) and the hidden sides."""

    test_id: str  # written with every vote, so results can be grouped per test
    contenders: tuple[str, str]  # e.g. ("base", "tuned")
    items: list[PairItem] = field(default_factory=list)  # complete items, in the order completed
    hidden: list[tuple[str, str]] = field(default_factory=list)  # per item: (left, right) contender
    total: int = 0  # items the test will have
    requests: list = field(default_factory=list)  # the GenerationRequests writing the answers
    listeners: list = field(default_factory=list)  # called (no arguments) when an item completes

    def changed(self) -> None:
        for callback in list(self.listeners):
            callback()

    def wait(self) -> ABTest:
        """Block until every answer is written (scripts; panels fill in as items complete)."""
        for request in self.requests:
            request.wait()
        return self

    def __repr__(self) -> str:  # never print the assignment by accident
        return f"ABTest({self.test_id!r}, {self.contenders[0]!r} vs {self.contenders[1]!r}, {len(self.items)} items)"


def assign_sides(n_items: int, contenders: tuple[str, str], rng: random.Random) -> list[tuple[str, str]]:
    """For each item, which contender is shown left (A) and right (B): a fair coin each."""
    a, b = contenders
    return [(a, b) if rng.random() < 0.5 else (b, a) for _ in range(n_items)]


def start_test(start_generation, prompts: Sequence[str], n: int, contenders: tuple[str, str],
               config: SamplingConfig, seed: int | None = None, *,
               goal: str | None = None) -> ABTest:
    """Start generating one sample per contender for each prompt × n; returns the test at once.

    ``start_generation`` is :meth:`lf_widgets.Session.start_generation`. Prompts go in chunks of
    ``config.batch_size``, each chunk for both contenders in turn, so items become complete
    (and votable) while later ones are still being written. An item joins ``test.items`` only
    once both of its answers are stored: nothing about sides is shown before. ``goal`` (else
    ``config.goal``, else the Session's ``goal``) is used by the "tuned+goal" contender only.
    """
    if len(contenders) != 2 or contenders[0] == contenders[1]:
        raise ValueError(f"models must name two different contenders, got {contenders!r}")
    if goal is None:
        session = getattr(start_generation, "__self__", None)  # the Session of the bound method
        goal = config.goal if config.goal is not None else getattr(session, "goal", None)
    if TUNED_GOAL in contenders and goal is None:
        raise ValueError(f"contender {TUNED_GOAL!r} needs a goal: set session.goal = \"...\" "
                         "(the feedback a good answer would get), or pass goal=\"...\"")
    test = ABTest(uuid.uuid4().hex[:12], tuple(contenders))
    repeated = [p for p in prompts for _ in range(n)]
    rng = random.Random(seed) if seed is not None else random.SystemRandom()
    sides = assign_sides(len(repeated), test.contenders, rng)
    answers: dict[tuple[str, int], object] = {}
    lock = threading.Lock()

    def arrived(name: str, offset: int, slot: int, sample) -> None:  # on the model's thread
        index = offset + slot
        with lock:
            answers[(name, index)] = sample
            if all((c, index) in answers for c in contenders):
                left, right = sides[index]
                test.hidden.append((left, right))
                test.items.append(PairItem(repeated[index], answers[(left, index)],
                                           answers[(right, index)]))
        test.changed()

    for offset in range(0, len(repeated), config.batch_size):
        chunk = repeated[offset:offset + config.batch_size]
        for name in contenders:
            test.requests.append(start_generation(  # goal= always given: only one side has it
                chunk, 1, config=config, contender="tuned" if name == TUNED_GOAL else name,
                goal=goal if name == TUNED_GOAL else None, label="ab_test",
                params={"contender": name, "ab_test": test.test_id},
                on_sample=lambda slot, sample, name=name, offset=offset:
                    arrived(name, offset, slot, sample)))
    test.total = len(repeated)
    return test


def contenders_of(store, test_id: str) -> tuple[str, str]:
    """The two contenders of a stored test, in the order they were given."""
    df = store.samples()
    mine = df[df["params"].map(lambda p: p.get("ab_test") == test_id)]
    names = list(dict.fromkeys(mine["params"].map(lambda p: p["contender"])))
    if len(names) != 2:
        raise ValueError(f"no A/B test {test_id!r} in this store")
    return names[0], names[1]


def votes_frame(store, test_id: str | None = None) -> pd.DataFrame:
    """Current A/B votes (undone ones removed): one row per vote with the winner named."""
    ev = store.current_events(kinds=["ab_vote"])  # a changed vote replaced the earlier one
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
    df = pd.DataFrame(rows, columns=columns)
    texts = store.samples().set_index("sample_id")["text"] if rows else pd.Series(dtype=object)
    df["left_text"] = df["left_sample"].map(texts)
    df["right_text"] = df["right_sample"].map(texts)
    return df


def summarise(votes: pd.DataFrame, contenders: tuple[str, str], notes=()) -> ABResult:
    """Win rate, Wilson interval and sign test of contender B against A (see evaluation), with
    the side, length and length-controlled checks (see ab_checks) and any ``notes``."""
    from dataclasses import replace

    from .ab_checks import ab_checks

    a, b = contenders
    result = ab_summary(votes["winner"].tolist(), a=a, b=b)
    return replace(result, checks=ab_checks(votes, a, b), notes=tuple(notes))
