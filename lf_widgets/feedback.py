"""Which feedback becomes which example, at the text level: no tokenizer, no model, no torch.

DESIGN.md's table ("Feedback → objectives"), once, for training (:mod:`lf_widgets.data`
tokenises what this builds), for the exports and for the training hand-off. A sample's rating is
the **mean of its annotators' current ratings**, so one harsh and one kind annotator meet in the
middle: mean ≥ ``min_good`` → SFT target and KTO desirable; ≤ ``max_bad`` → KTO undesirable; two
samples of one prompt with different means → a DPO pair (higher ≻ lower, every such pair).
Samples without a prompt (imports) are never paired by rating: nothing says they answer the same
question. A correction → SFT target, DPO pair (correction ≻ original) and KTO desirable,
however it was written: typed, an accepted or edited suggested revision, or an edit propagated
from another correction (its ``meta["via"]``; the examples carry that provenance in ``meta``,
and exports write it). With ``min_edit_ratio`` > 0 a correction that changed less than that
share of the characters gives no DPO pair ("tiny edit": the two sides differ by a few
characters, a weak preference); its SFT and KTO examples stay. A rejection (suggested revisions
turned down) is no example of anything; the cleaning summary counts it. A preference "a"/"b" →
DPO pair; "tie" and "both_bad" give none and are counted.

Several judges of a pair: the majority's choice (ties left out; a draw is "no majority"). A
reviewer's adjudication goes first: **adjudication > mean of ratings**, **adjudication >
majority**; what it decided has the source "adjudicated" (counted in the cleaning summary).

Judgements are read only through :meth:`FeedbackStore.current_events` (the store's one
"current judgement" rule: the latest of each kind per subject and annotator that no undo
cancelled), so a changed vote replaces the earlier one and an undone one counts for nothing.

A sample cut off at ``max_new_tokens`` (``samples.truncated``) has no end-of-turn token. It is
no SFT target and no KTO desirable example (unless ``truncated_targets=True``): imitating it
would teach its cut, and TRL, which re-tokenises exports with its chat template, would teach
stopping there. It may be either side of a DPO pair: a pair says which of two answers is better,
and an end-of-turn token added to both sides (as TRL does) adds the same kind of term to both
log-ratios, so short samples rated against each other still teach the preference. A correction
of a cut-off sample is a complete text and a target like any other.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pandas as pd

from ._judgements import CORRECTION_VIAS
from .edits import edit_distance, edit_ratio

__all__ = ["OBJECTIVES", "CUT_OFF", "TINY_EDIT", "SFTText", "PairText", "KTOText",
           "TextExamples", "CleaningReport", "text_examples", "choose_objective",
           "check_thresholds", "check_min_edit_ratio", "correction_provenance", "prompt_of",
           "stored_ids"]

OBJECTIVES = ("sft", "dpo", "kto")
CUT_OFF = "cut off at max_new_tokens"  # the drop reason of truncated samples, as summaries show it
TINY_EDIT = "tiny edit"  # the drop reason of correction pairs below min_edit_ratio
# How the summary names corrections by their meta["via"]: (one, several)
_VIA_NAMES = {"typed": ("typed", "typed"),
              "revision": ("accepted revision", "accepted revisions"),
              "edited_revision": ("edited revision", "edited revisions"),
              "propagated": ("propagated", "propagated")}


@dataclass(frozen=True)
class SFTText:
    """A completion to imitate."""

    prompt: str  # the user turn; "" for imports that carry none
    completion: str  # the text to imitate: the sample's own text, or a correction of it
    sample_id: int  # the judged sample (for a correction: the sample it corrects)
    source: str  # "rating" | "correction"
    # The sample's stored ids when the completion is its own text (what the person judged, so
    # training uses them as they are); None for corrections and imports: tokenise the text.
    token_ids: tuple[int, ...] | None = field(default=None, compare=False, repr=False)
    # A correction's provenance (correction_provenance); None for examples from ratings
    meta: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PairText:
    """Two completions of one prompt, the chosen one preferred (DPO)."""

    prompt: str  # the user turn both answer
    chosen: str  # the preferred text
    rejected: str  # the other one
    chosen_sample_id: int | None  # None when the chosen text is a correction, not a stored sample
    rejected_sample_id: int  # the sample it beat
    source: str  # "ratings" | "correction" | "preference"
    chosen_token_ids: tuple[int, ...] | None = field(default=None, compare=False, repr=False)
    rejected_token_ids: tuple[int, ...] | None = field(default=None, compare=False, repr=False)
    # The chosen correction's provenance; None for pairs from ratings and preferences
    meta: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class KTOText:
    """One completion labelled desirable or undesirable (KTO)."""

    prompt: str  # the user turn
    completion: str  # the labelled text
    desirable: bool  # True: good (rated high or a correction); False: rated low
    sample_id: int  # the judged sample (for a correction: the sample it corrects)
    source: str = "rating"  # "rating" | "correction"
    token_ids: tuple[int, ...] | None = field(default=None, compare=False, repr=False)
    # A correction's provenance; None for examples from ratings
    meta: dict[str, Any] | None = field(default=None, compare=False, repr=False)


def _fmt(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in counter.items())


def _fmt_vias(counter: Mapping[str, int]) -> str:
    """E.g. "3 typed, 5 accepted revisions, 2 propagated"."""
    order = [v for v in CORRECTION_VIAS if counter.get(v)] + \
        [v for v in counter if v not in CORRECTION_VIAS and counter[v]]
    return ", ".join(f"{counter[v]} {_VIA_NAMES.get(v, (v, v))[counter[v] != 1]}" for v in order)


def _via(example) -> str:
    return (example.meta or {}).get("via", "typed")


@dataclass(repr=False, kw_only=True)
class CleaningReport:
    """What a set of examples kept, dropped and why: the counts and summary shared by
    :class:`TextExamples` and :class:`lf_widgets.data.TrainingData` (which add ``sft``,
    ``pairs`` and ``kto``; the latter also ``truncated``)."""

    dropped_by: dict[str, Counter] = field(  # objective → reason → examples dropped
        default_factory=lambda: {o: Counter() for o in OBJECTIVES})
    unpaired: Counter = field(default_factory=Counter)  # "tie" / "both_bad" preferences: no pair
    min_good: float = 4  # thresholds used, for messages
    max_bad: float = 2
    # Corrections in force, by how they were written (meta "via": typed, revision, ...)
    corrections: Counter = field(default_factory=Counter)
    rejections: int = 0  # samples whose suggested revisions were turned down (current rejections)
    rejected_suggestions: int = 0  # the candidates those rejections turned down
    min_edit_ratio: float = 0.0  # pairs from corrections changing less were dropped ("tiny edit")

    @property
    def dropped(self) -> Counter:
        """Reason → number of examples dropped, over all objectives."""
        return sum(self.dropped_by.values(), Counter())

    def of(self, objective: str) -> list:
        """The examples of one objective: ``"sft"``, ``"dpo"`` (the pairs) or ``"kto"``."""
        return {"sft": self.sft, "dpo": self.pairs, "kto": self.kto}[objective]

    def summary(self) -> pd.DataFrame:
        """One row per objective: examples, sources, truncated, dropped (total and per reason).

        When the log holds corrections, ``corrections`` says how that objective's examples from
        corrections were written ("3 typed, 5 accepted revisions, 2 propagated"); when it holds
        rejections, ``rejected suggestions`` counts the suggested revisions turned down (no
        example of any objective: the same number on each row).
        """
        cut = getattr(self, "truncated", Counter())  # examples cut to max_length (tokens only)
        rows = {}
        for name, sources in (("sft", Counter(e.source for e in self.sft)),
                              ("dpo", Counter(e.source for e in self.pairs)),
                              ("kto", Counter("desirable" if e.desirable else "undesirable"
                                              for e in self.kto))):
            vias = Counter(_via(e) for e in self.of(name) if e.source == "correction")
            rows[name] = {"examples": sum(sources.values()), "sources": _fmt(sources),
                          **({"corrections": _fmt_vias(vias)} if self.corrections else {}),
                          "truncated": cut[name],
                          "dropped": sum(self.dropped_by[name].values()),
                          **{f"dropped: {r}": n for r, n in self.dropped_by[name].items()},
                          **({f"no pair: {c}": n for c, n in self.unpaired.items()}
                             if name == "dpo" else {}),
                          **({"rejected suggestions": self.rejected_suggestions}
                             if self.rejections else {})}
        df = pd.DataFrame.from_dict(rows, orient="index").rename_axis("objective")
        counts = [c for c in df.columns if c not in ("sources", "corrections")]
        df[counts] = df[counts].fillna(0).astype(int)
        return df

    def __repr__(self) -> str:
        good = sum(e.desirable for e in self.kto)
        # corrections only when some were not typed: all typed is what a correction always was
        vias = _fmt_vias(self.corrections) if set(self.corrections) - {"typed"} else ""
        rejected = (f"{self.rejected_suggestions} ({self.rejections} "
                    f"sample{'s' * (self.rejections != 1)})") if self.rejections else ""
        extra = {"dropped": _fmt(self.dropped), "no pair": _fmt(self.unpaired),
                 "corrections": vias, "rejected suggestions": rejected}
        return (f"{type(self).__name__}(sft={len(self.sft)}, pairs={len(self.pairs)}, "
                f"kto={len(self.kto)} ({good} desirable, {len(self.kto) - good} undesirable)"
                + "".join(f"; {k}: {c}" for k, c in extra.items() if c) + ")")


@dataclass(repr=False)
class TextExamples(CleaningReport):
    """The feedback as text-level examples, with what cleaning dropped and why."""

    sft: list[SFTText] = field(default_factory=list)
    pairs: list[PairText] = field(default_factory=list)
    kto: list[KTOText] = field(default_factory=list)
    # Provenance for exports: sample → everyone with a current judgement of it (either side of
    # a preference counts), and sample → its current non-empty critiques (by annotator).
    annotators: dict[int, tuple[str, ...]] = field(default_factory=dict)
    critiques: dict[int, tuple[str, ...]] = field(default_factory=dict)

    def annotators_of(self, *sample_ids: int | None) -> list[str]:
        """Everyone with a current judgement of any of ``sample_ids`` (None is skipped), sorted."""
        return sorted(set().union(*(self.annotators.get(s, ()) for s in sample_ids)))


def check_thresholds(min_good: float, max_bad: float) -> None:
    """A ValueError unless ``max_bad < min_good``."""
    if not max_bad < min_good:
        raise ValueError(f"need max_bad < min_good, got max_bad={max_bad}, min_good={min_good}")


def check_min_edit_ratio(min_edit_ratio: float) -> float:
    """``min_edit_ratio`` as a float, or a ValueError unless it is a number in [0, 1]."""
    if isinstance(min_edit_ratio, bool) or not isinstance(min_edit_ratio, (int, float)) \
            or not 0 <= min_edit_ratio <= 1:
        raise ValueError(f"min_edit_ratio must be a number from 0 to 1 (a share of the "
                         f"characters changed), got {min_edit_ratio!r}")
    return float(min_edit_ratio)


def correction_provenance(event, original: str) -> dict[str, Any]:
    """Where a correction came from, as examples and exports carry it.

    ``event`` is a row of ``store.current_events()`` (``id``, ``value``, ``meta``) and
    ``original`` the corrected sample's text. The event's meta (keys of
    :data:`lf_widgets._judgements.CORRECTION_META`) with ``via`` "typed" when it names none,
    ``edit_distance`` / ``edit_ratio`` computed when the log lacks them (corrections written
    before migration 5, or imported), and ``correction_event``: the event's id.
    """
    meta = {"via": "typed", **(event.meta if isinstance(event.meta, Mapping) else {})}
    if "edit_distance" not in meta or "edit_ratio" not in meta:
        meta.setdefault("edit_distance", edit_distance(original, event.value))
        meta.setdefault("edit_ratio", edit_ratio(original, event.value))
    meta["correction_event"] = int(event.id)
    return meta


def prompt_of(sample_row) -> str:
    """The prompt of a row of ``store.samples()``; "" for imports that carry none."""
    return sample_row.prompt if isinstance(sample_row.prompt, str) else ""


def stored_ids(sample_row) -> tuple[int, ...] | None:
    """The completion ids a row of ``store.samples()`` was generated as, or None (imports and
    remote samples have none; an empty list means the same)."""
    ids = sample_row.token_ids
    return tuple(int(t) for t in ids) if isinstance(ids, list) and ids else None


class _Answer(NamedTuple):
    text: str
    sample_id: int | None  # the sample whose text this is (a correction: the one it corrects)
    token_ids: tuple[int, ...] | None  # stored ids, when the text is the sample's own
    cut_off: bool  # a sample cut off at max_new_tokens: no end-of-turn token


class _Collector:
    """Turns answers into text examples with the text-level checks: empty, cut off, identical,
    duplicate (same prompt and text)."""

    def __init__(self, samples: dict, truncated_targets: bool, out: TextExamples):
        self.samples, self.truncated_targets, self.out = samples, truncated_targets, out
        self._seen: dict[str, set] = {o: set() for o in OBJECTIVES}

    def prompt(self, sample_id: int) -> str:
        return prompt_of(self.samples[sample_id])

    def answer(self, sample_id: int) -> _Answer:
        row = self.samples[sample_id]
        return _Answer(row.text, sample_id, stored_ids(row), bool(row.truncated))

    def drop(self, objective: str, reason: str) -> None:
        self.out.dropped_by[objective][reason] += 1

    def _target(self, objective: str, a: _Answer) -> bool:
        """Whether ``a`` may be imitated; counts why not."""
        if not a.text.strip():
            self.drop(objective, "empty completion")
        elif a.cut_off and not self.truncated_targets:
            self.drop(objective, CUT_OFF)
        else:
            return True
        return False

    def _keep(self, objective: str, example, key) -> None:
        if key in self._seen[objective]:
            return self.drop(objective, "duplicate")
        self._seen[objective].add(key)
        self.out.of(objective).append(example)

    def add_single(self, prompt: str, a: _Answer, source: str, desirable: bool | None = None,
                   meta: dict | None = None):
        """An SFT example (``desirable`` None) or a KTO one."""
        # An empty or cut-off answer is a fine *undesirable* example, but no target.
        if desirable is None:
            if self._target("sft", a):
                self._keep("sft", SFTText(prompt, a.text, a.sample_id, source, a.token_ids, meta),
                           (prompt, a.text))
        elif desirable is False or self._target("kto", a):
            self._keep("kto", KTOText(prompt, a.text, desirable, a.sample_id, source, a.token_ids,
                                      meta),
                       (prompt, a.text, desirable))

    def add_pair(self, prompt: str, chosen: _Answer, rejected: _Answer, source: str,
                 meta: dict | None = None) -> None:
        if not chosen.text.strip():  # cut-off sides are fine in a pair (see the module docstring)
            return self.drop("dpo", "empty completion")
        if chosen.text.strip() == rejected.text.strip():
            return self.drop("dpo", "identical pair")  # e.g. a "correction" that changed nothing
        if meta is not None and meta["edit_ratio"] < self.out.min_edit_ratio:
            return self.drop("dpo", TINY_EDIT)  # a few characters apart: a weak preference
        self._keep("dpo", PairText(prompt, chosen.text, rejected.text, chosen.sample_id,
                                   rejected.sample_id, source, chosen.token_ids,
                                   rejected.token_ids, meta),
                   (prompt, chosen.text, rejected.text))


def text_examples(store, *, min_good: float = 4, max_bad: float = 2,
                  truncated_targets: bool = False, min_edit_ratio: float = 0.0) -> TextExamples:
    """Turn the current feedback in ``store`` into text-level SFT, DPO and KTO examples.

    Parameters
    ----------
    store : FeedbackStore
        Only current judgements count (:meth:`FeedbackStore.current_events`).
    min_good, max_bad : float
        A mean rating ≥ ``min_good`` makes a good example, ≤ ``max_bad`` a bad one.
    truncated_targets : bool
        Let samples cut off at ``max_new_tokens`` be targets too (SFT, KTO desirable, chosen).
    min_edit_ratio : float
        Edit-aware pairs: a correction whose edit ratio (characters changed over the longer
        text's length, in [0, 1]) is below this gives no DPO pair (dropped as
        :data:`TINY_EDIT`); its SFT and KTO examples stay. 0 (default) keeps every pair.

    Returns
    -------
    TextExamples
        ``.sft``, ``.pairs``, ``.kto``, what was dropped and why, who judged what, and the
        corrections by provenance and the rejections (:meth:`CleaningReport.summary`).
    """
    check_thresholds(min_good, max_bad)
    min_edit_ratio = check_min_edit_ratio(min_edit_ratio)
    samples = {int(r.sample_id): r for r in store.samples().itertuples(index=False)}
    events = store.current_events()
    events = events[events["sample_id"].notna()]
    events = events[events["sample_id"].astype(int).isin(set(samples))]
    out = TextExamples(min_good=min_good, max_bad=max_bad, min_edit_ratio=min_edit_ratio)
    c = _Collector(samples, truncated_targets, out)
    by_kind = {k: list(g.itertuples(index=False)) for k, g in events.groupby("kind", sort=False)}
    settled = {(a.kind, a.subject): a.value for a in store.adjudications().itertuples()}
    _from_ratings(c, by_kind.get("rating", []), settled)
    _from_corrections(c, by_kind.get("correction", []))
    _from_preferences(c, by_kind.get("preference", []), settled)
    rejections = [e for e in by_kind.get("rejection", []) if isinstance(e.value, Mapping)]
    out.rejections = len(rejections)
    out.rejected_suggestions = sum(len(e.value.get("candidates", ())) for e in rejections)
    out.annotators, out.critiques = _provenance(events)
    return out


def _from_ratings(c: _Collector, events: list, settled: dict) -> None:
    ratings: dict[int, list[int]] = defaultdict(list)  # sample → its annotators' current ratings
    for e in events:
        ratings[int(e.sample_id)].append(e.value)
    means = {sid: statistics.fmean(values) for sid, values in ratings.items()}
    decided = {int(subject[2:]): value for (kind, subject), value in settled.items()
               if kind == "rating" and int(subject[2:]) in c.samples}
    means = dict(sorted({**means, **decided}.items()))  # adjudication > mean of ratings
    by_prompt: dict[str, list[int]] = defaultdict(list)
    for sid, mean in means.items():
        prompt, answer = c.prompt(sid), c.answer(sid)
        source = "adjudicated" if sid in decided else "rating"
        if mean >= c.out.min_good:
            c.add_single(prompt, answer, source)
            c.add_single(prompt, answer, source, desirable=True)
        elif mean <= c.out.max_bad:
            c.add_single(prompt, answer, source, desirable=False)
        if isinstance(c.samples[sid].prompt, str):
            by_prompt[prompt].append(sid)
    for prompt, sids in by_prompt.items():  # all pairs: 4 samples of a prompt give up to 6
        for x, y in itertools.combinations(sids, 2):
            if means[x] != means[y]:
                hi, lo = (x, y) if means[x] > means[y] else (y, x)
                c.add_pair(prompt, c.answer(hi), c.answer(lo), "ratings")


def _from_corrections(c: _Collector, events: list) -> None:
    for e in sorted(events, key=lambda e: (int(e.sample_id), e.annotator)):
        if not isinstance(e.value, str) or not e.value.strip():
            continue  # an emptied correction means "no correction"
        sid = int(e.sample_id)
        prompt, fixed, original = c.prompt(sid), _Answer(e.value, sid, None, False), c.answer(sid)
        meta = correction_provenance(e, original.text)
        c.out.corrections[meta["via"]] += 1
        c.add_single(prompt, fixed, "correction", meta=meta)
        c.add_pair(prompt, fixed._replace(sample_id=None), original, "correction", meta=meta)
        c.add_single(prompt, fixed, "correction", desirable=True, meta=meta)


def _from_preferences(c: _Collector, events: list, settled: dict) -> None:
    votes: dict[tuple[int, int], Counter] = defaultdict(Counter)  # pair → winner → judges
    for e in events:  # one per unordered pair and annotator: the view's rule
        a = int(e.sample_id)
        value = e.value if isinstance(e.value, Mapping) else {}
        choice, other = value.get("choice"), value.get("other")
        if choice in ("tie", "both_bad"):
            c.out.unpaired[choice] += 1
        elif choice not in ("a", "b") or not isinstance(other, int) or other not in c.samples:
            c.drop("dpo", "invalid preference")
        elif c.prompt(a) != c.prompt(other):
            c.drop("dpo", "different prompts")
        else:
            votes[tuple(sorted((a, other)))][a if choice == "a" else other] += 1
    for (kind, subject), value in settled.items():  # adjudication > majority
        pair = tuple(int(x) for x in subject.split(":")[1:])
        if kind == "preference" and pair[0] in c.samples and pair[1] in c.samples:
            votes.pop(pair, None)
            if value.get("winner") in pair:
                win = value["winner"]
                c.add_pair(c.prompt(win), c.answer(win), c.answer(sum(pair) - win), "adjudicated")
            else:
                c.out.unpaired["adjudicated tie"] += 1
    for (x, y), counts in votes.items():
        if counts[x] == counts[y]:
            c.drop("dpo", "no majority")
        else:
            win, lose = (x, y) if counts[x] > counts[y] else (y, x)
            c.add_pair(c.prompt(win), c.answer(win), c.answer(lose), "preference")


def _provenance(events: pd.DataFrame) -> tuple[dict, dict]:
    judges: dict[int, set] = defaultdict(set)
    critiques: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for e in events.itertuples(index=False):
        sid = int(e.sample_id)
        judges[sid].add(e.annotator)
        if e.kind == "critique" and isinstance(e.value, str) and e.value.strip():
            critiques[sid].append((e.annotator, e.value))
        elif e.kind == "preference" and isinstance(e.value, Mapping) \
                and isinstance(e.value.get("other"), int):
            judges[e.value["other"]].add(e.annotator)
    return ({sid: tuple(sorted(who)) for sid, who in judges.items()},
            {sid: tuple(text for _, text in sorted(found)) for sid, found in critiques.items()})


# -- choosing the objective ---------------------------------------------------------------------
_NEEDS = {"dpo": "DPO needs preference pairs: pick the better of two samples, rate two samples "
                 "of one prompt differently, or correct a sample",
          "kto": "KTO needs rated samples: rate samples high (good) or low (bad), or correct one",
          "sft": "SFT needs good examples: rate a sample {good}, or correct one"}
_FROM = {"ratings": ("from ratings", "from ratings"),  # (one, several)
         "correction": ("from a correction", "from corrections"),
         "preference": ("from a preference", "from preferences")}


def _pair_sources(pairs: list) -> str:
    """E.g. "4 from ratings, 2 from corrections"."""
    counts = Counter(e.source for e in pairs)
    return ", ".join(f"{n} {_FROM.get(s, (f'from {s}',) * 2)[n != 1]}" for s, n in counts.items())


def _cut_note(data: CleaningReport, objective: str) -> str:
    n = data.dropped_by[objective][CUT_OFF]
    one = n == 1
    return (f" {n} cut off at max_new_tokens {'was' if one else 'were'} left out (no end-of-turn "
            f"token: correct {'it' if one else 'them'}, or generate with a larger max_new_tokens)."
            ) if n else ""


def choose_objective(data: CleaningReport, requested: str = "auto") -> tuple[str, str]:
    """Pick the training objective the feedback supports, and say why.

    Parameters
    ----------
    data : TextExamples or TrainingData
        From :func:`text_examples` or :func:`lf_widgets.data.build_examples`.
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
                             f"{_NEEDS[requested].format(good=good)}.{_cut_note(data, requested)}")
        return requested, (f"{requested.upper()} was requested; {counts[requested]} examples."
                           + _cut_note(data, requested))
    if requested != "auto":
        raise ValueError(f"objective must be 'auto', 'dpo', 'kto' or 'sft', got {requested!r}")
    n_good = sum(e.desirable for e in data.kto)
    if counts["dpo"] >= 2:
        return "dpo", (f"DPO on {counts['dpo']} preference pairs ({_pair_sources(data.pairs)}): "
                       "pairs are the strongest signal." + _cut_note(data, "dpo"))
    if 0 < n_good < counts["kto"] and counts["kto"] >= 4:
        return "kto", (f"KTO on {n_good} desirable and {counts['kto'] - n_good} undesirable "
                       "examples: fewer than 2 preference pairs, but both good and bad ratings."
                       + _cut_note(data, "kto"))
    if counts["sft"]:
        return "sft", (f"SFT on {counts['sft']} good examples (rated {good} or corrected): fewer "
                       "than 2 preference pairs and too few good and bad ratings for KTO."
                       + _cut_note(data, "sft"))
    raise ValueError(f"Not enough feedback to train yet: rate at least one sample {good}, or "
                     "correct one (or pick the better of two samples twice, for DPO)."
                     + _cut_note(data, "sft"))
