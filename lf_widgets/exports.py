"""Feedback → training files for other tools: TRL (SFT, DPO, KTO) and OpenAI fine-tuning JSONL.

The records are the text-level examples training itself starts from
(:func:`lf_widgets.feedback.text_examples`: mean rating thresholds, pairs by rating, corrections,
preferences, current judgements only, duplicates dropped), so an export holds the exact prompt
and completion texts, the correction text included. Nothing is tokenized or cut: TRL trainers
apply their own ``max_length``. Samples cut off at ``max_new_tokens`` are no targets here either
(TRL's chat template would add the end-of-turn token they lack and teach stopping at the cut).

Chat form: a TRL file is conversational (``[{"role": "user", …}]``) when at least one record has a
prompt; a record without one (imports) then gets an empty user turn, exactly as training formats
it. Only when no record has a prompt is the file plain text (``{"prompt": "", "completion": …}``).
TRL treats a whole dataset as one form, so the two are never mixed (``chat=`` forces either).
OpenAI files carry only their schema's keys, and never an empty user turn (OpenAI's format check
rejects one): examples without a prompt are left out, and :class:`ExportResult` counts them.

Provenance: TRL records (JSONL files, ``to_dataset``, the training hand-off) carry who judged
(``annotators``), the critiques, the ``source`` and, for examples from a correction,
``correction_meta``: how it was written (``via``: typed, revision, edited_revision,
propagated), its ``refiner``, ``critique``, ``candidate``, ``edit_distance`` / ``edit_ratio``,
``propagated_from`` … (:data:`CORRECTION_COLUMNS`, every key present, None where it does not
apply, so a dataset has one schema); None for examples from ratings and preferences. OpenAI
records have no room for it (their schema only).

Files are written through :func:`lf_widgets._files.atomic_file`: never half written, mode 0600.

PII: :func:`scrub_text` replaces e-mail addresses and phone numbers (and any extra patterns) with
``[email]`` / ``[phone]`` / ``[name]``. Unicode addresses (``张三@例子.中国``) count as e-mails.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._files import atomic_file
from ._judgements import CORRECTION_META
from .feedback import KTOText, PairText, TextExamples, choose_objective, text_examples

__all__ = ["EXPORT_FORMATS", "NO_PROMPT", "CORRECTION_COLUMNS", "ScrubConfig", "ScrubReport",
           "ExportResult", "scrub_text", "build_records", "training_records", "export_training",
           "write_jsonl", "to_dataset"]

#: The keys of a TRL record's ``correction_meta``: the log's correction meta and the event id.
CORRECTION_COLUMNS = (*CORRECTION_META, "correction_event")

EXPORT_FORMATS = ("trl-sft", "trl-dpo", "trl-kto", "openai-sft", "openai-dpo")
_OBJECTIVE = {"trl-sft": "sft", "trl-dpo": "dpo", "trl-kto": "kto", "openai-sft": "sft",
              "openai-dpo": "dpo"}
NO_PROMPT = "no prompt"  # why an OpenAI export left an example out: it needs a user turn

# -- PII scrubbing ------------------------------------------------------------------------------
# Local part and domain labels use Unicode \w, so internationalised addresses are caught too
# (josé@exemple.fr, 张三@例子.中国). CJK text has no spaces, so a local part is either all CJK
# (then it starts after a non-word character) or has no CJK at all ("写信给john@doe.com" loses
# only the address). The top-level domain must be letters (no "me@2024"); a full stop after
# the address stays.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_LAT = rf"(?:[^\W{_CJK}]|[%+-])"  # a local-part character outside CJK scripts
_LABEL = r"[^\W_](?:[\w-]*[^\W_])?"
_EMAIL = re.compile(rf"(?:(?<!{_LAT})(?<!\.){_LAT}+(?:\.{_LAT}+)*|(?<![\w.%+-])[{_CJK}]+)"
                    rf"@{_LABEL}(?:\.{_LABEL})*\.(?:[^\W\d_{_CJK}]{{2,}}(?!{_LAT})|[{_CJK}]{{2,}})")
# Phone numbers need a phone's shape, not just many digits: +CC and groups; North American
# 3-3-4 with separators or (area code); Chinese mobile 1[3-9]x xxxx xxxx; national numbers with a
# trunk 0 and separators. Neighbouring ASCII letters/digits (and a decimal point or dash followed
# by a digit) stop a match, and 8-15 digits are required, so years, ratings, prices, versions and
# dates stay. Chinese characters may touch a number ("电话13812345678").
_SEP = r"[ .\-]"
_PHONE = re.compile(
    r"(?<![0-9A-Za-z_+./-])(?:"
    rf"\+\d{{1,3}}{_SEP}?(?:\(\d{{1,4}}\)|\d{{1,4}})(?:{_SEP}?\d{{2,4}}){{1,5}}"
    rf"|(?:1{_SEP}?)?(?:\(\d{{3}}\){_SEP}?|\d{{3}}{_SEP})\d{{3}}{_SEP}\d{{4}}"
    r"|1[3-9]\d(?:[ \-]?\d{4}){2}"
    rf"|(?:\(0\d{{1,4}}\){_SEP}?|0\d{{1,4}}{_SEP})\d{{3,4}}{_SEP}?\d{{3,4}}"
    r")(?![0-9A-Za-z_]|[./-]\d)")


@dataclass(frozen=True)
class ScrubConfig:
    """What :func:`scrub_text` replaces.

    Parameters
    ----------
    emails, phones : bool
        Replace e-mail addresses (``"email"``) and phone numbers (``"phone"``).
    patterns : dict of str to str or re.Pattern
        Extra kinds, name → regular expression, applied after e-mails and phones.
    replacement : str
        Template of the replacement; ``{name}`` is the kind, e.g. ``"[email]"``.
    """

    emails: bool = True
    phones: bool = True
    patterns: dict[str, Any] = field(default_factory=dict)
    replacement: str = "[{name}]"

    def rules(self) -> list[tuple[str, re.Pattern]]:
        rules = [("email", _EMAIL)] if self.emails else []
        rules += [("phone", _PHONE)] if self.phones else []
        return rules + [(name, re.compile(p)) for name, p in self.patterns.items()]


@dataclass
class ScrubReport:
    """What scrubbing replaced: ``counts`` per kind, and how many records changed."""

    counts: Counter = field(default_factory=Counter)
    records_changed: int = 0
    enabled: bool = False

    @property
    def total(self) -> int:
        """Replacements over all kinds."""
        return sum(self.counts.values())


def scrub_text(text: str, config: ScrubConfig | None = None) -> tuple[str, Counter]:
    """Replace personal data in ``text``.

    Parameters
    ----------
    text : str
    config : ScrubConfig, optional
        Defaults to ``ScrubConfig()`` (e-mails and phones).

    Returns
    -------
    (str, Counter)
        The scrubbed text and the number of replacements per kind (``"email"``, ``"phone"``, …).
    """
    config = config or ScrubConfig()
    counts: Counter = Counter()
    for name, pattern in config.rules():
        repl = config.replacement.format(name=name)

        def sub(m: re.Match, _name=name, _repl=repl) -> str:
            if _name == "phone" and not 8 <= sum(c.isdigit() for c in m.group()) <= 15:
                return m.group()
            counts[_name] += 1
            return _repl
        text = pattern.sub(sub, text)
    return text, counts


def _scrub_value(value: Any, config: ScrubConfig, counts: Counter) -> Any:
    if isinstance(value, str):
        text, found = scrub_text(value, config)
        counts.update(found)
        return text
    if isinstance(value, list):
        return [_scrub_value(v, config, counts) for v in value]
    if isinstance(value, dict):  # roles are schema, not text
        return {k: v if k == "role" else _scrub_value(v, config, counts) for k, v in value.items()}
    return value


# -- records ------------------------------------------------------------------------------------
def _objective_of(kind: str) -> str:
    if kind not in EXPORT_FORMATS:
        raise ValueError(f"kind must be one of {EXPORT_FORMATS}, got {kind!r}")
    return _OBJECTIVE[kind]


class _Form:
    """Turns and metadata of one file's records: chat or plain, with who judged what."""

    def __init__(self, texts: TextExamples, chat: bool):
        self.texts, self.chat = texts, chat

    def user(self, prompt: str):
        return [{"role": "user", "content": prompt}] if self.chat else prompt

    def bot(self, text: str):
        return [{"role": "assistant", "content": text}] if self.chat else text

    def critiques(self, sample_id: int | None) -> list[str]:
        return list(self.texts.critiques.get(sample_id, ()))

    @staticmethod
    def correction(e) -> dict | None:
        """A correction's provenance with every key of :data:`CORRECTION_COLUMNS`, or None."""
        return None if e.meta is None else {k: e.meta.get(k) for k in CORRECTION_COLUMNS}

    def trl(self, e) -> dict:
        """A TRL record with its metadata columns."""
        if isinstance(e, PairText):
            ids = (e.chosen_sample_id, e.rejected_sample_id)
            return {"prompt": self.user(e.prompt), "chosen": self.bot(e.chosen),
                    "rejected": self.bot(e.rejected), "chosen_sample_id": ids[0],
                    "rejected_sample_id": ids[1], "chosen_critiques": self.critiques(ids[0]),
                    "rejected_critiques": self.critiques(ids[1]), "source": e.source,
                    "annotators": self.texts.annotators_of(*ids),
                    "correction_meta": self.correction(e)}
        label = {"label": bool(e.desirable)} if isinstance(e, KTOText) else {}
        return {"prompt": self.user(e.prompt), "completion": self.bot(e.completion), **label,
                "sample_id": e.sample_id, "critiques": self.critiques(e.sample_id),
                "source": e.source, "annotators": self.texts.annotators_of(e.sample_id),
                "correction_meta": self.correction(e)}

    def openai(self, e) -> dict:
        """An OpenAI record: only its schema's keys."""
        if isinstance(e, PairText):
            return {"input": {"messages": self.user(e.prompt)},
                    "preferred_output": self.bot(e.chosen),
                    "non_preferred_output": self.bot(e.rejected)}
        return {"messages": self.user(e.prompt) + self.bot(e.completion)}


