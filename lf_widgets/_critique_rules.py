"""What a critique asks for that can be checked, and making a text meet it: pure Python.

Read by :mod:`lf_widgets.refine`, whose module docstring says what each strategy does and why
(a 135M model ignores "rewrite following the critique"; a forced opening phrase or a cut at a
sentence boundary does not depend on it). Heuristics for English wording: what they do not
understand is left to the prompted rewrite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Constraints", "parse_critique", "cut_to_fit", "join_phrase", "meet"]

# -- reading the critique ------------------------------------------------------------------
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "„": "“", "”": "”"}
_NUMBERS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}
_NUM = r"(\d+|" + "|".join(_NUMBERS) + r")"
_START = re.compile(r"\b(?:start|begin|open)\w*\b(?:[^.;\n]{0,40}?)\bwith\b\s*:?\s*", re.I)
_END = re.compile(r"\b(?:end|finish|close)(?:s|ing|ed)?\b(?:[^.;\n]{0,40}?)\bwith\b\s*:?\s*",
                  re.I)
_MAX_WORDS = [  # (pattern, words allowed given the number)
    (re.compile(r"\b(?:at most|no more than|not more than|up to|maximum(?: of)?|max\.?|within)\s+"
                + _NUM + r"\s+words?\b", re.I), 0),
    (re.compile(r"\b(?:fewer than|less than|under|below)\s+" + _NUM + r"\s+words?\b", re.I), -1),
    (re.compile(r"\b(?:in|to|use|using)\s+" + _NUM + r"\s+words?(?:\s+or\s+(?:less|fewer))?\b",
                re.I), 0),
    (re.compile(r"\b" + _NUM + r"\s+words?\s+(?:or\s+(?:less|fewer)|at most|max(?:imum)?)\b",
                re.I), 0),
]
_SENTENCES = re.compile(r"\b(a single|single|one|two|three|four|five|\d+)[\s-]+sentences?\b", re.I)
_SHORTER = re.compile(r"\b(?:shorter|shorten|too long|more concise|concise|briefer|be brief|"
                      r"more brief|less verbose|too verbose|too wordy|cut it down)\b", re.I)


@dataclass(frozen=True)
class Constraints:
    """What :func:`parse_critique` read from a critique, and a candidate can be made to meet."""

    prefix: str | None = None  # the answer must start with this phrase
    suffix: str | None = None  # the answer must end with this phrase
    max_words: int | None = None  # at most this many words
    sentences: int | None = None  # at most this many sentences
    shorter: bool = False  # "shorter" without a number: about half the original's words

    def __bool__(self) -> bool:
        return any((self.prefix, self.suffix, self.max_words, self.sentences, self.shorter))

    @property
    def length(self) -> bool:
        return bool(self.max_words or self.sentences or self.shorter)


def _number(word: str) -> int:
    word = word.lower()
    return int(word) if word.isdigit() else _NUMBERS[word]


def _quoted_after(text: str, pos: int) -> str | None:
    """The phrase in quotes that starts at ``pos`` (straight or curly quotes), else None."""
    if pos >= len(text) or text[pos] not in _QUOTES:
        return None
    close = _QUOTES[text[pos]]
    # A straight ' also writes apostrophes ("Don't"): a closing one is not followed by a letter.
    tail = r"(?!\w)" if close == "'" else ""
    found = re.compile(re.escape(text[pos]) + r"(.+?)" + re.escape(close) + tail, re.S)
    m = found.match(text, pos)
    return m.group(1) if m and m.group(1).strip() else None


_NEGATED = re.compile(r"\b(?:don[’']?t|do not|never|not|no longer|stop|avoid|without)\W+"
                      r"(?:\w+\W+){0,2}$", re.I)


def _phrase(pattern: re.Pattern, text: str) -> str | None:
    for m in pattern.finditer(text):
        if _NEGATED.search(text[max(0, m.start() - 30):m.start()]):
            continue  # "Don't start with 'Sure'" asks for the opposite
        phrase = _quoted_after(text, m.end())
        if phrase is not None:
            return phrase.strip()
    return None


def parse_critique(critique: str) -> Constraints:
    """Read the checkable instructions of ``critique`` (a heuristic, for English wording).

    Understood: a quoted phrase after "start/begin/open (…) with" (the answer's opening) or
    "end/finish/close (…) with" (its closing), in straight or curly quotes; "at most / no more
    than / up to / in N words", "fewer than / under N words" (N − 1), "one sentence", "two
    sentences"; "shorter", "too long", "more concise". Everything else is left to the prompt.

    Examples
    --------
    >>> parse_critique("Start your answer with “Ahoy!” please")
    Constraints(prefix='Ahoy!', suffix=None, max_words=None, sentences=None, shorter=False)
    >>> parse_critique("Too long. At most 10 words.").max_words
    10
    """
    if not isinstance(critique, str):
        raise ValueError(f"critique must be a string, got {type(critique).__name__}")
    max_words = None
    for pattern, offset in _MAX_WORDS:
        if m := pattern.search(critique):
            max_words = max(1, _number(m.group(1)) + offset)
            break
    sentences = None
    if m := _SENTENCES.search(critique):
        word = m.group(1).lower()
        sentences = 1 if word in ("a single", "single") else _number(word)
    return Constraints(prefix=_phrase(_START, critique), suffix=_phrase(_END, critique),
                       max_words=max_words, sentences=sentences or None,
                       shorter=bool(_SHORTER.search(critique)) and not (max_words or sentences))


# -- meeting the constraints ---------------------------------------------------------------
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")


def _words(text: str) -> int:
    return len(text.split())


def cut_to_fit(text: str, *, max_words: int | None = None, sentences: int | None = None) -> str:
    """``text`` cut at a sentence boundary to at most ``sentences`` sentences and ``max_words``
    words; when even the first sentence is too long, it is cut after ``max_words`` words and
    ended with a full stop. A text that fits comes back unchanged."""
    parts = [p for p in _SENTENCE_END.split(text.strip()) if p]
    whole = len(parts)
    if sentences is not None:
        parts = parts[:max(1, sentences)]
    if max_words is not None:
        kept, count = [], 0
        for p in parts:
            if count + _words(p) > max_words:
                break
            kept.append(p)
            count += _words(p)
        if not kept and parts:  # the first sentence alone is too long: cut it mid-sentence
            head = " ".join(parts[0].split()[:max(1, max_words)]).rstrip(",;:-–— ")
            return head if head[-1:] in ".!?。！？" else head + "."
        parts = kept
    if len(parts) == whole:
        return text.strip()  # it fits: its own spacing and line breaks kept
    out = " ".join(parts)
    return out if out else text.strip()


def join_phrase(prefix: str, rest: str) -> str:
    """``prefix`` followed by ``rest``, with a space between where the words would otherwise run
    together ("Ahoy!" + "The sea" -> "Ahoy! The sea")."""
    if not rest:
        return prefix
    if prefix[-1:].isspace() or rest[:1].isspace():
        return prefix + rest
    if prefix[-1:] in ".!?,:;" and rest[:1].isalnum():
        return prefix + " " + rest
    return prefix + rest


def meet(text: str, c: Constraints, original: str, forced_prefix: bool) -> tuple[str, list[str]]:
    """``text`` made to meet ``c`` (``original``: the answer revised, for "shorter"); returns
    the text and the strategy tags of what was done ("prefix", "cut", "suffix").

    The opening and closing phrases are kept out of the length cut (a one-sentence answer that
    must start with "Ahoy!" is "Ahoy!" plus one sentence), but their words count.
    """
    tags = ["prefix"] if forced_prefix else []
    text = text.strip()
    head = ""
    if c.prefix:
        if text[:len(c.prefix)].casefold() != c.prefix.casefold():
            tags.append("prefix")
        else:
            text = text[len(c.prefix):]
        head = c.prefix
    if c.length:
        limit = c.max_words
        if c.shorter and limit is None:
            limit = max(1, _words(original) // 2)
        if limit is not None:  # room for the opening and closing phrases
            limit = max(1, limit - _words(head) - _words(c.suffix or ""))
        body = text.strip()
        cut = cut_to_fit(body, max_words=limit, sentences=c.sentences) if body else body
        if cut != body:
            text, tags = cut, tags + ["cut"]
    if head:
        text = join_phrase(head, text)
    if c.suffix and not text.rstrip().casefold().endswith(c.suffix.casefold()):
        text, tags = join_phrase(text.rstrip(), " " + c.suffix), tags + ["suffix"]
    return text.strip(), list(dict.fromkeys(tags))
