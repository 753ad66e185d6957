-- spooler schema, version 13: throughput and latency history, and the version each worker runs.
-- The maintenance leader rolls finished jobs up into one row per granularity (minute, hour,
-- day), bucket start, queue and kind, with histograms of run and wait time as JSON
-- ([[bucket, count], ...], buckets as spooler_core::stats::bounds defines them).

CREATE TABLE spooler_stats (
    granularity TEXT    NOT NULL CHECK (granularity IN ('minute', 'hour', 'day')),
    bucket      INTEGER NOT NULL, -- the bucket's start, microseconds since the epoch
    queue       TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    completed   INTEGER NOT NULL,
    failed      INTEGER NOT NULL,
    cancelled   INTEGER NOT NULL,
    run         TEXT    NOT NULL,
    wait        TEXT    NOT NULL,
    PRIMARY KEY (granularity, bucket, queue, kind)
) WITHOUT ROWID;

-- How far finished jobs have been rolled up: one row once the first roll is written.
CREATE TABLE spooler_stats_mark (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    rolled_until INTEGER NOT NULL
);

ALTER TABLE spooler_workers ADD COLUMN version TEXT NOT NULL DEFAULT '';
