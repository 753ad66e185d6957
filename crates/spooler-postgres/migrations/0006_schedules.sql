-- spooler schema, version 6: periodic jobs. Each row is a declared schedule and where it stands;
-- a tick moves next_run_at in the transaction that enqueues its job, under a compare-and-set on
-- the value it was planned from, so each tick enqueues one job however many processes fire it.

CREATE TABLE {schema}.schedules (
    name        text        PRIMARY KEY,
    owner       text        NOT NULL,
    cron        text        NOT NULL,
    tz          text,
    job         jsonb       NOT NULL,
    catch_up    text        NOT NULL CHECK (catch_up IN ('one', 'none')),
    paused      boolean     NOT NULL DEFAULT false,
    next_run_at timestamptz NOT NULL,
    last_run_at timestamptz,
    last_job_id int8,
    updated_at  timestamptz NOT NULL
);
