"""What a judgement may hold and what it judges: the checks every write to the log goes
through, and the subject key of the one current-judgement rule (see ``_migrations``, 2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["subject_of", "check_id", "check_annotator", "check_value"]


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
    return dict(value)
