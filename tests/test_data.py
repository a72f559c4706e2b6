"""Feedback → training examples: mapping table, cleaning, objective choice, collation, batching."""

import ast
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from lf_widgets.data import (KTOExample, PairExample, SFTExample, TrainingData, build_examples,
                             choose_objective, collate_kto, collate_pairs, collate_sft,
                             length_batches, padding_waste, sample_example_ids, sequence_key)
from lf_widgets.feedback import CUT_OFF
from lf_widgets.sampling import chat_prompt_ids
from lf_widgets.store import FeedbackStore, SampleRecord

END = 2  # <|im_end|> in the tiny tokenizer (also its eos and pad)
Q = "What is the capital of France?"


@pytest.fixture
def tok(tiny):
    return tiny[1]


@pytest.fixture
def store():
    s = FeedbackStore(":memory:")
    yield s
    s.close()


def add(store, text=None, prompt=Q, token_ids=(10, 11, END)):
    ids = None if token_ids is None else list(token_ids)
    text = f"answer {ids}" if text is None else text  # different ids, different text
    return store.add_samples([SampleRecord(text, prompt, ids)])[0]


def rate(store, sample_id, value, annotator="ann"):
    store.record(sample_id, "rating", value, annotator)


def prefer(store, a, b, choice, annotator="ann"):
    store.record(a, "preference", {"other": b, "choice": choice, "reason": None}, annotator)


def P(tok, prompt=Q):
    return tuple(chat_prompt_ids(tok, prompt))


def text_ids(tok, text):
    return tuple(tok(text, add_special_tokens=False)["input_ids"]) + (END,)


# -- the mapping table ---------------------------------------------------------------------------
def test_good_rating_gives_sft_target_and_kto_desirable(store, tok):
    s = add(store)
    rate(store, s, 5)
    data = build_examples(store, tok)
    assert data.sft == [SFTExample(Q, P(tok), (10, 11, END), s, "rating")]
    assert data.kto == [KTOExample(Q, P(tok), (10, 11, END), True, s, "rating")]
    assert data.pairs == []


@pytest.mark.parametrize("value, kto", [(1, [False]), (2, [False]), (3, [])])
def test_low_rating_gives_kto_undesirable_and_middle_gives_nothing(store, tok, value, kto):
    s = add(store)
    rate(store, s, value)
    data = build_examples(store, tok)
    assert data.sft == [] and data.pairs == []
    assert [e.desirable for e in data.kto] == kto
    assert all(e.sample_id == s for e in data.kto)


def test_differently_rated_samples_of_one_prompt_give_all_pairs(store, tok):
    a, b, c = (add(store, token_ids=(10 + i, END)) for i in range(3))
    other = add(store, prompt="Another question", token_ids=(20, END))
    for sample, value in ((a, 5), (b, 2), (c, 2), (other, 1)):
        rate(store, sample, value)
    data = build_examples(store, tok)
    # b and c tie (no pair); `other` answers another prompt (no pair with a).
    assert data.pairs == [
        PairExample(Q, P(tok), (10, END), (11, END), a, b, "ratings"),
        PairExample(Q, P(tok), (10, END), (12, END), a, c, "ratings"),
    ]


def test_pair_from_ratings_puts_the_higher_first_whatever_the_order(store, tok):
    low, high = add(store, token_ids=(10, END)), add(store, token_ids=(11, END))
    rate(store, low, 3)
    rate(store, high, 4)
    (pair,) = build_examples(store, tok).pairs
    assert (pair.chosen_sample_id, pair.rejected_sample_id) == (high, low)
    assert (pair.chosen_ids, pair.rejected_ids) == ((11, END), (10, END))


