-- spooler schema, version 5: each queue's defaults for the jobs inserted into it without their own
-- (written from a config file by the server, read by every insert, whoever inserts); and the
-- fencing token of claims apart from the attempt count, which a release now gives back.

CREATE TABLE spooler_queue_settings (
    queue        TEXT    PRIMARY KEY,
    max_attempts INTEGER CHECK (max_attempts >= 1),
    timeout_ms   INTEGER CHECK (timeout_ms >= 1),
    updated_at   INTEGER NOT NULL
);

-- One more at every claim, never less: the fence of every write on a running job. Rows claimed
-- before this version were fenced by their attempt: a running one keeps that as its fence (the
-- others need none until they are claimed again).
ALTER TABLE spooler_jobs ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
UPDATE spooler_jobs SET fence = attempt WHERE state = 'running';
