"""How far a corrected text is from the text it corrects: character edit distance (Levenshtein,
through ``rapidfuzz``). The feedback log stores both for every correction (``events.meta``), so
that pairs from tiny edits can be weighed or left out (``min_edit_ratio``).

Also: :func:`find_pattern_edit`, which tells a repeatable edit (a phrase added at the start or end,
one phrase replaced or removed) from a general rewrite, for edit propagation. Pure Python."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

__all__ = ["edit_distance", "edit_ratio", "EDIT_KINDS", "PatternEdit", "find_pattern_edit"]


def edit_distance(a: str, b: str) -> int:
    """Characters inserted, deleted or substituted to turn ``a`` into ``b`` (Levenshtein)."""
    return int(Levenshtein.distance(a, b))


def edit_ratio(a: str, b: str) -> float:
    """:func:`edit_distance` over the longer text's length: 0.0 for equal texts, 1.0 for texts
    that share nothing; two empty texts give 0.0."""
    return edit_distance(a, b) / max(len(a), len(b), 1)


# -- pattern edits ---------------------------------------------------------------------------------
# A person's correction is often one small, repeatable edit: a phrase put in front ("Ahoy! "), one
# put at the end, one phrase replaced or removed wherever it occurs. Found from the diff, the same
# edit can be offered on the other samples a person sees (edit propagation): one typed correction
# then teaches from many samples. Anything else is a general rewrite and is not propagated.

#: The kinds of :class:`PatternEdit`.
EDIT_KINDS = ("prefix", "suffix", "replace", "remove")

# Words, runs of spaces and single other characters: a word-level diff keeps "colour" -> "color"
# one replaced word instead of a removed "u", and never splits a phrase inside a word.
_TOKENS = re.compile(r"\w+|\s+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class PatternEdit:
    """One repeatable edit of a text.

    Parameters
    ----------
    kind : str
        ``"prefix"`` (put ``new`` at the start), ``"suffix"`` (put ``new`` at the end),
        ``"replace"`` (every ``old`` becomes ``new``) or ``"remove"`` (every ``old`` goes).
    old : str
        The phrase replaced or removed; ``""`` for a prefix or suffix.
    new : str
        The phrase put in; ``""`` for a removal.
    """

    kind: str
    old: str = ""
    new: str = ""

    def __post_init__(self):
        if self.kind not in EDIT_KINDS:
            raise ValueError(f"kind must be one of {list(EDIT_KINDS)}, got {self.kind!r}")
        for name in ("old", "new"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.kind in ("prefix", "suffix") and (self.old or not self.new.strip()):
            raise ValueError(f"a {self.kind} edit needs new= text (and no old=), got "
                             f"old={self.old!r}, new={self.new!r}")
        if self.kind in ("replace", "remove") and not self.old.strip():
            raise ValueError(f"a {self.kind} edit needs the old= phrase, got {self.old!r}")
        if self.kind == "remove" and self.new:
            raise ValueError(f"a remove edit has no new= text, got {self.new!r}")
        if self.kind == "replace" and self.new == self.old:
            raise ValueError(f"a replace edit needs new= different from old=, both {self.old!r}")

    def apply(self, text: str) -> str | None:
        """``text`` with this edit made, or None when it does not apply.

        It does not apply when the text already has it (it starts with the prefix, or ends with
        the suffix, ignoring case and surrounding spaces) or lacks the phrase to replace or
        remove: a suggestion that changes nothing is no suggestion.
        """
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        if self.kind == "prefix":
            if text.lstrip().casefold().startswith(self.new.strip().casefold()):
                return None
            return self.new + text
        if self.kind == "suffix":
            if text.rstrip().casefold().endswith(self.new.strip().casefold()):
                return None
            return text + self.new
        if self.old not in text:
            return None
        return text.replace(self.old, self.new)

    def describe(self) -> str:
        """The edit in words, e.g. ``"add 'Ahoy! ' at the start"``."""
        if self.kind == "prefix":
            return f"add {self.new!r} at the start"
        if self.kind == "suffix":
            return f"add {self.new!r} at the end"
        if self.kind == "remove":
            return f"remove {self.old!r} everywhere"
        return f"replace {self.old!r} with {self.new!r} everywhere"


def find_pattern_edit(original: str, corrected: str) -> PatternEdit | None:
    """The one repeatable edit that turns ``original`` into ``corrected``, or None.

    Found, in this order: a phrase added at the start (``corrected`` ends with the whole
    ``original``), one added at the end, and from a word-level diff one phrase replaced (or
    removed) at every place it occurs. Whatever it returns, ``edit.apply(original) ==
    corrected``. None for equal texts and for a general rewrite (several different changes, or
    a change that ``str.replace`` of one phrase would not reproduce).
    """
    for name, value in (("original", original), ("corrected", corrected)):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    if original == corrected or not original.strip():
        return None
    candidates = []
    if corrected.endswith(original):
        candidates.append(("prefix", "", corrected[:len(corrected) - len(original)]))
    if corrected.startswith(original):
        candidates.append(("suffix", "", corrected[len(original):]))
    candidates.extend(_one_phrase_changes(original, corrected))
    for kind, old, new in candidates:
        try:
            edit = PatternEdit(kind, old, new)
        except ValueError:  # e.g. only spaces added: nothing worth repeating
            continue
        if edit.apply(original) == corrected:
            return edit
    return None


def _one_phrase_changes(original: str, corrected: str) -> list[tuple[str, str, str]]:
    """("replace" | "remove", old, new) when every change of the word diff is the same one."""
    a, b = _TOKENS.findall(original), _TOKENS.findall(corrected)
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    changes = {("".join(a[i1:i2]), "".join(b[j1:j2])) for op, i1, i2, j1, j2 in ops
               if op != "equal"}
    kept = "".join("".join(a[i1:i2]) for op, i1, i2, _, _ in ops if op == "equal")
    if len(changes) != 1 or not re.search(r"\w", kept):
        return []  # several changes, or nothing kept: a rewrite, not one phrase changed
    old, new = changes.pop()
    if not old:  # an insertion in the middle: no phrase to find in another text
        return []
    return [("remove" if not new else "replace", old, new)]