def test_rating_is_the_mean_over_annotators(store, tok):
    split, agreed = add(store, token_ids=(10, END)), add(store, token_ids=(11, END))
    rate(store, split, 5, "ann")
    rate(store, split, 2, "bob")  # mean 3.5: neither good nor bad
    rate(store, agreed, 5, "ann")
    rate(store, agreed, 3, "bob")  # mean 4: good
    data = build_examples(store, tok)
    assert [e.sample_id for e in data.sft] == [agreed]
    assert [(e.sample_id, e.desirable) for e in data.kto] == [(agreed, True)]
    (pair,) = data.pairs  # 4 > 3.5
    assert (pair.chosen_sample_id, pair.rejected_sample_id) == (agreed, split)


def test_only_each_annotators_latest_rating_counts(store, tok):
    s = add(store)
    rate(store, s, 1)
    rate(store, s, 5)
    data = build_examples(store, tok)
    assert len(data.sft) == 1 and [e.desirable for e in data.kto] == [True]


def test_undo_removes_the_example(store, tok):
    s = add(store)
    rate(store, s, 5)
    store.undo("ann", s)
    data = build_examples(store, tok)
    assert (data.sft, data.pairs, data.kto) == ([], [], [])


def test_correction_gives_sft_target_pair_and_kto_desirable(store, tok):
    s = add(store, text="Lyon.", token_ids=(10, 11, END))
    store.record(s, "correction", "Paris.", "ann")
    fixed = text_ids(tok, "Paris.")
    data = build_examples(store, tok)
    assert data.sft == [SFTExample(Q, P(tok), fixed, s, "correction")]
    assert data.pairs == [PairExample(Q, P(tok), fixed, (10, 11, END), None, s, "correction")]
    assert data.kto == [KTOExample(Q, P(tok), fixed, True, s, "correction")]


def test_an_emptied_correction_means_none(store, tok):
    s = add(store)
    store.record(s, "correction", "Paris.", "ann")
    store.record(s, "correction", "", "ann")
    data = build_examples(store, tok)
    assert (data.sft, data.pairs, data.kto) == ([], [], [])
    assert not data.dropped


@pytest.mark.parametrize("choice, chosen", [("a", "A"), ("b", "B")])
def test_preference_gives_a_pair(store, tok, choice, chosen):
    a, b = add(store, token_ids=(10, END)), add(store, token_ids=(11, END))
    prefer(store, a, b, choice)
    ids = {"A": (a, (10, END)), "B": (b, (11, END))}
    loser = "B" if chosen == "A" else "A"
    data = build_examples(store, tok)
    assert data.pairs == [PairExample(Q, P(tok), ids[chosen][1], ids[loser][1], ids[chosen][0],
                                      ids[loser][0], "preference")]
    assert data.sft == [] and data.kto == []


def test_tie_and_both_bad_give_no_pair_but_are_counted(store, tok):
    a, b, c = (add(store, token_ids=(10 + i, END)) for i in range(3))
    prefer(store, a, b, "tie")
    prefer(store, a, c, "both_bad")
    data = build_examples(store, tok)
    assert data.pairs == []
    assert data.unpaired == Counter({"tie": 1, "both_bad": 1})
    summary = data.summary()
    assert summary.loc["dpo", "no pair: tie"] == 1 and summary.loc["dpo", "no pair: both_bad"] == 1
    assert "no pair: tie 1, both_bad 1" in repr(data)


def test_latest_preference_per_pair_and_annotator_wins_in_either_order(store, tok):
    a, b = add(store, token_ids=(10, END)), add(store, token_ids=(11, END))
    prefer(store, a, b, "a")
    prefer(store, b, a, "a")  # shown the other way round later: now b ≻ a
    (pair,) = build_examples(store, tok).pairs
    assert (pair.chosen_sample_id, pair.rejected_sample_id) == (b, a)


