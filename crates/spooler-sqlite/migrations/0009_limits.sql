-- spooler schema, version 9: rate limits and global concurrency. A queue's limits are stored with
-- its other defaults (JSON, as `spooler_core::QueueLimits` serializes), so they hold across every
-- process sharing the store; a limited queue's state (the rate's theoretical arrival time, in
-- microseconds) is read and written by the claims that take its jobs.

ALTER TABLE spooler_queue_settings ADD COLUMN limits TEXT;

CREATE TABLE spooler_queue_limits (
    queue   TEXT    PRIMARY KEY,
    tat     INTEGER,
    version INTEGER NOT NULL DEFAULT 0
);
