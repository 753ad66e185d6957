-- spooler schema, version 9: queue control. A queue's rate limit and global concurrency, and its
-- uniqueness within a period, are stored with its other defaults (JSON, as `spooler_core`'s
-- `QueueLimits` and `UniquePeriod` serialize), so they hold across every process sharing the
-- store. A limited queue's state (the rate's theoretical arrival time) is read by a claim and
-- written by its claiming statement only if no other claim wrote it since (`version`), so claims
-- from many processes never admit more than the limits allow.

ALTER TABLE {schema}.queue_settings ADD COLUMN limits jsonb;
ALTER TABLE {schema}.queue_settings ADD COLUMN unique_period jsonb;

CREATE TABLE {schema}.queue_limits (
    queue   text        PRIMARY KEY,
    tat     timestamptz,
    version int8        NOT NULL DEFAULT 0
);

-- The key ledger holds, besides replayed spill lines (kept forever), the keys of jobs unique
-- within a period, each until its period ends (`expires_at`).
ALTER TABLE {schema}.replays ADD COLUMN expires_at timestamptz;
