"""Feedback → training files for other tools: TRL (SFT, DPO, KTO) and OpenAI fine-tuning JSONL.

The records follow the very mapping rules that training uses (:func:`lf_widgets.data.build_examples`:
mean rating thresholds, pairs by rating, corrections, preferences, undo, dedupe), but at the text
level: no model tokenizer is needed and nothing is decoded. ``build_examples`` runs with a stand-in
"tokenizer" whose ids are the Unicode code points of the text, so every example maps back to its
exact prompt and completion text (the correction text included). Because of that, duplicates are
found on text rather than on token ids, and nothing is truncated: TRL trainers apply their own
``max_length``.

Chat form: a TRL file is conversational (``[{"role": "user", …}]``) when at least one record has a
prompt; a record without one (imports) then gets an empty user turn, exactly as training formats
it. Only when no record has a prompt is the file plain text (``{"prompt": "", "completion": …}``).
TRL treats a whole dataset as one form, so the two are never mixed (``chat=`` forces either).
OpenAI files always carry a user turn (empty for imports) and no keys besides their schema's.

PII: :func:`scrub_text` replaces e-mail addresses and phone numbers (and any extra patterns) with
``[email]`` / ``[phone]`` / ``[name]``. Unicode addresses (``张三@例子.中国``) count as e-mails.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .data import build_examples, choose_objective

__all__ = ["EXPORT_FORMATS", "ScrubConfig", "ScrubReport", "ExportResult", "scrub_text",
           "training_records", "export_training", "to_dataset"]

EXPORT_FORMATS = ("trl-sft", "trl-dpo", "trl-kto", "openai-sft", "openai-dpo")
_OBJECTIVE = {"trl-sft": "sft", "trl-dpo": "dpo", "trl-kto": "kto", "openai-sft": "sft",
              "openai-dpo": "dpo"}

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
_END = 0x110000  # stand-in end-of-turn id: one past the last code point, never a character


class _CodePoints:
    """Stands in for a tokenizer in ``build_examples``: ids are code points, so text decodes exactly."""

    chat_template, eos_token_id = None, _END

    def get_vocab(self) -> dict:
        return {}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [ord(c) for c in text]}


class _TextOnly:
    """The store as ``build_examples`` sees it, minus stored token ids (completions come from text)."""

    def __init__(self, store):
        self.samples = lambda: store.samples().assign(token_ids=None)
        self.events = store.events


def _text(ids) -> str:
    return "".join(chr(i) for i in ids if i != _END)


def _judgements(store) -> tuple[dict[int, set], dict[int, list[str]]]:
    """Annotators with a current judgement of each sample, and its current critiques."""
    judges: dict[int, set] = defaultdict(set)
    critiques: dict[tuple[int, str], str] = {}
    for e in store.events(active_only=True).sort_values("id").itertuples(index=False):
        if pd.isna(e.sample_id):
            continue
        sid = int(e.sample_id)
        judges[sid].add(e.annotator)
        if e.kind == "critique":
            critiques[(sid, e.annotator)] = e.value
        elif e.kind == "preference" and isinstance(e.value, dict) and isinstance(e.value.get("other"), int):
            judges[e.value["other"]].add(e.annotator)
    by_sample: dict[int, list[str]] = defaultdict(list)
    for (sid, _who), text in sorted(critiques.items()):
        if isinstance(text, str) and text.strip():
            by_sample[sid].append(text)
    return judges, by_sample


def _build(store, kind: str, *, scrub=None, chat: bool | None = None, min_good: float = 4,
           max_bad: float = 2):
    if kind not in EXPORT_FORMATS:
        raise ValueError(f"kind must be one of {EXPORT_FORMATS}, got {kind!r}")
    data = build_examples(_TextOnly(store), _CodePoints(), max_length=1 << 62,
                          min_good=min_good, max_bad=max_bad)
    judges, crits = _judgements(store)
    objective = _OBJECTIVE[kind]
    examples = {"sft": data.sft, "dpo": data.pairs, "kto": data.kto}[objective]
    if kind.startswith("openai"):  # their schema is chat only
        chat = True
    elif chat is None:
        chat = any(e.prompt for e in examples)

    def who(*sids) -> list[str]:
        return sorted(set().union(*(judges.get(s, ()) for s in sids if s is not None)))

    def user(prompt: str):
        return [{"role": "user", "content": prompt}] if chat else prompt

    def bot(text: str):
        return [{"role": "assistant", "content": text}] if chat else text

    records = []
    for e in examples:
        if objective == "dpo":
            ids = (e.chosen_sample_id, e.rejected_sample_id)
            texts = {"chosen": bot(_text(e.chosen_ids)), "rejected": bot(_text(e.rejected_ids))}
            meta = {"chosen_sample_id": ids[0], "rejected_sample_id": ids[1],
                    "chosen_critiques": crits.get(ids[0], []),
                    "rejected_critiques": crits.get(ids[1], [])}
        else:
            ids = (e.sample_id,)
            texts = {"completion": bot(_text(e.completion_ids))}
            if objective == "kto":
                texts["label"] = bool(e.desirable)
            meta = {"sample_id": e.sample_id, "critiques": crits.get(e.sample_id, [])}
        if kind == "openai-sft":
            records.append({"messages": user(e.prompt) + texts["completion"]})
        elif kind == "openai-dpo":
            records.append({"input": {"messages": user(e.prompt)},
                            "preferred_output": texts["chosen"],
                            "non_preferred_output": texts["rejected"]})
        else:
            records.append({"prompt": user(e.prompt), **texts, **meta, "source": e.source,
                            "annotators": who(*ids)})

    config = ScrubConfig() if scrub is True else scrub or None
    report = ScrubReport(enabled=config is not None)
    if config is not None:
        for i, record in enumerate(records):
            counts: Counter = Counter()
            records[i] = _scrub_value(record, config, counts)
            report.counts.update(counts)
            report.records_changed += bool(counts)
    return records, report, data, objective


def training_records(store, kind: str, *, scrub: bool | ScrubConfig | None = None,
                     chat: bool | None = None, min_good: float = 4, max_bad: float = 2
                     ) -> tuple[list[dict], ScrubReport]:
    """The current feedback as training records of one format.

    Parameters
    ----------
    store : FeedbackStore
    kind : {"trl-sft", "trl-dpo", "trl-kto", "openai-sft", "openai-dpo"}
        TRL records carry metadata columns too: ``sample_id`` (DPO: ``chosen_sample_id``, None
        for a correction, and ``rejected_sample_id``), ``source``, ``annotators`` (everyone with
        a current judgement of the sample(s)) and ``critiques`` (DPO: ``chosen_critiques``,
        ``rejected_critiques``). OpenAI records have only their schema's keys.
    scrub : bool or ScrubConfig, optional
        ``True`` scrubs e-mails and phones from every text field; a config says what to scrub.
    chat : bool, optional
        TRL formats only: force the conversational (True) or plain (False) form; by default
        conversational unless no record has a prompt.
    min_good, max_bad : float
        Rating thresholds, as in :func:`lf_widgets.data.build_examples`.

    Returns
    -------
    (list of dict, ScrubReport)
        The records, in the order training builds its examples, and what scrubbing replaced.
    """
    records, report, _, _ = _build(store, kind, scrub=scrub, chat=chat, min_good=min_good,
                                   max_bad=max_bad)
    return records, report


@dataclass(frozen=True)
class ExportResult:
    """A written training file: where, how many records, and what scrubbing replaced."""

    path: Path
    records: int
    scrub_report: ScrubReport


def _nonempty(store, kind: str, **kwargs):
    records, report, data, objective = _build(store, kind, **kwargs)
    if not records:
        choose_objective(data, objective)  # raises with what feedback to add
    return records, report


def export_training(store, kind: str, path: str | os.PathLike, *,
                    scrub: bool | ScrubConfig = False, **kwargs) -> ExportResult:
    """Write the records of :func:`training_records` as JSONL (UTF-8), atomically.

    The file is written beside ``path`` and renamed, so ``path`` never holds half a file.
    ``kwargs`` are ``chat``, ``min_good`` and ``max_bad``.

    Raises
    ------
    ValueError
        For an unknown ``kind``, or when the feedback gives no record of that kind (the message
        says what feedback to add).
    """
    records, report = _nonempty(store, kind, scrub=scrub, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(path, len(records), report)


def to_dataset(store, kind: str, **kwargs):
    """The records of :func:`training_records` as a ``datasets.Dataset`` (same keyword arguments)."""
    from datasets import Dataset

    records, _ = _nonempty(store, kind, **kwargs)
    return Dataset.from_list(records)
