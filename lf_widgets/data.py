"""Feedback → training examples for SFT, DPO and KTO: mapping, cleaning, collation, batching.

Pure functions of the feedback log and a tokenizer, no model. The mapping is DESIGN.md's table
("Feedback → objectives"). A sample's rating is the **mean of its annotators' current ratings**
(each annotator's latest rating that no undo cancelled), so one harsh and one kind annotator meet
in the middle: mean ≥ ``min_good`` → SFT target and KTO desirable; ≤ ``max_bad`` → KTO
undesirable; two samples of one prompt with different means → a DPO pair (higher ≻ lower, every
such pair). Samples without a prompt (imports) are never paired by rating: nothing says they
answer the same question. A correction → SFT target, DPO pair (correction ≻ original) and KTO
desirable. A preference "a"/"b" → DPO pair; "tie" and "both_bad" give none and are counted.

Completion ids are the sample's stored ``token_ids`` (the very tokens the person judged); text
without ids (imports, corrections) is tokenized without special tokens plus the end-of-turn token.
Examples hold tuples of ids, immutable like the frozen dataclasses around them.
"""

from __future__ import annotations

import hashlib
import itertools
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import ClassVar, NamedTuple

import pandas as pd

from .batching import (IGNORE_INDEX, collate_kto, collate_pairs, collate_sft, length_batches,
                       padding_waste)
from .generation import chat_prompt_ids

__all__ = ["SFTExample", "PairExample", "KTOExample", "TrainingData", "assign_kl_partners", "build_examples",
           "choose_objective", "collate_sft", "collate_pairs", "collate_kto", "length_batches",
           "padding_waste", "sequence_key", "split_holdout", "IGNORE_INDEX"]

OBJECTIVES = ("sft", "dpo", "kto")


def sequence_key(*parts: Sequence[int]) -> str:
    """Stable hash of token id sequences: same ids, same key, on every run and machine."""
    text = "|".join(",".join(str(int(t)) for t in p) for p in parts)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class _Example:
    key: str = field(init=False, repr=False, compare=False)  # reference log-probs are cached under it
    _KEYED: ClassVar[tuple[str, ...]] = ("prompt_ids", "completion_ids")

    def __post_init__(self):
        for f in fields(self):
            if f.name.endswith("_ids"):
                object.__setattr__(self, f.name, tuple(int(t) for t in getattr(self, f.name)))
        object.__setattr__(self, "key", sequence_key(*(getattr(self, n) for n in self._KEYED)))


@dataclass(frozen=True)
class SFTExample(_Example):
    """A completion to imitate (loss on its tokens only)."""

    prompt: str  # the user turn; "" for imports that carry none
    prompt_ids: tuple[int, ...]  # chat template up to and including the assistant header
    completion_ids: tuple[int, ...]  # ends with the end-of-turn token unless truncated
    sample_id: int  # the judged sample (for a correction: the sample it corrects)
    source: str  # "rating" | "correction"


@dataclass(frozen=True)
class PairExample(_Example):
    """Two completions of one prompt, the chosen one preferred (DPO)."""

    prompt: str
    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    chosen_sample_id: int | None  # None when the chosen text is a correction, not a stored sample
    rejected_sample_id: int
    source: str  # "ratings" | "correction" | "preference"
    _KEYED: ClassVar[tuple[str, ...]] = ("prompt_ids", "chosen_ids", "rejected_ids")


@dataclass(frozen=True)
class KTOExample(_Example):
    """One completion labelled desirable or undesirable (KTO)."""

    prompt: str
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    desirable: bool
    sample_id: int  # for a correction: the sample it corrects
    source: str = "rating"  # "rating" | "correction"
    # Another prompt's completion, fixed per example, for KTO's KL estimate (assign_kl_partners);
    # () for examples built by hand: collate_kto then pairs them within the batch, as TRL does
    kl_completion_ids: tuple[int, ...] = field(default=(), compare=False)  # derived, not identity