def _scrub_records(records: list[dict], scrub) -> tuple[list[dict], ScrubReport]:
    config = ScrubConfig() if scrub is True else scrub or None
    report = ScrubReport(enabled=config is not None)
    if config is None:
        return records, report
    out = []
    for record in records:
        counts: Counter = Counter()
        out.append(_scrub_value(record, config, counts))
        report.counts.update(counts)
        report.records_changed += bool(counts)
    return out, report


def build_records(texts: TextExamples, kind: str, *, scrub: bool | ScrubConfig | None = None,
                  chat: bool | None = None) -> tuple[list[dict], ScrubReport, Counter]:
    """Text-level examples (:func:`lf_widgets.feedback.text_examples`) as records of one format.

    Parameters are those of :func:`training_records`; ``texts`` is built once by the caller
    (the training hand-off chooses its objective from the same examples it writes).

    Returns
    -------
    (list of dict, ScrubReport, Counter)
        The records, what scrubbing replaced, and reason → examples of this objective left out
        (cleaning's reasons, e.g. ``"duplicate"`` or :data:`~lf_widgets.feedback.CUT_OFF`, and
        for OpenAI formats :data:`NO_PROMPT`).
    """
    objective = _objective_of(kind)
    examples = texts.of(objective)
    left_out = Counter(texts.dropped_by[objective])
    if kind.startswith("openai"):  # their schema is chat only, and an empty user turn is refused
        kept = [e for e in examples if e.prompt.strip()]
        if len(kept) < len(examples):
            left_out[NO_PROMPT] += len(examples) - len(kept)
        form = _Form(texts, chat=True)
        records = [form.openai(e) for e in kept]
    else:
        form = _Form(texts, chat=any(e.prompt for e in examples) if chat is None else chat)
        records = [form.trl(e) for e in examples]
    records, report = _scrub_records(records, scrub)
    return records, report, left_out


