"""Choose what to rate next: draw a larger pool, show the samples the adapter is least sure of.

``session.rate(prompts, n, select="margin")`` (and ``compare``, ``generate``) samples
``pool × n`` candidates per prompt, scores them on the model's thread and shows ``n`` of them:

- **Score.** With an adapter, each candidate's implicit reward
  ``r(x, y) = β (log π_θ(y|x) − log π_ref(y|x))`` — the DPO reward (``losses.dpo_loss``'s
  ``chosen_rewards``), summed over the sample's tokens, β = ``TrainConfig.beta`` (or the last
  run's). β only scales the rewards: it never changes which candidates are shown.
- **Margin rule.** Per prompt, the ``n`` candidates whose rewards lie closest together: the
  ``n`` consecutive ones in reward order with the smallest spread ``max r − min r`` (the largest
  |margin| between two shown samples); ties go to the window whose mean is nearest the prompt's
  median reward. Ratings of samples the adapter cannot tell apart give it the pairs it knows
  least about; for ``n = 2`` (``compare``) this is the pair with the smallest ``|r_a − r_b|``.
  Within a prompt the picks are shown nearest the median first; ``compare`` shows its pairs
  smallest margin first.
- **No adapter yet** (π_θ = π_ref, every margin 0 — also a fresh adapter that has not moved):
  predictive entropy instead, the mean over the sample's tokens of the entropy of the model's
  next-token distribution; the ``n`` highest are shown. The request's status says so.
- **Random share.** ``⌊random_share × picks⌋`` picks (default 25 %, :data:`RANDOM_SHARE`) are
  drawn uniformly from the prompt's remaining candidates, with the sampling seed: uncertainty
  alone can keep showing one odd corner ("Random is hard to beat", arXiv 2604.02766). A pick is
  one sample for ``rate``/``generate``, one whole pair for ``compare``.
  ``select="random"`` picks every sample at random from the same pool: the baseline with the
  same budget (``benchmarks/bench_loop.py`` compares the two).
- **Near-duplicates** are skipped: candidates of a prompt, and prompts of a request, whose texts
  are equal after case and whitespace folding or more similar than :data:`SIMILARITY`
  (rapidfuzz's ratio, difflib's without it). A prompt with fewer than ``n`` distinct candidates
  is filled up with its duplicates (pick "duplicate"), so every card gets a sample.

**What is stored.** Only the shown samples, each with its score in ``params`` (``select``,
``pool``, ``candidates``, ``pick``, ``reward``, ``entropy``). The other candidates are not stored:
the log holds what a person saw, and a sample nobody was shown can never pass for a judged one
(nor turn up in ``rate()`` without prompts). They stay on the request (``request.candidates``,
with their scores) for inspection. The scoring puts each distinct candidate's reference log-prob
into the model's reference cache, where training finds it if the sample is judged.

With ``select``, the samples appear together once the pool is written and scored; interrupting
before then keeps nothing (no candidate was shown).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ._requests import Generated, GenerationRequest, when_done
from ._selection_rules import (SIMILARITY, PoolSample, choose, distinct_prompts, near_duplicates,
                               random_counts, unsureness)

__all__ = ["SELECT_RULES", "POOL", "RANDOM_SHARE", "SIMILARITY", "SelectionConfig", "PoolSample",
           "SelectionRequest", "selection_config", "near_duplicates", "distinct_prompts",
           "choose", "random_counts", "score_candidates", "refuse_without_prompts",
           "start_selected", "start_selection"]

SELECT_RULES = ("margin", "random")
POOL = 3  # candidates per shown sample: n=4 draws 12 per prompt
RANDOM_SHARE = 0.25  # share of the picks drawn at random from the pool


@dataclass(frozen=True)
class SelectionConfig:
    """How a generation chooses what to show from its candidate pool (see the module doc)."""

    rule: str = "margin"  # "margin": least sure first; "random": the same pool, picked at random
    pool: int = POOL  # candidates per shown sample; 1 draws no extra (margin then only reorders)
    random_share: float = RANDOM_SHARE  # share of picks made at random, for exploration
    unit: str = "sample"  # what one pick is: "sample" (rate, generate) or "pair" (compare)
    similarity: float = SIMILARITY  # near-duplicate threshold for candidates and prompts
    beta: float | None = None  # β of the implicit reward; None: TrainConfig's default

    def __post_init__(self):
        if self.rule not in SELECT_RULES:
            raise ValueError(f"select must be None or one of {list(SELECT_RULES)}, "
                             f"got {self.rule!r}")
        if isinstance(self.pool, bool) or not hasattr(self.pool, "__index__") or self.pool < 1:
            raise ValueError(f"pool must be a positive integer (candidates per shown sample), "
                             f"got {self.pool!r}")
        object.__setattr__(self, "pool", int(self.pool))
        for name in ("random_share", "similarity"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        if self.unit not in ("sample", "pair"):
            raise ValueError(f"unit must be 'sample' or 'pair', got {self.unit!r}")
        if self.beta is not None and not (isinstance(self.beta, (int, float)) and self.beta > 0):
            raise ValueError(f"beta must be positive, got {self.beta!r}")


def selection_config(select, pool=POOL, random_share=RANDOM_SHARE, *,
                     unit: str = "sample") -> SelectionConfig | None:
    """``select`` (None, a rule name or a SelectionConfig) as a config; None means no selection.

    ``pool`` and ``random_share`` are checked even without ``select``, so a typo is never
    silently ignored.
    """
    checked = SelectionConfig(pool=pool, random_share=random_share, unit=unit)
    if select is None or isinstance(select, SelectionConfig):
        return select
    if not isinstance(select, str):
        raise ValueError(f"select must be None or one of {list(SELECT_RULES)}, got {select!r}")
    return replace(checked, rule=select)


def refuse_without_prompts(select) -> None:
    """``rate(None, select=...)``: there is nothing new to choose among; say so."""
    if selection_config(select) is not None:
        raise ValueError("select= chooses among new candidates: give prompts (with "
                         "prompts=None the panel shows the stored samples as they are)")


# -- scoring (on the model's thread) ------------------------------------------------------------
def score_candidates(owner, prompts: Sequence[str], completions: Sequence[Sequence[int]], *,
                     beta: float | None = None, batch_size: int = 8
                     ) -> tuple[list[float] | None, list[float]]:
    """(implicit rewards, mean token entropies) of ``completions`` of ``prompts``.

    Call on the model's thread (``owner.call``). Rewards are ``β (log π_θ − log π_ref)`` per
    sample — None when there is no adapter (then π_θ = π_ref). The reference log-probs go
    through ``owner.reference_cache`` under the keys training uses.
    """
    import torch

    from .batching import collate_sft
    from .data import sequence_key
    from .losses import dpo_loss, sequence_logps
    from .sampling import chat_prompt_ids

    if beta is None:
        from .trainer import TrainConfig

        beta = TrainConfig.beta
    model, tok, device = owner.model, owner.tokenizer, owner.device
    adapter = owner.has_adapter
    prompt_ids = {p: tuple(chat_prompt_ids(tok, p)) for p in set(prompts)}
    rows = [_Row(prompt_ids[p], tuple(c)) for p, c in zip(prompts, completions)]
    rewards, entropies = [], []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            batch = {k: v.to(device) for k, v in collate_sft(chunk, owner.pad_id).items()}
            with autocast:  # as the training step runs, so a cached reference is the same number
                logps, entropy = _logps_and_entropy(model, batch, sequence_logps)
                if adapter:
                    keys = [sequence_key(r.prompt_ids, r.completion_ids) for r in chunk]
                    ref = owner.reference_cache.get(model, batch, keys)
                    # the DPO implicit reward, exactly as training reports it
                    rewards += dpo_loss(logps, logps, ref, ref, beta=beta).chosen_rewards.tolist()
            entropies += entropy.tolist()
    return (rewards if adapter else None), entropies


def _entropy(logits):
    """−Σ p log p over the vocabulary: (T, V) logits -> (T,) nats."""
    log_p = logits.log_softmax(-1)
    return -(log_p.exp() * log_p).sum(-1)


@dataclass(frozen=True)
class _Row:  # what batching.collate_sft reads
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]


def _logps_and_entropy(model, batch: dict, sequence_logps):
    """Summed completion log-probs (B,) and mean next-token entropy over the completion (B,)."""
    import torch

    labels = batch["labels"]  # (B, T), -100 on prompt and padding
    scored = (labels != -100).any(dim=0).nonzero()
    keep = labels.shape[1] - int(scored[0]) + 1 if len(scored) else 1  # as step.forward_logps
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   logits_to_keep=keep).logits.float()  # (B, keep, V)
    labels = labels[:, -keep:]
    logps, _ = sequence_logps(logits, labels)  # (B,)
    # the distributions the sample's tokens were drawn from; one row at a time, as
    # losses.selective_logps does, so no second (B, T, V) tensor is alive
    entropy = torch.stack([_entropy(row) for row in logits[:, :-1]])  # (B, keep-1)
    mask = labels[:, 1:] != -100  # (B, keep-1)
    return logps, (entropy * mask).sum(-1) / mask.sum(-1).clamp(min=1)


# -- the request ------------------------------------------------------------------------------
class SelectionRequest(GenerationRequest):
    """A generation that draws ``pool × n`` candidates per prompt and shows ``n`` of them.

    Panels read it as a :class:`~lf_widgets._requests.GenerationRequest` of ``n`` per prompt:
    its samples (the chosen ones) arrive together after the pool is written and scored. Adds
    ``candidates`` (every :class:`PoolSample`, with scores and ``pick``, once scored),
    ``basis`` ("margin", "entropy" or "random"), ``phase`` ("writing", "scoring", "shown"),
    ``skipped_prompts`` (near-duplicates left out) and ``candidates_done``.
    """

    def __init__(self, prompts: Sequence[str], n: int, selection: SelectionConfig, *,
                 label: str = "", skipped_prompts: Sequence[str] = (), basis: str = "margin"):
        super().__init__(prompts, n, label=label)
        self.selection = selection
        self.pool_n = n * selection.pool  # candidates per prompt
        self.candidates_total = len(self.prompts) * self.pool_n
        self.candidates_done = 0
        self.candidates: list[PoolSample] = []
        self.skipped_prompts = list(skipped_prompts)
        self.basis = basis  # expected now; set from the scores once known
        self.phase = "writing"

    def _plan(self) -> str:
        shown = self.total
        if self.basis == "random":
            return f"showing {shown} picked at random"
        if self.basis == "entropy":
            return (f"no trained adapter yet (every margin 0): showing the {shown} the model "
                    "is least sure of (highest entropy)")
        return f"showing the {shown} the adapter is least sure of"

    def progress_text(self) -> str:
        """E.g. "12 candidates · scoring · showing the 4 the adapter is least sure of"."""
        head = f"{self.candidates_total} candidates"
        tail = ""
        if self.skipped_prompts:
            k = len(self.skipped_prompts)
            tail = f" · {k} near-duplicate prompt{'s' * (k > 1)} skipped"
        if self.state == "failed":
            return f"{head} · failed: {self.error}"
        if self.state == "cancelled":
            return f"{self.candidates_done} of {head} · stopped before any was shown"
        if self.started_at is None:
            return f"0 of {head} · waiting for the model (training step or earlier request)"
        if self.phase == "writing":
            got = self.candidates_done
            eta = ""
            if got:
                pace = (time.monotonic() - self.started_at) / got
                eta = f" · ~{pace * (self.candidates_total - got):.0f} s left"
            return f"{got} of {head} · writing…{eta} · then {self._plan()}{tail}"
        if self.phase == "scoring":
            return f"{head} · scoring · {self._plan()}{tail}"
        randoms = sum(c.pick == "random" for c in self.candidates)
        extra = f" ({randoms} at random)" if randoms and self.basis != "random" else ""
        return f"{head} · {self._plan()}{extra}{tail}"


def _pool_of(request: SelectionRequest, got: dict, i: int) -> list[PoolSample]:
    m, prompt = request.pool_n, request.prompts[i]
    comps = [got[s] for s in range(i * m, (i + 1) * m) if s in got]
    twins = near_duplicates([c.text for c in comps], request.selection.similarity)
    return [PoolSample(prompt, k, c.text, tuple(c.token_ids), c.truncated, c.adapter_step, twin)
            for k, (c, twin) in enumerate(zip(comps, twins))]


def _scored(owner, pools: list[list[PoolSample]], beta) -> tuple[list[list[PoolSample]], str]:
    """The pools with rewards and entropies of their distinct candidates, and the basis."""
    todo = [c for pool in pools for c in pool if c.duplicate_of is None]
    rewards, entropies = score_candidates(owner, [c.prompt for c in todo],
                                          [c.token_ids for c in todo], beta=beta)
    # a fresh adapter (LoRA B = 0) has not moved: every reward is exactly 0, like no adapter
    basis = "margin" if rewards is not None and any(r != 0 for r in rewards) else "entropy"
    values = {(c.prompt, c.index): (None if rewards is None else rewards[j], entropies[j])
              for j, c in enumerate(todo)}
    return [[replace(c, reward=values[c.prompt, c.index][0], entropy=values[c.prompt, c.index][1])
             if (c.prompt, c.index) in values else c for c in pool] for pool in pools], basis


def start_selected(prompts: Sequence[str], n: int, selection: SelectionConfig, *, owner, store,
                   emit, config, contender: str, params: dict, label: str = "", on_sample=None,
                   beta: float | None = None) -> SelectionRequest:
    """What ``Session.start_generation(..., select=...)`` does: near-duplicate prompts left out,
    a :class:`SelectionRequest` started on ``owner``'s thread (see :func:`start_selection`).
    ``beta``: the last training run's β, used when ``selection.beta`` is None."""
    if not hasattr(owner, "reference_cache"):  # a RemoteChatModel: no weights, no log-probs
        raise ValueError(f"select={selection.rule!r} needs a local model (it scores the "
                         f"candidates' log-probs); this session samples from {owner.tag} at "
                         f"{owner.endpoint}")
    if selection.beta is None and beta is not None:
        selection = replace(selection, beta=beta)
    kept, skipped = distinct_prompts(prompts, selection.similarity)
    basis = ("random" if selection.rule == "random" else
             "margin" if owner.has_adapter else "entropy")  # the plan; the scores decide
    request = SelectionRequest(kept, n, selection, label=label, skipped_prompts=skipped,
                               basis=basis)
    start_selection(request, owner=owner, store=store, emit=emit, config=config,
                    contender=contender, params=params, on_sample=on_sample)
    return request


