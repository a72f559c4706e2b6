"""The feedback loop under a scripted annotator: does feedback teach the model, per label, at what cost?

Public API only. For each run (a target and a feedback kind), a fresh Session and feedback log:
round after round, ``generate`` two samples for each of a few new training prompts, let a script
judge them exactly (``record_correction`` / ``record_rating`` / ``record_preference``, or
critiques and suggested revisions), ``train`` (objective "auto": what the tool itself picks from
that feedback), then ``generate`` one answer per held-out prompt and count how many meet the
target. Judged samples per round 8, 8, 16, 32, so the learning curve is read at 8, 16, 32 and 64
judged samples; round 0 (no adapter) is the base value. At the end, the capability guard
(``lf_widgets.capability.capability_nll``): NLL per token of general text, base vs tuned.

Targets (each judged exactly by a script):
  ahoy       the answer starts with "Ahoy!"       correction: "Ahoy! " + the answer
  short      at most 20 words                     correction: its first sentence, cut to 20 words
  question   ends with a question mark            correction: its first sentence + " Would you like to know more?"
Feedback kinds: correction (a failing sample corrected, a passing one rated 5), rating (5 when
it meets the target, else by how close: short gets 4/2/1 by length), preference (the two samples
of a prompt: the one closer to the target wins; "both_bad"/"tie" when equal). A noisy annotator
(``noisy`` in a run's name) flips 20 % of its judgements (seeded).

Language feedback (issue 14; the annotator never types a correction in these):
  critique               every sample rated; a passing one also praised ("Good: it starts with
                         'Ahoy!'."), a failing one critiqued with the target's instruction ("Start
                         your answer with 'Ahoy!'.", "Answer in at most 20 words."), then
                         ``suggest_revisions(sample, k=3)`` (the session's own model, adapter off,
                         the refiner's default strategies); the first candidate that meets the
                         target and still gives the original answer (``keeps_answer``) is
                         accepted (``accept_revision``: a correction with provenance), else all
                         are rejected (``reject_revisions``)
  critique+hindsight     the same judgements; ``train(hindsight=True)`` (critique-conditioned
                         SFT) and the held-out answers generated with the goal = the praise text
                         (``generate(..., goal=...)``, what ``Session.goal`` sets); its base is
                         the base model asked with that goal. Training samples are drawn without
                         the goal, so every critique condition judges the same kind of samples
  critique+fm            the same judgements; ``train(critique_weight=0.5)`` (feedback modelling)
  correction1+propagate  ONE typed correction (the first failing sample: for ahoy "Ahoy! " + its
                         text, a pattern edit), then ``propagate_edit(that correction,
                         sample_ids=<the round's other failing samples>)`` every round, each
                         suggestion accepted when it meets the target; failing samples it does
                         not reach are rated; passing ones rated 5
``--critique`` runs rating and these four on ahoy and short (3 rounds: 8, 16, 32 judged).
A run flag ``margin`` (``ahoy:correction:margin``) or ``--select margin`` draws the training
samples with ``generate(..., select="margin")`` (issue 11 item 5: of 3x as many candidates, the
ones the current adapter is least sure about, a quarter at random), ``random`` with
``select="random"`` (the same pool, picked at random: the same-pool baseline); without either,
plain samples. Judged samples stay the same budget.

Usage
-----
    python benchmarks/bench_loop.py                 # default model, 4 runs x 4 rounds (~20 min on 2 quiet cores, estimated)
    OMP_NUM_THREADS=1 python benchmarks/bench_loop.py ...   # on a machine other processes load: far faster there
    python benchmarks/bench_loop.py --runs ahoy:correction,short:preference --steps 8
    python benchmarks/bench_loop.py --critique --heldout 6 --max-new-tokens 32   # language feedback (issue 14)
    python benchmarks/bench_loop.py --runs ahoy:correction:random,ahoy:correction:margin   # select= margin vs random
    python benchmarks/bench_loop.py --quick         # tiny random model, a smoke test for CI
Seeds are fixed (sampling, training, noise): a rerun on the same machine and thread count should
print the same shares (wall times differ).
"""

from __future__ import annotations

import os