def _records(store, kind: str, scrub, options: dict) -> tuple[list[dict], ScrubReport, Counter]:
    """Records of ``kind``, or a ValueError saying what feedback to add when there are none."""
    objective = _objective_of(kind)  # an unknown kind is refused before the store is read
    chat = options.pop("chat", None)
    texts = text_examples(store, **options)
    records, report, left_out = build_records(texts, kind, scrub=scrub, chat=chat)
    if not records:
        choose_objective(texts, objective)  # raises with what feedback to add
        raise ValueError(f"no {kind} record: its {left_out[NO_PROMPT]} examples have no prompt "
                         "(imports), and OpenAI's format needs a user turn; use a TRL format")
    return records, report, left_out


def training_records(store, kind: str, *, scrub: bool | ScrubConfig | None = None,
                     chat: bool | None = None, min_good: float = 4, max_bad: float = 2,
                     truncated_targets: bool = False, min_edit_ratio: float = 0.0
                     ) -> tuple[list[dict], ScrubReport]:
    """The current feedback as training records of one format.

    Parameters
    ----------
    store : FeedbackStore
    kind : {"trl-sft", "trl-dpo", "trl-kto", "openai-sft", "openai-dpo"}
        TRL records carry metadata columns too: ``sample_id`` (DPO: ``chosen_sample_id``, None
        for a correction, and ``rejected_sample_id``), ``source``, ``annotators`` (everyone with
        a current judgement of the sample(s)), ``critiques`` (DPO: ``chosen_critiques``,
        ``rejected_critiques``) and ``correction_meta`` (a correction's provenance, keys
        :data:`CORRECTION_COLUMNS`; None otherwise). OpenAI records have only their schema's
        keys, and examples without a prompt are left out of them (see :func:`export_training`
        for the count).
    scrub : bool or ScrubConfig, optional
        ``True`` scrubs e-mails and phones from every text field; a config says what to scrub.
    chat : bool, optional
        TRL formats only: force the conversational (True) or plain (False) form; by default
        conversational unless no record has a prompt.
    min_good, max_bad : float
        Rating thresholds, as in :func:`lf_widgets.data.build_examples`.
    truncated_targets : bool
        Let samples cut off at ``max_new_tokens`` be targets (by default they are not).
    min_edit_ratio : float
        Leave out DPO pairs from corrections that changed less than this share of the
        characters, as training does with ``TrainConfig.min_edit_ratio``.

    Returns
    -------
    (list of dict, ScrubReport)
        The records, in the order training builds its examples, and what scrubbing replaced.
    """
    texts = text_examples(store, min_good=min_good, max_bad=max_bad,
                          truncated_targets=truncated_targets, min_edit_ratio=min_edit_ratio)
    records, report, _ = build_records(texts, kind, scrub=scrub, chat=chat)
    return records, report


