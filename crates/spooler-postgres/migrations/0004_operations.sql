-- spooler schema, version 4: operations by filter (retry, cancel or delete every matching job),
-- run in chunks; done_through moves in the same transaction as the chunk it covers.

CREATE TABLE {schema}.operations (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action       text        NOT NULL CHECK (action IN ('retry', 'cancel', 'delete')),
    filter       jsonb       NOT NULL,
    matched      bigint      NOT NULL,
    affected     bigint      NOT NULL DEFAULT 0,
    skipped      bigint      NOT NULL DEFAULT 0,
    state        text        NOT NULL CHECK (state IN ('running', 'completed', 'cancelled')),
    chunk        integer     NOT NULL CHECK (chunk BETWEEN 1 AND 1000),
    max_id       bigint      NOT NULL,
    done_through bigint      NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    finished_at  timestamptz
);

CREATE INDEX operations_running ON {schema}.operations (id) WHERE state = 'running';
