"""How far a corrected text is from the text it corrects: character edit distance (Levenshtein,
through ``rapidfuzz``). The feedback log stores both for every correction (``events.meta``), so
that pairs from tiny edits can be weighed or left out (``min_edit_ratio``)."""

from __future__ import annotations

from rapidfuzz.distance import Levenshtein

__all__ = ["edit_distance", "edit_ratio"]


def edit_distance(a: str, b: str) -> int:
    """Characters inserted, deleted or substituted to turn ``a`` into ``b`` (Levenshtein)."""
    return int(Levenshtein.distance(a, b))


def edit_ratio(a: str, b: str) -> float:
    """:func:`edit_distance` over the longer text's length: 0.0 for equal texts, 1.0 for texts
    that share nothing; two empty texts give 0.0."""
    return edit_distance(a, b) / max(len(a), len(b), 1)
