"""Store benchmark: click -> committed latency of one judgement, PostgreSQL on 127.0.0.1 next
to the SQLite file.

A click in a panel ends in ``FeedbackStore.record`` (through ``Session.record_rating``): the
sample is checked, the event inserted and the transaction committed before the call returns.
This times that call, from before it until it returns, ``--clicks`` times per log:

- ``sqlite``: a file, WAL, synchronous=FULL (fsync per commit);
- ``postgresql``: a throw-away server (tests/postgres.py: initdb + pg_ctl, fsync on, default
  synchronous_commit=on) on 127.0.0.1, scram password authentication, one connection per
  thread, connecting as an annotator role (row-level security checked on every insert);
- ``postgresql, 2 annotators``: the same while a second annotator's process clicks as fast as
  it can.

Printed: p50, p99 and max in ms, and the load average (issue 12's target: p99 <= 20 ms idle).
Figures only, no assertions: these machines are shared and noisy.

Usage: python benchmarks/bench_store.py [--clicks 500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/postgres.py

from lf_widgets.store import FeedbackStore, SampleRecord  # noqa: E402

_RIVAL = """
import os, sys
from lf_widgets.store import FeedbackStore
store = FeedbackStore(os.environ["LFW_URL"])
print("ready", flush=True)
while not sys.stdin.closed and not os.path.exists(os.environ["LFW_STOP"]):
    store.record(1, "rating", 3, store.role)
"""


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def clicks(store: FeedbackStore, who: str, n: int) -> list[float]:
    [sid] = store.add_samples([SampleRecord("a sample to click on", prompt="p")])
    for _ in range(20):  # warm up: connection, plans, caches
        store.record(sid, "rating", 4, who)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        store.record(sid, "rating", 1 + i % 5, who)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def report(name: str, ms: list[float]) -> None:
    print(f"{name:28s} p50 {statistics.median(ms):6.2f} ms   p99 {percentile(ms, 99):6.2f} ms"
          f"   max {max(ms):7.2f} ms   ({len(ms)} clicks)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clicks", type=int, default=500)
    args = parser.parse_args()
    from tests.postgres import Cluster
    from lf_widgets.store_pg import init_team

    with tempfile.TemporaryDirectory() as tmp, FeedbackStore(Path(tmp) / "fb.sqlite") as lite:
        report("sqlite (FULL)", clicks(lite, "ann", args.clicks))
    cluster = Cluster(fsync=True)
    try:
        db = cluster.new_database()
        init_team(cluster.url(db), ["alice", "bob"])
        cluster.sql("ALTER ROLE alice PASSWORD 'pw-a'", "ALTER ROLE bob PASSWORD 'pw-b'")
        with FeedbackStore(cluster.url(db, "alice", "pw-a")) as alice:
            report("postgresql 127.0.0.1", clicks(alice, "alice", args.clicks))
            stop = Path(tempfile.mkdtemp()) / "stop"
            rival = subprocess.Popen([sys.executable, "-c", _RIVAL], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env={**os.environ, "LFW_URL": cluster.url(db, "bob", "pw-b"),
                                          "LFW_STOP": str(stop)})
            assert rival.stdout.readline().strip() == "ready"
            try:
                report("postgresql, 2 annotators", clicks(alice, "alice", args.clicks))
            finally:
                stop.touch()
                rival.communicate(timeout=60)
    finally:
        cluster.stop()
    print("load average (1, 5, 15 min):", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
