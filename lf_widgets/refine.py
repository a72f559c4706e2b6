"""Refiners: write candidate revisions of a sample that follow a person's critique.

A refiner gets the prompt, the model's answer and the critique, and writes ``k`` candidates; the
person picks one (it becomes a correction with its provenance), edits one, or rejects them all
(:meth:`lf_widgets.session.Session.suggest_revisions`). Three refiners:

* :class:`OwnModelRefiner`: the session's own model with its LoRA adapter OFF (the base model:
  a refiner that learnt from the feedback would drift with it), on the model's own thread as an
  interactive job, so refinement waits for at most one training step and never races it.
* :class:`LocalRefiner`: another local model (a folder or hub id, e.g. a larger model on a GPU),
  with its own :class:`~lf_widgets.policy.LocalModel` owner and thread.
* :class:`RemoteRefiner`: a :class:`~lf_widgets.remote.RemoteChatModel` (vLLM, llama.cpp,
  Ollama, a hosted API), HTTP on a thread of its own.

Why strategies, not only a prompt: the default model (SmolLM2-135M-Instruct) asked through its
chat template to rewrite an answer "following the critique" *Start your answer with 'Ahoy!'*
wrote 0 of 12 candidates that start with "Ahoy" (issue 14). A model that small does not follow
instructions about its own output, so where the critique says something checkable, we make the
candidate satisfy it rather than ask for it. :func:`parse_critique` reads (heuristically, from
English wording) what it can check:

================  ==========================================================================
strategy part     what it does
================  ==========================================================================
``prompted``      the model rewrites the answer, asked with :data:`REFINE_TEMPLATE`
``few_shot``      the same, after :data:`FEW_SHOT` worked examples as earlier chat turns
``original``      no model: the person's answer itself, with the constraints below applied
``prefix``        the quoted opening phrase ("Start/Begin/Open with '…'") is forced as the
                  start of the answer and the model writes the rest (a local model continues
                  from it; a chat API cannot continue a started answer, so for a remote refiner
                  the phrase is put in front of the rewrite when it is missing)
``cut``           a length instruction ("at most N words", "one sentence", "shorter") is met
                  by cutting at a sentence boundary (mid-sentence only when the first sentence
                  alone is too long)
``suffix``        the quoted closing phrase ("End/Finish with '…'") is put at the end
================  ==========================================================================

A candidate's :attr:`Candidate.strategy` joins the parts, e.g. ``"prompted+prefix"``,
``"original+cut"``; it is stored with an accepted revision. When :func:`parse_critique` finds
nothing, only the ``prompted`` rewrite runs. These are heuristics for a small model: the person
still judges every candidate, and a larger refiner (local or remote) can write better ones.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._critique_rules import Constraints, cut_to_fit, join_phrase, meet, parse_critique
from .sampling import SamplingConfig, check_count

__all__ = ["REFINE_TEMPLATE", "FEW_SHOT", "Candidate", "Constraints", "parse_critique",
           "cut_to_fit", "Refiner", "OwnModelRefiner", "LocalRefiner", "RemoteRefiner",
           "resolve_refiner"]

#: The refiner's request, one user turn: ``{prompt}``, ``{answer}`` and ``{critique}`` are filled
#: in (``str.format``; write ``{{`` for a literal brace). Pass ``template=`` to a refiner to use
#: another wording; it must keep the three fields.
REFINE_TEMPLATE = (
    "Here is a question, an answer to it, and feedback on the answer.\n\n"
    "Question: {prompt}\n\n"
    "Answer: {answer}\n\n"
    "Feedback: {critique}\n\n"
    "Rewrite the answer so that it follows the feedback. Reply with the new answer only."
)

#: Worked examples shown before the request by the ``few_shot`` strategy, as earlier chat turns:
#: (prompt, answer, critique, the rewrite that follows it). Short, so they fit a small context.
FEW_SHOT: tuple[tuple[str, str, str, str], ...] = (
    ("What is the capital of France?",
     "The capital of France is Paris, a large city in the north of the country that is known "
     "for the Eiffel Tower.",
     "Start with 'Bonjour!' and keep it to one sentence.",
     "Bonjour! The capital of France is Paris."),
    ("Name a fruit.",
     "Sure! An apple is a fruit.",
     "Do not say 'Sure!'. End with 'Enjoy!'",
     "An apple is a fruit. Enjoy!"),
    ("How do plants get energy?",
     "Plants get energy from sunlight. They use a process called photosynthesis, which turns "
     "light, water and carbon dioxide into sugar. This happens in their leaves.",
     "Too long: at most 12 words.",
     "Plants get energy from sunlight, through photosynthesis."),
)

DEFAULT_TEMPERATURES = (0.3, 0.7, 1.0)  # a cautious, a middle and a bold candidate


@dataclass(frozen=True)
class Candidate:
    """One suggested revision."""

    text: str  # the revised answer
    strategy: str  # how it was written, e.g. "prompted", "prompted+prefix", "original+cut"
    refiner: str  # which refiner wrote it (its name, e.g. "own:SmolLM2-135M-Instruct")
    temperature: float | None = None  # sampling temperature; None when no model sampled it


# -- planning the k candidates -------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    body: str  # "prompted" | "few_shot" | "original"
    temperature: float | None  # None for "original"
    seed: int | None


def _plans(k: int, constraints: Constraints, temperatures: Sequence[float],
           seed: int | None, with_original: bool) -> list[_Plan]:
    """The k candidates to write, in a fixed order (so a seed repeats them). No constraints: k
    prompted rewrites, the temperatures in turn. With constraints: prompted, the original answer
    made to fit (once, when that changes it), few-shot, then prompted and few-shot in turn. The
    i-th model-written candidate samples with ``seed + i``."""
    if not constraints:
        bodies = ["prompted"] * k
    else:
        bodies = ["prompted"] + (["original"] if with_original else []) + ["few_shot"]
        bodies += ["prompted", "few_shot"] * k
    plans, t = [], 0
    for body in bodies[:k]:
        if body == "original":
            plans.append(_Plan(body, None, None))
            continue
        plans.append(_Plan(body, float(temperatures[t % len(temperatures)]),
                           None if seed is None else seed + t))
        t += 1
    return plans


def _messages(template: str, prompt: str, answer: str, critique: str, few_shot: bool) -> list[dict]:
    def ask(p, a, c):
        return {"role": "user", "content": template.format(prompt=p, answer=a, critique=c)}

    turns = []
    if few_shot:
        for p, a, c, rewrite in FEW_SHOT:
            turns += [ask(p, a, c), {"role": "assistant", "content": rewrite}]
    return turns + [ask(prompt, answer, critique)]


def _check_template(template: str) -> str:
    if not isinstance(template, str):
        raise ValueError(f"template must be a string, got {type(template).__name__}")
    try:
        template.format(prompt="p", answer="a", critique="c")
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"template must use only the fields {{prompt}}, {{answer}} and "
                         f"{{critique}}: {err!r}") from None
    for name in ("answer", "critique"):
        if "{" + name + "}" not in template:
            raise ValueError(f"template has no {{{name}}} field: the refiner would not see it")
    return template


OnCandidate = Callable[[int, Candidate], None]  # (index, candidate), on the refiner's thread


class Refiner:
    """What every refiner offers: :meth:`submit` (background) and :meth:`refine` (blocking).

    Subclasses write one candidate with :meth:`_write` (on their thread) and say where that
    thread is (:meth:`_submit`). ``name`` is what a correction's provenance records.
    """

    name: str = "refiner"
    template: str = REFINE_TEMPLATE
    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES
    max_new_tokens: int = 96  # a rewrite of a 64-token answer, with room to spare

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def submit(self, prompt: str | None, answer: str, critique: str, k: int = 3, *,
               seed: int | None = None, on_candidate: OnCandidate | None = None):
        """Start writing ``k`` candidates in the background; returns the job
        (:class:`~lf_widgets._worker.Job`: ``result()`` is the list, ``cancel()`` stops after
        the token in progress). ``on_candidate(index, candidate)`` is called for each as it is
        finished, in order, on the refiner's thread."""
        k = check_count(k, "k")
        if not isinstance(critique, str) or not critique.strip():
            raise ValueError(f"critique must be non-empty text, got {critique!r}")
        if not isinstance(answer, str):
            raise ValueError(f"answer must be a string, got {type(answer).__name__}")
        if seed is not None and (isinstance(seed, bool) or not hasattr(seed, "__index__")):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        constraints = parse_critique(critique)
        changes_original = bool(meet(answer, constraints, answer, False)[1])
        plans = _plans(k, constraints, self.temperatures, None if seed is None else int(seed),
                       with_original=changes_original)
        prompt = prompt or ""

        def run(job) -> list[Candidate]:
            out = []
            for i, plan in enumerate(plans):
                job.check()
                out.append(self._candidate(job, plan, prompt, answer, critique, constraints))
                if on_candidate is not None:
                    on_candidate(i, out[-1])
            return out

        return self._submit(run)

    def refine(self, prompt: str | None, answer: str, critique: str, k: int = 3, *,
               seed: int | None = None, on_candidate: OnCandidate | None = None
               ) -> list[Candidate]:
        """Write ``k`` candidates and return them (blocks; Ctrl-C stops the job)."""
        return self.submit(prompt, answer, critique, k, seed=seed,
                           on_candidate=on_candidate).result()

    def _candidate(self, job, plan: _Plan, prompt: str, answer: str, critique: str,
                   c: Constraints) -> Candidate:
        forced = False
        if plan.body == "original":
            text = answer
        else:
            messages = _messages(self.template, prompt, answer, critique,
                                 few_shot=plan.body == "few_shot")
            config = SamplingConfig(max_new_tokens=self.max_new_tokens,
                                    temperature=plan.temperature, seed=plan.seed)
            text, forced = self._write(job, messages, c.prefix, config)
        text, tags = meet(text, c, answer, forced)
        return Candidate(text, "+".join([plan.body, *tags]), self.name, plan.temperature)

    def _write(self, job, messages: list[dict], prefix: str | None,
               config: SamplingConfig) -> tuple[str, bool]:
        """One answer to the chat ``messages``: (text, whether ``prefix`` was forced in)."""
        raise NotImplementedError

    def _submit(self, fn):
        raise NotImplementedError

    def close(self) -> None:
        """Release what the refiner holds (its own model or thread); the session's stays."""


