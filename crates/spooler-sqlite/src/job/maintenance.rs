//! The maintenance leader's statements: rescue of lapsed leases (decided by `decide`), promotion, pruning.

use super::finish::write_transition;
use super::*;

pub(crate) async fn rescue(
    db: &Db,
    settings: std::sync::Arc<spooler_core::store::QueueSettingsMap>,
    rescue: &JobRescue,
) -> StoreResult<RescueReport> {
    let limit = i64::from(rescue.limit);
    if limit == 0 {
        return Ok(RescueReport::default());
    }
    let rescue = rescue.clone();
    db.write(move |ctx| {
        let lapsed: Vec<(LeaseRef, Facts, String, String)> = ctx
            .conn
            .prepare_cached(
                "SELECT id, fence, attempt, max_attempts, cancel_requested, worker_id, queue, kind \
                 FROM spooler_jobs WHERE state = 'running' AND lease_expires_at < ?1 \
                 ORDER BY lease_expires_at LIMIT ?2",
            )?
            .query_map(params![micros(ctx.now), limit], |r| {
                let lease = LeaseRef {
                    id: r.get(0)?,
                    fence: r.get(1)?,
                };
                let facts = Facts {
                    attempt: r.get(2)?,
                    max_attempts: r.get(3)?,
                    cancel_requested: r.get(4)?,
                    worker_id: r.get(5)?,
                };
                Ok((lease, facts, r.get(6)?, r.get(7)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut report = RescueReport::default();
        for (lease, facts, queue, kind) in lapsed {
            let t = rescue.decide(&queue, &kind, &facts, ctx.now);
            if write_transition(ctx, &settings, lease, &t, None)? {
                report.record(lease.id, t.state);
            }
        }
        report.sort();
        Ok(report)
    })
    .await
}

pub(crate) async fn promote(db: &Db, limit: u32) -> StoreResult<u64> {
    if limit == 0 {
        return Ok(0);
    }
    db.write(move |ctx| {
        let queues: Vec<String> = ctx
            .conn
            .prepare_cached(
                "UPDATE spooler_jobs SET state = 'available' WHERE id IN \
                 (SELECT id FROM spooler_jobs WHERE state = 'scheduled' AND run_at <= ?1 \
                  ORDER BY run_at, id LIMIT ?2) RETURNING queue",
            )?
            .query_map(params![micros(ctx.now), i64::from(limit)], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for q in &queues {
            ctx.wake(q);
        }
        Ok(queues.len() as u64)
    })
    .await
}

pub(crate) async fn prune(db: &Db, prune: &JobPrune) -> StoreResult<u64> {
    let cutoffs: Vec<(JobState, i64)> = [
        (JobState::Completed, prune.completed_before),
        (JobState::Failed, prune.failed_before),
        (JobState::Cancelled, prune.cancelled_before),
    ]
    .into_iter()
    .filter_map(|(state, before)| before.map(|b| (state, micros(b))))
    .collect();
    let limit = u64::from(prune.limit);
    if cutoffs.is_empty() || limit == 0 {
        return Ok(0);
    }
    let (names, except) = prune.queues.parts();
    let names = serde_json::to_string(names).expect("queue names serialize");
    db.write(move |ctx| {
        let mut stmt = ctx.conn.prepare_cached(
            "DELETE FROM spooler_jobs WHERE id IN (SELECT id FROM spooler_jobs \
             WHERE state = ?1 AND finished_at < ?2 \
               AND (queue IN (SELECT value FROM json_each(?4))) <> ?5 \
             ORDER BY finished_at LIMIT ?3)",
        )?;
        let mut deleted = 0u64;
        for (state, before) in cutoffs {
            let left = limit - deleted;
            if left == 0 {
                break;
            }
            deleted +=
                stmt.execute(params![state.as_str(), before, left as i64, names, except])? as u64;
        }
        Ok(deleted)
    })
    .await
}
