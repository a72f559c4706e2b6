"""Text-level examples → token ids for SFT, DPO and KTO: tokenising, fitting, key, hold-out.

Which feedback becomes which example is :mod:`lf_widgets.feedback`'s job; this module turns its
records into the ids a model trains on. Completion ids are the sample's stored ``token_ids``
(the very tokens the person judged: no re-tokenisation drift); text without ids (imports,
corrections) is tokenized without special tokens plus the end-of-turn token. Examples longer
than ``max_length`` are cut or dropped, and what tokens alone reveal is cleaned here: an empty
completion, a pair whose two sides have the same ids, the same ids twice. Examples hold tuples
of ids, immutable like the frozen dataclasses around them.

Collation and length batching are :mod:`lf_widgets.batching` (re-exported here); it knows
nothing of this module, so the two never import each other.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from types import SimpleNamespace
from typing import Any, ClassVar

from .batching import (IGNORE_INDEX, collate_kto, collate_pairs, collate_sft, length_batches,
                       padding_waste)
from .feedback import (OBJECTIVES, CleaningReport, KTOText, PairText, SFTText, TextExamples,
                       check_min_edit_ratio, check_thresholds, choose_objective, prompt_of,
                       stored_ids, text_examples)
from .sampling import chat_prompt_ids

__all__ = ["SFTExample", "PairExample", "KTOExample", "TrainingData", "assign_kl_partners",
           "build_examples", "tokenize_examples", "sample_example_ids", "choose_objective",
           "collate_sft", "collate_pairs", "collate_kto", "length_batches", "padding_waste",
           "sequence_key", "split_holdout", "IGNORE_INDEX", "OBJECTIVES"]


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
    # A correction's provenance (feedback.correction_provenance: via, refiner, critique,
    # edit_distance, ...); None for examples from ratings and for examples built by hand
    meta: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PairExample(_Example):
    """Two completions of one prompt, the chosen one preferred (DPO)."""

    prompt: str  # the user turn both answer
    prompt_ids: tuple[int, ...]  # chat template up to and including the assistant header
    chosen_ids: tuple[int, ...]  # the preferred completion
    rejected_ids: tuple[int, ...]  # the other one
    chosen_sample_id: int | None  # None when the chosen text is a correction, not a stored sample
    rejected_sample_id: int  # the sample it beat
    source: str  # "ratings" | "correction" | "preference"
    # The chosen correction's provenance; None for pairs from ratings and preferences
    meta: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    _KEYED: ClassVar[tuple[str, ...]] = ("prompt_ids", "chosen_ids", "rejected_ids")


@dataclass(frozen=True)
class KTOExample(_Example):
    """One completion labelled desirable or undesirable (KTO)."""

    prompt: str  # the user turn
    prompt_ids: tuple[int, ...]  # chat template up to and including the assistant header
    completion_ids: tuple[int, ...]  # the labelled completion
    desirable: bool  # True: good (rated high or a correction); False: rated low
    sample_id: int  # for a correction: the sample it corrects
    source: str = "rating"  # "rating" | "correction"
    # Another prompt's completion, fixed per example, for KTO's KL estimate (assign_kl_partners);
    # () for examples built by hand: collate_kto then pairs them within the batch, as TRL does
    kl_completion_ids: tuple[int, ...] = field(default=(), compare=False)  # derived, not identity
    # A correction's provenance; None for examples from ratings
    meta: dict[str, Any] | None = field(default=None, compare=False, repr=False)


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
class TrainingData(CleaningReport):
    """Examples built from the feedback log, with what cleaning dropped or cut, and why."""

    sft: list[SFTExample] = field(default_factory=list)
    pairs: list[PairExample] = field(default_factory=list)
    kto: list[KTOExample] = field(default_factory=list)
    truncated: Counter = field(default_factory=Counter)  # objective → examples cut to max_length


class _Ids:
    """Token ids of prompts and completions, each text tokenized once."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self._prompts: dict[str, tuple[int, ...]] = {}
        self._texts: dict[str, tuple[int, ...]] = {}
        vocab = tokenizer.get_vocab()
        # ChatML's end of turn where the template has one (SmolLM2's eos is <|endoftext|>)
        end = vocab["<|im_end|>"] if "<|im_end|>" in vocab else tokenizer.eos_token_id
        self.end = () if end is None else (end,)

    def prompt(self, prompt: str) -> tuple[int, ...]:
        if prompt not in self._prompts:
            self._prompts[prompt] = tuple(chat_prompt_ids(self.tok, prompt))
        return self._prompts[prompt]

    def completion(self, text: str, stored: tuple[int, ...] | None) -> tuple[int, ...]:
        """``stored`` ids as they are, else ``text`` tokenized plus the end-of-turn token."""
        if stored is not None:
            return stored
        if text not in self._texts:
            ids = self.tok(text, add_special_tokens=False)["input_ids"] if text else []
            self._texts[text] = tuple(ids) + self.end
        return self._texts[text]