def test_preferences_of_several_annotators_give_the_majority_pair(store, tok):
    a, b = add(store, token_ids=(10, END)), add(store, token_ids=(11, END))
    prefer(store, a, b, "a", "ann")
    prefer(store, a, b, "b", "bob")
    data = build_examples(store, tok)  # one each way: no majority, no pair
    assert data.pairs == [] and data.dropped == Counter({"no majority": 1})
    prefer(store, b, a, "b", "cy")  # shown the other way round: a again
    prefer(store, a, b, "tie", "dee")  # a tie is left out of the majority
    data = build_examples(store, tok)
    assert [(p.chosen_sample_id, p.rejected_sample_id) for p in data.pairs] == [(a, b)]


def test_invalid_or_cross_prompt_preferences_are_dropped(store, tok):
    a, b = add(store, token_ids=(10, END)), add(store, token_ids=(11, END))
    elsewhere = add(store, prompt="Another question", token_ids=(12, END))
    prefer(store, a, b, "maybe")
    prefer(store, a, elsewhere, "a")
    data = build_examples(store, tok)
    assert data.pairs == []
    assert data.dropped == Counter({"invalid preference": 1, "different prompts": 1})


# -- token ids -----------------------------------------------------------------------------------
def test_stored_token_ids_are_used_verbatim(store, tok):
    # Ids that the text would never tokenize to: they are what the model sampled, so they win.
    s = add(store, text="Paris.", token_ids=(300, 301, 302))
    rate(store, s, 5)
    (ex,) = build_examples(store, tok).sft
    assert ex.completion_ids == (300, 301, 302)
    assert ex.completion_ids != text_ids(tok, "Paris.")


def test_imported_sample_without_prompt_or_ids_is_tokenized_with_end_token(store, tok):
    s = add(store, text="这是一个很好的文章。", prompt=None, token_ids=None)
    rate(store, s, 5)
    (ex,) = build_examples(store, tok).sft
    assert ex.prompt == "" and ex.prompt_ids == tuple(chat_prompt_ids(tok, ""))
    assert ex.completion_ids == text_ids(tok, "这是一个很好的文章。")
    assert ex.completion_ids[-1] == END
    assert tok.decode(ex.completion_ids, skip_special_tokens=True) == "这是一个很好的文章。"


def test_samples_without_prompt_are_not_paired_by_rating(store, tok):
    a = add(store, text="Good.", prompt=None, token_ids=None)
    b = add(store, text="Bad.", prompt=None, token_ids=None)
    rate(store, a, 5)
    rate(store, b, 1)
    assert build_examples(store, tok).pairs == []


def test_key_is_a_stable_hash_of_the_token_ids():
    ex = SFTExample("q", [1, 2], [3, END], 7, "rating")
    assert ex.key == SFTExample("other text", (1, 2), (3, END), 8, "correction").key
    # pinned: keys written by one run (a cache on disk) must match the next run's
    assert ex.key == sequence_key((1, 2), (3, END)) == "671f689f8db52363bd4701d528839f46"
    assert ex.key != SFTExample("q", [1, 2], [3], 7, "rating").key
    pair = PairExample("q", [1], [2, END], [3, END], 1, 2, "ratings")
    assert pair.key != PairExample("q", [1], [3, END], [2, END], 2, 1, "ratings").key
    assert isinstance(ex.prompt_ids, tuple)  # frozen all the way down, hence hashable
    assert hash(ex) == hash(SFTExample("q", (1, 2), (3, END), 7, "rating"))


# -- cleaning ------------------------------------------------------------------------------------
def test_empty_completion_is_no_target_but_a_valid_bad_example(store, tok):
    good, bad = add(store, text="", token_ids=(END,)), add(store, text=" ", token_ids=(END,))
    rate(store, good, 5)
    rate(store, bad, 1)
    data = build_examples(store, tok)
    assert data.sft == [] and data.pairs == []  # the pair would teach an empty answer
    assert [(e.sample_id, e.desirable) for e in data.kto] == [(bad, False)]
    assert data.dropped_by["sft"] == Counter({"empty completion": 1})
    assert data.dropped_by["kto"] == Counter({"empty completion": 1})
    assert data.dropped_by["dpo"] == Counter({"empty completion": 1})