for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "TQDM_DISABLE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
    os.environ.setdefault(_k, _v)

import argparse
import random
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lf_widgets import Session  # noqa: E402
from lf_widgets.capability import capability_nll  # noqa: E402

TRAIN_PROMPTS = [
    "What is a volcano?", "How do I make a cup of tea?", "Why is the sky blue?",
    "What does a bank do?", "Tell me about elephants.", "How does a bicycle work?",
    "What is the capital of France?", "Give me a tip for sleeping better.", "What is rain?",
    "How do plants grow?", "What is a computer?", "Why do we need sleep?",
    "Describe a good breakfast.", "What is the Internet?", "How do fish breathe?",
    "What is a library for?", "How can I save money?", "What is music?",
    "Why do leaves change colour?", "How do airplanes fly?", "What is a good hobby?",
    "Tell me about the ocean.", "How do I learn to swim?", "What is gravity?",
    "What is a healthy snack?", "How do magnets work?", "What is a river?",
    "How do I write a letter?", "What is snow?", "Why do cats purr?",
    "What is a museum?", "How does the heart work?",
]
HELDOUT_PROMPTS = [
    "What is a mountain?", "How do I boil an egg?", "Why is the sea salty?",
    "Tell me about horses.", "What is electricity?", "How do bees make honey?",
    "What is a good way to study?", "What is the Moon?", "How do trains work?",
    "What is a forest?", "Why do we have seasons?", "How do I plant a tree?",
]
ROUND_JUDGED = (8, 8, 16, 32)  # new judged samples per round: the curve at 8, 16, 32, 64
DEFAULT_RUNS = "ahoy:correction,short:preference,question:correction,ahoy:correction:noisy"
CRITIQUE_KINDS = ("rating", "critique", "critique+hindsight", "critique+fm", "correction1+propagate")
CRITIQUE_RUNS = ",".join(f"{t}:{k}" for t in ("ahoy", "short") for k in CRITIQUE_KINDS)
REVISIONS_K = 3  # candidates asked of the refiner per critiqued sample
REFINE_TIMEOUT = 900.0  # seconds to wait for one sample's candidates (a loaded CPU is slow)
CRITIQUE_WEIGHT = 0.5  # lambda of critique+fm
SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def _first_sentence(text: str, max_words: int) -> str:
    first = SENTENCE_END.split(text.strip(), maxsplit=1)[0].strip()
    words = first.split()
    if len(words) > max_words:
        first = " ".join(words[:max_words]).rstrip(",;:") + "."
    return first or "Yes."


