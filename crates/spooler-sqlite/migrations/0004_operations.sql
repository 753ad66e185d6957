-- spooler schema, version 4: operations by filter (retry, cancel or delete every matching job),
-- run in chunks; done_through moves in the same transaction as the chunk it covers.
-- (Versions 2 and 3 are PostgreSQL's own; numbers match across backends.)

CREATE TABLE spooler_operations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    action       TEXT    NOT NULL CHECK (action IN ('retry', 'cancel', 'delete')),
    filter       TEXT    NOT NULL,
    matched      INTEGER NOT NULL,
    affected     INTEGER NOT NULL DEFAULT 0,
    skipped      INTEGER NOT NULL DEFAULT 0,
    state        TEXT    NOT NULL CHECK (state IN ('running', 'completed', 'cancelled')),
    chunk        INTEGER NOT NULL CHECK (chunk BETWEEN 1 AND 1000),
    max_id       INTEGER NOT NULL,
    done_through INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER
);

CREATE INDEX spooler_operations_running ON spooler_operations (id) WHERE state = 'running';
