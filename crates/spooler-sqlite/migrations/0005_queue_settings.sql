-- spooler schema, version 5: each queue's defaults for the jobs inserted into it without their own
-- (written from a config file by the server, read by every insert, whoever inserts).

CREATE TABLE spooler_queue_settings (
    queue        TEXT    PRIMARY KEY,
    max_attempts INTEGER CHECK (max_attempts >= 1),
    timeout_ms   INTEGER CHECK (timeout_ms >= 1),
    updated_at   INTEGER NOT NULL
);