def keeps_answer(candidate: str, original: str, phrase: str = "") -> bool:
    """What the scripted annotator checks besides its target before it accepts a revision: the
    revision still gives the original answer, not something else. Without ``phrase`` (the
    target's own words, e.g. "Ahoy!"), at least half of its words occur in the original and no
    word fills more than a quarter of it. (The first run of the critique conditions accepted any
    candidate that met the target; the default model's own rewrites then taught it answers like
    "Ahoy! Ahoy! Ahoy! ..." and "Ahoy! You're right, I'll make sure to add ...".)"""
    words = [w.strip(".,!?;:'\"").lower() for w in candidate.replace(phrase, " ", 1).split()]
    words = [w for w in words if w]
    if not words:
        return False
    known = {w.strip(".,!?;:'\"").lower() for w in original.split()}
    most = max(words.count(w) for w in set(words))
    return sum(w in known for w in words) >= len(words) / 2 and most <= max(2, len(words) // 4)


def sound(text: str, phrase: str = "") -> bool:
    """A held-out answer that is still an answer: past the target's own words (``phrase``) at
    least three words, and no word fills more than a quarter of them. The target share alone
    rewards degeneration: an adapter that answers "Ahoy! Ahoy! Ahoy! ..." to everything meets
    the opening-phrase target 100 %."""
    words = [w.strip(".,!?;:'\"").lower() for w in text.replace(phrase, " ", 1).split()]
    words = [w for w in words if w]
    return len(words) >= 3 and max(words.count(w) for w in set(words)) <= max(2, len(words) // 4)


def _complete_sentences(text: str) -> str:
    """The text up to its last sentence end (a cut-off sample ends mid-sentence)."""
    text = text.strip()
    ends = [m.end() for m in re.finditer(r"[.!?](\s|$)", text)]
    return text[:ends[-1]].strip() if ends else text


@dataclass(frozen=True)
class Target:
    """What the scripted annotator wants, judged exactly, and what it says about it in words."""

    name: str
    meets: callable  # text -> bool
    score: callable  # text -> float, higher is closer to the target (preferences, ratings)
    correct: callable  # text -> the corrected text
    rating: callable  # text -> 1..5
    spoil: callable  # text -> a "correction" away from the target (a flipped judgement)
    critique: str = ""  # what it writes under a failing sample: the target as an instruction
    praise: str = ""  # what it writes under a passing one; also the hindsight goal
    typed: callable = None  # text -> the one typed correction of correction1+propagate
    phrase: str = ""  # the words the target adds (left out when checking keeps_answer)


def _ahoy() -> Target:
    meets = lambda t: t.lstrip().startswith("Ahoy!")  # noqa: E731
    return Target("ahoy", meets, lambda t: float(meets(t)),
                  lambda t: "Ahoy! " + (_complete_sentences(t) or "Hello."),
                  lambda t: 5 if meets(t) else 1,
                  lambda t: _complete_sentences(t.replace("Ahoy!", "", 1)) or "Hello.",
                  critique="Start your answer with 'Ahoy!'.",
                  praise="Good: it starts with 'Ahoy!'.",
                  typed=lambda t: "Ahoy! " + t,  # a pure prefix: a pattern edit
                  phrase="Ahoy!")


def _short(limit: int = 20) -> Target:
    words = lambda t: len(t.split())  # noqa: E731
    cut = lambda t: _first_sentence(t, limit)  # noqa: E731
    return Target("short", lambda t: words(t) <= limit, lambda t: -float(words(t)),
                  cut,
                  lambda t: 5 if words(t) <= limit else 4 if words(t) <= 2 * limit
                  else 2 if words(t) <= 3 * limit else 1,
                  lambda t: " ".join([t.strip()] * (limit // max(words(t), 1) + 2)),
                  critique=f"Answer in at most {limit} words.",
                  praise=f"Good: it answers in at most {limit} words.",
                  typed=cut)  # a cut is no repeatable edit: propagation finds nothing to repeat


def _question() -> Target:
    meets = lambda t: t.rstrip().endswith("?")  # noqa: E731
    ask = " Would you like to know more?"
    return Target("question", meets, lambda t: float(meets(t)),
                  lambda t: _first_sentence(t, 30) + ask,
                  lambda t: 5 if meets(t) else 1,
                  lambda t: t.rstrip().rstrip("?") + ".",
                  critique=f"End your answer with '{ask.strip()}'",
                  praise="Good: it ends with a question.",
                  typed=lambda t: t.rstrip() + ask,  # a suffix: a pattern edit
                  phrase=ask.strip())


TARGETS = {"ahoy": _ahoy, "short": _short, "question": _question}
KINDS = ("correction", "rating", "preference", "critique", "critique+hindsight", "critique+fm",
         "correction1+propagate")
FLAGS = ("noisy", "margin", "random")
# training options per kind: what differs between the critique conditions is only how they train
TRAIN_OPTIONS = {"critique+hindsight": {"hindsight": True},
                 "critique+fm": {"critique_weight": CRITIQUE_WEIGHT}}


@dataclass
class Annotator:
    """A script that judges a round's samples through the Session's public verbs."""

    target: Target
    kind: str  # which feedback it gives: one of KINDS
    noise: float = 0.0  # share of judgements flipped (rating, correction, preference kinds)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    stats: Counter = field(default_factory=Counter)  # revisions offered/accepted, ... (printed)
    strategies: Counter = field(default_factory=Counter)  # accepted candidates by strategy
    example: str = ""  # the first accepted revision, shown after the run (what training sees)
    typed_event: object = None  # correction1+propagate: the one typed correction
    refiner: object = None  # suggest_revisions(refiner=): None is the session's own model

    def _flip(self) -> bool:
        return self.noise > 0 and self.rng.random() < self.noise

    def judge(self, session: Session, samples: list) -> int:
        """Judge ``samples`` (two per prompt, in order); returns how many were judged."""
        if self.kind.startswith("critique"):
            return self._critique(session, samples)
        if self.kind == "correction1+propagate":
            return self._propagate(session, samples)
        if self.kind == "preference":
            for a, b in zip(samples[::2], samples[1::2]):
                session.record_preference(a.sample_id, b.sample_id, self._choice(a.text, b.text))
            return len(samples) // 2 * 2
        for s in samples:
            good = self.target.meets(s.text) != self._flip()
            if self.kind == "correction":
                if good:
                    session.record_rating(s.sample_id, 5)
                else:  # a flipped judgement on a good sample "corrects" it away from the target
                    fix = self.target.spoil if self.target.meets(s.text) else self.target.correct
                    session.record_correction(s.sample_id, fix(s.text))
            else:
                rating = self.target.rating(s.text)
                session.record_rating(s.sample_id, rating if good == self.target.meets(s.text)
                                      else 6 - rating)
        return len(samples)

    def _critique(self, session: Session, samples: list) -> int:
        """Rate every sample and say in words what it should be; never type a correction.

        All suggestion requests go out first (they queue on the model's thread), then the
        annotator reads each sample's candidates and keeps the first that meets its target.
        """
        asked = []
        for s in samples:
            good = self.target.meets(s.text)
            session.record_rating(s.sample_id, self.target.rating(s.text))
            session.record_critique(s.sample_id, self.target.praise if good else self.target.critique)
            if not good:
                asked.append((s, session.suggest_revisions(s.sample_id, k=REVISIONS_K,
                                                           refiner=self.refiner,
                                                           seed=1000 + s.sample_id)))
        for s, request in asked:
            candidates = request.wait(timeout=REFINE_TIMEOUT)
            if not request.done:  # too slow: judge what was written, stop the rest
                request.cancel()
                self.stats["timed out"] += 1
            self.stats["offered"] += 1
            self.stats["candidates"] += len(candidates)
            self.stats["meeting"] += sum(self.target.meets(c.text) for c in candidates)
            pick = next((c for c in candidates if self.target.meets(c.text)
                         and keeps_answer(c.text, s.text, self.target.phrase)), None)
            if pick is None:
                if candidates:
                    session.reject_revisions(s.sample_id, candidates)
                self.stats["rejected"] += 1
                continue
            session.accept_revision(s.sample_id, pick)
            self.stats["accepted"] += 1
            self.strategies[pick.strategy] += 1
            self.example = self.example or pick.text
        return len(samples)

    def _propagate(self, session: Session, samples: list) -> int:
        """One typed correction, ever; then the same edit suggested on the failing samples."""
        failing = []
        for s in samples:
            if self.target.meets(s.text):
                session.record_rating(s.sample_id, 5)
            elif self.typed_event is None:
                self.typed_event = session.record_correction(s.sample_id, self.target.typed(s.text))
                self.stats["typed"] += 1
                self.example = self.target.typed(s.text)
            else:
                failing.append(s)
        reached = set()
        if failing:
            suggestions = session.propagate_edit(self.typed_event,
                                                 sample_ids=[s.sample_id for s in failing])
            self.stats["offered"] += len(suggestions)
            self.stats["candidates"] += len(suggestions)
            for suggestion in suggestions:
                if suggestion.sample_id in reached:
                    continue
                if self.target.meets(suggestion.text):
                    self.stats["meeting"] += 1
                    session.accept_revision(suggestion.sample_id, suggestion)
                    self.stats["accepted"] += 1
                    self.strategies[suggestion.strategy] += 1
                    reached.add(suggestion.sample_id)
                else:
                    self.stats["rejected"] += 1
        for s in failing:
            if s.sample_id not in reached:  # the edit does not apply: a rating is all it gets
                session.record_rating(s.sample_id, self.target.rating(s.text))
                self.stats["unreached"] += 1
        return len(samples)

    def _choice(self, a: str, b: str) -> str:
        sa, sb = self.target.score(a), self.target.score(b)
        if sa == sb:
            return "tie" if self.target.meets(a) else "both_bad"
        choice = "a" if sa > sb else "b"
        return {"a": "b", "b": "a"}[choice] if self._flip() else choice


@dataclass
class Round:
    judged: int  # judged samples so far
    share: float  # held-out answers meeting the target
    sound: float = float("nan")  # of which also sound (see ``sound``): not degenerate
    objective: str = ""
    steps: int = 0
    loss: float = float("nan")
    seconds: float = 0.0  # the whole round: generate, judge, train, measure
    judge_s: float = 0.0  # of which judging (for critique kinds: waiting for the revisions)
    note: str = ""  # why nothing was trained this round


def held_out_share(session: Session, target: Target, args, goal: str | None = None) -> float:
    extra = {} if goal is None else {"goal": goal}  # a per-call goal, as Session.goal sets one
    out = session.generate(HELDOUT_PROMPTS[:args.heldout], n=1, progress=False, seed=777,
                           max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                           **extra)
    return (sum(target.meets(s.text) for s in out) / len(out),
            sum(target.meets(s.text) and sound(s.text, target.phrase) for s in out) / len(out))


def run_loop(spec: str, args, folder: Path, base_cache: dict) -> dict:
    target_name, kind, *flags = spec.split(":")
    target = TARGETS[target_name]()
    annotator = Annotator(target, kind, noise=0.2 if "noisy" in flags else 0.0)
    goal = target.praise if kind == "critique+hindsight" else None
    select = next((f for f in flags if f in ("margin", "random")),
                  None if args.select == "none" else args.select)
    store = folder / f"{spec.replace(':', '_').replace('+', '_')}.sqlite"
    if store.exists():
        raise SystemExit(f"{store} exists: --keep wants a folder without this run's log")
    session = Session(model=args.model, store=store, annotator="script", resume=False)
    if args.refine_tokens is not None and kind.startswith("critique"):
        from lf_widgets.refine import OwnModelRefiner

        annotator.refiner = OwnModelRefiner(session.model, max_new_tokens=args.refine_tokens)
    try:
        key = (target_name, goal)
        if key not in base_cache:  # same model, prompts, seed and goal: the same base answers
            base_cache[key] = held_out_share(session, target, args, goal)
        rounds, prompt_at = [Round(0, *base_cache[key])], 0
        print(f"  {spec:<34} base   : judged   0  share {rounds[0].share:6.1%}"
              + (f"  (goal {goal!r})" if goal else ""), flush=True)
        for r, new in enumerate(ROUND_JUDGED[:args.rounds]):
            t0 = time.perf_counter()
            prompts = TRAIN_PROMPTS[prompt_at:prompt_at + new // 2]
            prompt_at += len(prompts)
            chosen = {} if select is None else {"select": select}
            samples = session.generate(prompts, n=2, progress=False, seed=100 + r,
                                       max_new_tokens=args.max_new_tokens,
                                       temperature=args.temperature, **chosen)
            t_judge = time.perf_counter()
            judged = rounds[-1].judged + annotator.judge(session, samples)
            row = Round(judged, float("nan"), judge_s=time.perf_counter() - t_judge)
            try:
                nll = {} if args.nll_weight is None else {"nll_weight": args.nll_weight}
                run = session.train("auto", steps=args.steps, lr=args.lr, batch_size=4,
                                    checkpoint_every=0, seed=0, **nll,
                                    **TRAIN_OPTIONS.get(kind, {})).wait()
                row.objective, row.steps = run.objective, len(run.metrics)
                row.loss = run.metrics[-1].loss if run.metrics else float("nan")
            except ValueError as err:  # nothing to train on yet (e.g. only ties)
                row.objective, row.note = "none", str(err).split(".")[0]
            row.share, row.sound = held_out_share(session, target, args, goal)
            row.seconds = time.perf_counter() - t0
            rounds.append(row)
            print(f"  {spec:<34} round {r + 1}: judged {judged:>3}  share {row.share:6.1%} "
                  f"(sound {row.sound:6.1%})  "
                  f"{row.objective:<4} {row.steps:>2} steps  loss {row.loss:7.4f}  "
                  f"{row.seconds:6.1f} s (judging {row.judge_s:5.1f} s)  {row.note}", flush=True)
        guard = capability_nll(session.model)
    finally:
        session.close()
    if annotator.example:
        print(f"  {spec:<34} e.g. {'typed' if kind == 'correction1+propagate' else 'accepted'}: "
              f"{annotator.example[:110]!r}", flush=True)
    return {"spec": spec, "rounds": rounds, "capability": guard, "stats": annotator.stats,
            "strategies": annotator.strategies}


def _revised(res: dict) -> str:
    """"accepted/offered" for runs with suggested revisions, else "-"."""
    st = res["stats"]
    return f"{st['accepted']}/{st['offered']}" if st.get("offered") or st.get("typed") else "-"


def print_table(results: list[dict]) -> None:
    marks = [sum(ROUND_JUDGED[:i + 1]) for i in range(len(results[0]["rounds"]) - 1)]
    head = (f"{'run':<34} {'base':>6} " + " ".join(f"{'@' + str(m):>6}" for m in marks)
            + f" {'best':>6} {'drop':>5} {'s/round':>8} {'cap base':>9} {'cap tuned':>9} {'change':>7}"
            + f" {'revised':>8} {'sound':>6}")
    print("\nheld-out share meeting the target, by judged samples (drop: final below best, points;"
          " revised: revisions accepted/offered; sound: last round's answers meeting the target"
          " that are no degenerate repetition)")
    print(head)
    for res in results:
        shares = [r.share for r in res["rounds"]]
        cap = res["capability"]
        per_round = sum(r.seconds for r in res["rounds"][1:]) / max(len(shares) - 1, 1)
        print(f"{res['spec']:<34} {shares[0]:6.1%} " + " ".join(f"{s:6.1%}" for s in shares[1:])
              + f" {max(shares[1:]):6.1%} {100 * (max(shares[1:]) - shares[-1]):5.0f}"
              + f" {per_round:8.1f} {cap['base']:9.4f} {cap['tuned']:9.4f} {cap['change']:+7.2%}"
              + f" {_revised(res):>8} {res['rounds'][-1].sound:6.1%}"
              + ("  WARNING" if cap["warning"] else ""))
    revising = [res for res in results if res["stats"].get("offered") or res["stats"].get("typed")]
    if not revising:
        return
    print("\nrevisions (critique: one request of k=3 candidates per failing sample; propagate:"
          " one suggestion per failing sample the edit applies to)")
    print(f"{'run':<34} {'offered':>7} {'cands':>6} {'meet':>5} {'accepted':>8} {'rate':>6} "
          f"{'rejected':>8} {'typed':>5} {'unreached':>9} {'judging s/round':>15}  accepted by strategy")
    for res in revising:
        st, rounds = res["stats"], res["rounds"][1:]
        rate = st["accepted"] / st["offered"] if st["offered"] else float("nan")
        judging = sum(r.judge_s for r in rounds) / max(len(rounds), 1)
        strategies = ", ".join(f"{k} {v}" for k, v in res["strategies"].most_common()) or "-"
        if st["timed out"]:
            strategies += f" ({st['timed out']} requests timed out after {REFINE_TIMEOUT:.0f} s)"
        print(f"{res['spec']:<34} {st['offered']:>7} {st['candidates']:>6} {st['meeting']:>5} "
              f"{st['accepted']:>8} {rate:6.1%} {st['rejected']:>8} {st['typed']:>5} "
              f"{st['unreached']:>9} {judging:15.1f}  {strategies}")


def save_figure(results: list[dict], path: Path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for res in results:
        fig.add_trace(go.Scatter(x=[r.judged for r in res["rounds"]],
                                 y=[100 * r.share for r in res["rounds"]],
                                 mode="lines+markers", name=res["spec"]))
    fig.update_layout(title="Held-out answers meeting the target vs judged samples (0: base)",
                      xaxis_title="judged samples", yaxis_title="held-out share (%)",
                      yaxis_range=[-5, 105])
    fig.write_html(str(path), include_plotlyjs="cdn")


def _machine() -> str:
    """Load average and thread counts: the conditions a run's times were taken under."""
    import torch

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"load average {load}; cores {os.cpu_count()}; OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; torch threads {torch.get_num_threads()}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default=None, help="target:kind[:noisy][:margin|:random], comma-separated "
                   f"(default {DEFAULT_RUNS})")
    p.add_argument("--critique", action="store_true", help="the language-feedback conditions of "
                   f"issue 14: {CRITIQUE_RUNS} (3 rounds unless --rounds)")
    p.add_argument("--select", choices=("none", "margin", "random"), default="none",
                   help="how training samples are drawn: generate(select='margin') or "
                   "select='random' (the same pool of 3x the samples, picked at random), or "
                   "none: plain samples (default); a run flag :margin / :random overrides")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds per run (max 4: 8, 16, 32, 64 judged; default 4, 3 with --critique)")
    p.add_argument("--steps", type=int, default=8, help="training steps per round")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--nll-weight", type=float, default=None,
                   help="DPO: + this x the chosen answer's NLL (TrainConfig.nll_weight; default: "
                        "the library's)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--refine-tokens", type=int, default=None,
                   help="length cap of one suggested revision (default: the refiner's own, 96)")
    p.add_argument("--heldout", type=int, default=len(HELDOUT_PROMPTS), help="held-out prompts")
    p.add_argument("--model", default=None, help="default: the offline default model")
    p.add_argument("--out", type=Path, default=Path("bench_loop.html"), help="plotly figure (HTML)")
    p.add_argument("--keep", type=Path, default=None, help="write each run's feedback log "
                   "(<run>.sqlite) into this folder and keep it (default: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="tiny random model, few steps: a smoke test")
    args = p.parse_args(argv)
    if args.critique and args.runs is None:
        args.runs = CRITIQUE_RUNS
    if args.rounds is None:
        args.rounds = 3 if args.critique else 4
    if args.quick:
        args.model, args.steps, args.max_new_tokens, args.heldout = "tiny", 1, 8, 4
        args.refine_tokens = 16  # the tiny model writes noise up to the cap: keep it short
        args.runs = "ahoy:correction,short:preference:noisy,ahoy:critique+hindsight"
    args.runs = args.runs or DEFAULT_RUNS
    specs = [s.strip() for s in args.runs.split(",") if s.strip()]
    for spec in specs:
        parts = spec.split(":")
        if (parts[0] not in TARGETS or len(parts) < 2 or parts[1] not in KINDS
                or any(f not in FLAGS for f in parts[2:])):
            p.error(f"run {spec!r}: want target:kind[:noisy][:margin|:random], target in {list(TARGETS)}, "
                    f"kind in {list(KINDS)}")
        if "noisy" in parts[2:] and parts[1] not in ("correction", "rating", "preference"):
            p.error(f"run {spec!r}: the noisy annotator flips ratings, corrections and "
                    f"preferences; {parts[1]!r} has no noisy version")
    args.rounds = max(1, min(args.rounds, len(ROUND_JUDGED)))
    print(f"bench_loop: model={args.model or 'default'} runs={len(specs)} rounds={args.rounds} "
          f"steps/round={args.steps} lr={args.lr} max_new_tokens={args.max_new_tokens} "
          f"held-out prompts={args.heldout} select={args.select} nll_weight={'default' if args.nll_weight is None else args.nll_weight} "
          f"refine-tokens={args.refine_tokens or 'default'}", flush=True)
    print(f"start: {_machine()}", flush=True)
    t0, results, base_cache = time.perf_counter(), [], {}
    with tempfile.TemporaryDirectory(prefix="bench_loop-") as tmp:
        folder = Path(tmp) if args.keep is None else args.keep
        folder.mkdir(parents=True, exist_ok=True)
        for spec in specs:
            results.append(run_loop(spec, args, folder, base_cache))
    print_table(results)
    print(f"\ncapability: NLL per token of {results[0]['capability']['texts']} general texts "
          f"({results[0]['capability']['tokens']} tokens), base vs tuned at the end of each run")
    save_figure(results, args.out)
    print(f"end: {_machine()}")
    print(f"figure: {args.out}\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
