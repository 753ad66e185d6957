-- spooler schema, version 5: each queue's defaults for the jobs inserted into it without their own
-- (written from a config file by the server, read by every insert, whoever inserts).

CREATE TABLE {schema}.queue_settings (
    queue        text        PRIMARY KEY,
    max_attempts int4        CHECK (max_attempts >= 1),
    timeout_ms   int8        CHECK (timeout_ms >= 1),
    updated_at   timestamptz NOT NULL
);
