-- spooler schema, version 9: queue control. A queue's rate limit and global concurrency, and its
-- uniqueness within a period, are stored with its other defaults (JSON, as `spooler_core`'s
-- `QueueLimits` and `UniquePeriod` serialize), so they hold across every process sharing the
-- store. A limited queue's state (the rate's theoretical arrival time, in microseconds) is read
-- and written by the claims that take its jobs.

ALTER TABLE spooler_queue_settings ADD COLUMN limits TEXT;
ALTER TABLE spooler_queue_settings ADD COLUMN unique_period TEXT;

CREATE TABLE spooler_queue_limits (
    queue   TEXT    PRIMARY KEY,
    tat     INTEGER,
    version INTEGER NOT NULL DEFAULT 0
);

-- The key ledger holds, besides replayed spill lines (kept forever), the keys of jobs unique
-- within a period, each until its period ends (`expires_at`, microseconds).
ALTER TABLE spooler_replays ADD COLUMN expires_at INTEGER;
