-- spooler schema, version 10: enqueue from SQL. `{schema}.enqueue(kind, args, …)` lets triggers,
-- psql and other languages enqueue inside their own transactions. It writes a request, not a job:
-- what a job becomes (its queue's defaults, uniqueness within a period) is decided in Rust, once,
-- so every process sharing the store turns requests into jobs through the same insert as any
-- enqueue, woken by the notification the function sends when its transaction commits. A request
-- that cannot become a job stays here with the reason in `refused`, for an operator.

CREATE TABLE {schema}.job_requests (
    id           bigserial   PRIMARY KEY,
    queue        text        NOT NULL,
    kind         text        NOT NULL,
    args         jsonb       NOT NULL,
    priority     integer     NOT NULL,
    run_at       timestamptz,
    max_attempts integer,
    timeout_ms   bigint,
    unique_key   text,
    tags         text[]      NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    refused      text
);

-- Returns the request's id. The job appears once a spooler process has taken the request, within
-- moments of the commit; with a unique_key (or a queue unique within a period) it may resolve to
-- the job already holding the key.
CREATE FUNCTION {schema}.enqueue(
    kind         text,
    args         jsonb       DEFAULT '{}',
    queue        text        DEFAULT 'default',
    priority     integer     DEFAULT 0,
    run_at       timestamptz DEFAULT NULL,
    max_attempts integer     DEFAULT NULL,
    timeout      interval    DEFAULT NULL,
    unique_key   text        DEFAULT NULL,
    tags         text[]      DEFAULT '{}'
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    request bigint;
BEGIN
    INSERT INTO {schema}.job_requests (queue, kind, args, priority, run_at, max_attempts,
                                       timeout_ms, unique_key, tags)
    VALUES (coalesce(enqueue.queue, 'default'), enqueue.kind, coalesce(enqueue.args, '{}'),
            coalesce(enqueue.priority, 0), enqueue.run_at, enqueue.max_attempts,
            (extract(epoch FROM enqueue.timeout) * 1000)::bigint, enqueue.unique_key,
            coalesce(enqueue.tags, '{}'))
    RETURNING id INTO request;
    -- One notification per transaction however many requests it writes (PostgreSQL folds equal
    -- ones), delivered at commit.
    PERFORM pg_notify('{name}_requests', '');
    RETURN request;
END
$$;