def sample_example_ids(tokenizer, sample_row) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(prompt ids, completion ids) of one stored sample, exactly as training builds them.

    ``sample_row`` is a row of ``store.samples()`` (``prompt``, ``text``, ``token_ids``): the
    stored generated ids where it has them, else its text tokenized like an import's.
    """
    ids = _Ids(tokenizer)
    return ids.prompt(prompt_of(sample_row)), ids.completion(sample_row.text, stored_ids(sample_row))


class _Tokens:
    """Text examples → token examples: ids, length fitting, and the checks only ids can make."""

    def __init__(self, tokenizer, max_length: int, overlong: str, data: TrainingData):
        self.ids, self.data = _Ids(tokenizer), data
        self.max_length, self.overlong = max_length, overlong
        self._seen: dict[str, set] = {o: set() for o in OBJECTIVES}

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

    def keep(self, objective: str, example, dedupe_key) -> None:
        if dedupe_key in self._seen[objective]:
            return self.drop(objective, "duplicate")  # other texts, same ids
        self._seen[objective].add(dedupe_key)
        self.data.of(objective).append(example)

    def add_single(self, e: SFTText | KTOText) -> None:
        objective = "kto" if isinstance(e, KTOText) else "sft"
        completion = self.ids.completion(e.completion, e.token_ids)
        if not completion:
            return self.drop(objective, "empty completion")
        pids = self.ids.prompt(e.prompt)
        if (fitted := self.fit(objective, pids, completion)) is None:
            return
        if objective == "sft":
            ex = SFTExample(e.prompt, pids, fitted[0], e.sample_id, e.source, meta=e.meta)
            return self.keep("sft", ex, ex.key)
        ex = KTOExample(e.prompt, pids, fitted[0], e.desirable, e.sample_id, e.source,
                        meta=e.meta)
        self.keep("kto", ex, (ex.key, e.desirable))

    def add_pair(self, e: PairText) -> None:
        chosen = self.ids.completion(e.chosen, e.chosen_token_ids)
        rejected = self.ids.completion(e.rejected, e.rejected_token_ids)
        if not chosen or not rejected:
            return self.drop("dpo", "empty completion")
        pids = self.ids.prompt(e.prompt)
        if (fitted := self.fit("dpo", pids, chosen, rejected)) is None:
            return
        if fitted[0] == fitted[1]:
            return self.drop("dpo", "identical pair")  # other texts, same ids (or cut alike)
        ex = PairExample(e.prompt, pids, *fitted, e.chosen_sample_id, e.rejected_sample_id,
                         e.source, meta=e.meta)
        self.keep("dpo", ex, ex.key)


class _Builder:
    """Transitional: how ``stepper.sample_tokens`` tokenises one sample today (``.prompt(id)``,
    ``.sample(id).ids``). Remove once it calls :func:`sample_example_ids`."""

    def __init__(self, tokenizer, samples: dict, *_):
        self._tok, self._samples = tokenizer, samples

    def prompt(self, sample_id: int) -> str:
        return prompt_of(self._samples[sample_id])

    def sample(self, sample_id: int) -> SimpleNamespace:
        return SimpleNamespace(ids=sample_example_ids(self._tok, self._samples[sample_id])[1])


def _check_fit(max_length: int, overlong: str) -> None:
    if overlong not in ("truncate", "drop"):
        raise ValueError(f"overlong must be 'truncate' or 'drop', got {overlong!r}")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")


def tokenize_examples(texts: TextExamples, tokenizer, *, max_length: int = 512,
                      overlong: str = "truncate") -> TrainingData:
    """Tokenise text-level examples (:func:`lf_widgets.feedback.text_examples`).

    Parameters are those of :func:`build_examples`. The counts of ``texts`` (dropped, unpaired)
    carry over, and what tokenising drops or cuts is added to them.
    """
    _check_fit(max_length, overlong)
    data = TrainingData(dropped_by={o: Counter(texts.dropped_by[o]) for o in OBJECTIVES},
                        unpaired=Counter(texts.unpaired), min_good=texts.min_good,
                        max_bad=texts.max_bad, corrections=Counter(texts.corrections),
                        rejections=texts.rejections,
                        rejected_suggestions=texts.rejected_suggestions,
                        min_edit_ratio=texts.min_edit_ratio)
    b = _Tokens(tokenizer, max_length, overlong, data)
    for e in texts.sft + texts.kto:
        b.add_single(e)
    for e in texts.pairs:
        b.add_pair(e)
    data.kto = assign_kl_partners(data.kto)
    return data


def build_examples(store, tokenizer, *, max_length: int = 512, overlong: str = "truncate",
                   min_good: float = 4, max_bad: float = 2,
                   truncated_targets: bool = False, min_edit_ratio: float = 0.0) -> TrainingData:
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
    truncated_targets : bool
        Let samples cut off at ``max_new_tokens`` be targets (see :mod:`lf_widgets.feedback`).
    min_edit_ratio : float
        Edit-aware pairs (``TrainConfig.min_edit_ratio``): a correction that changed less than
        this share of the characters gives no DPO pair (dropped as "tiny edit"); SFT and KTO
        keep it. 0 (default): every correction gives its pair, as before.

    Returns
    -------
    TrainingData
        ``.sft``, ``.pairs``, ``.kto`` (examples from corrections carry their provenance in
        ``.meta``), and counts of what was dropped or cut, and why.
    """
    _check_fit(max_length, overlong)  # every option checked before any work
    check_thresholds(min_good, max_bad)
    check_min_edit_ratio(min_edit_ratio)
    texts = text_examples(store, min_good=min_good, max_bad=max_bad,
                          truncated_targets=truncated_targets, min_edit_ratio=min_edit_ratio)
    return tokenize_examples(texts, tokenizer, max_length=max_length, overlong=overlong)


def split_holdout(examples: Sequence, fraction: float) -> tuple[list, list]:
    """Split examples into (train, held out) by a hash of their key: the same example always
    lands on the same side, whatever else the feedback holds, so held-out stays unseen."""
    if not 0 <= fraction < 1:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    train, held = [], []
    for e in examples:
        (held if int(e.key[:8], 16) / 16**8 < fraction else train).append(e)
    return train, held
