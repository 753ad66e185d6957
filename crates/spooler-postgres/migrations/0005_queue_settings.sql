-- spooler schema, version 5: each queue's defaults for the jobs inserted into it without their own
-- (written from a config file by the server, read by every insert, whoever inserts); and the
-- fencing token of claims apart from the attempt count, which a release now gives back.

CREATE TABLE {schema}.queue_settings (
    queue        text        PRIMARY KEY,
    max_attempts int4        CHECK (max_attempts >= 1),
    timeout_ms   int8        CHECK (timeout_ms >= 1),
    updated_at   timestamptz NOT NULL
);

-- One more at every claim, never less: the fence of every write on a running job. Rows claimed
-- before this version were fenced by their attempt: a running one keeps that as its fence (the
-- others need none until they are claimed again).
ALTER TABLE {schema}.jobs ADD COLUMN fence int4 NOT NULL DEFAULT 0;
UPDATE {schema}.jobs_active SET fence = attempt WHERE state = 'running';

-- The claim from one queue (version 3) raises the fence too; same plan, same markers.
CREATE OR REPLACE FUNCTION {schema}.claim_one(text, text[], bigint, timestamptz, timestamptz, text)
RETURNS SETOF {schema}.jobs_active
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $fn$
BEGIN
    RETURN QUERY
    -- claim:begin
    UPDATE {schema}.jobs_active j
       SET state = 'running', attempt = j.attempt + 1, fence = j.fence + 1, started_at = $4,
           lease_expires_at = $5, worker_id = $6
     WHERE j.id = ANY (ARRAY(
            SELECT a.id FROM {schema}.jobs_active a
             WHERE a.state = 'available' AND a.queue = $1 AND a.kind = ANY ($2)
               AND NOT EXISTS (SELECT 1 FROM {schema}.paused_queues p WHERE p.queue = $1)
             ORDER BY a.priority DESC, a.run_at, a.id
             LIMIT $3
             FOR UPDATE SKIP LOCKED))
    RETURNING j.*
    -- claim:end
    ;
END
$fn$;
