"""Import benchmark: CSV import time, and how long another process's clicks wait meanwhile.

For each size (default 2,000 / 12,000 / 50,000 rows) a fresh log gets one sample to click on;
a second **process** (this script with ``--clicker``) records a rating on it every 10 ms, timing
each ``FeedbackStore.record`` call (committed and fsync'ed, synchronous=FULL) from before the
call until it returns. Meanwhile this process imports a CSV of that many rows (500 prompts, 7
annotators, a critique on every third row), then imports it again (every row already present).

Printed per size: import wall time and rows/s, the longest the import held the write lock,
the re-import's time, the clicks that overlapped the import (how many, median, p99 and max
wait), and the rows added by the import and found present by the re-import. Targets (issue 10): 50,000 rows in <= 10 s; no click waits more than 1 s. Figures only, no
assertions: these machines are shared and noisy, so read them with the load average printed.

Usage: python benchmarks/bench_import.py [--sizes 2000,12000,50000] [--interval-ms 10]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lf_widgets.io import import_feedback
from lf_widgets.store import FeedbackStore, SampleRecord


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def clicker(path: str, sample_id: int, stop: str, interval_s: float) -> None:
    """The second process: click until ``stop`` exists, then print [[start, seconds], ...]."""
    store = FeedbackStore(path)
    clicks = []
    print("ready", flush=True)
    i = 0
    while not os.path.exists(stop):
        start = time.time()
        store.record(sample_id, "rating", 1 + i % 5, "clicker")
        clicks.append((start, time.time() - start))
        i += 1
        time.sleep(interval_s)
    store.close()
    print(json.dumps(clicks), flush=True)


def write_csv(path: Path, rows: int) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["user_id", "prompt", "text", "rating", "critique"])
        for i in range(rows):
            out.writerow([f"annotator {i % 7}", f"Prompt number {i % 500}: say something.",
                          f"Sample {i}: " + "a plausible answer of a hundred-odd characters, "
                          "long enough to look like a real completion.", 1 + i % 5,
                          "too long" if i % 3 == 0 else ""])


@contextlib.contextmanager
def lock_timer(store: FeedbackStore, held: list[float]):
    """Time every write transaction the store opens (how long others could be kept waiting)."""
    atomic = store.atomic

    @contextlib.contextmanager
    def timed():
        t0 = time.perf_counter()
        with atomic() as conn:
            yield conn
        held.append(time.perf_counter() - t0)

    store.atomic = timed
    try:
        yield
    finally:
        store.atomic = atomic


def bench(rows: int, folder: Path, interval_s: float) -> dict:
    path, stop, source = folder / "fb.sqlite", folder / "stop", folder / f"rows{rows}.csv"
    write_csv(source, rows)
    store = FeedbackStore(path)
    [sid] = store.add_samples([SampleRecord("the clicked sample", prompt="bench")])
    other = subprocess.Popen([sys.executable, __file__, "--clicker", str(path), str(sid), str(stop),
                              str(interval_s)], stdout=subprocess.PIPE, text=True)
    if other.stdout.readline().strip() != "ready":
        raise RuntimeError("the clicker process did not start")
    time.sleep(0.3)  # a few clicks before the import starts
    held: list[float] = []
    with lock_timer(store, held):
        t0 = time.time()
        first = import_feedback(store, source)
        t1 = time.time()
    lock_s = max(held)
    again = import_feedback(store, source)
    t2 = time.time()
    time.sleep(0.3)
    stop.touch()
    clicks = json.loads(other.communicate(timeout=60)[0].strip().splitlines()[-1])
    store.close()
    during = [dt for start, dt in clicks if start < t1 and start + dt > t0]
    return {"rows": rows, "import_s": t1 - t0, "rows_per_s": rows / (t1 - t0), "lock_s": lock_s,
            "reimport_s": t2 - t1, "added": int(first), "present_again": again.already_present,
            "clicks": len(during), "median_ms": 1000 * statistics.median(during),
            "p99_ms": 1000 * percentile(during, 99), "max_ms": 1000 * max(during),
            "all_max_ms": 1000 * max(dt for _, dt in clicks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="2000,12000,50000")
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("--clicker", nargs=4, metavar=("LOG", "SAMPLE", "STOP", "INTERVAL"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clicker:
        log, sample, stop, interval = args.clicker
        clicker(log, int(sample), stop, float(interval))
        return
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} (1 min) at start")
    header = (f"{'rows':>6} {'import s':>9} {'rows/s':>8} {'lock s':>7} {'re-import s':>11} "
              f"{'clicks':>6} {'median ms':>9} {'p99 ms':>7} {'max ms':>7} {'added':>6} "
              f"{'present':>7}")
    print(header)
    for rows in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            r = bench(rows, Path(tmp), args.interval_ms / 1000)
        print(f"{r['rows']:>6} {r['import_s']:>9.2f} {r['rows_per_s']:>8.0f} {r['lock_s']:>7.3f} "
              f"{r['reimport_s']:>11.2f} {r['clicks']:>6} {r['median_ms']:>9.1f} "
              f"{r['p99_ms']:>7.1f} {r['max_ms']:>7.1f} {r['added']:>6} "
              f"{r['present_again']:>7}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the end. clicks: the other "
          "process's clicks that overlapped the first import; lock s: its longest write "
          "transaction; added: rows the first import added; present: rows the re-import found "
          "already there")


if __name__ == "__main__":
    main()