class OwnModelRefiner(Refiner):
    """Candidates from a local model owner's base model (its LoRA adapter off while writing).

    Parameters
    ----------
    owner : LocalModel
        The model owner; every candidate is an interactive job on its thread.
    template : str
        The request (see :data:`REFINE_TEMPLATE`).
    temperatures : sequence of float
        Sampling temperatures, used in turn by the model-written candidates.
    max_new_tokens : int
        Length cap of one candidate.
    name : str, optional
        Provenance name; default ``"own:<model tag>"``.
    """

    def __init__(self, owner, template: str = REFINE_TEMPLATE,
                 temperatures: Sequence[float] = DEFAULT_TEMPERATURES, *,
                 max_new_tokens: int = 96, name: str | None = None):
        self.owner = owner
        self.template = _check_template(template)
        self.temperatures = _check_temperatures(temperatures)
        self.max_new_tokens = check_count(max_new_tokens, "max_new_tokens")
        self.name = name or f"own:{owner.tag}"

    def _submit(self, fn):
        return self.owner.submit(fn, name="refine")  # interactive: before the next training step

    def _write(self, job, messages, prefix, config):
        # The adapter is off for this candidate only: between two candidates (and while the
        # listeners of the "revision" event run) the model is as the session left it.
        with self.owner.use("base"):
            return _generate(self.owner.model, self.owner.tokenizer, messages, prefix, config,
                             job.check, self.owner.context_length)


