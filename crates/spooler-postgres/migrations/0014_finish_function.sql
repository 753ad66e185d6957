-- spooler schema, version 14: the write of decided transitions as a function with a plan made once.
--
-- Outcomes (and rescues) are written by one statement per burst. Planned on every call, as every
-- statement on the store's connections is (`plan_cache_mode = force_custom_plan`), its plan cost
-- more than its run for the bursts a steady load brings (~0.16 ms against ~0.13 ms for five jobs),
-- and planning was a fifth of the server's work at 2,000 jobs/s. Inside this function the plan is
-- made once per connection and is safe to keep whatever the statistics say: with sequential and
-- bitmap scans and hash and merge joins off, the only plan left takes each written row's job from
-- the primary key of `jobs_active` (the state `running` prunes `jobs_done` at plan time).
--
-- The function writes what Rust decided (`spooler_core::decide`): it derives no state. Rows whose
-- (id, fence) no longer hold a running job are not written and not returned. The wake-ups for jobs
-- it made available are sent by the caller after its commit.
--
-- The statement between the markers is read back by `PgStore::explain_finish` to show its plan.

CREATE FUNCTION {schema}.finish_jobs(int8[], int4[], text[], timestamptz[], timestamptz[], jsonb[],
                                     jsonb[], int4[], int4[])
RETURNS TABLE (job_id int8, job_fence int4, job_queue text, job_state text)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
BEGIN
    RETURN QUERY
    -- finish:begin
    UPDATE {schema}.jobs j SET
           state = u.state,
           run_at = coalesce(u.run_at, j.run_at),
           finished_at = u.finished_at,
           errors = CASE WHEN u.err IS NULL THEN j.errors
                         ELSE j.errors || jsonb_build_array(u.err) END,
           result = u.result,
           max_attempts = coalesce(u.max_attempts, j.max_attempts),
           attempt = coalesce(u.attempt, j.attempt),
           lease_expires_at = NULL,
           worker_id = NULL
      FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9)
           AS u(id, fence, state, run_at, finished_at, err, result, max_attempts, attempt)
     WHERE j.id = u.id AND j.fence = u.fence AND j.state = 'running'
    RETURNING j.id, j.fence, j.queue, j.state
    -- finish:end
    ;
END
$fn$;
