-- spooler schema, version 9: rate limits and global concurrency. A queue's limits are stored with
-- its other defaults (JSON, as `spooler_core::QueueLimits` serializes), so they hold across every
-- process sharing the store; a limited queue's state (the rate's theoretical arrival time) is read
-- by a claim and written by its claiming statement only if no other claim wrote it since
-- (`version`), so claims from many processes never admit more than the limits allow.

ALTER TABLE {schema}.queue_settings ADD COLUMN limits jsonb;

CREATE TABLE {schema}.queue_limits (
    queue   text        PRIMARY KEY,
    tat     timestamptz,
    version int8        NOT NULL DEFAULT 0
);