class LocalRefiner(OwnModelRefiner):
    """Candidates from another local model, with its own owner (and thread).

    Parameters
    ----------
    path_or_id : str, Path or LocalModel
        A model folder or hub id (loaded now, as :func:`lf_widgets.models.load_model` does), or
        an already loaded :class:`~lf_widgets.policy.LocalModel`.
    device, dtype : optional
        Where to load it (a larger refiner on a GPU, the session's model on the CPU).
    template, temperatures, max_new_tokens, name
        As for :class:`OwnModelRefiner`; the default name is ``"local:<model tag>"``.
    """

    def __init__(self, path_or_id, template: str = REFINE_TEMPLATE,
                 temperatures: Sequence[float] = DEFAULT_TEMPERATURES, *, device=None,
                 dtype=None, max_new_tokens: int = 96, name: str | None = None):
        from .policy import LocalModel

        if isinstance(path_or_id, LocalModel):
            owner, self._owns = path_or_id, False
        else:
            if not isinstance(path_or_id, (str, os.PathLike)) or not str(path_or_id).strip():
                raise ValueError(f"path_or_id must be a model folder or hub id, got {path_or_id!r}")
            owner, self._owns = LocalModel.load(str(path_or_id), device=device, dtype=dtype), True
        super().__init__(owner, template, temperatures, max_new_tokens=max_new_tokens,
                         name=name or f"local:{owner.tag}")

    def close(self) -> None:
        if self._owns:
            self.owner.close()