def test_exact_duplicates_are_dropped_and_counted(store, tok):
    a, b = add(store, token_ids=(10, END)), add(store, token_ids=(10, END))  # same answer twice
    c = add(store, token_ids=(11, END))
    for s, value in ((a, 5), (b, 5), (c, 1)):
        rate(store, s, value)
    data = build_examples(store, tok)
    assert [e.sample_id for e in data.sft] == [a]
    assert [e.sample_id for e in data.kto] == [a, c]
    assert [(p.chosen_sample_id, p.rejected_sample_id) for p in data.pairs] == [(a, c)]
    assert data.dropped == Counter({"duplicate": 3})  # one each for sft, kto and the b ≻ c pair
    assert data.summary().loc[["sft", "dpo", "kto"], "dropped: duplicate"].tolist() == [1, 1, 1]


def test_identical_pair_is_dropped(store, tok):
    a, b = add(store, text="x", token_ids=(10, END)), add(store, text="y", token_ids=(10, END))
    prefer(store, a, b, "a")
    c = add(store, text="Paris.", token_ids=(300, 301, END))
    store.record(c, "correction", "Paris. ", "ann")  # same answer, though other ids: no pair
    data = build_examples(store, tok)
    assert data.pairs == [] and data.dropped == Counter({"identical pair": 2})
    assert [e.source for e in data.sft] == ["correction"]


def test_empty_store_gives_no_examples(store, tok):
    data = build_examples(store, tok)
    assert (data.sft, data.pairs, data.kto) == ([], [], []) and not data.dropped
    assert data.summary()["examples"].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="Not enough feedback"):
        choose_objective(data)


@pytest.fixture
def long_sample(store, tok):
    s = add(store, token_ids=(10, 11, 12, 13, END))
    rate(store, s, 5)
    store.record(s, "correction", "Paris.", "ann")
    return s


def test_overlong_is_truncated_keeping_the_start(store, tok, long_sample):
    room = 2
    data = build_examples(store, tok, max_length=len(P(tok)) + room)
    assert [e.completion_ids for e in data.sft] == [(10, 11), text_ids(tok, "Paris.")[:room]]
    assert all(len(e.prompt_ids) + len(e.completion_ids) <= len(P(tok)) + room for e in data.kto)
    (pair,) = data.pairs
    assert pair.rejected_ids == (10, 11) and len(pair.chosen_ids) == room
    assert data.truncated == Counter({"sft": 2, "kto": 2, "dpo": 1}) and not data.dropped


def test_overlong_is_dropped_when_asked(store, tok, long_sample):
    max_length = len(P(tok)) + len(text_ids(tok, "Paris."))  # the correction fits, the sample not
    data = build_examples(store, tok, max_length=max_length, overlong="drop")
    assert [e.source for e in data.sft] == ["correction"]
    assert data.pairs == []  # its rejected side is too long
    assert data.dropped_by["sft"] == Counter({"too long": 1})
    assert data.dropped_by["dpo"] == Counter({"too long": 1})
    assert not data.truncated


def test_prompt_alone_too_long_is_dropped_even_when_truncating(store, tok, long_sample):
    data = build_examples(store, tok, max_length=len(P(tok)))
    assert (data.sft, data.pairs, data.kto) == ([], [], [])
    assert data.dropped == Counter({"prompt too long": 5})


def test_bad_options_are_refused(store, tok):
    with pytest.raises(ValueError, match="overlong"):
        build_examples(store, tok, overlong="cut")
    with pytest.raises(ValueError, match="max_bad < min_good"):
        build_examples(store, tok, min_good=3, max_bad=3)


