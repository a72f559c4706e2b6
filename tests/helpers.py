"""Test helpers shared by several test files."""

import json


def finished_samples(session, prompts, n=2, *, seed=0, max_new_tokens=8):
    """Samples that ended with an end-of-turn token, like a real model's answers.

    The tiny random model almost never emits its end-of-turn token, so its samples are cut off
    at ``max_new_tokens`` — and a cut-off sample is no SFT target (``samples.truncated``). For
    tests of training this generates samples and then marks them as finished in the log (their
    tokens plus the end-of-turn token), as if the model had stopped there.
    """
    out = session.generate(list(prompts), n=n, max_new_tokens=max_new_tokens, seed=seed,
                           progress=False)
    eos = session.tokenizer.eos_token_id
    rows = session.store.samples().set_index("sample_id")
    with session.store.atomic() as conn:
        for s in out:
            ids = list(rows.loc[s.sample_id, "token_ids"])
            ids = ids if ids and ids[-1] == eos else ids[:max_new_tokens - 1] + [eos]
            conn.execute("UPDATE samples SET token_ids = ?, truncated = 0 WHERE id = ?",
                         (json.dumps(ids), s.sample_id))
    return session.samples()[-len(out):] if out else []


def sqlite_rows(db, sql: str) -> list:
    """The rows of ``sql`` in the SQLite log at ``db``, read by a connection of the test's own
    (what a person would find there); [] while the file or its tables do not exist yet."""
    import sqlite3
    from pathlib import Path

    if not Path(db).exists():
        return []
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        con.close()
