-- spooler schema, version 3: the claim from one queue as a function with a plan made once.
--
-- Every other statement is planned on each call (`plan_cache_mode = force_custom_plan` on the
-- store's connections), because a plan kept from a moment the queue was empty would scan the whole
-- backlog once it is deep. The claim runs far more often than anything else, and planning it cost
-- more than running it (~0.25 ms against ~0.1 ms). Inside this function its plan is made once per
-- connection and kept, and is safe to keep: with sequential and bitmap scans off, the only plan left
-- for the inner SELECT walks `jobs_claim` in claim order and stops at the LIMIT, and the UPDATE
-- finds each row by primary key, whatever the statistics say.
--
-- The statement between the markers is read back by `PgStore::explain_claim` to show its plan.

CREATE FUNCTION {schema}.claim_one(text, text[], bigint, timestamptz, timestamptz, text)
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
       SET state = 'running', attempt = j.attempt + 1, started_at = $4,
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