def test_summary_and_repr(store, tok):
    a, b = add(store, token_ids=(10, END)), add(store, token_ids=(11, END))
    rate(store, a, 5)
    rate(store, b, 1)
    store.record(b, "correction", "Paris.", "ann")
    data = build_examples(store, tok)
    df = data.summary()
    assert df.index.tolist() == ["sft", "dpo", "kto"]
    assert df["examples"].tolist() == [2, 2, 3]
    assert df.loc["sft", "sources"] == "rating 1, correction 1"
    assert df.loc["dpo", "sources"] == "ratings 1, correction 1"
    assert df.loc["kto", "sources"] == "desirable 2, undesirable 1"
    assert df["dropped"].tolist() == [0, 0, 0]
    assert repr(data) == "TrainingData(sft=2, pairs=2, kto=3 (2 desirable, 1 undesirable))"


# -- choosing the objective ----------------------------------------------------------------------
def _sft(i=0):
    return SFTExample("q", (1,), (10 + i, END), i, "rating")


def _pair(i=0):
    return PairExample("q", (1,), (10 + i, END), (20 + i, END), i, 100 + i, "preference")


def _kto(i, desirable):
    return KTOExample("q", (1,), (10 + i, END), desirable, i)


def test_auto_picks_dpo_with_two_pairs():
    data = TrainingData(sft=[_sft()], pairs=[_pair(0), _pair(1)], kto=[_kto(0, True)])
    objective, reason = choose_objective(data)
    assert objective == "dpo" and "2 preference pairs" in reason and "strongest" in reason


def test_auto_picks_kto_with_good_and_bad_examples():
    data = TrainingData(sft=[_sft()], pairs=[_pair()],
                        kto=[_kto(0, True), _kto(1, True), _kto(2, True), _kto(3, False)])
    objective, reason = choose_objective(data)
    assert objective == "kto" and "3 desirable and 1 undesirable" in reason


@pytest.mark.parametrize("kto", [[_kto(i, True) for i in range(4)],  # no bad example
                                 [_kto(0, True), _kto(1, False), _kto(2, False)]])  # fewer than 4
def test_auto_falls_back_to_sft(kto):
    objective, reason = choose_objective(TrainingData(sft=[_sft()], pairs=[_pair()], kto=kto))
    assert objective == "sft" and "1 good examples" in reason


def test_auto_without_usable_feedback_says_what_is_missing():
    with pytest.raises(ValueError, match="rate at least one sample 4 or 5, or correct one"):
        choose_objective(TrainingData(pairs=[_pair()], kto=[_kto(0, False)]))


@pytest.mark.parametrize("objective, needs", [("dpo", "pick the better of two samples"),
                                              ("kto", "KTO needs rated samples"),
                                              ("sft", "rate a sample 4 or 5, or correct one")])
def test_requested_objective_without_data_names_what_is_needed(objective, needs):
    with pytest.raises(ValueError, match=needs):
        choose_objective(TrainingData(), objective)


def test_requested_objective_with_data_is_honoured():
    data = TrainingData(sft=[_sft()], pairs=[_pair(0), _pair(1)])
    assert choose_objective(data, "SFT")[0] == "sft"
    with pytest.raises(ValueError, match="must be 'auto'"):
        choose_objective(data, "ppo")


# -- collation -----------------------------------------------------------------------------------
X = -100


def test_collate_sft_pads_right_and_labels_only_the_completion():
    examples = [SFTExample("q", (5, 6), (7, 8, END), 1, "rating"),
                SFTExample("q", (5,), (9,), 2, "rating")]
    batch = collate_sft(examples, pad_id=END)  # pad == end token: labels must not confuse them
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert all(t.dtype == torch.long for t in batch.values())
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, END], [5, 9, END, END, END]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[X, X, 7, 8, END], [X, 9, X, X, X]]


def test_collate_pairs_puts_chosen_rows_first_then_rejected():
    pairs = [PairExample("q", (5,), (7, END), (8, 8, END), 1, 2, "preference"),
             PairExample("q", (5, 6), (9, END), (4, END), 3, 4, "ratings")]
    batch = collate_pairs(pairs, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 7, END, 0], [5, 6, 9, END],  # chosen
                                           [5, 8, 8, END], [5, 6, 4, END]]  # rejected
    assert batch["labels"].tolist() == [[X, 7, END, X], [X, X, 9, END],
                                        [X, 8, 8, END], [X, X, 4, END]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]


