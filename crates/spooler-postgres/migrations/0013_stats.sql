-- spooler schema, version 13: throughput and latency history, and the version each worker runs.
-- The maintenance leader rolls finished jobs up into one row per granularity (minute, hour,
-- day), bucket start, queue and kind, with histograms of run and wait time as JSON
-- ([[bucket, count], ...], buckets as spooler_core::stats::bounds defines them).

CREATE TABLE {schema}.stats (
    granularity text        NOT NULL CHECK (granularity IN ('minute', 'hour', 'day')),
    bucket      timestamptz NOT NULL,
    queue       text        NOT NULL,
    kind        text        NOT NULL,
    completed   bigint      NOT NULL,
    failed      bigint      NOT NULL,
    cancelled   bigint      NOT NULL,
    run         jsonb       NOT NULL,
    wait        jsonb       NOT NULL,
    PRIMARY KEY (granularity, bucket, queue, kind)
);

-- How far finished jobs have been rolled up: one row once the first roll is written.
CREATE TABLE {schema}.stats_mark (
    id           integer     PRIMARY KEY CHECK (id = 1),
    rolled_until timestamptz NOT NULL
);

ALTER TABLE {schema}.workers ADD COLUMN version text NOT NULL DEFAULT '';
