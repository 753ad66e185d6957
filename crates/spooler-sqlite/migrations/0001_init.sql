-- spooler schema, version 1: jobs, paused queues, leaders and workers.
-- Times are INTEGER microseconds since the Unix epoch; args, result, errors and tags are JSON text.

CREATE TABLE spooler_jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT, -- AUTOINCREMENT: ids are never reused, even after the newest job is deleted
    queue            TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    args             TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('scheduled', 'available', 'running', 'completed', 'failed', 'cancelled')),
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
    cancel_requested INTEGER NOT NULL DEFAULT 0
);

-- The claim: available jobs of one queue in claim order, so a fetch never sorts the backlog.
CREATE INDEX spooler_jobs_claim ON spooler_jobs (queue, priority DESC, run_at, id)
    WHERE state = 'available';

-- Promotion of scheduled jobs whose run_at has come.
CREATE INDEX spooler_jobs_scheduled ON spooler_jobs (run_at, id)
    WHERE state = 'scheduled';

-- Rescue of running jobs whose lease lapsed.
CREATE INDEX spooler_jobs_lease ON spooler_jobs (lease_expires_at)
    WHERE state = 'running';

-- Pruning finished jobs by age (finished_at is set exactly for completed, failed and cancelled).
CREATE INDEX spooler_jobs_finished ON spooler_jobs (state, finished_at)
    WHERE finished_at IS NOT NULL;

-- Unique jobs: at most one unfinished job per key.
CREATE UNIQUE INDEX spooler_jobs_unique ON spooler_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'available', 'running');

-- Paused queues (a row exists only while paused).
CREATE TABLE spooler_queues (
    name       TEXT    PRIMARY KEY,
    paused     INTEGER NOT NULL DEFAULT 1,
    updated_at INTEGER NOT NULL
);

-- Leadership of background duties, held until expires_at unless renewed.
CREATE TABLE spooler_leaders (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);

-- Live workers, as their heartbeats report them.
CREATE TABLE spooler_workers (
    id           TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    queues       TEXT    NOT NULL,
    kinds        TEXT    NOT NULL,
    running      INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
