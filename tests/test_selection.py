"""Choosing what to rate next (select="margin"): the least sure candidates are shown, checked
against rewards and entropies computed here independently, on the tiny model."""

import itertools
import random

import pytest
import torch

from lf_widgets import Session
from lf_widgets._requests import GenerationRequest
from lf_widgets.losses import sequence_logps
from lf_widgets.models import tiny_model
from lf_widgets.sampling import SamplingConfig, chat_prompt_ids
from lf_widgets.selection import (PoolSample, SelectionRequest, choose, distinct_prompts,
                                  near_duplicates, random_counts)

from .helpers import finished_samples

WAIT = 180  # seconds: generous, the machine may be loaded
BETA = 0.1  # TrainConfig's default β


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A session whose adapter learnt something (DPO on rated samples); tests only sample."""
    s = Session(tiny_model(seed=0), store=tmp_path_factory.mktemp("sel") / "fb.sqlite",
                annotator="ann", resume=False)
    for i, sample in enumerate(finished_samples(s, ["hello", "world"], n=4)):
        s.record_rating(sample.sample_id, (5, 1, 4, 2)[i % 4])
    run = s.train("dpo", steps=8, lr=1e-2, checkpoint_every=0).wait(WAIT)
    assert run.metrics, "the adapter was trained"
    yield s
    s.close()


def scores_here(session, candidates):
    """(β(logπ_θ − logπ_ref), mean token entropy) of each candidate, one at a time, unbatched."""
    owner, tok = session.model, session.tokenizer

    def run():
        model, out = owner.model, []
        for c in candidates:
            p = chat_prompt_ids(tok, c.prompt)
            ids = torch.tensor([list(p) + list(c.token_ids)])
            labels = ids.clone()
            labels[0, :len(p)] = -100
            with torch.no_grad():
                logits = model(input_ids=ids).logits
                policy = sequence_logps(logits, labels)[0].item()
                reward = None
                if owner.has_adapter:
                    with model.disable_adapter():
                        ref = sequence_logps(model(input_ids=ids).logits, labels)[0].item()
                    reward = BETA * (policy - ref)
                probs = logits[0, len(p) - 1:-1].softmax(-1)  # the distributions of its tokens
                entropy = -(probs * probs.log()).sum(-1).mean().item()
            out.append((reward, entropy))
        return out

    return owner.call(run)


def by_prompt(request):
    groups = {}
    for c in request.candidates:
        groups.setdefault(c.prompt, []).append(c)
    return groups


def spread(values):
    return max(values) - min(values)


def test_margin_shows_the_candidates_the_adapter_is_least_sure_of(trained):
    request = trained.start_generation(["Tell me a story", "Name a colour"], n=3, select="margin",
                                       random_share=0, max_new_tokens=8, seed=2)
    shown = request.wait(WAIT)
    assert isinstance(request, SelectionRequest) and request.basis == "margin"
    assert len(shown) == 6 and len(request.candidates) == 18  # pool 3 × n 3 per prompt
    assert "the adapter is least sure of" in request.progress_text()
    for prompt, pool in by_prompt(request).items():
        distinct = [c for c in pool if c.duplicate_of is None]
        rewards = {c.index: r for c, (r, _) in zip(distinct, scores_here(trained, distinct))}
        picked = [c.index for c in pool if c.pick is not None]
        assert len(picked) == 3 and all(c.pick == "margin" for c in pool if c.pick)
        best = min(spread([rewards[i] for i in trio]) for trio in itertools.combinations(rewards, 3))
        assert spread([rewards[i] for i in picked]) <= best + 1e-4
        assert spread(rewards.values()) > best + 1e-3  # a real choice: other trios were wider
        for c in pool:  # the recorded reward is the one computed here
            if c.index in rewards:
                assert c.reward == pytest.approx(rewards[c.index], abs=1e-4)
    stored = trained.store.samples().set_index("sample_id")
    for s in shown:  # shown samples carry their selection record; the others are not stored
        params = stored.loc[s.sample_id, "params"]
        assert params["select"] == "margin" and params["pick"] == "margin"
        assert params["candidates"] == 9 and params["n"] == 3
    assert all(c.sample_id is None for c in request.candidates if c.pick is None)
    assert stored["prompt"].isin(request.prompts).sum() == len(shown)  # only the shown are stored


def test_random_share_is_respected_and_the_rest_is_by_margin(trained):
    request = trained.start_generation(["Tell me a story", "Name a colour"], n=4, select="margin",
                                       random_share=0.5, max_new_tokens=8, seed=4)
    request.wait(WAIT)
    picks = [c.pick for c in request.candidates if c.pick]
    assert picks.count("random") == 4 and picks.count("margin") == 4  # ⌊0.5 × 8⌋ random
    for pool in by_prompt(request).values():
        distinct = [c for c in pool if c.duplicate_of is None]
        rewards = {c.index: r for c, (r, _) in zip(distinct, scores_here(trained, distinct))}
        margin = [c.index for c in pool if c.pick == "margin"]
        if len(margin) > 1:
            best = min(spread([rewards[i] for i in group])
                       for group in itertools.combinations(rewards, len(margin)))
            assert spread([rewards[i] for i in margin]) <= best + 1e-4
    again = trained.start_generation(["Tell me a story", "Name a colour"], n=4, select="margin",
                                     random_share=0.5, max_new_tokens=8, seed=4)
    again.wait(WAIT)  # seeded: the same random picks
    assert [c.pick for c in again.candidates] == [c.pick for c in request.candidates]


def test_compare_shows_the_pair_with_the_smallest_margin_first(trained):
    prompts = ["Tell me a story", "Name a colour", "Count to three"]
    seen = []
    stop = trained.on("generation", seen.append)
    panel = trained.compare(prompts, select="margin", random_share=0, display=False,
                            max_new_tokens=8, seed=5).wait(WAIT)
    stop()
    [request] = {id(r): r for r in seen if isinstance(r, SelectionRequest)}.values()
    margins = {}
    for prompt, pool in by_prompt(request).items():
        distinct = [c for c in pool if c.duplicate_of is None]
        rewards = {c.index: r for c, (r, _) in zip(distinct, scores_here(trained, distinct))}
        gaps = {pair: abs(rewards[pair[0]] - rewards[pair[1]])
                for pair in itertools.combinations(rewards, 2)}
        picked = tuple(sorted(c.index for c in pool if c.pick))
        assert gaps[picked] <= min(gaps.values()) + 1e-4
        margins[prompt] = gaps[picked]
    assert len(panel.items) == 3
    shown = [margins[item.prompt] for item in panel.items]
    assert shown == sorted(shown)  # the least sure pair first


def test_without_an_adapter_entropy_decides_and_the_status_says_so(session):
    request = session.start_generation(["hello", "world"], n=2, select="margin", random_share=0,
                                       max_new_tokens=8, seed=1)
    request.wait(WAIT)
    assert request.basis == "entropy" and "highest entropy" in request.progress_text()
    for pool in by_prompt(request).values():
        distinct = [c for c in pool if c.duplicate_of is None]
        entropy = {c.index: e for c, (_, e) in zip(distinct, scores_here(session, distinct))}
        top = sorted(entropy, key=entropy.get, reverse=True)[:2]
        assert sorted(c.index for c in pool if c.pick == "entropy") == sorted(top)
        assert all(c.reward is None for c in pool)


def test_an_adapter_that_has_not_moved_falls_back_to_entropy(tmp_path):
    from lf_widgets.trainer import TrainConfig

    s = Session(tiny_model(seed=0), store=tmp_path / "fb.sqlite", annotator="ann", resume=False)
    try:
        s.model.call(lambda: s.model.ensure_adapter(TrainConfig()))  # LoRA B = 0: π_θ = π_ref
        request = s.start_generation("hello", n=2, select="margin", random_share=0,
                                     max_new_tokens=6, seed=1)
        request.wait(WAIT)
        assert request.basis == "entropy" and "every margin 0" in request.progress_text()
        assert all(c.reward == 0 for c in request.candidates if c.duplicate_of is None)
    finally:
        s.close()


def test_select_none_is_todays_generation(session):
    ours = session.generate("hello", n=2, max_new_tokens=8, seed=5, progress=False, select=None)
    plain = [c.text for batch in session.model.complete("hello", 2, SamplingConfig(
        max_new_tokens=8, seed=5)) for c in batch]
    assert sorted(s.text for s in ours) == sorted(plain)
    params = session.store.samples().set_index("sample_id").params
    assert all("select" not in params[s.sample_id] for s in ours)
    assert type(session.start_generation("x", n=1, max_new_tokens=2)) is GenerationRequest


def test_near_duplicate_prompts_and_samples_are_skipped(session):
    request = session.start_generation(["Say hi", "  say HI ", "Name a colour"], n=2,
                                       select="margin", max_new_tokens=6, seed=0, top_p=1e-9)
    shown = request.wait(WAIT)
    assert request.prompts == ["Say hi", "Name a colour"]
    assert request.skipped_prompts == ["  say HI "] and "1 near-duplicate prompt skipped" in \
        request.progress_text()
    # top_p → 0 is greedy: the pool of 6 is one text six times; one is shown, a duplicate
    # fills the other card
    assert len(shown) == 4
    for pool in by_prompt(request).values():
        assert [c.duplicate_of for c in pool] == [None, 0, 0, 0, 0, 0]
        assert sorted(c.pick for c in pool if c.pick) == ["duplicate", "entropy"]


def test_rating_panel_shows_the_chosen_samples(session):
    seen = []
    stop = session.on("generation", seen.append)
    panel = session.rate(["hello"], n=2, select="random", display=False, max_new_tokens=6,
                         seed=3).wait(WAIT)
    stop()
    request = seen[-1]
    assert [s.sample_id for s in panel.samples] == [request.samples[k].sample_id for k in (0, 1)]
    assert "6 candidates" in panel.generation.value and "picked at random" in panel.generation.value
    assert len(session.store.samples()) == 2  # only the shown ones are stored


@pytest.mark.parametrize("options, match", [
    ({"select": "best"}, "select"), ({"select": "margin", "pool": 0}, "pool"),
    ({"pool": 1.5}, "pool"), ({"select": "margin", "random_share": 1.5}, "random_share"),
])
def test_bad_selection_options_are_named(session, options, match):
    for verb in (lambda: session.generate("x", n=2, **options),
                 lambda: session.rate("x", n=2, display=False, **options),
                 lambda: session.compare("x", display=False, **options)):
        with pytest.raises(ValueError, match=match):
            verb()
    assert len(session.store.samples()) == 0  # refused before any work


def test_select_needs_prompts_and_a_local_model(session, tmp_path):
    from lf_widgets.remote import RemoteChatModel

    with pytest.raises(ValueError, match="select"):
        session.rate(None, select="margin", display=False)
    remote = Session(RemoteChatModel("http://127.0.0.1:9/v1", "m", api_key_env=None),
                     store=tmp_path / "remote.sqlite", annotator="ann")
    try:  # no server is asked: refused before any request
        with pytest.raises(ValueError, match="select='margin' needs a local model"):
            remote.generate("x", n=2, select="margin")
    finally:
        remote.close()


# -- the pure parts ---------------------------------------------------------------------------
def test_near_duplicates_fold_case_and_space_and_catch_close_texts():
    texts = ["The sea is blue.", "the  sea is BLUE.", "The sea is blue!", "A cat sat.",
             "The sky is green."]
    assert near_duplicates(texts) == [None, 0, 0, None, None]
    assert near_duplicates(texts, similarity=1.0) == [None, 0, None, None, None]
    assert distinct_prompts(["a b", "A  B", "c"]) == (["a b", "c"], ["A  B"])


def pool_of(rewards, duplicates=()):
    return [PoolSample("p", i, f"t{i}", (i,), duplicate_of=0 if i in duplicates else None,
                       reward=r, entropy=float(i)) for i, r in enumerate(rewards)]


def test_choose_takes_the_tightest_rewards_and_skips_duplicates():
    rewards = [0.0, 0.5, 0.53, 2.0, 0.51, 3.0]
    assert sorted(c.index for c in choose(pool_of(rewards), 2, "margin")) == [1, 4]
    assert sorted(c.index for c in choose(pool_of(rewards), 3, "margin")) == [1, 2, 4]
    # the tightest pair is a near-duplicate: the next tightest is shown instead
    assert sorted(c.index for c in choose(pool_of(rewards, duplicates={4}), 2, "margin")) == [1, 2]
    assert [c.index for c in choose(pool_of(rewards), 2, "entropy")] == [5, 4]
    # too few distinct candidates: duplicates fill the remaining cards
    filled = choose(pool_of([0.1, 0.2, 0.3], duplicates={1, 2}), 2, "margin")
    assert [c.pick for c in filled] == ["margin", "duplicate"]


def test_random_counts_place_the_share_exactly():
    rng = random.Random(0)
    assert sum(random_counts(4, 4, 0.25, "sample", rng)) == 4
    assert sum(random_counts(3, 4, 0.25, "sample", rng)) == 3  # ⌊0.25 × 12⌋
    pairs = random_counts(8, 2, 0.25, "pair", rng)
    assert sorted(pairs) == [0] * 6 + [2] * 2  # whole pairs at random
    picks = choose(pool_of([0.0, 0.5, 0.53, 2.0, 0.51, 3.0]), 4, "margin", 1, random.Random(1))
    assert [c.pick for c in picks].count("random") == 1
