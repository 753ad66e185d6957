//! Maintenance by the leader: rescue of lapsed leases, promotion of scheduled jobs that are due,
//! and pruning of finished ones.

use super::finish::{facts_of, write};
use super::{Writes, Written, available_queues, notify_fragment};
use crate::Inner;
use crate::error::{again_if_moved, map};
use spooler_core::{JobPrune, JobRescue, LeaseRef, RescueReport, StoreResult};
use sqlx::Row;
use std::collections::BTreeSet;

/// Running jobs whose lease lapsed, oldest lapse first, locked (skipping any another rescuer or
/// a finishing worker holds) with what deciding their rescue needs.
pub(crate) const LAPSED_SQL: &str =
    "SELECT id, fence, attempt, max_attempts, cancel_requested, worker_id, queue, kind
      FROM {s}.jobs_active
     WHERE state = 'running' AND lease_expires_at < $1
     ORDER BY lease_expires_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED";

pub(super) async fn rescue(inner: &Inner, rescue: &JobRescue) -> StoreResult<RescueReport> {
    let mut report = RescueReport::default();
    if rescue.limit == 0 {
        return Ok(report);
    }
    let settings = super::insert::queue_settings(inner).await?;
    let written = again_if_moved(|| rescue_tx(inner, &settings, rescue))
        .await
        .map_err(map)?;
    for (lease, _, state) in &written {
        report.record(lease.id, *state);
    }
    report.sort();
    inner.announce(available_queues(written));
    Ok(report)
}

/// Locks lapsed leases, decides each rescue and writes them in one transaction.
async fn rescue_tx(
    inner: &Inner,
    settings: &spooler_core::store::QueueSettingsMap,
    rescue: &JobRescue,
) -> Result<Vec<Written>, sqlx::Error> {
    let now = inner.clock.now();
    let mut tx = inner.pool.begin().await?;
    let rows = sqlx::query(&inner.sql.lapsed)
        .bind(now)
        .bind(i64::from(rescue.limit))
        .fetch_all(&mut *tx)
        .await?;
    let mut writes = Writes::default();
    for row in &rows {
        let lease = LeaseRef {
            id: row.try_get(0)?,
            fence: row.try_get(1)?,
        };
        let facts = facts_of(row, 2)?;
        let queue: String = row.try_get(6)?;
        let kind: String = row.try_get(7)?;
        writes.push(lease, rescue.decide(&queue, &kind, &facts, now));
    }
    let written = write(inner, &mut tx, &writes).await?;
    super::route::follow(inner, &mut tx, settings, &written, now).await?;
    tx.commit().await?;
    Ok(written)
}

/// Makes due scheduled jobs available, oldest first; one row per queue with how many.
pub(crate) const PROMOTE_SQL: &str = concat!(
    "WITH c AS (
        SELECT id FROM {s}.jobs_active
         WHERE state = 'scheduled' AND run_at <= $1
         ORDER BY run_at, id
         LIMIT $2
         FOR UPDATE SKIP LOCKED
    ), p AS (
        UPDATE {s}.jobs_active j SET state = 'available' FROM c WHERE j.id = c.id
        RETURNING j.queue, j.state
    )
    SELECT p.queue, count(*) AS n, ",
    notify_fragment!("p", "$3"),
    " FROM p GROUP BY p.queue"
);

pub(super) async fn promote(inner: &Inner, limit: u32) -> StoreResult<u64> {
    if limit == 0 {
        return Ok(0);
    }
    let now = inner.clock.now();
    let rows = again_if_moved(|| {
        sqlx::query(&inner.sql.promote)
            .bind(now)
            .bind(i64::from(limit))
            .bind(&inner.channel)
            .fetch_all(&inner.pool)
    })
    .await
    .map_err(map)?;
    let mut total = 0u64;
    let mut woken = BTreeSet::new();
    for row in &rows {
        woken.insert(row.try_get::<String, _>(0).map_err(map)?);
        total += row.try_get::<i64, _>(1).map_err(map)? as u64;
    }
    inner.wake_local(woken);
    Ok(total)
}

/// Deletes finished jobs past their state's cutoff (`$1`–`$3`; `$4` is the latest of them), at
/// most `$5`, in the queues named in `$6` (or, with `$7`, in every other queue).
pub(crate) const PRUNE_SQL: &str = "DELETE FROM {s}.jobs_done WHERE id IN (
        SELECT id FROM {s}.jobs_done
         WHERE finished_at < $4
           AND ((state = 'completed' AND finished_at < $1)
             OR (state = 'failed' AND finished_at < $2)
             OR (state = 'cancelled' AND finished_at < $3))
           AND (queue = ANY ($6)) <> $7
         LIMIT $5
         FOR UPDATE SKIP LOCKED)";

pub(super) async fn prune(inner: &Inner, prune: &JobPrune) -> StoreResult<u64> {
    let cutoffs = [
        prune.completed_before,
        prune.failed_before,
        prune.cancelled_before,
    ];
    let Some(latest) = cutoffs.iter().flatten().max().copied() else {
        return Ok(0);
    };
    if prune.limit == 0 {
        return Ok(0);
    }
    let (names, except) = prune.queues.parts();
    let done = again_if_moved(|| {
        sqlx::query(&inner.sql.prune)
            .bind(prune.completed_before)
            .bind(prune.failed_before)
            .bind(prune.cancelled_before)
            .bind(latest)
            .bind(i64::from(prune.limit))
            .bind(names)
            .bind(except)
            .execute(&inner.pool)
    })
    .await
    .map_err(map)?;
    Ok(done.rows_affected())
}