def start_selection(request: SelectionRequest, *, owner, store, emit, config, contender: str,
                    params: dict, on_sample=None) -> None:
    """Queue ``request`` on ``owner``'s thread: write the pool, score it, store and announce the
    chosen samples (``"samples"``, ``"generated"`` — slot ``i * n + k`` — and ``"generation"``,
    which also reports the pool's progress). ``params`` are stored with each shown sample, plus
    its selection record."""
    from .sampling import Sample
    from .store import SampleRecord

    selection = request.selection
    rng = random.Random(config.seed)  # the random picks follow the sampling seed

    def collect(got: dict, slot: int, c) -> None:
        got[slot] = c
        request.candidates_done += 1
        if request.first_token_at is None:
            request.first_token_at = time.monotonic()
        emit("generation", request)

    def run(job):
        request.started_at, request.state = time.monotonic(), "running"
        emit("generation", request)
        got: dict = {}
        owner.stream(job, request.prompts, request.pool_n, config,
                     on_sample=lambda slot, c: collect(got, slot, c), contender=contender)
        job.check()
        request.phase = "scoring"
        emit("generation", request)
        pools = [_pool_of(request, got, i) for i in range(len(request.prompts))]
        basis = "random"
        if selection.rule == "margin":
            pools, basis = _scored(owner, pools, selection.beta)
        request.basis = basis
        counts = random_counts(len(pools), request.n, selection.random_share, selection.unit, rng)
        picks = [choose(pool, request.n, basis, k, rng) for pool, k in zip(pools, counts)]
        job.check()
        show(pools, picks, basis)

    def show(pools, picks, basis) -> None:
        records = [SampleRecord(text=c.text, prompt=c.prompt, token_ids=list(c.token_ids) or None,
                                model=owner.tag, adapter_step=c.adapter_step,
                                params={**params, **_provenance(selection, len(pool), c)},
                                truncated=c.truncated)
                   for pool, chosen in zip(pools, picks) for c in chosen]
        ids = iter(store.add_samples(records))  # one transaction: all shown, or none
        picks = [[replace(c, sample_id=next(ids)) for c in chosen] for chosen in picks]
        shown = {(c.prompt, c.index): c for chosen in picks for c in chosen}
        request.candidates = [shown.get((c.prompt, c.index), c) for pool in pools for c in pool]
        order = sorted(range(len(picks)), key=lambda i: unsureness(picks[i], basis))
        slots = [(i * request.n + k, c) for i in order for k, c in enumerate(picks[i])]
        samples = []
        for slot, c in slots:
            sample = Sample(c.sample_id, c.prompt, c.text, owner.tag, c.adapter_step, c.truncated)
            request.samples[slot] = sample
            samples.append((slot, sample))
            if on_sample is not None:
                on_sample(slot, sample)
        request.phase = "shown"
        emit("samples", [s for _, s in samples])
        for slot, sample in samples:  # least sure prompt first: a pair panel shows that order
            emit("generated", Generated(request.id, slot, sample))
        emit("generation", request)

    request.job = owner.submit(run, name=f"select-{request.id}")
    request.job.future.add_done_callback(when_done(request, emit))


def _provenance(selection: SelectionConfig, candidates: int, c: PoolSample) -> dict:
    """What a shown sample's params record of how it was chosen."""
    return {"select": selection.rule, "pool": selection.pool, "candidates": candidates,
            "pick": c.pick, "reward": c.reward, "entropy": c.entropy}
