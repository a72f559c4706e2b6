"""Feedback-path benchmark: click latency, how soon ``rate()`` shows something, streaming speed.

Prints figures and, where there is a reference, the ratio against it measured in the same run
(no assertions):

(a) 1,000 clicks on the rating panel's real buttons (tiny model; the model plays no part in a
    click), each timed from ``button.click()`` until it returns — by then the event is committed
    (synchronous=FULL, so fsync'ed). Target: p99 <= 20 ms.
(d) ``session.rate(prompts)`` on the default model in a fresh ``lf_widgets.Session()``: time from
    the call to (1) its return (the panel exists), (2) the first sampled token (the generation
    streamer's first ``put``, wrapped here), (3) the first ``"partial"`` event handled by the
    panel (the first text a card shows; the worker decodes partial text at most every 0.2 s), and
    (4) the first ``"generated"`` event handled by the panel (the first whole sample, stored,
    shown and ratable). The first call after loading ("cold") and the median of later ones.
    Targets: first sample <= 2 s, first token <= 1 s.
(b) Streaming throughput: generated tokens per second of ``session.generate`` (queued on the
    model's thread, ``stream_completions`` with its streamer, every sample stored and announced)
    and of ``stream_completions`` alone on that thread, against a plain ``model.generate`` on the
    same thread, same token inputs and seed, rounds interleaved, medians; the token ids of the
    three are compared. Target: ratio >= 0.95.
(c) Clicks while a DPO run trains the default model on the model's thread: the same click
    latency, side by side with (a). Target: p99 <= 100 ms.

Usage: python benchmarks/bench_feedback.py [--clicks 1000] [--rounds 5] [--repeats 5] [--quick]
"""

from __future__ import annotations

import os

for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)

import argparse
import contextlib
import math
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

import lf_widgets as lfw

PROMPTS = ["Write a haiku about the sea.", "Explain in one sentence what a language model is."]


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# -- (a), (c): clicks --------------------------------------------------------------------------
def bench_clicks(clicks: int, folder: Path) -> dict:
    session = lfw.Session("tiny", store=folder / "clicks.sqlite", annotator="bench")
    session.generate(PROMPTS, n=4, max_new_tokens=4, progress=False)
    panel = session.rate(display=False)
    result = click_latencies(panel, clicks)
    stored = len(session.store.events())
    panel.close()
    session.close()
    assert stored == clicks, f"only {stored} of {clicks} clicks were stored"
    return result


