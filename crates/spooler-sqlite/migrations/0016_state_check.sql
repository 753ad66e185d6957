-- spooler schema, version 16: the check on a job's state, and the unique index's condition, as
-- comparisons. SQLite evaluates `state IN ('scheduled', …)` in a CHECK by building a temporary
-- index of the names for each row it writes, which cost every insert, claim and finish about
-- 0.7 µs (a sixth of a drained job's time in the store); six `=` in the order the hot paths write
-- them cost a few steps. SQLite cannot change a CHECK in place, so the table is rebuilt as its
-- documented procedure says: a copy with the new check, the same rows and AUTOINCREMENT counter,
-- the same indexes.

CREATE TABLE spooler_jobs_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT, -- AUTOINCREMENT: ids are never reused, even after the newest job is deleted
    queue            TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    args             TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state = 'running' OR state = 'completed'
                                          OR state = 'available' OR state = 'scheduled'
                                          OR state = 'failed' OR state = 'cancelled'),
    priority         INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    timeout_ms       INTEGER,
    unique_key       TEXT,
    tags             TEXT    NOT NULL DEFAULT '[]',
    errors           TEXT    NOT NULL DEFAULT '[]',
    result           TEXT,
    lease_expires_at INTEGER,
    worker_id        TEXT,
    routed_from      INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    fence            INTEGER NOT NULL DEFAULT 0,
    origin           TEXT,
    meta             TEXT
);

INSERT INTO spooler_jobs_new (
    id, queue, kind, args, state, priority, attempt, max_attempts, run_at, created_at, started_at,
    finished_at, timeout_ms, unique_key, tags, errors, result, lease_expires_at, worker_id,
    routed_from, cancel_requested, fence, origin, meta)
SELECT
    id, queue, kind, args, state, priority, attempt, max_attempts, run_at, created_at, started_at,
    finished_at, timeout_ms, unique_key, tags, errors, result, lease_expires_at, worker_id,
    routed_from, cancel_requested, fence, origin, meta
  FROM spooler_jobs;

-- The copy's counter is its highest id; the old one may be higher (the newest jobs pruned).
DELETE FROM sqlite_sequence WHERE name = 'spooler_jobs_new';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'spooler_jobs_new', seq FROM sqlite_sequence WHERE name = 'spooler_jobs';

DROP TABLE spooler_jobs;
ALTER TABLE spooler_jobs_new RENAME TO spooler_jobs;

-- The indexes of versions 1 and 12, as they were, but for the unique index's `IN` list, which SQLite
-- also evaluated with a temporary index, twice for every change of a keyed job's state (old row
-- and new); the statements that look keys up name the same comparisons, so they still use it.
CREATE INDEX spooler_jobs_claim ON spooler_jobs (queue, priority DESC, run_at, id)
    WHERE state = 'available';
CREATE INDEX spooler_jobs_scheduled ON spooler_jobs (run_at, id)
    WHERE state = 'scheduled';
CREATE INDEX spooler_jobs_lease ON spooler_jobs (lease_expires_at)
    WHERE state = 'running';
CREATE INDEX spooler_jobs_finished ON spooler_jobs (state, finished_at)
    WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX spooler_jobs_unique ON spooler_jobs (unique_key)
    WHERE unique_key IS NOT NULL
      AND (state = 'scheduled' OR state = 'available' OR state = 'running');
CREATE INDEX spooler_jobs_routed_from ON spooler_jobs (routed_from) WHERE routed_from IS NOT NULL;
