-- The `narrow` variant of run.sh (drain.sql calls its claim_narrow and finish_narrow): the wide row is written by the insert only. Available jobs are
-- listed in a narrow `ready` table in claim order, leases in `leases`, outcomes in `outcomes`. The
-- claim deletes from `ready`, writes a lease and updates only unindexed columns of the wide row
-- (a HOT update: the table keeps half of each page free for it); the completion deletes the lease,
-- fenced, and inserts the outcome. Only what a drain does is built: a store on this design would
-- also have to derive every job's state from the three tables (lists, counts, rescue, cancel,
-- retry, routes, pruning). `:schema` names the migrated schema; the functions find their tables
-- through their own search_path, since psql does not substitute inside their bodies.
DROP INDEX :schema.jobs_claim;
ALTER TABLE :schema.jobs_active SET (fillfactor = 50);
CREATE TABLE :schema.ready (queue text NOT NULL, kind text NOT NULL, priority int NOT NULL,
                            run_at timestamptz NOT NULL, id bigint NOT NULL);
CREATE UNIQUE INDEX ready_order ON :schema.ready (queue, priority DESC, run_at, id);
CREATE TABLE :schema.leases (id bigint PRIMARY KEY, fence int NOT NULL,
                             lease_expires_at timestamptz NOT NULL, worker_id text);
CREATE TABLE :schema.outcomes (id bigint PRIMARY KEY, fence int NOT NULL, state text NOT NULL,
                               finished_at timestamptz NOT NULL, result jsonb);

-- run.sh fills the queue through the parent table; a store would insert into `ready` itself.
CREATE FUNCTION :schema.ready_on_insert() RETURNS trigger LANGUAGE plpgsql
SET search_path = :schema AS $$
BEGIN
    IF NEW.state = 'available' THEN
        INSERT INTO ready VALUES (NEW.queue, NEW.kind, NEW.priority, NEW.run_at, NEW.id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER ready_on_insert AFTER INSERT ON :schema.jobs_active
    FOR EACH ROW EXECUTE FUNCTION :schema.ready_on_insert();

CREATE FUNCTION :schema.claim_narrow(q text, kinds text[], n bigint, now_ timestamptz,
                                     lease timestamptz, worker text)
RETURNS SETOF :schema.jobs LANGUAGE plpgsql SET search_path = :schema AS $$
BEGIN
    RETURN QUERY
    WITH r AS (
        DELETE FROM ready d WHERE d.ctid = ANY (ARRAY(
            SELECT a.ctid FROM ready a
             WHERE a.queue = q AND a.kind = ANY (kinds) AND a.run_at <= now_
             ORDER BY a.priority DESC, a.run_at, a.id
             LIMIT n FOR UPDATE SKIP LOCKED))
        RETURNING d.id),
    u AS (
        UPDATE jobs_active j SET attempt = j.attempt + 1, fence = j.fence + 1, started_at = now_
          FROM r WHERE j.id = r.id
        RETURNING j.*),
    l AS (INSERT INTO leases SELECT u.id, u.fence, lease, worker FROM u)
    SELECT u.* FROM u;
END $$;

-- The same arguments as the store's finish_jobs, so that drain.sql calls either; a completion
-- needs only the ids, fences, states, finish times and results.
CREATE FUNCTION :schema.finish_narrow(ids int8[], fences int4[], states text[],
                                      run_ats timestamptz[], finished timestamptz[], errs jsonb[],
                                      results jsonb[], max_attempts int4[], attempts int4[])
RETURNS TABLE (id int8, fence int4) LANGUAGE plpgsql SET search_path = :schema AS $$
BEGIN
    RETURN QUERY
    WITH d AS (
        DELETE FROM leases l USING unnest(ids, fences) AS u(id, fence)
         WHERE l.id = u.id AND l.fence = u.fence
        RETURNING l.id, l.fence)
    INSERT INTO outcomes
    SELECT d.id, d.fence, u.state, u.finished, u.result
      FROM d JOIN unnest(ids, states, finished, results) AS u(id, state, finished, result)
           ON u.id = d.id
    RETURNING outcomes.id, outcomes.fence;
END $$;