def click_latencies(panel, clicks: int, pause_s: float = 0.0) -> dict:
    """Click the panel's real rating buttons; time each click until it returns (= committed)."""
    latencies = []
    for i in range(clicks):
        button = panel.cards[i % len(panel.cards)].stars[i % 5]
        t0 = time.perf_counter()
        button.click()
        latencies.append((time.perf_counter() - t0) * 1000)
        time.sleep(pause_s)
    return {"median_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies)}


def bench_clicks_while_training(session, clicks: int) -> dict:
    """Rating clicks (one every ~20 ms, as a brisk person) while training steps run."""
    samples = session.generate(PROMPTS, n=4, max_new_tokens=24, seed=0, progress=False)
    for i, s in enumerate(samples):
        session.record_rating(s.sample_id, [5, 1, 4, 2][i % 4])
    panel = session.rate(display=False)
    t0 = time.perf_counter()
    run = session.train("dpo", steps=10_000, lr=1e-4, checkpoint_every=0)
    returned_s = time.perf_counter() - t0  # examples, attaching LoRA, the first peft import
    steps_running = threading.Event()
    stop = session.on("step", lambda _m: steps_running.set())
    steps_running.wait()  # clicks must land while steps are really running
    stop()
    result = click_latencies(panel, clicks, pause_s=0.02)
    result["steps"] = len(run.metrics)
    result["train_returned_s"] = returned_s
    session.stop_training()
    panel.close()
    return result


# -- (d): how soon rate() shows something ------------------------------------------------------
@contextlib.contextmanager
def first_token_clock(marks: dict):
    """Record in ``marks["token"]`` when the generation streamer first receives a sampled token."""
    from lf_widgets import generation

    real_put = generation._RowStreamer.put

    def put(self, value):
        if value.dim() == 1 and "token" not in marks:  # the first call (2-D) is the prompt
            marks["token"] = time.perf_counter()
        return real_put(self, value)

    generation._RowStreamer.put = put
    try:
        yield
    finally:
        generation._RowStreamer.put = real_put


def time_rate(session, n: int, seed: int, max_new_tokens: int) -> dict:
    """One ``session.rate(PROMPTS, n)``: seconds from the call to each first thing."""
    marks: dict[str, float] = {}

    def mark(key):
        return lambda _payload: marks.setdefault(key, time.perf_counter())

    with first_token_clock(marks):
        t0 = time.perf_counter()
        panel = session.rate(PROMPTS, n=n, display=False, seed=seed, max_new_tokens=max_new_tokens)
        marks["returned"] = time.perf_counter()
        # Subscribed after the panel's own listeners: these fire once the panel has handled the
        # event (events are called in subscription order). An event before this line cannot be
        # missed: the panel was subscribed first, and it already shows what arrived.
        stops = [session.on("partial", mark("partial")), session.on("generated", mark("generated"))]
        if panel.arrived:
            marks.setdefault("generated", marks["returned"])
        panel.wait()
        marks["all"] = time.perf_counter()
    for stop in stops:
        stop()
    panel.close()
    return {k: v - t0 for k, v in marks.items()}


def bench_first_sample(session, repeats: int, n: int, max_new_tokens: int) -> dict:
    """The first rate() after loading (cold), then ``repeats`` more (warm)."""
    cold = time_rate(session, n, 1000, max_new_tokens)
    warm = [time_rate(session, n, 1001 + r, max_new_tokens) for r in range(repeats)]
    keys = ("returned", "token", "partial", "generated", "all")
    def seen(k):  # the runs in which this moment happened (a short run may have no partial text)
        return [w[k] for w in warm if k in w]

    return {"cold": cold,
            "warm": {k: statistics.median(seen(k)) for k in keys if seen(k)},
            "warm_max": {k: max(seen(k)) for k in keys if seen(k)}}


# -- (b): streaming throughput -----------------------------------------------------------------
def bench_throughput(session, rounds: int, n: int, max_new_tokens: int) -> dict:
    """Tokens/s of session.generate and of stream_completions against plain model.generate,
    all three on the model's thread (one thread, one OpenMP team), interleaved."""
    from lf_widgets.generation import _left_pad, chat_prompt_ids, stop_ids, stream_completions
    from lf_widgets.sampling import SamplingConfig

    owner = session.model
    tok = owner.tokenizer
    ids, mask = owner.call(lambda: _left_pad([chat_prompt_ids(tok, p) for p in PROMPTS], owner.pad_id))
    stop = owner.call(lambda: stop_ids(owner.model, tok))

    def plain(seed):  # on the model's thread
        torch.manual_seed(seed)
        with torch.inference_mode():
            return owner.model.generate(input_ids=ids, attention_mask=mask,
                                        max_new_tokens=max_new_tokens, do_sample=True,
                                        temperature=0.8, top_p=0.95, top_k=None,
                                        num_return_sequences=n, pad_token_id=owner.pad_id)

    def streamed(seed):  # on the model's thread, as the panel's job runs it (partials included)
        got = {}
        config = SamplingConfig(max_new_tokens=max_new_tokens, seed=seed)
        stream_completions(owner.model, tok, PROMPTS, n, config,
                           on_sample=lambda slot, c: got.__setitem__(slot, c.token_ids),
                           on_partial=lambda slot, text: None)
        return got

    def ours(seed):  # the whole path, from this thread
        return session.generate(PROMPTS, n=n, max_new_tokens=max_new_tokens, seed=seed,
                                progress=False)

    def stored_ids(samples):
        rows = session.store.samples().set_index("sample_id")["token_ids"]
        return [list(rows[s.sample_id]) for s in samples]

    contenders = {  # name -> (the timed call, its token ids per slot, read after the clock)
        "plain model.generate": (lambda s: owner.call(lambda: plain(s)),
                                 lambda out: [_until_stop(r, stop) for r in out[:, ids.shape[1]:].tolist()]),
        "stream_completions": (lambda s: owner.call(lambda: streamed(s)),
                               lambda got: [got[k] for k in sorted(got)]),
        "session.generate": (ours, stored_ids),
    }
    for run, _ in contenders.values():
        run(0)  # warm-up
    rates = {k: [] for k in contenders}
    same = True
    for r in range(rounds):
        names = list(contenders) if r % 2 == 0 else list(contenders)[::-1]
        tokens = {}
        for name in names:
            run, token_ids = contenders[name]
            t0 = time.perf_counter()
            out = run(100 + r)
            seconds = time.perf_counter() - t0
            tokens[name] = token_ids(out)
            rates[name].append(sum(map(len, tokens[name])) / seconds)
        same &= all(t == tokens["plain model.generate"] for t in tokens.values())
    return {"rates": {k: statistics.median(v) for k, v in rates.items()}, "same_tokens": same,
            "tokens": sum(map(len, tokens["plain model.generate"]))}


def _until_stop(row: list[int], stop: set[int]) -> list[int]:
    for i, t in enumerate(row):
        if t in stop:
            return row[:i + 1]
    return row


# -- the run -----------------------------------------------------------------------------------
def report_first_sample(f: dict, model: str, n: int, max_new_tokens: int) -> None:
    def at(d, key):
        # A short run can finish every sample before the worker's first 0.2 s partial-text
        # update, so "partial" may never happen: say so rather than print nan.
        value = d.get(key, float("nan"))
        return "none" if math.isnan(value) else f"{value:.2f} s"

    def line(label, d):
        return (f"    {label:<18} returned {d['returned']:.3f} s · first token {at(d, 'token')}"
                f" · first partial text {at(d, 'partial')} · first sample {at(d, 'generated')}"
                f" · all {d['all']:.2f} s")

    w = f["warm"]
    print(f"(d) rate({len(PROMPTS)} prompts, n={n}, max_new_tokens={max_new_tokens}) on {model}, "
          f"seconds from the call:\n" + line("cold (1st call)", f["cold"]) + "\n"
          + line("warm (median)", w) + "\n" + line("warm (max)", f["warm_max"]))
    for label, key, target in (("first token", "token", 1.0), ("first visible sample", "generated", 2.0)):
        verdict = "met" if f["cold"].get(key, 99) <= target and w.get(key, 99) <= target else "MISSED"
        print(f"    time-to-{label}: cold {f['cold'].get(key, float('nan')):.2f} s, warm "
              f"{w.get(key, float('nan')):.2f} s   target <= {target:g} s: {verdict}")


def report_throughput(t: dict, model: str, n: int, max_new_tokens: int) -> None:
    rates = t["rates"]
    plain = rates["plain model.generate"]
    print(f"(b) streaming throughput, {len(PROMPTS)} prompts x {n} samples x <= {max_new_tokens} "
          f"tokens on {model} ({t['tokens']} tokens a round), medians, tokens/s:")
    for name, rate in rates.items():
        ratio = rate / plain
        tail = "" if name.startswith("plain") else \
            f" ratio {ratio:.3f}   target >= 0.95: {'met' if ratio >= 0.95 else 'MISSED'}"
        print(f"    {name:<22} {rate:8.1f}{tail}")
    print(f"    same token ids in all three: {'yes' if t['same_tokens'] else 'NO'}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds for (b)")
    parser.add_argument("--repeats", type=int, default=5, help="warm rate() calls for (d)")
    parser.add_argument("--n", type=int, default=4, help="samples per prompt for (b) and (d)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--model", default="default", help="model for (b), (c), (d): default or tiny")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads, set on the main and the model's thread (default: "
                             "torch's own choice, as the package runs)")
    parser.add_argument("--quick", action="store_true", help="tiny model, few clicks: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.clicks, args.rounds, args.repeats = "tiny", 50, 1, 1
        args.max_new_tokens = min(args.max_new_tokens, 8)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"bench_feedback: {torch.get_num_threads()} torch threads"
          f"{' (--threads)' if args.threads else ''}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; model {args.model}")
    with tempfile.TemporaryDirectory() as tmp:
        c = bench_clicks(args.clicks, Path(tmp))
        print(f"(a) rating click -> committed, {args.clicks} clicks: median {c['median_ms']:.2f} ms, "
              f"p99 {c['p99_ms']:.2f} ms, max {c['max_ms']:.2f} ms   target p99 <= 20 ms: "
              f"{'met' if c['p99_ms'] <= 20 else 'MISSED'}", flush=True)
        t0 = time.perf_counter()
        session = lfw.Session(None if args.model == "default" else args.model,
                              store=Path(tmp) / "feedback.sqlite", annotator="bench")
        print(f"    Session() loaded {session.model_name} in {time.perf_counter() - t0:.1f} s")
        if args.threads:  # a thread's OpenMP team size is its own: set it where torch runs
            session.model.call(lambda: torch.set_num_threads(args.threads))
        f = bench_first_sample(session, args.repeats, args.n, args.max_new_tokens)
        report_first_sample(f, args.model, args.n, args.max_new_tokens)
        t = bench_throughput(session, args.rounds, args.n, args.max_new_tokens)
        report_throughput(t, args.model, args.n, args.max_new_tokens)
        tc = bench_clicks_while_training(session, min(args.clicks, 300))
        print(f"(c) rating click -> committed while {args.model} trains ({tc['steps']} DPO steps "
              f"ran): median {tc['median_ms']:.2f} ms, p99 {tc['p99_ms']:.2f} ms, max "
              f"{tc['max_ms']:.2f} ms | idle p99 {c['p99_ms']:.2f} ms, ratio "
              f"{tc['p99_ms'] / c['p99_ms']:.1f}x   target p99 <= 100 ms: "
              f"{'met' if tc['p99_ms'] <= 100 else 'MISSED'}; train() returned in "
              f"{tc['train_returned_s']:.2f} s")
        session.close()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
