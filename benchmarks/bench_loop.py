"""The feedback loop under a scripted annotator: does feedback teach the model, per label, at what cost?

Public API only. For each run (a target and a feedback kind), a fresh Session and feedback log:
round after round, ``generate`` two samples for each of a few new training prompts, let a script
judge them exactly (``record_correction`` / ``record_rating`` / ``record_preference``), ``train``
(objective "auto": what the tool itself picks from that feedback), then ``generate`` one answer
per held-out prompt and count how many meet the target. Judged samples per round 8, 8, 16, 32,
so the learning curve is read at 8, 16, 32 and 64 judged samples; round 0 (no adapter) is the base
value. At the end, the capability guard (``lf_widgets.capability.capability_nll``): NLL per token
of general text, base vs tuned.

Targets (each judged exactly by a script):
  ahoy       the answer starts with "Ahoy!"       correction: "Ahoy! " + the answer
  short      at most 20 words                     correction: its first sentence, cut to 20 words
  question   ends with a question mark            correction: its first sentence + " Would you like to know more?"
Feedback kinds: correction (a failing sample corrected, a passing one rated 5), rating (5 when
it meets the target, else by how close: short gets 4/2/1 by length), preference (the two samples
of a prompt: the one closer to the target wins; "both_bad"/"tie" when equal). A noisy annotator
(``noisy`` in a run's name) flips 20 % of its judgements (seeded).

Usage
-----
    python benchmarks/bench_loop.py                 # default model, 4 runs x 4 rounds (~20 min on 2 quiet cores, estimated)
    OMP_NUM_THREADS=1 python benchmarks/bench_loop.py ...   # on a machine other processes load: far faster there
    python benchmarks/bench_loop.py --runs ahoy:correction,short:preference --steps 8
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
SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def _first_sentence(text: str, max_words: int) -> str:
    first = SENTENCE_END.split(text.strip(), maxsplit=1)[0].strip()
    words = first.split()
    if len(words) > max_words:
        first = " ".join(words[:max_words]).rstrip(",;:") + "."
    return first or "Yes."


def _complete_sentences(text: str) -> str:
    """The text up to its last sentence end (a cut-off sample ends mid-sentence)."""
    text = text.strip()
    ends = [m.end() for m in re.finditer(r"[.!?](\s|$)", text)]
    return text[:ends[-1]].strip() if ends else text


@dataclass(frozen=True)
class Target:
    """What the scripted annotator wants, judged exactly."""

    name: str
    meets: callable  # text -> bool
    score: callable  # text -> float, higher is closer to the target (preferences, ratings)
    correct: callable  # text -> the corrected text
    rating: callable  # text -> 1..5
    spoil: callable  # text -> a "correction" away from the target (a flipped judgement)


def _ahoy() -> Target:
    meets = lambda t: t.lstrip().startswith("Ahoy!")  # noqa: E731
    return Target("ahoy", meets, lambda t: float(meets(t)),
                  lambda t: "Ahoy! " + (_complete_sentences(t) or "Hello."),
                  lambda t: 5 if meets(t) else 1,
                  lambda t: _complete_sentences(t.replace("Ahoy!", "", 1)) or "Hello.")


def _short(limit: int = 20) -> Target:
    words = lambda t: len(t.split())  # noqa: E731
    return Target("short", lambda t: words(t) <= limit, lambda t: -float(words(t)),
                  lambda t: _first_sentence(t, limit),
                  lambda t: 5 if words(t) <= limit else 4 if words(t) <= 2 * limit
                  else 2 if words(t) <= 3 * limit else 1,
                  lambda t: " ".join([t.strip()] * (limit // max(words(t), 1) + 2)))


def _question() -> Target:
    meets = lambda t: t.rstrip().endswith("?")  # noqa: E731
    return Target("question", meets, lambda t: float(meets(t)),
                  lambda t: _first_sentence(t, 30) + " Would you like to know more?",
                  lambda t: 5 if meets(t) else 1,
                  lambda t: t.rstrip().rstrip("?") + ".")


TARGETS = {"ahoy": _ahoy, "short": _short, "question": _question}
KINDS = ("correction", "rating", "preference")


@dataclass
class Annotator:
    """A script that judges a round's samples through the Session's record_* verbs."""

    target: Target
    kind: str  # which feedback it gives: "correction", "rating" or "preference"
    noise: float = 0.0  # share of judgements flipped
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def _flip(self) -> bool:
        return self.noise > 0 and self.rng.random() < self.noise

    def judge(self, session: Session, samples: list) -> int:
        """Judge ``samples`` (two per prompt, in order); returns how many were judged."""
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
    objective: str = ""
    steps: int = 0
    loss: float = float("nan")
    seconds: float = 0.0
    note: str = ""  # why nothing was trained this round


def held_out_share(session: Session, target: Target, args) -> float:
    out = session.generate(HELDOUT_PROMPTS[:args.heldout], n=1, progress=False, seed=777,
                           max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    return sum(target.meets(s.text) for s in out) / len(out)


def run_loop(spec: str, args, folder: Path, base_cache: dict) -> dict:
    target_name, kind, *flags = spec.split(":")
    target = TARGETS[target_name]()
    annotator = Annotator(target, kind, noise=0.2 if "noisy" in flags else 0.0)
    session = Session(model=args.model, store=folder / f"{spec.replace(':', '_')}.sqlite",
                      annotator="script", resume=False)
    try:
        if target_name not in base_cache:  # same model, prompts and seed: the same base answers
            base_cache[target_name] = held_out_share(session, target, args)
        rounds, prompt_at = [Round(0, base_cache[target_name])], 0
        print(f"  {spec:<28} base   : judged   0  share {rounds[0].share:6.1%}", flush=True)
        for r, new in enumerate(ROUND_JUDGED[:args.rounds]):
            t0 = time.perf_counter()
            prompts = TRAIN_PROMPTS[prompt_at:prompt_at + new // 2]
            prompt_at += len(prompts)
            samples = session.generate(prompts, n=2, progress=False, seed=100 + r,
                                       max_new_tokens=args.max_new_tokens,
                                       temperature=args.temperature)
            judged = rounds[-1].judged + annotator.judge(session, samples)
            row = Round(judged, float("nan"))
            try:
                run = session.train("auto", steps=args.steps, lr=args.lr, batch_size=4,
                                    checkpoint_every=0, seed=0).wait()
                row.objective, row.steps = run.objective, len(run.metrics)
                row.loss = run.metrics[-1].loss if run.metrics else float("nan")
            except ValueError as err:  # nothing to train on yet (e.g. only ties)
                row.objective, row.note = "none", str(err).split(".")[0]
            row.share = held_out_share(session, target, args)
            row.seconds = time.perf_counter() - t0
            rounds.append(row)
            print(f"  {spec:<28} round {r + 1}: judged {judged:>3}  share {row.share:6.1%}  "
                  f"{row.objective:<4} {row.steps:>2} steps  loss {row.loss:7.4f}  "
                  f"{row.seconds:6.1f} s  {row.note}", flush=True)
        guard = capability_nll(session.model)
    finally:
        session.close()
    return {"spec": spec, "rounds": rounds, "capability": guard}


def print_table(results: list[dict]) -> None:
    marks = [sum(ROUND_JUDGED[:i + 1]) for i in range(len(results[0]["rounds"]) - 1)]
    head = (f"{'run':<28} {'base':>6} " + " ".join(f"{'@' + str(m):>6}" for m in marks)
            + f" {'best':>6} {'drop':>5} {'s/round':>8} {'cap base':>9} {'cap tuned':>9} {'change':>7}")
    print("\nheld-out share meeting the target, by judged samples (drop: final below best, points)")
    print(head)
    for res in results:
        shares = [r.share for r in res["rounds"]]
        cap = res["capability"]
        per_round = sum(r.seconds for r in res["rounds"][1:]) / max(len(shares) - 1, 1)
        print(f"{res['spec']:<28} {shares[0]:6.1%} " + " ".join(f"{s:6.1%}" for s in shares[1:])
              + f" {max(shares[1:]):6.1%} {100 * (max(shares[1:]) - shares[-1]):5.0f}"
              + f" {per_round:8.1f} {cap['base']:9.4f} {cap['tuned']:9.4f} {cap['change']:+7.2%}"
              + ("  WARNING" if cap["warning"] else ""))


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default=DEFAULT_RUNS, help="target:kind[:noisy], comma-separated")
    p.add_argument("--rounds", type=int, default=4, help="rounds per run (max 4: 8, 16, 32, 64 judged)")
    p.add_argument("--steps", type=int, default=8, help="training steps per round")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--heldout", type=int, default=len(HELDOUT_PROMPTS), help="held-out prompts")
    p.add_argument("--model", default=None, help="default: the offline default model")
    p.add_argument("--out", type=Path, default=Path("bench_loop.html"), help="plotly figure (HTML)")
    p.add_argument("--quick", action="store_true", help="tiny random model, few steps: a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.steps, args.max_new_tokens, args.heldout = "tiny", 1, 8, 4
        args.runs = "ahoy:correction,short:preference:noisy"
    specs = [s.strip() for s in args.runs.split(",") if s.strip()]
    for spec in specs:
        parts = spec.split(":")
        if parts[0] not in TARGETS or len(parts) < 2 or parts[1] not in KINDS:
            p.error(f"run {spec!r}: want target:kind[:noisy], target in {list(TARGETS)}, "
                    f"kind in {list(KINDS)}")
    args.rounds = max(1, min(args.rounds, len(ROUND_JUDGED)))
    print(f"bench_loop: model={args.model or 'default'} runs={len(specs)} rounds={args.rounds} "
          f"steps/round={args.steps} lr={args.lr} max_new_tokens={args.max_new_tokens} "
          f"held-out prompts={args.heldout}", flush=True)
    t0, results, base_cache = time.perf_counter(), [], {}
    with tempfile.TemporaryDirectory(prefix="bench_loop-") as tmp:
        for spec in specs:
            results.append(run_loop(spec, args, Path(tmp), base_cache))
    print_table(results)
    print(f"\ncapability: NLL per token of {results[0]['capability']['texts']} general texts "
          f"({results[0]['capability']['tokens']} tokens), base vs tuned at the end of each run")
    save_figure(results, args.out)
    print(f"figure: {args.out}\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