class RemoteRefiner(Refiner):
    """Candidates from an OpenAI-compatible server.

    Parameters
    ----------
    remote : RemoteChatModel
        The endpoint. The whole request (few-shot examples included) is sent as one user turn;
        a chat API cannot continue a started answer, so a required opening phrase is put in
        front of the reply when it is missing (strategy part ``prefix``).
    template, temperatures, max_new_tokens
        As for :class:`OwnModelRefiner`.
    worker : Worker, optional
        The thread to send requests from (default: one of its own, so the cell stays free).
    name : str, optional
        Provenance name; default the model's tag (``"remote:<model>"``).
    """

    def __init__(self, remote, template: str = REFINE_TEMPLATE,
                 temperatures: Sequence[float] = DEFAULT_TEMPERATURES, *,
                 max_new_tokens: int = 96, worker=None, name: str | None = None):
        from ._worker import Worker
        from .remote import RemoteChatModel

        if not isinstance(remote, RemoteChatModel):
            raise ValueError(f"remote must be a RemoteChatModel, got {type(remote).__name__}")
        self.remote = remote
        self.template = _check_template(template)
        self.temperatures = _check_temperatures(temperatures)
        self.max_new_tokens = check_count(max_new_tokens, "max_new_tokens")
        self.name = name or remote.tag
        self._owns = worker is None
        self.worker = worker if worker is not None else Worker(f"lf-refine-{remote.tag}")

    def _submit(self, fn):
        return self.worker.submit(fn, name="refine")

    def _write(self, job, messages, prefix, config):
        [batch] = list(self.remote.complete(_flatten(messages), 1, config, progress=False))
        return batch[0].text, False

    def close(self) -> None:
        if self._owns:
            self.worker.close()


def _flatten(messages: list[dict]) -> str:
    """Chat turns as one user message: earlier turns shown as examples, then the request."""
    if len(messages) == 1:
        return messages[0]["content"]
    lines = ["Examples of answers rewritten to follow feedback:"]
    for ask, done in zip(messages[:-1:2], messages[1:-1:2]):
        lines += ["", ask["content"], f"New answer: {done['content']}"]
    return "\n".join(lines + ["", "Now your turn.", "", messages[-1]["content"]])


def _check_temperatures(values) -> tuple[float, ...]:
    values = tuple(values) if isinstance(values, (list, tuple)) else None
    if not values or any(isinstance(t, bool) or not isinstance(t, (int, float)) or not t >= 0
                         for t in values):
        raise ValueError(f"temperatures must be a non-empty list of numbers >= 0, got {values!r}")
    return tuple(float(t) for t in values)


