"""What a judgement may hold and what it judges: the checks every write to the log goes
through, and the subject key of the one current-judgement rule (see ``_migrations``, 2).

A correction or a rejection may carry ``meta`` (``events.meta``, migration 5): where it came
from. The keys a caller may set are listed once, here (:data:`CORRECTION_META`,
:data:`REJECTION_META`); any other key is refused, so a misspelt ``"refinr"`` never silently
loses the provenance.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from typing import Any

__all__ = ["subject_of", "check_id", "check_annotator", "check_value", "check_meta",
           "CORRECTION_META", "REJECTION_META", "CORRECTION_VIAS"]

#: How a correction was written (``meta["via"]``); a correction without it was typed.
CORRECTION_VIAS = ("typed", "revision", "edited_revision", "propagated")

#: The keys a correction's ``meta`` may hold (all optional) and their types.
CORRECTION_META: dict[str, type] = {
    "via": str,  # one of CORRECTION_VIAS: typed, an accepted / edited revision, a propagated edit
    "refiner": str,  # name of the refiner that wrote the candidate ("own", a model id, a URL)
    "critique": str,  # the critique text the candidate was asked to follow
    "critique_event": int,  # id of that critique's event in the log
    "candidate": int,  # which candidate was accepted, 0-based
    "candidates": int,  # how many candidates were offered (k)
    "strategy": str,  # how the candidate was written ("rewrite", "forced prefix", ...)
    "candidate_text": str,  # what the refiner wrote, when the person edited it before saving
    "propagated_from": int,  # id of the correction event whose pattern edit this one repeats
    "edit_distance": int,  # characters changed from the sample's text (Levenshtein; the store fills it)
    "edit_ratio": float,  # edit_distance / the longer text's length, in [0, 1] (the store fills it)
}

#: The keys a rejection's ``meta`` may hold (all optional) and their types.
REJECTION_META: dict[str, type] = {
    "critique_event": int,  # id of the critique event the rejected candidates followed
    "strategies": list,  # how each rejected candidate was written (list of str, as candidates)
}

_META = {"correction": CORRECTION_META, "rejection": REJECTION_META}
#: The value of a rejection: which suggestions were turned down, whose, and for which critique.
_REJECTION_VALUE = {"candidates": list, "refiner": str, "critique": str}


def subject_of(kind: str, sample_id: int | None, value: Any) -> str:
    """What a judgement judges (the key of the current-judgement rule; see migration 2)."""
    if kind == "preference":
        a, b = sorted((int(sample_id), int(value["other"])))
        return f"p:{a}:{b}"
    if kind == "ab_vote":
        return f"ab:{value['test']}:{value['item']}"
    return f"s:{sample_id}"


def check_id(value: Any, name: str) -> int:
    """``value`` as a sample id (numpy integers too), or a ValueError naming ``name``."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{name} must be an integer id, got {value!r}")
    return int(value)


def check_annotator(annotator: Any) -> str:
    """``annotator`` stripped, or a ValueError: it must be a non-empty, non-blank string."""
    if not isinstance(annotator, str) or not annotator.strip():
        raise ValueError(f"annotator must be a non-empty name, got {annotator!r}")
    return annotator.strip()


def check_value(kind: str, value: Any) -> Any:
    """``value`` as stored (numpy integers become ints), or a ValueError saying what is wrong."""
    if kind == "rating":
        # bools and fractions are not ratings; numpy integers (from DataFrames) are
        if isinstance(value, bool) or not hasattr(value, "__index__") or not 1 <= int(value) <= 5:
            raise ValueError(f"rating must be an integer from 1 to 5, got {value!r}")
        return int(value)
    if kind in ("critique", "correction"):
        if not isinstance(value, str):
            raise ValueError(f"{kind} must be a string, got {type(value).__name__}")
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"{kind} value must be a dict, got {type(value).__name__}")
    if kind == "rejection":
        return _typed_dict(value, _REJECTION_VALUE, "rejection value", required=True)
    return dict(value)


def check_meta(kind: str, meta: Any) -> dict | None:
    """``meta`` as stored (numpy numbers become Python ones), or a ValueError naming the key.

    Only corrections (:data:`CORRECTION_META`) and rejections (:data:`REJECTION_META`) carry
    meta; ``None`` is always fine.
    """
    if meta is None:
        return None
    if kind not in _META:
        raise ValueError(f"meta is for corrections and rejections only, got meta for a {kind}")
    if not isinstance(meta, Mapping):
        raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
    out = _typed_dict(meta, _META[kind], f"{kind} meta", required=False)
    field = f"{kind} meta field"
    if "via" in out and out["via"] not in CORRECTION_VIAS:
        raise ValueError(f"{field} 'via' must be one of {CORRECTION_VIAS}, got {out['via']!r}")
    for key, low in (("candidate", 0), ("candidates", 1), ("edit_distance", 0)):
        if key in out and out[key] < low:
            raise ValueError(f"{field} {key!r} must be at least {low}, got {out[key]}")
    if "candidate" in out and "candidates" in out and out["candidate"] >= out["candidates"]:
        raise ValueError(f"{field} 'candidate' is 0-based and must be below 'candidates' "
                         f"({out['candidates']}), got {out['candidate']}")
    if "edit_ratio" in out and not 0 <= out["edit_ratio"] <= 1:
        raise ValueError(f"{field} 'edit_ratio' must be in [0, 1], got {out['edit_ratio']}")
    return out


def _typed_dict(given: Mapping, spec: Mapping[str, type], what: str, *, required: bool) -> dict:
    """``given`` with each field checked against ``spec`` (unknown keys refused by name)."""
    out = {}
    for key, value in given.items():
        if key not in spec:
            raise ValueError(f"unknown {what} key {key!r}; known keys are {', '.join(spec)}")
        out[key] = _typed(value, spec[key], f"{what} field {key!r}")
    missing = [k for k in spec if k not in out] if required else []
    if missing:
        raise ValueError(f"{what} needs {', '.join(repr(k) for k in missing)}")
    return out


def _typed(value: Any, kind: type, what: str) -> Any:
    if kind is int:
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            raise ValueError(f"{what} must be an integer, got {reprlib.repr(value)}")
        return int(value)
    if kind is float:  # numpy floats too; NaN and infinities are no JSON
        number = None if isinstance(value, (bool, str)) or not hasattr(value, "__float__") \
            else float(value)
        if number is None or not math.isfinite(number):
            raise ValueError(f"{what} must be a finite number, got {reprlib.repr(value)}")
        return number
    if kind is list:  # a list of strings
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{what} must be a list of strings, got {reprlib.repr(value)}")
        return list(value)
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    return value
