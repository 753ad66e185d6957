-- One batch of the `narrow` variant's drain (narrow.sql), read as drain.sql reads the store's.
WITH c AS (SELECT * FROM :schema.claim_narrow('default', '{noop}', 100, now(), now() + interval '30 s', 'floor')),
     a AS (SELECT coalesce(string_agg(id::text, ','), '0') AS ids,
                  coalesce(string_agg(fence::text, ','), '0') AS fences, count(*) AS n FROM c)
SELECT c.id, c.queue, c.kind, c.args, c.state, c.priority, c.attempt, c.max_attempts, c.run_at,
       c.created_at, c.started_at, c.finished_at, c.timeout_ms, c.unique_key, c.tags, c.errors,
       c.result, c.lease_expires_at, c.worker_id, c.routed_from, c.cancel_requested, c.fence,
       c.origin, c.meta, a.ids, a.fences, a.n
  FROM a LEFT JOIN c ON true \aset
SELECT count(*) FROM :schema.finish_narrow(ARRAY[:ids]::int8[], ARRAY[:fences]::int4[],
    array_fill('completed'::text, ARRAY[:n]), array_fill(now(), ARRAY[:n]),
    array_fill('{"ok":1}'::jsonb, ARRAY[:n]));
