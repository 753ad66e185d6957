-- spooler schema, version 1. `{schema}` is replaced by the configured schema name.

CREATE TABLE {schema}.jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue            text        NOT NULL,
    kind             text        NOT NULL,
    args             jsonb       NOT NULL,
    state            text        NOT NULL
        CHECK (state IN ('scheduled', 'available', 'running', 'completed', 'failed', 'cancelled')),
    priority         integer     NOT NULL DEFAULT 0,
    attempt          integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL CHECK (max_attempts >= 1),
    run_at           timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    timeout_ms       bigint      CHECK (timeout_ms > 0),
    unique_key       text,
    tags             text[]      NOT NULL DEFAULT '{}',
    errors           jsonb       NOT NULL DEFAULT '[]',
    result           jsonb,
    lease_expires_at timestamptz,
    worker_id        text,
    routed_from      bigint,
    cancel_requested boolean     NOT NULL DEFAULT false
) WITH (
    -- room on each page so a state change can be a HOT update when no indexed column moves
    fillfactor = 90,
    -- a queue table turns over quickly: vacuum after 1% dead rows, without throttling
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

-- The claim: available jobs of a queue in claim order, so a fetch never sorts the backlog.
CREATE INDEX jobs_claim ON {schema}.jobs (queue, priority DESC, run_at, id)
    WHERE state = 'available';
-- Promotion of scheduled jobs whose run_at has come.
CREATE INDEX jobs_scheduled ON {schema}.jobs (run_at, id) WHERE state = 'scheduled';
-- Rescue of running jobs whose lease lapsed.
CREATE INDEX jobs_running_lease ON {schema}.jobs (lease_expires_at) WHERE state = 'running';
-- Pruning of finished jobs past their retention.
CREATE INDEX jobs_finished ON {schema}.jobs (finished_at)
    WHERE state IN ('completed', 'failed', 'cancelled');
-- Unique jobs: one unfinished job per key.
CREATE UNIQUE INDEX jobs_unique_key ON {schema}.jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'available', 'running');

CREATE TABLE {schema}.paused_queues (
    queue     text PRIMARY KEY,
    paused_at timestamptz NOT NULL
);

CREATE TABLE {schema}.leaders (
    name       text PRIMARY KEY,
    holder     text        NOT NULL,
    elected_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TABLE {schema}.workers (
    id           text PRIMARY KEY,
    host         text        NOT NULL,
    pid          bigint      NOT NULL,
    queues       jsonb       NOT NULL,
    kinds        text[]      NOT NULL,
    running      integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL
);
CREATE INDEX workers_last_seen ON {schema}.workers (last_seen_at);
