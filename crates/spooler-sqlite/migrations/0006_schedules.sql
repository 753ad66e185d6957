-- spooler schema, version 6: periodic jobs. Each row is a declared schedule and where it stands;
-- a tick moves next_run_at in the transaction that enqueues its job, under a compare-and-set on
-- the value it was planned from, so each tick enqueues one job however many processes fire it.

CREATE TABLE spooler_schedules (
    name        TEXT    PRIMARY KEY,
    owner       TEXT    NOT NULL,
    cron        TEXT    NOT NULL,
    tz          TEXT,
    job         TEXT    NOT NULL,
    catch_up    TEXT    NOT NULL CHECK (catch_up IN ('one', 'none')),
    paused      INTEGER NOT NULL DEFAULT 0,
    next_run_at INTEGER NOT NULL,
    last_run_at INTEGER,
    last_job_id INTEGER,
    updated_at  INTEGER NOT NULL
);
