"""edits: edit distance, and pattern edits found from a correction's diff (pure, no model)."""

import random

import pytest

from lf_widgets.edits import PatternEdit, edit_distance, edit_ratio, find_pattern_edit


def test_edit_distance_and_ratio():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("same", "same") == 0
    assert edit_ratio("kitten", "sitting") == pytest.approx(3 / 7)
    assert edit_ratio("", "") == 0.0 and edit_ratio("abc", "xyz") == 1.0
    assert edit_distance("你好", "你们好") == 1  # characters, not bytes


@pytest.mark.parametrize("original, corrected, expected", [
    ("The capital is Paris.", "Ahoy! The capital is Paris.", PatternEdit("prefix", "", "Ahoy! ")),
    ("The capital is Paris.", "The capital is Paris. Arr!", PatternEdit("suffix", "", " Arr!")),
    ("I like colour, and colour likes me.", "I like color, and color likes me.",
     PatternEdit("replace", "colour", "color")),
    ("Sure! It is very good and very cheap.", "Sure! It is good and cheap.",
     PatternEdit("remove", "very ", "")),
    ("Sure! The sea is blue.", "The sea is blue.", PatternEdit("remove", "Sure! ", "")),
    ("你好，世界。", "船长：你好，世界。", PatternEdit("prefix", "", "船长：")),
])
def test_found_edits_reproduce_the_correction(original, corrected, expected):
    edit = find_pattern_edit(original, corrected)
    assert edit == expected
    assert edit.apply(original) == corrected


@pytest.mark.parametrize("original, corrected", [
    ("Hello world", "Goodbye moon, see you"),  # a general rewrite: several changes
    ("It is very good, very.", "It is good, very."),  # one of two "very" removed: not everywhere
    ("The sun is hot.", "The sun is very hot!"),  # an insertion in the middle plus a change
    ("same text", "same text"),
    ("Paris is nice", "Something else entirely."),  # all of it replaced: a rewrite
    ("Paris.", "Paris.   "),  # only spaces added: nothing worth repeating
])
def test_general_rewrites_are_no_pattern(original, corrected):
    assert find_pattern_edit(original, corrected) is None


def test_apply_does_not_repeat_an_edit_already_there():
    prefix = PatternEdit("prefix", new="Ahoy! ")
    assert prefix.apply("Hello.") == "Ahoy! Hello."
    assert prefix.apply("Ahoy! Hello.") is None
    assert prefix.apply("  ahoy! hello.") is None  # case and leading spaces ignored
    suffix = PatternEdit("suffix", new=" Arr!")
    assert suffix.apply("Hello.") == "Hello. Arr!" and suffix.apply("Hello. Arr!  ") is None
    replace = PatternEdit("replace", "colour", "color")
    assert replace.apply("no such word") is None and replace.apply("colour colour") == "color color"
    assert PatternEdit("remove", "Sure! ").apply("Sure! Yes. Sure! No.") == "Yes. No."


def test_describe_says_the_edit_in_words():
    assert PatternEdit("prefix", new="Ahoy! ").describe() == "add 'Ahoy! ' at the start"
    assert PatternEdit("suffix", new=" Arr!").describe() == "add ' Arr!' at the end"
    assert PatternEdit("replace", "a", "b").describe() == "replace 'a' with 'b' everywhere"
    assert PatternEdit("remove", "very ").describe() == "remove 'very ' everywhere"


@pytest.mark.parametrize("kwargs, field", [
    ({"kind": "insert"}, "kind"), ({"kind": "prefix", "new": "  "}, "new"),
    ({"kind": "prefix", "old": "x", "new": "y"}, "old"), ({"kind": "replace", "new": "y"}, "old"),
    ({"kind": "remove", "old": "x", "new": "y"}, "new"),
    ({"kind": "replace", "old": "x", "new": "x"}, "new"),
    ({"kind": "suffix", "new": 3}, "new"),
])
def test_bad_edits_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PatternEdit(**kwargs)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="original"):
        find_pattern_edit(None, "x")
    with pytest.raises(ValueError, match="corrected"):
        find_pattern_edit("x", 3)
    with pytest.raises(ValueError, match="text"):
        PatternEdit("prefix", new="x").apply(None)


_WORDS = "the sea is blue and wide ship sails north fish swim deep , . ! 你好 Ahoy".split()
_WHOLE = {"sea", "blue", "wide", "ship", "north", "deep", "swim"}  # in no other word


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 12)))


@pytest.mark.parametrize("seed", range(40))
def test_property_what_is_found_reproduces_the_correction(seed):
    """Random texts and random pattern edits: a found edit always turns the original into the
    correction; a phrase put at the start or end is always found; a found edit applied to the
    correction itself is not offered again."""
    rng = random.Random(seed)
    original = _text(rng)
    kind = rng.choice(["prefix", "suffix", "replace", "remove", "rewrite"])
    phrase = rng.choice(["Ahoy! ", "Captain says: ", "船长："])
    if kind == "prefix":
        corrected = phrase + original
    elif kind == "suffix":
        corrected = original + " " + phrase.strip()
    elif kind in ("replace", "remove"):
        # words that are no part of another word, so str.replace changes whole words only
        word = rng.choice(original.split() + ["sea"])
        corrected = original.replace(word, "" if kind == "remove" else "WHALE")
    else:
        corrected = _text(rng)
    edit = find_pattern_edit(original, corrected)
    whole_word = kind == "replace" and word in _WHOLE and word in original.split()
    if kind in ("prefix", "suffix") or whole_word:
        assert edit is not None, (original, corrected)
    if edit is not None:
        assert edit.apply(original) == corrected
        if edit.kind in ("prefix", "suffix"):
            assert edit.apply(corrected) is None  # already has it
