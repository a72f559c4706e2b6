"""Critiques as training examples: feedback modelling and hindsight (critique-conditioned) SFT.

A critique is what a person wrote about one sample ("Start your answer with 'Ahoy!'"). Two
experimental ways to learn from it, both off by default (``TrainConfig.critique_weight`` and
``TrainConfig.hindsight``):

**Feedback modelling** (RLTF, arXiv 2602.02482; Critique Fine-Tuning): the model learns to say
what the person said. The conversation is the prompt, the sample as the assistant's answer, then
a follow-up user turn :data:`FEEDBACK_REQUEST`; the target is the critique as the assistant's
next turn, loss on the critique tokens only (its end-of-turn token included)::

    user:      <prompt>
    assistant: <the sample>
    user:      Give feedback on your answer.
    assistant: <the critique>        ← NLL here only

Why a follow-up turn and not the critique glued after the answer: it is a well-formed chat for
every chat template (the answer's own end-of-turn token stays where generation put it), the
critique ends with an end-of-turn token like any answer, and the same question asked at
inference time gets the learnt critic. The request is neutral ("feedback", not "what is wrong")
because people also write what is right. The answer inside the context is the sample's text
tokenised by the template (context, not a target: no stored ids needed).

**Hindsight** (Chain of Hindsight, Liu et al. ICLR 2024; Feedback-Conditional Policy, arXiv
2509.22638): train π(y | x, c), where c is the feedback the sample y *received*. The user turn is
``HINDSIGHT_TEMPLATE.format(prompt=x, feedback=c)`` and the target is the sample itself, loss on
its answer tokens only. In this reading a sample critiqued "Start with 'Ahoy!'" is what an
answer looks like when it *gets* that critique, so the model learns which answers get which
feedback — not to obey the critique. At generation one conditions on the feedback a good answer
would get: a **goal** such as ``"Starts with 'Ahoy!', as asked."``
(``SamplingConfig.goal`` / ``Session.goal``, through :func:`goal_prompt`, the same template).
The template therefore says "feedback on the answer", a description, not an instruction.

Limits, said plainly: the goal only means something if some training samples received feedback
like it; when every critique is a complaint, a praising goal is outside what was learnt. Write
critiques of good samples too ("Good: it starts with 'Ahoy!'"). A sample cut off at
``max_new_tokens`` is no hindsight target (it would teach its cut), as in :mod:`.feedback`.

Plain Python until :func:`critique_examples` tokenises (it needs a tokenizer, not torch).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# the template and goal rule live in _goal (torch-free, no cycle); re-exported here
from ._goal import (FEEDBACK_REQUEST, HINDSIGHT_TEMPLATE, check_goal, goal_prompt,
                    hindsight_prompt)

__all__ = ["FEEDBACK_REQUEST", "HINDSIGHT_TEMPLATE", "CritiqueText", "CritiqueExamples",
           "critique_texts", "critique_examples", "add_critique_examples", "critique_note",
           "goal_prompt", "hindsight_prompt", "feedback_prompt_ids", "check_goal"]


def feedback_prompt_ids(tokenizer, prompt: str, answer: str) -> list[int]:
    """Token ids of the feedback-modelling context, up to the header of the critique's turn.

    Without a chat template: the three texts on their own lines (a base model's plain format).
    """
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer},
                    {"role": "user", "content": FEEDBACK_REQUEST}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)  # transformers 5 / 4.x
    return tokenizer(f"{prompt}\n{answer}\n{FEEDBACK_REQUEST}\n", add_special_tokens=True)["input_ids"]


@dataclass(frozen=True)
class CritiqueText:
    """One current critique of one sample by one annotator, with what it critiques."""

    sample_id: int
    annotator: str
    prompt: str  # the person's prompt ("" for imports without one)
    answer: str  # the sample's text
    critique: str
    truncated: bool  # the sample was cut off at max_new_tokens
    token_ids: tuple[int, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(repr=False)
class CritiqueExamples:
    """Token-level examples from critiques (``data.SFTExample`` records) and what was dropped.

    ``feedback``: feedback-modelling examples (context → critique, source "critique");
    ``hindsight``: critique-conditioned SFT examples (``HINDSIGHT_TEMPLATE`` → the sample, source
    "hindsight"; ``prompt`` is the person's prompt, so the A/B leak guard still finds it).
    """

    feedback: list = field(default_factory=list)
    hindsight: list = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)  # "kind: reason" → examples

    def __repr__(self) -> str:
        drop = f", dropped {dict(self.dropped)}" if self.dropped else ""
        return f"CritiqueExamples(feedback={len(self.feedback)}, hindsight={len(self.hindsight)}{drop})"


def critique_texts(store) -> list[CritiqueText]:
    """Every current, non-empty critique (latest per sample and annotator, undone ones gone),
    read through ``store.current_events`` like the rest of the feedback (see :mod:`.feedback`)."""
    from .feedback import prompt_of, stored_ids

    events = store.current_events(kinds=["critique"])
    events = events[events["sample_id"].notna()]  # a critique is always of a sample; be sure
    if events.empty:
        return []
    samples = {int(r.sample_id): r for r in store.samples().itertuples(index=False)}
    out = []
    for e in events.itertuples(index=False):
        if int(e.sample_id) not in samples:
            continue
        if not isinstance(e.value, str) or not e.value.strip():
            continue  # an emptied critique means "no critique"
        row = samples[int(e.sample_id)]
        out.append(CritiqueText(int(e.sample_id), str(e.annotator), prompt_of(row), row.text,
                                e.value.strip(), bool(row.truncated), stored_ids(row)))
    return sorted(out, key=lambda c: (c.sample_id, c.annotator))


def critique_examples(store, tokenizer, *, max_length: int = 512, feedback: bool = True,
                      hindsight: bool = True) -> CritiqueExamples:
    """Tokenised feedback-modelling and hindsight examples from the store's current critiques.

    Parameters
    ----------
    store : FeedbackStore
    tokenizer : PreTrainedTokenizerBase
        The model's tokenizer, with its chat template.
    max_length : int
        Longest context + target in tokens: a longer target is cut (≥ 1 token kept); an example
        whose context alone fills it is dropped ("context too long").
    feedback, hindsight : bool
        Which of the two kinds to build.

    Returns
    -------
    CritiqueExamples
        The same critique text twice on one sample (two annotators) gives one example each kind.
    """
    from .data import SFTExample
    from .sampling import chat_prompt_ids

    out = CritiqueExamples()
    end = _end_ids(tokenizer)
    seen: set[tuple[str, str]] = set()

    def add(kind: str, pool: list, c: CritiqueText, prompt_ids, target) -> None:
        room = max_length - len(prompt_ids)
        if room < 1:
            out.dropped[f"{kind}: context too long"] += 1
            return
        example = SFTExample(c.prompt, prompt_ids, tuple(target)[:room], c.sample_id, kind)
        if (kind, example.key) in seen:
            out.dropped[f"{kind}: duplicate"] += 1
            return
        seen.add((kind, example.key))
        pool.append(example)

    for c in critique_texts(store):
        if feedback:
            critique_ids = tuple(tokenizer(c.critique, add_special_tokens=False)["input_ids"]) + end
            add("critique", out.feedback, c, feedback_prompt_ids(tokenizer, c.prompt, c.answer),
                critique_ids)
        if hindsight:
            if c.truncated:
                out.dropped["hindsight: cut off at max_new_tokens"] += 1
                continue
            answer = c.token_ids if c.token_ids is not None else tuple(
                tokenizer(c.answer, add_special_tokens=False)["input_ids"]) + end
            if not answer or not c.answer.strip():
                out.dropped["hindsight: empty completion"] += 1
                continue
            add("hindsight", out.hindsight, c,
                chat_prompt_ids(tokenizer, hindsight_prompt(c.prompt, c.critique)), answer)
    return out


def add_critique_examples(data, store, tokenizer, config) -> None:
    """Put what ``config`` (a TrainConfig) asks for into ``data`` (a TrainingData), before the
    trainer's A/B-prompt and hold-out guards: with ``hindsight``, the hindsight examples join
    ``data.sft`` (source "hindsight": SFT examples, in the cleaning summary too); with
    ``critique_weight`` > 0, the feedback-modelling examples are ``data.critiques`` ([] else)."""
    data.critiques = []
    if not (config.hindsight or config.critique_weight):
        return
    found = critique_examples(store, tokenizer, max_length=config.max_length,
                              feedback=config.critique_weight > 0, hindsight=config.hindsight)
    data.sft = data.sft + found.hindsight
    data.critiques = found.feedback


def critique_note(config, data, objective: str) -> str:
    """What the critique options add to a run, for its reason ("" when they are off)."""
    parts = []
    if config.critique_weight:
        n = len(getattr(data, "critiques", []))
        parts.append(f"+ {config.critique_weight:g} × critique NLL on {n} critiques"
                     + ("" if n else " (none yet: the term is off until some are written)"))
    if config.hindsight:
        n = sum(e.source == "hindsight" for e in data.sft)
        how = "in the SFT pool" if objective == "sft" else "as an extra NLL term"
        parts.append(f"hindsight: {n} critique-conditioned examples {how}")
    return (" Critiques (experimental): " + "; ".join(parts) + ".") if parts else ""


def _end_ids(tokenizer) -> tuple[int, ...]:
    """The end-of-turn token a target text ends with (ChatML's where the template has one), as
    :mod:`lf_widgets.data` appends it to corrections."""
    vocab = tokenizer.get_vocab()
    end = vocab["<|im_end|>"] if "<|im_end|>" in vocab else tokenizer.eos_token_id
    return () if end is None else (end,)
