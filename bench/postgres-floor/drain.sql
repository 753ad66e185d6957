-- One batch of the store's drain, as the runtime does it: claim up to 100 jobs with the store's
-- claim function, returning every column as the runtime reads them, then write their completions
-- with the store's finish function in a second transaction. run.sh sets `:schema`, and `:claim` and
-- `:finish` to the functions' names (claim_one and finish_jobs, or a variant's own).
WITH c AS (SELECT * FROM :schema.:claim('default', '{noop}', 100, now(), now() + interval '30 s', 'floor')),
     a AS (SELECT coalesce(string_agg(id::text, ','), '0') AS ids,
                  coalesce(string_agg(fence::text, ','), '0') AS fences, count(*) AS n FROM c)
SELECT c.id, c.queue, c.kind, c.args, c.state, c.priority, c.attempt, c.max_attempts, c.run_at,
       c.created_at, c.started_at, c.finished_at, c.timeout_ms, c.unique_key, c.tags, c.errors,
       c.result, c.lease_expires_at, c.worker_id, c.routed_from, c.cancel_requested, c.fence,
       c.origin, c.meta, a.ids, a.fences, a.n
  FROM a LEFT JOIN c ON true \aset
SELECT count(*) FROM :schema.:finish(ARRAY[:ids]::int8[], ARRAY[:fences]::int4[],
    array_fill('completed'::text, ARRAY[:n]), array_fill(NULL::timestamptz, ARRAY[:n]),
    array_fill(now(), ARRAY[:n]), array_fill(NULL::jsonb, ARRAY[:n]),
    array_fill('{"ok":1}'::jsonb, ARRAY[:n]), array_fill(NULL::int4, ARRAY[:n]),
    array_fill(NULL::int4, ARRAY[:n]));