# -- local generation (on the model's thread) ----------------------------------------------------
def _chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)  # transformers 5 / 4.x


def _generate(model, tokenizer, messages, prefix, config: SamplingConfig, check,
              context_length) -> tuple[str, bool]:
    """One sampled answer to ``messages``, continuing from ``prefix`` when given."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    from .generation import pad_id

    class _Check(StoppingCriteria):  # a cancelled job stops at the next token
        def __call__(self, input_ids, scores, **kwargs):
            check()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    forced = prefix is not None
    ids = _chat_ids(tokenizer, messages)
    if forced:  # the assistant turn already begun with the phrase; the model writes the rest
        ids += tokenizer(prefix, add_special_tokens=False)["input_ids"]
    if context_length and len(ids) + config.max_new_tokens > context_length and len(messages) > 1:
        # few-shot turns that do not fit: drop them rather than fail
        return _generate(model, tokenizer, messages[-1:], prefix, config, check, context_length)
    device = next(model.parameters()).device
    sample = config.temperature > 0
    with torch.inference_mode():
        if config.seed is not None:
            torch.manual_seed(config.seed)
        out = model.generate(
            input_ids=torch.tensor([ids], device=device),
            attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=device),
            max_new_tokens=config.max_new_tokens, do_sample=sample,
            temperature=config.temperature if sample else None,
            top_p=config.top_p if sample else None, top_k=None, pad_token_id=pad_id(tokenizer),
            stopping_criteria=StoppingCriteriaList([_Check()]))
    rest = tokenizer.decode(out[0, len(ids):].tolist(), skip_special_tokens=True)
    return (join_phrase(prefix, rest.rstrip()) if forced else rest.strip()), forced


# -- which refiner -----------------------------------------------------------------------------
def resolve_refiner(spec, session) -> Refiner:
    """The refiner ``spec`` names, for ``session``.

    ``None`` or ``"own"``: the session's own model (its base, adapter off), or its remote
    endpoint for a session on a :class:`~lf_widgets.remote.RemoteChatModel`; a
    :class:`Refiner`: itself; a :class:`~lf_widgets.remote.RemoteChatModel`: a
    :class:`RemoteRefiner`; a :class:`~lf_widgets.policy.LocalModel`, folder or hub id: a
    :class:`LocalRefiner` (loaded once per session, then reused).
    """
    from .remote import RemoteChatModel

    if isinstance(spec, Refiner):
        return spec
    cache = session.__dict__.setdefault("_refiners", {})
    lock = session.__dict__.setdefault("_refiners_lock", threading.Lock())
    with lock:
        if spec is None or (isinstance(spec, str) and spec == "own"):
            key = "own"
        elif isinstance(spec, (str, os.PathLike)):
            key = ("path", str(spec))
        else:
            key = ("object", id(spec))
        if key in cache and (key[0] != "object" or cache[key][0] is spec):
            return cache[key][1]
        refiner = _make_refiner(spec, session, RemoteChatModel)
        cache[key] = (spec, refiner)  # the spec is kept, so its id is not reused meanwhile
        return refiner


def _make_refiner(spec, session, remote_type) -> Refiner:
    from .policy import LocalModel

    if spec is None or (isinstance(spec, str) and spec == "own"):
        if session.local:
            return OwnModelRefiner(session.model)
        return RemoteRefiner(session.model, worker=session._remote_worker)
    if isinstance(spec, remote_type):
        return RemoteRefiner(spec)
    if isinstance(spec, LocalModel):
        return LocalRefiner(spec)
    if isinstance(spec, (str, os.PathLike)) and str(spec).strip():
        return LocalRefiner(spec)
    raise ValueError("refiner must be None or 'own' (the session's model), a model folder or hub "
                     f"id, a RemoteChatModel or a Refiner, got {spec!r}")

