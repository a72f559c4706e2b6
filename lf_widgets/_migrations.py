"""The feedback log's schema, as numbered migrations (SQLite). Index i upgrades
``PRAGMA user_version`` i -> i+1; append, never edit (a log written by this version must open in
every later one)."""

from __future__ import annotations

__all__ = ["MIGRATIONS", "CURRENT_EVENTS_VIEW", "split_sql"]

# The one "current judgement" rule, for SQLite and PostgreSQL alike: the latest judgement of each
# kind per subject and annotator that no undo cancelled (see migration 2).
CURRENT_EVENTS_VIEW = """
    CREATE VIEW current_events AS
        SELECT e.* FROM events e
        WHERE e.kind != 'undo'
          AND NOT EXISTS (SELECT 1 FROM events u WHERE u.undoes = e.id)
          AND NOT EXISTS (
              SELECT 1 FROM events later
              WHERE later.subject = e.subject AND later.annotator = e.annotator
                AND later.kind = e.kind AND later.id > e.id
                AND NOT EXISTS (SELECT 1 FROM events u2 WHERE u2.undoes = later.id));
"""

MIGRATIONS: list[str] = [
    """
    CREATE TABLE prompts (
        id INTEGER PRIMARY KEY,
        text TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE samples (
        id INTEGER PRIMARY KEY,
        prompt_id INTEGER REFERENCES prompts(id),
        text TEXT NOT NULL,
        token_ids TEXT,
        model TEXT,
        adapter_step INTEGER,
        params TEXT NOT NULL DEFAULT '{}',
        source TEXT NOT NULL DEFAULT 'generated',
        created_at REAL NOT NULL
    );
    CREATE INDEX samples_prompt ON samples(prompt_id);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        sample_id INTEGER REFERENCES samples(id),
        kind TEXT NOT NULL CHECK (kind IN
            ('rating', 'critique', 'correction', 'preference', 'ab_vote', 'undo')),
        value TEXT,
        annotator TEXT NOT NULL,
        created_at REAL NOT NULL,
        undoes INTEGER REFERENCES events(id)
    );
    CREATE INDEX events_sample ON events(sample_id, annotator);
    CREATE INDEX events_undoes ON events(undoes);
    CREATE TABLE checkpoints (
        id INTEGER PRIMARY KEY,
        step INTEGER NOT NULL,
        path TEXT NOT NULL,
        objective TEXT,
        created_at REAL NOT NULL
    );
    CREATE TABLE train_steps (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        step INTEGER NOT NULL,
        objective TEXT NOT NULL,
        loss REAL,
        metrics TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    );
    """,
    # 2: the one "current judgement" rule, as a view. Every judgement names its subject (what it
    # judges): a sample for ratings, critiques and corrections; an unordered pair of samples for
    # a preference (the same pair shown later as (B, A) replaces it); an A/B test's item for a
    # vote. The current judgement of a subject by an annotator is the latest of each kind that
    # no undo cancelled: a changed vote replaces the earlier one, and undoing it brings the
    # earlier one back. Samples cut off at max_new_tokens are marked (no end-of-turn token).
    """
    ALTER TABLE events ADD COLUMN subject TEXT;
    UPDATE events SET subject = CASE
        WHEN kind IN ('rating', 'critique', 'correction') THEN 's:' || sample_id
        WHEN kind = 'preference' THEN 'p:' || min(sample_id, json_extract(value, '$.other'))
                                      || ':' || max(sample_id, json_extract(value, '$.other'))
        WHEN kind = 'ab_vote' THEN 'ab:' || json_extract(value, '$.test')
                                   || ':' || json_extract(value, '$.item')
        END
        WHERE kind != 'undo';
    CREATE INDEX events_subject ON events(subject, annotator, kind);
""" + CURRENT_EVENTS_VIEW + """    ALTER TABLE samples ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: find a sample by its prompt and text in O(log n) (imports de-duplicate samples this
    # way; without it each lookup scanned the table, so an import took quadratic time). The
    # index holds the texts a second time; a hash column would be smaller, but SQLite has no
    # built-in hash to fill it for rows that add_samples (or any other writer) inserts.
    """
    CREATE INDEX samples_prompt_text ON samples(prompt_id, text);
    """,
    # 4: teams. A work plan (``assignments``: which annotator judges which item; an item is a
    # subject key as in migration 2 — s:<sample>, p:<a>:<b> — or q:<prompt> for every sample of
    # a prompt; ``recheck`` rows re-show an item the annotator judged, to measure intra-rater
    # consistency) and a reviewer's settled judgements (``adjudications``; the latest per
    # subject and kind is in force, see the view). Both append-only like events.
    """
    CREATE TABLE assignments (
        id INTEGER PRIMARY KEY,
        plan TEXT NOT NULL,
        item TEXT NOT NULL,
        annotator TEXT NOT NULL,
        recheck INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE INDEX assignments_annotator ON assignments(annotator, item);
    CREATE TABLE adjudications (
        id INTEGER PRIMARY KEY,
        subject TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('rating', 'preference')),
        value TEXT NOT NULL,
        reviewer TEXT NOT NULL,
        note TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX adjudications_subject ON adjudications(subject, kind);
    CREATE VIEW current_adjudications AS
        SELECT a.* FROM adjudications a
        WHERE NOT EXISTS (SELECT 1 FROM adjudications later WHERE later.subject = a.subject
                          AND later.kind = a.kind AND later.id > a.id);
    """,
    # 5: learning from critiques. ``events.meta`` (JSON, nullable): where a correction came
    # from (typed, an accepted or edited revision, a propagated edit; its refiner, critique,
    # candidate, edit distance: _judgements.CORRECTION_META). A new kind, ``rejection``: the
    # person turned a sample's suggested revisions down (subject: the sample, like a critique).
    # SQLite cannot change a CHECK constraint, so the table is rebuilt the SQLite way: a new
    # table, every row copied with its id, the old one dropped, the new one renamed, its
    # indexes and the view made again (the view is dropped first: a rename checks the whole
    # schema, and a view of a missing table fails that check). The new table's self-reference
    # names itself, so dropping the old table breaks no reference, and the rename carries it.
    """
    DROP VIEW current_events;
    CREATE TABLE events_v5 (
        id INTEGER PRIMARY KEY,
        sample_id INTEGER REFERENCES samples(id),
        kind TEXT NOT NULL CHECK (kind IN
            ('rating', 'critique', 'correction', 'preference', 'ab_vote', 'rejection', 'undo')),
        value TEXT,
        annotator TEXT NOT NULL,
        created_at REAL NOT NULL,
        undoes INTEGER REFERENCES events_v5(id),
        subject TEXT,
        meta TEXT
    );
    INSERT INTO events_v5(id, sample_id, kind, value, annotator, created_at, undoes, subject)
        SELECT id, sample_id, kind, value, annotator, created_at, undoes, subject FROM events
        ORDER BY id;
    DROP TABLE events;
    ALTER TABLE events_v5 RENAME TO events;
    CREATE INDEX events_sample ON events(sample_id, annotator);
    CREATE INDEX events_undoes ON events(undoes);
    CREATE INDEX events_subject ON events(subject, annotator, kind);
""" + CURRENT_EVENTS_VIEW,
]


def split_sql(script: str) -> list[str]:
    # executescript() would COMMIT our transaction; our migrations hold no ';' inside strings.
    return [s.strip() for s in script.split(";") if s.strip()]
