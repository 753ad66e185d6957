-- spooler schema, version 12: where a routed message went next. The jobs a route made from a job
-- are read by their `routed_from` (the dashboard's route history); a partial index, so jobs no
-- route made cost it nothing.

CREATE INDEX jobs_routed_from ON {schema}.jobs (routed_from) WHERE routed_from IS NOT NULL;