@dataclass(frozen=True)
class ExportResult:
    """A written training file: where, how many records, what scrubbing replaced, what was left out."""

    path: Path  # the JSONL file
    records: int  # lines written
    scrub_report: ScrubReport  # what scrubbing replaced (``enabled`` False when it was off)
    # reason → examples of this objective not written: cleaning's reasons ("duplicate",
    # "cut off at max_new_tokens", …) and, for OpenAI formats, "no prompt"
    left_out: Counter = field(default_factory=Counter)


def write_jsonl(records: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write ``records`` one JSON object a line (UTF-8, not ``\\u`` escapes), atomically, 0600."""
    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def export_training(store, kind: str, path: str | os.PathLike, *,
                    scrub: bool | ScrubConfig = False, **options) -> ExportResult:
    """Write the records of :func:`training_records` as JSONL (UTF-8), atomically.

    The file is written beside ``path`` and renamed, so ``path`` never holds half a file; it is
    private (0600). ``options`` are ``chat``, ``min_good``, ``max_bad``, ``truncated_targets``
    and ``min_edit_ratio``.

    Raises
    ------
    ValueError
        For an unknown ``kind``, or when the feedback gives no record of that kind (the message
        says what feedback to add).
    """
    records, report, left_out = _records(store, kind, scrub, options)
    return ExportResult(write_jsonl(records, path), len(records), report, left_out)


def to_dataset(store, kind: str, **options):
    """The records of :func:`training_records` as a ``datasets.Dataset`` (same keyword arguments)."""
    from datasets import Dataset

    scrub = options.pop("scrub", None)
    records, _, _ = _records(store, kind, scrub, options)
    return Dataset.from_list(records)
