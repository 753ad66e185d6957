-- spooler schema, version 7: how long each queue keeps its finished jobs, per final state, where
-- it differs from the pruning process's default (milliseconds; -1 keeps them forever; NULL takes
-- the default). Written from a config file with the queue's other defaults.

ALTER TABLE {schema}.queue_settings
    ADD COLUMN keep_completed_ms int8 CHECK (keep_completed_ms >= 1 OR keep_completed_ms = -1),
    ADD COLUMN keep_failed_ms int8 CHECK (keep_failed_ms >= 1 OR keep_failed_ms = -1),
    ADD COLUMN keep_cancelled_ms int8 CHECK (keep_cancelled_ms >= 1 OR keep_cancelled_ms = -1);
