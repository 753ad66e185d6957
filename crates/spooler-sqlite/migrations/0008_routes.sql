-- spooler schema, version 8: routes. A queue's `on_failure` and `on_success` routes are stored
-- with its other defaults (JSON, as `spooler_core::Routes` serializes), so every process that
-- finishes a job routes it alike; a routed job carries the job its chain began with and the hops
-- taken since (`origin`, JSON as `spooler_core::Origin`), which a spill writes and `max_hops` bounds.

ALTER TABLE spooler_queue_settings ADD COLUMN routes TEXT;
ALTER TABLE spooler_jobs ADD COLUMN origin TEXT;

-- The messages replayed from a spill, by key, with the job each enqueued: a key is replayed once.
CREATE TABLE spooler_replays (
    key         TEXT    PRIMARY KEY,
    job_id      INTEGER,
    replayed_at INTEGER NOT NULL
);