def test_collate_kto_adds_desirable_and_mismatched_kl_rows():
    examples = [KTOExample("q", (5,), (7, END), True, 1),
                KTOExample("q", (5, 6), (8, 8, END), False, 2),
                KTOExample("q", (4,), (9, END), True, 3)]
    batch = collate_kto(examples, pad_id=0)
    assert batch["desirable"].dtype == torch.bool and batch["desirable"].tolist() == [True, False, True]
    assert batch["input_ids"].tolist() == [[5, 7, END, 0, 0], [5, 6, 8, 8, END], [4, 9, END, 0, 0]]
    # prompt i with completion (i + 1) % B
    assert batch["kl_input_ids"].tolist() == [[5, 8, 8, END], [5, 6, 9, END], [4, 7, END, 0]]
    assert batch["kl_labels"].tolist() == [[X, 8, 8, END], [X, X, 9, END], [X, 7, END, X]]
    assert batch["kl_attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]]
    one = collate_kto(examples[:1], pad_id=0)
    assert one["kl_input_ids"].tolist() == one["input_ids"].tolist() == [[5, 7, END]]


def test_fixed_kl_partners_come_from_other_prompts_and_collate_uses_them():
    from lf_widgets.data import assign_kl_partners

    pool = [KTOExample("a", (1,), (10 + i, END), True, i) for i in range(3)] + \
           [KTOExample("b", (2,), (20 + i, END), False, 3 + i) for i in range(3)]
    paired = assign_kl_partners(pool)
    assert paired == pool  # the same examples (the partner is not part of their identity)
    for e in paired:  # every partner is a completion of the other prompt
        assert e.kl_completion_ids[0] // 10 != e.completion_ids[0] // 10
    assert assign_kl_partners(pool) == paired and \
        [e.kl_completion_ids for e in assign_kl_partners(pool)] == [e.kl_completion_ids for e in paired]
    batch = collate_kto(paired[:2], pad_id=0)  # the fixed partner, not the batch neighbour
    assert batch["kl_input_ids"].tolist() == [[1, *paired[0].kl_completion_ids],
                                              [1, *paired[1].kl_completion_ids]]
    same = assign_kl_partners(pool[:3])  # one prompt only: the next example's completion
    assert [e.kl_completion_ids for e in same] == [(11, END), (12, END), (10, END)]
    assert assign_kl_partners(pool[:1])[0].kl_completion_ids == (10, END)  # a pool of one: its own
    assert assign_kl_partners([]) == []


def test_build_examples_gives_kto_examples_their_partners(store, tok):
    for i, value in enumerate((5, 1, 2)):
        s = add(store, prompt=f"question {i}", token_ids=(10 + i, 11, END))
        rate(store, s, value)
    data = build_examples(store, tok)
    assert len(data.kto) == 3
    assert all(e.kl_completion_ids and e.kl_completion_ids != e.completion_ids for e in data.kto)


def test_collate_empty_batch_is_refused():
    with pytest.raises(ValueError, match="empty batch"):
        collate_sft([], pad_id=0)


def test_collated_examples_score_exactly_their_completion_tokens(store, tiny):
    """End to end: store → examples → batch → tiny model → sequence_logps counts completions."""
    from lf_widgets.losses import sequence_logps

    model, tok = tiny
    a, b = add(store, token_ids=(10, 11, END)), add(store, text="Paris.", token_ids=None)
    prefer(store, a, b, "b")
    (pair,) = build_examples(store, tok).pairs
    batch = collate_pairs([pair], tok.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    _, n_tokens = sequence_logps(logits, batch["labels"])
    assert n_tokens.tolist() == [len(pair.chosen_ids), len(pair.rejected_ids)]


# -- length batching -----------------------------------------------------------------------------
def _mixed_lengths(n=300, seed=1):
    rng = random.Random(seed)
    return [SFTExample("q", (1,) * rng.randint(3, 12), (9,) * rng.choice([1, 5, 40, 120]), i, "rating")
            for i in range(n)]


def test_length_batches_cover_every_example_exactly_once():
    examples = _mixed_lengths()
    batches = length_batches(examples, 8, seed=3)
    seen = Counter(e.sample_id for batch in batches for e in batch)
    assert seen == Counter(range(len(examples)))
    assert all(1 <= len(batch) <= 8 for batch in batches)
    assert batches == length_batches(examples, 8, seed=3)  # same seed, same batches
    small_pools = length_batches(examples, 8, seed=3, pool_factor=2)
    assert Counter(e.sample_id for b in small_pools for e in b) == seen


def test_length_batches_waste_less_padding_than_random_batches():
    examples = _mixed_lengths()
    shuffled = random.Random(0).sample(examples, len(examples))
    random_batches = [shuffled[i:i + 8] for i in range(0, len(shuffled), 8)]
    bucketed = length_batches(examples, 8, seed=0)
    random_waste, bucketed_waste = padding_waste(random_batches), padding_waste(bucketed)
    assert random_waste > 0.4 and bucketed_waste < 0.1
    assert bucketed_waste < random_waste / 4


def test_padding_waste_counts_both_rows_of_a_pair():
    pair = PairExample("q", (1,), (2, 3, 4), (5,), 1, 2, "ratings")  # rows of 4 and 2 tokens
    assert padding_waste([[pair]]) == pytest.approx(2 / 8)
    assert padding_waste([[_sft(0), _sft(1)]]) == 0.0 and padding_waste([]) == 0.0


# -- current judgements come from the store's view -------------------------------------------------
def test_a_changed_preference_gives_one_pair_and_an_undone_one_none(store, tok):
    a, b = add(store, token_ids=(10, END)), add(store, token_ids=(11, END))
    prefer(store, a, b, "a")
    prefer(store, a, b, "b")  # same pair, changed mind: only the new choice counts
    (pair,) = build_examples(store, tok).pairs
    assert (pair.chosen_sample_id, pair.rejected_sample_id) == (b, a)
    store.undo("ann")  # undoes the change: the first choice is current again
    (pair,) = build_examples(store, tok).pairs
    assert (pair.chosen_sample_id, pair.rejected_sample_id) == (a, b)
    store.undo("ann")  # and now nothing is left
    data = build_examples(store, tok)
    assert data.pairs == [] and not data.dropped and not data.unpaired


# -- samples cut off at max_new_tokens ------------------------------------------------------------
def cut_off(store, text, prompt=Q, token_ids=(30, 31)):
    """A sample generation stopped at max_new_tokens: no end-of-turn token."""
    return store.add_samples([SampleRecord(text, prompt, list(token_ids), truncated=True)])[0]


def test_a_cut_off_sample_is_no_target_but_may_be_a_bad_example(store, tok):
    good_cut, bad_cut = cut_off(store, "Paris is the", token_ids=(30, 31)), \
        cut_off(store, "Lyon is", token_ids=(40, 41))
    rate(store, good_cut, 5)
    rate(store, bad_cut, 1)
    data = build_examples(store, tok)
    assert data.sft == []  # it would teach the cut, with no end-of-turn token
    assert [(e.sample_id, e.desirable) for e in data.kto] == [(bad_cut, False)]
    # a pair of cut-off samples still says which is better (both sides end at the cut)
    assert [(e.chosen_sample_id, e.rejected_sample_id) for e in data.pairs] == [(good_cut, bad_cut)]
    assert data.dropped_by["sft"] == data.dropped_by["kto"] == Counter({CUT_OFF: 1})
    assert not data.dropped_by["dpo"]
    assert data.summary().loc[["sft", "kto"], f"dropped: {CUT_OFF}"].tolist() == [1, 1]
    with pytest.raises(ValueError, match=f"1 {CUT_OFF} was left out"):
        choose_objective(data, "sft")
    kept = build_examples(store, tok, truncated_targets=True)  # asked for: targets after all
    assert [e.sample_id for e in kept.sft] == [good_cut] and len(kept.pairs) == 1


def test_a_correction_of_a_cut_off_sample_is_a_target_and_the_chosen_side(store, tok):
    s = cut_off(store, "Paris is the", token_ids=(30, 31))
    rate(store, s, 4)
    store.record(s, "correction", "Paris is the capital.", "ann")
    fixed = text_ids(tok, "Paris is the capital.")
    data = build_examples(store, tok)
    assert data.sft == [SFTExample(Q, P(tok), fixed, s, "correction")]
    assert data.pairs == [PairExample(Q, P(tok), fixed, (30, 31), None, s, "correction")]
    assert data.kto == [KTOExample(Q, P(tok), fixed, True, s, "correction")]
    objective, reason = choose_objective(data)
    assert objective == "sft" and f"1 {CUT_OFF} was left out" in reason


def test_pair_sources_read_as_words():
    pairs = [PairExample("q", (1,), (10 + i, END), (20 + i, END), i, 100 + i, "ratings")
             for i in range(4)] + \
            [PairExample("q", (1,), (30 + i, END), (40 + i, END), None, 200 + i, "correction")
             for i in range(2)] + [_pair(9)]
    _, reason = choose_objective(TrainingData(pairs=pairs))
    assert reason.startswith("DPO on 7 preference pairs (4 from ratings, 2 from corrections, "
                             "1 from a preference): ")


# -- one sample's ids (the stepper's way in) ------------------------------------------------------
def test_sample_example_ids_are_those_training_uses(store, tok):
    stored = add(store, token_ids=(300, 301, END))
    imported = add(store, text="Paris.", prompt=None, token_ids=None)
    rows = {int(r.sample_id): r for r in store.samples().itertuples(index=False)}
    assert sample_example_ids(tok, rows[stored]) == (P(tok), (300, 301, END))
    assert sample_example_ids(tok, rows[imported]) == (P(tok, ""), text_ids(tok, "Paris."))
    rate(store, imported, 5)
    (ex,) = build_examples(store, tok).sft
    assert (ex.prompt_ids, ex.completion_ids) == sample_example_ids(tok, rows[imported])


# -- module structure ------------------------------------------------------------------------------
PACKAGE = Path(__file__).parents[1] / "lf_widgets"
OURS = ("data", "batching", "feedback", "exports", "handoff")
# Imports a module alone, with the package's __init__ (which imports the Session, the lead's)
# left out: what is loaded is what the module itself needs.
ALONE = ("import sys, types; pkg = types.ModuleType('lf_widgets'); pkg.__path__ = [{path!r}]; "
         "sys.modules['lf_widgets'] = pkg; import lf_widgets.{name}; ")


def _relative_imports(path: Path) -> set[str]:
    """Package modules ``path`` imports anywhere (top level, functions, TYPE_CHECKING)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names |= {node.module} if node.module else {a.name for a in node.names}
    return {n.split(".")[0] for n in names}


def test_no_import_cycle_through_these_modules():
    graph = {p.stem: _relative_imports(p) for p in PACKAGE.glob("*.py")}

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(n == goal or (n not in seen and not seen.add(n) and reaches(n, goal, seen))
                   for n in graph.get(start, ()))

    assert [m for m in OURS if reaches(m, m, set())] == []
    assert graph["batching"] == set()  # collates whatever has the fields; knows no example class


@pytest.mark.parametrize("name", OURS)
def test_each_module_imports_alone(name):
    code = ALONE.format(path=str(PACKAGE), name=name)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_text_stage_and_exports_load_no_torch():
    code = ALONE.format(path=str(PACKAGE), name="feedback") + (
        "import lf_widgets.exports, lf_widgets.handoff; "
        "print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
