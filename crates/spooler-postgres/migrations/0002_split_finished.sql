-- spooler schema, version 2: finished jobs leave the hot table.
--
-- `jobs` becomes a table partitioned by state: `jobs_active` holds scheduled, available and
-- running jobs, `jobs_done` completed, failed and cancelled ones. A job that finishes moves to
-- `jobs_done` in the same UPDATE, so however much history is kept, the claim index, the heap the
-- workers update and the rows the vacuum must scan are only those of unfinished jobs. Statements
-- that read every job (get, list, counts) still read `jobs`.

ALTER TABLE {schema}.jobs RENAME TO jobs_v1;
DROP INDEX {schema}.jobs_claim, {schema}.jobs_scheduled, {schema}.jobs_running_lease,
    {schema}.jobs_finished, {schema}.jobs_unique_key;

CREATE SEQUENCE {schema}.job_ids AS bigint;

CREATE TABLE {schema}.jobs (
    id               bigint      NOT NULL DEFAULT nextval('{schema}.job_ids'),
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
) PARTITION BY LIST (state);
ALTER SEQUENCE {schema}.job_ids OWNED BY {schema}.jobs.id;

CREATE TABLE {schema}.jobs_active PARTITION OF {schema}.jobs
    FOR VALUES IN ('scheduled', 'available', 'running')
    WITH (
        -- room on each page so a lease renewal can be a HOT update
        fillfactor = 90,
        -- a queue table turns over quickly: vacuum after 1% dead rows, without throttling
        autovacuum_vacuum_scale_factor = 0.01,
        autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_insert_scale_factor = 0.05,
        autovacuum_analyze_scale_factor = 0.02,
        autovacuum_vacuum_cost_delay = 0
    );

CREATE TABLE {schema}.jobs_done PARTITION OF {schema}.jobs
    FOR VALUES IN ('completed', 'failed', 'cancelled')
    WITH (
        -- rows arrive and leave (prune, retry) but are never updated in place
        fillfactor = 100,
        autovacuum_vacuum_cost_delay = 0
    );

INSERT INTO {schema}.jobs SELECT * FROM {schema}.jobs_v1;
SELECT setval('{schema}.job_ids', coalesce(max(id), 0) + 1, false) FROM {schema}.jobs_v1;
DROP TABLE {schema}.jobs_v1;

-- Ids come from one sequence; each partition indexes its own.
ALTER TABLE {schema}.jobs_active ADD PRIMARY KEY (id);
ALTER TABLE {schema}.jobs_done ADD PRIMARY KEY (id);
-- The claim: available jobs of a queue in claim order, so a fetch never sorts the backlog.
CREATE INDEX jobs_claim ON {schema}.jobs_active (queue, priority DESC, run_at, id)
    WHERE state = 'available';
-- Promotion of scheduled jobs whose run_at has come.
CREATE INDEX jobs_scheduled ON {schema}.jobs_active (run_at, id) WHERE state = 'scheduled';
-- Rescue of running jobs whose lease lapsed.
CREATE INDEX jobs_running_lease ON {schema}.jobs_active (lease_expires_at) WHERE state = 'running';
-- Unique jobs: one unfinished job per key (every unfinished job is in jobs_active).
CREATE UNIQUE INDEX jobs_unique_key ON {schema}.jobs_active (unique_key)
    WHERE unique_key IS NOT NULL;
-- Pruning of finished jobs past their retention.
CREATE INDEX jobs_finished ON {schema}.jobs_done (finished_at);
-- Lookups of the latest job of a unique key, finished or not.
CREATE INDEX jobs_done_unique_key ON {schema}.jobs_done (unique_key) WHERE unique_key IS NOT NULL;
