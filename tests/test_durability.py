"""A killed kernel loses nothing that was shown as saved."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

from lf_widgets.store import FeedbackStore

CHILD = textwrap.dedent("""
    import sys
    from lf_widgets.store import FeedbackStore, SampleRecord
    store = FeedbackStore(sys.argv[1])
    ids = store.add_samples([SampleRecord(f"sample {i}", prompt="p") for i in range(20)])
    i = 0
    while True:
        event = store.record(ids[i % 20], "rating", 1 + i % 5, "child")
        # "saved" is reported only after the commit, as one write of one whole line
        sys.stdout.write(f"{event.id} {event.value}\\n")
        sys.stdout.flush()
        i += 1
""")


def test_sigkill_at_random_moment_loses_no_saved_rating(tmp_path):
    rng = random.Random(os.getpid())
    for trial in range(3):
        path = tmp_path / f"fb{trial}.sqlite"
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                                 text=True)
        reported = []
        deadline = time.monotonic() + 60
        first = child.stdout.readline()  # wait until the child is really writing
        assert first, "child process wrote nothing"
        reported.append(first)
        time.sleep(rng.uniform(0.05, 0.5))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        reported += child.stdout.readlines()  # lines the child printed before it died
        assert time.monotonic() < deadline
        # A line the kill cut short was never fully reported, so it does not count as "shown saved".
        whole = [line.split() for line in reported if line.endswith("\n")]
        assert all(len(parts) == 2 for parts in whole), reported
        saved = {int(event_id): int(value) for event_id, value in whole}
        assert len(saved) >= 1

        with FeedbackStore(path) as store:
            assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            events = store.events().set_index("id")
            for event_id, value in saved.items():
                assert events.loc[event_id, "value"] == value
            # and the log holds nothing the child did not at least start to save
            assert len(events) <= max(saved) + 1
        con = sqlite3.connect(path)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
