//! Claiming jobs (the claim statement read from the partial claim index) and extending leases.

use super::*;
use spooler_core::QueueLimits;

/// The claim statement for `queues` queues and `kinds` kinds. Parameters: ?1 now, ?2 lease end,
/// ?3 worker id, ?4 limit, then the kinds, then the queues. Each queue is read from the partial
/// claim index in claim order (no sort of the backlog); several queues are merged by a sort of
/// at most `limit` rows per queue.
pub(crate) fn claim_sql(queues: usize, kinds: usize) -> String {
    let kind_list = (0..kinds)
        .map(|i| format!("?{}", 5 + i))
        .collect::<Vec<_>>()
        .join(", ");
    let per_queue = |q: usize| {
        format!(
            "SELECT id, priority, run_at FROM spooler_jobs \
             WHERE state = 'available' AND queue = ?{} AND kind IN ({kind_list}) \
             ORDER BY priority DESC, run_at, id LIMIT ?4",
            5 + kinds + q
        )
    };
    let pick = if queues == 1 {
        per_queue(0)
    } else {
        let parts = (0..queues)
            .map(|q| format!("SELECT * FROM ({})", per_queue(q)))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        format!(
            "SELECT id, priority, run_at FROM ({parts}) ORDER BY priority DESC, run_at, id LIMIT ?4"
        )
    };
    format!(
        "UPDATE spooler_jobs SET state = 'running', attempt = attempt + 1, fence = fence + 1, \
         started_at = ?1, \
         lease_expires_at = ?2, worker_id = ?3 \
         WHERE id IN (SELECT id FROM ({pick})) RETURNING {COLUMNS}"
    )
}

pub(crate) async fn claim(
    db: &Db,
    claim: &JobClaim,
    settings: &QueueSettingsMap,
) -> StoreResult<Claimed> {
    if claim.limit == 0 || claim.queues.is_empty() || claim.kinds.is_empty() {
        return Ok(Claimed::default());
    }
    let mut queues = claim.queues.clone();
    queues.sort();
    queues.dedup();
    let (plain, limited) = spooler_core::limit::split_by_limits(&queues, settings);
    let mut kinds = claim.kinds.clone();
    kinds.sort();
    kinds.dedup();
    let worker_id = claim.worker_id.clone();
    let (limit, lease) = (claim.limit, claim.lease);
    let (raws, held_back) = db
        .write(move |ctx| claim_tx(ctx, plain, limited, &kinds, &worker_id, limit, lease))
        .await?;
    let mut jobs = decode_all(raws)?;
    jobs.sort_by(JobRow::claim_order);
    Ok(Claimed { jobs, held_back })
}

/// What one claim statement binds besides its queues.
pub(super) struct ClaimArgs<'a> {
    pub(super) kinds: &'a [String],
    pub(super) worker_id: &'a str,
    pub(super) now_us: i64,
    pub(super) until_us: i64,
}

fn claim_tx(
    ctx: &mut Ctx<'_>,
    mut plain: Vec<String>,
    mut limited: Vec<(String, QueueLimits)>,
    kinds: &[String],
    worker_id: &str,
    limit: u32,
    lease: Duration,
) -> Result<(Vec<RawJob>, Option<Duration>), OpError> {
    let conn = ctx.conn;
    {
        let mut paused = conn.prepare_cached("SELECT name FROM spooler_queues WHERE paused = 1")?;
        let paused: Vec<String> = paused
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if !paused.is_empty() {
            plain.retain(|q| !paused.contains(q));
            limited.retain(|(q, _)| !paused.contains(q));
        }
    }
    let args = ClaimArgs {
        kinds,
        worker_id,
        now_us: micros(ctx.now),
        until_us: micros(add(ctx.now, lease)),
    };
    let mut rows = if plain.is_empty() {
        Vec::new()
    } else {
        claim_rows(conn, &plain, &args, limit)?
    };
    let mut held_back = None;
    for (queue, limits) in &limited {
        let left = limit.saturating_sub(rows.len() as u32);
        if left == 0 {
            break;
        }
        let (claimed, held) =
            super::limit::claim_limited(conn, ctx.now, queue, *limits, &args, left)?;
        rows.extend(claimed);
        held_back = spooler_core::limit::sooner(held_back, held);
    }
    Ok((rows, held_back))
}

/// Claims up to `limit` jobs from `queues` (none paused) in one statement.
pub(super) fn claim_rows(
    conn: &rusqlite::Connection,
    queues: &[String],
    args: &ClaimArgs<'_>,
    limit: u32,
) -> Result<Vec<RawJob>, OpError> {
    let limit = i64::from(limit);
    let mut bound: Vec<&dyn ToSql> = Vec::with_capacity(4 + args.kinds.len() + queues.len());
    bound.extend([
        &args.now_us as &dyn ToSql,
        &args.until_us,
        &args.worker_id,
        &limit,
    ]);
    bound.extend(args.kinds.iter().map(|k| k as &dyn ToSql));
    bound.extend(queues.iter().map(|q| q as &dyn ToSql));
    let mut stmt = conn.prepare_cached(&claim_sql(queues.len(), args.kinds.len()))?;
    let rows = stmt
        .query_map(&bound[..], RawJob::from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
pub(crate) async fn lease_extend(db: &Db, extend: &LeaseExtend) -> StoreResult<Vec<LeaseStatus>> {
    if extend.leases.is_empty() {
        return Ok(Vec::new());
    }
    let leases = extend.leases.clone();
    let lease = extend.lease;
    db.write(move |ctx| {
        let until = micros(add(ctx.now, lease));
        let mut stmt = ctx.conn.prepare_cached(
            "UPDATE spooler_jobs SET lease_expires_at = ?1 \
             WHERE id = ?2 AND fence = ?3 AND state = 'running' RETURNING cancel_requested",
        )?;
        let mut out = Vec::with_capacity(leases.len());
        for l in &leases {
            let cancel: Option<bool> = stmt
                .query_row(params![until, l.id, l.fence], |r| r.get(0))
                .optional()?;
            out.push(LeaseStatus {
                id: l.id,
                held: cancel.is_some(),
                cancel_requested: cancel.unwrap_or(false),
            });
        }
        Ok(out)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;

    /// The claim's limit changes with every call (the producer's free slots); SQLite must not
    /// compile the statement again for each new value.
    #[test]
    fn the_claim_is_compiled_once_whatever_its_limit() {
        let conn = Connection::open_in_memory().unwrap();
        crate::plan_once(&conn).unwrap();
        crate::migrate::migrate(&conn, 0).unwrap();
        conn.execute_batch(
            "INSERT INTO spooler_jobs (queue, kind, args, state, max_attempts, run_at, created_at) \
             SELECT 'default', 'noop', '{}', 'available', 3, value, value \
             FROM json_each('[1,2,3,4,5,6,7,8,9,10]')",
        )
        .unwrap();
        let sql = claim_sql(1, 1);
        let mut claimed = 0;
        for limit in [3i64, 2, 4, 1] {
            let mut stmt = conn.prepare_cached(&sql).unwrap();
            claimed += stmt
                .query_map(params![1i64, 2i64, "w", limit, "noop", "default"], |_| {
                    Ok(())
                })
                .unwrap()
                .count();
        }
        assert_eq!(claimed, 10);
        let stmt = conn.prepare_cached(&sql).unwrap();
        assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0);
    }
}