def assign_kl_partners(examples: Sequence[KTOExample]) -> list[KTOExample]:
    """Give each KTO example a fixed mismatched completion for the KL estimate z₀.

    KTO estimates KL(π‖π_ref) from prompts paired with completions of *other* prompts. TRL pairs
    each example with its neighbour in the batch, so the pairs change with every reshuffle and
    their reference log-probs miss any cache; a partner fixed per example is the same kind of
    sample, and its reference log-prob is computed once. The partner is the first example from
    half the pool on (pools are grouped by prompt) whose prompt differs; with a single prompt,
    the next example; a pool of one keeps its own completion.
    """
    n = len(examples)
    single_prompt = len({e.prompt_ids for e in examples}) <= 1
    out = []
    for i, example in enumerate(examples):
        partner = examples[(i + 1) % n] if n else example
        if not single_prompt:
            partner = next(examples[j] for j in ((i + n // 2 + k) % n for k in range(n))
                           if examples[j].prompt_ids != example.prompt_ids)
        out.append(replace(example, kl_completion_ids=partner.completion_ids))
    return out


@dataclass(repr=False)
class TrainingData:
    """Examples built from the feedback log, with what cleaning dropped or cut, and why."""

    sft: list[SFTExample] = field(default_factory=list)
    pairs: list[PairExample] = field(default_factory=list)
    kto: list[KTOExample] = field(default_factory=list)
    dropped_by: dict[str, Counter] = field(  # objective → reason → examples dropped
        default_factory=lambda: {o: Counter() for o in OBJECTIVES})
    truncated: Counter = field(default_factory=Counter)  # objective → examples cut to max_length
    unpaired: Counter = field(default_factory=Counter)  # "tie" / "both_bad" preferences: no pair
    min_good: float = 4  # thresholds used, for messages
    max_bad: float = 2

    @property
    def dropped(self) -> Counter:
        """Reason → number of examples dropped, over all objectives."""
        return sum(self.dropped_by.values(), Counter())

    def summary(self) -> pd.DataFrame:
        """One row per objective: examples, sources, truncated, dropped (total and per reason)."""
        rows = {}
        for name, sources in (("sft", Counter(e.source for e in self.sft)),
                              ("dpo", Counter(e.source for e in self.pairs)),
                              ("kto", Counter("desirable" if e.desirable else "undesirable"
                                              for e in self.kto))):
            rows[name] = {"examples": sum(sources.values()), "sources": _fmt(sources),
                          "truncated": self.truncated[name],
                          "dropped": sum(self.dropped_by[name].values()),
                          **{f"dropped: {r}": n for r, n in self.dropped_by[name].items()},
                          **({f"no pair: {c}": n for c, n in self.unpaired.items()}
                             if name == "dpo" else {})}
        df = pd.DataFrame.from_dict(rows, orient="index").rename_axis("objective")
        counts = [c for c in df.columns if c != "sources"]
        df[counts] = df[counts].fillna(0).astype(int)
        return df

    def __repr__(self) -> str:
        good = sum(e.desirable for e in self.kto)
        extra = {"dropped": self.dropped, "no pair": self.unpaired}
        return (f"TrainingData(sft={len(self.sft)}, pairs={len(self.pairs)}, kto={len(self.kto)}"
                f" ({good} desirable, {len(self.kto) - good} undesirable)"
                + "".join(f"; {k}: {_fmt(c)}" for k, c in extra.items() if c) + ")")


def _fmt(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in counter.items())


class _Completion(NamedTuple):
    ids: tuple[int, ...]
    text: str
    sample_id: int | None


class _Builder:
    """Turns completions into examples: prompt ids, emptiness, length and duplicate checks."""

    def __init__(self, tokenizer, samples: dict, max_length: int, overlong: str, data: TrainingData):
        self.tok, self.samples, self.data = tokenizer, samples, data
        self.max_length, self.overlong = max_length, overlong
        self._prompt_ids: dict[str, tuple[int, ...]] = {}
        self._sample_ids: dict[int, _Completion] = {}
        self._seen: dict[str, set] = {o: set() for o in OBJECTIVES}
        vocab = tokenizer.get_vocab()
        self.end_id = vocab["<|im_end|>"] if "<|im_end|>" in vocab else tokenizer.eos_token_id

    def prompt_ids(self, prompt: str) -> tuple[int, ...]:
        if prompt not in self._prompt_ids:
            self._prompt_ids[prompt] = tuple(chat_prompt_ids(self.tok, prompt))
        return self._prompt_ids[prompt]

    def prompt(self, sample_id: int) -> str:
        p = self.samples[sample_id].prompt
        return p if isinstance(p, str) else ""

    def sample(self, sample_id: int) -> _Completion:
        if sample_id not in self._sample_ids:  # a sample may sit in many pairs
            row = self.samples[sample_id]
            self._sample_ids[sample_id] = (  # stored ids are what was generated: no re-tokenising
                _Completion(tuple(row.token_ids), row.text, sample_id)
                if isinstance(row.token_ids, list) else self.text(row.text, sample_id))
        return self._sample_ids[sample_id]

    def text(self, text: str, sample_id: int | None) -> _Completion:
        ids = self.tok(text, add_special_tokens=False)["input_ids"] if text else []
        end = [] if self.end_id is None else [self.end_id]
        return _Completion(tuple(ids) + tuple(end), text, sample_id)

    def drop(self, objective: str, reason: str) -> None:
        self.data.dropped_by[objective][reason] += 1

    def fit(self, objective: str, prompt_ids, *completions):
        """The completions, cut to fit ``max_length`` when needed; None when dropped."""
        room = self.max_length - len(prompt_ids)
        if all(len(c) <= room for c in completions):
            return completions
        if self.overlong == "drop" or room < 1:
            return self.drop(objective, "too long" if room >= 1 else "prompt too long")
        self.data.truncated[objective] += 1
        return tuple(c[:room] for c in completions)

    def keep(self, objective: str, examples: list, example, dedupe_key) -> None:
        if dedupe_key in self._seen[objective]:
            return self.drop(objective, "duplicate")
        self._seen[objective].add(dedupe_key)
        examples.append(example)

    def add_single(self, prompt: str, c: _Completion, source: str, desirable: bool | None = None):
        """An SFT example (``desirable`` None) or a KTO one."""
        objective = "sft" if desirable is None else "kto"
        # An empty answer is a fine *undesirable* example (the model stopped at once), no target.
        if not c.ids or (desirable is not False and not c.text.strip()):
            return self.drop(objective, "empty completion")
        pids = self.prompt_ids(prompt)
        if (fitted := self.fit(objective, pids, c.ids)) is None:
            return
        if desirable is None:
            ex = SFTExample(prompt, pids, fitted[0], c.sample_id, source)
            return self.keep("sft", self.data.sft, ex, ex.key)
        ex = KTOExample(prompt, pids, fitted[0], desirable, c.sample_id, source)
        self.keep("kto", self.data.kto, ex, (ex.key, desirable))

    def add_pair(self, prompt: str, chosen: _Completion, rejected: _Completion, source: str):
        if not chosen.text.strip() or not chosen.ids or not rejected.ids:
            return self.drop("dpo", "empty completion")
        pids = self.prompt_ids(prompt)
        if (fitted := self.fit("dpo", pids, chosen.ids, rejected.ids)) is None:
            return
        if fitted[0] == fitted[1] or chosen.text.strip() == rejected.text.strip():
            return self.drop("dpo", "identical pair")  # e.g. a "correction" that changed nothing
        ex = PairExample(prompt, pids, *fitted, chosen.sample_id, rejected.sample_id, source)
        self.keep("dpo", self.data.pairs, ex, ex.key)


def build_examples(store, tokenizer, *, max_length: int = 512, overlong: str = "truncate",
                   min_good: float = 4, max_bad: float = 2) -> TrainingData:
    """Turn the current feedback in ``store`` into SFT, DPO and KTO examples.

    Parameters
    ----------
    store : FeedbackStore
        Only current judgements count: the latest per sample, annotator and kind, undone ones
        excluded (for preferences: the latest per pair of samples and annotator).
    tokenizer : PreTrainedTokenizerBase
        The model's tokenizer, with its chat template.
    max_length : int
        Longest prompt + completion, in tokens.
    overlong : {"truncate", "drop"}
        For a longer example: cut the completion (keeping ≥ 1 token; an example whose prompt
        alone fills ``max_length`` is dropped), or drop it.
    min_good, max_bad : float
        A mean rating ≥ ``min_good`` makes a good example, ≤ ``max_bad`` a bad one.

    Returns
    -------
    TrainingData
        ``.sft``, ``.pairs``, ``.kto``, and counts of what was dropped or cut, and why.
    """
    if overlong not in ("truncate", "drop"):
        raise ValueError(f"overlong must be 'truncate' or 'drop', got {overlong!r}")
    if max_length < 2 or not max_bad < min_good:
        raise ValueError(f"need max_length >= 2 and max_bad < min_good, got {max_length}, "
                         f"{max_bad}, {min_good}")
    samples = {int(r.sample_id): r for r in store.samples().itertuples(index=False)}
    data = TrainingData(min_good=min_good, max_bad=max_bad)
    b = _Builder(tokenizer, samples, max_length, overlong, data)
    ratings, corrections, preferences = _current(store.events(active_only=True), samples)
    means = {sid: statistics.fmean(by_annotator.values())
             for sid, by_annotator in sorted(ratings.items())}
    _from_ratings(b, means)
    _from_corrections(b, corrections)
    _from_preferences(b, preferences)
    data.kto = assign_kl_partners(data.kto)
    return data


def _current(events: pd.DataFrame, samples: dict):
    """Latest rating / correction per (sample, annotator); preference per (pair, annotator)."""
    ratings: dict[int, dict[str, int]] = defaultdict(dict)
    corrections: dict[tuple[int, str], str] = {}
    preferences: dict[tuple[frozenset, str], tuple[int, Mapping]] = {}
    for e in events.sort_values("id").itertuples(index=False):
        if pd.isna(e.sample_id) or int(e.sample_id) not in samples:
            continue
        sid = int(e.sample_id)
        if e.kind == "rating":
            ratings[sid][e.annotator] = e.value
        elif e.kind == "correction":
            corrections[(sid, e.annotator)] = e.value
        elif e.kind == "preference" and isinstance(e.value, Mapping):
            # Unordered: the same pair shown later as (B, A) replaces the earlier judgement.
            preferences[(frozenset((sid, e.value.get("other"))), e.annotator)] = (sid, e.value)
    return ratings, corrections, preferences


def _from_ratings(b: _Builder, means: dict[int, float]) -> None:
    by_prompt: dict[str, list[int]] = defaultdict(list)
    for sid, mean in means.items():
        prompt, sample = b.prompt(sid), b.sample(sid)
        if mean >= b.data.min_good:
            b.add_single(prompt, sample, "rating")
            b.add_single(prompt, sample, "rating", desirable=True)
        elif mean <= b.data.max_bad:
            b.add_single(prompt, sample, "rating", desirable=False)
        if isinstance(b.samples[sid].prompt, str):
            by_prompt[prompt].append(sid)
    for prompt, sids in by_prompt.items():  # all pairs: 4 samples of a prompt give up to 6
        for x, y in itertools.combinations(sids, 2):
            if means[x] != means[y]:
                hi, lo = (x, y) if means[x] > means[y] else (y, x)
                b.add_pair(prompt, b.sample(hi), b.sample(lo), "ratings")


def _from_corrections(b: _Builder, corrections: dict[tuple[int, str], str]) -> None:
    for (sid, _annotator), text in sorted(corrections.items()):
        if not isinstance(text, str) or not text.strip():
            continue  # an emptied correction means "no correction"
        prompt, fixed = b.prompt(sid), b.text(text, sid)
        b.add_single(prompt, fixed, "correction")
        b.add_pair(prompt, fixed._replace(sample_id=None), b.sample(sid), "correction")
        b.add_single(prompt, fixed, "correction", desirable=True)


def _from_preferences(b: _Builder, preferences: dict) -> None:
    for a, value in preferences.values():
        choice, other = value.get("choice"), value.get("other")
        if choice in ("tie", "both_bad"):
            b.data.unpaired[choice] += 1
        elif choice not in ("a", "b") or not isinstance(other, int) or other not in b.samples:
            b.drop("dpo", "invalid preference")
        elif b.prompt(a) != b.prompt(other):
            b.drop("dpo", "different prompts")
        else:
            win, lose = (a, other) if choice == "a" else (other, a)
            b.add_pair(b.prompt(a), b.sample(win), b.sample(lose), "preference")


_NEEDS = {"dpo": "DPO needs preference pairs: pick the better of two samples, rate two samples "
                 "of one prompt differently, or correct a sample",
          "kto": "KTO needs rated samples: rate samples high (good) or low (bad), or correct one",
          "sft": "SFT needs good examples: rate a sample {good}, or correct one"}


def split_holdout(examples: Sequence, fraction: float) -> tuple[list, list]:
    """Split examples into (train, held out) by a hash of their key: the same example always
    lands on the same side, whatever else the feedback holds, so held-out stays unseen."""
    if not 0 <= fraction < 1:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    train, held = [], []
    for e in examples:
        (held if int(e.key[:8], 16) / 16**8 < fraction else train).append(e)
    return train, held


def choose_objective(data: TrainingData, requested: str = "auto") -> tuple[str, str]:
    """Pick the training objective the feedback supports, and say why.

    Parameters
    ----------
    data : TrainingData
        From :func:`build_examples`.
    requested : {"auto", "dpo", "kto", "sft"}
        "auto": DPO with ≥ 2 pairs (preferences are the strongest signal), else KTO with both
        desirable and undesirable examples and ≥ 4 in all, else SFT with ≥ 1 example.

    Returns
    -------
    (objective, reason) : (str, str)
        "dpo", "kto" or "sft", and a sentence for the person.

    Raises
    ------
    ValueError
        When the requested objective (for "auto": every one) lacks the feedback it needs.
    """
    counts = {"dpo": len(data.pairs), "kto": len(data.kto), "sft": len(data.sft)}
    good = {4: "4 or 5", 5: "5"}.get(data.min_good, f"{data.min_good:g} or higher")
    requested = requested.lower()
    if requested in counts:
        if not counts[requested]:
            raise ValueError(f"objective {requested!r} has no examples yet. "
                             f"{_NEEDS[requested].format(good=good)}.")
        return requested, f"{requested.upper()} was requested; {counts[requested]} examples."
    if requested != "auto":
        raise ValueError(f"objective must be 'auto', 'dpo', 'kto' or 'sft', got {requested!r}")
    n_good = sum(e.desirable for e in data.kto)
    if counts["dpo"] >= 2:
        sources = _fmt(Counter(e.source for e in data.pairs))
        return "dpo", (f"DPO on {counts['dpo']} preference pairs ({sources}): pairs are the "
                       "strongest signal.")
    if 0 < n_good < counts["kto"] and counts["kto"] >= 4:
        return "kto", (f"KTO on {n_good} desirable and {counts['kto'] - n_good} undesirable "
                       "examples: fewer than 2 preference pairs, but both good and bad ratings.")
    if counts["sft"]:
        return "sft", (f"SFT on {counts['sft']} good examples (rated {good} or corrected): fewer "
                       "than 2 preference pairs and too few good and bad ratings for KTO.")
    raise ValueError(f"Not enough feedback to train yet: rate at least one sample {good}, or "
                     "correct one (or pick the better of two samples twice, for DPO).")
