//! Claims from a queue with limits: its limit state read by one statement, the admission asked
//! of [`QueueLimits::admit`], and one claiming statement that writes the state back only if no
//! other claim wrote it since the read (`version`); otherwise it claims nothing and the claim
//! reads again. Two round trips where an unlimited claim takes one, and the rule stays in Rust.

use super::{decode, j_cols};
use crate::Inner;
use crate::error::{again_if_moved, map};
use chrono::{DateTime, Utc};
use spooler_core::clock::add;
use spooler_core::{JobClaim, JobRow, LimitState, QueueLimits, StoreResult};
use sqlx::Row;
use std::time::Duration;

/// How often a claim reads again after other claims wrote the queue's state first, before it
/// gives up for now (as if held back).
const ATTEMPTS: u32 = 4;

/// The queue `$1`'s rate state and version (NULL without a row), and its running jobs counted up
/// to `$2` (the running set is small: the partial index of leases serves it, and is named by
/// asking for the lease every running job holds).
pub(crate) const LIMIT_STATE_SQL: &str = "SELECT l.tat, l.version,
        (SELECT count(*) FROM (SELECT 1 FROM {s}.jobs_active a
            WHERE a.state = 'running' AND a.lease_expires_at IS NOT NULL AND a.queue = $1
            LIMIT $2) r)::int8 AS running
   FROM (SELECT 1) one LEFT JOIN {s}.queue_limits l ON l.queue = $1";

/// Makes the queue `$1`'s state row, the first time it is claimed from.
pub(crate) const LIMIT_ROW_SQL: &str =
    "INSERT INTO {s}.queue_limits (queue) VALUES ($1) ON CONFLICT (queue) DO NOTHING";

/// Claims up to `$3` jobs from the queue `$1` if its state is still at version `$7`, and writes the
/// theoretical arrival time `$8[n + 1]` for the `n` it claimed. The row lock of `gate` makes a
/// concurrent claim wait and then find the version moved; one row with `passed = 0` says so.
pub(crate) const CLAIM_LIMITED_SQL: &str = concat!(
    "WITH gate AS (
        SELECT queue FROM {s}.queue_limits WHERE queue = $1 AND version = $7 FOR UPDATE
    ), c AS (
        SELECT a.id FROM {s}.jobs_active a
         WHERE a.state = 'available' AND a.queue = $1 AND a.kind = ANY($2)
           AND EXISTS (SELECT 1 FROM gate)
           AND NOT EXISTS (SELECT 1 FROM {s}.paused_queues p WHERE p.queue = $1)
         ORDER BY a.priority DESC, a.run_at, a.id
         LIMIT $3
         FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE {s}.jobs_active j
           SET state = 'running', attempt = j.attempt + 1, fence = j.fence + 1, started_at = $4,
               lease_expires_at = $5, worker_id = $6
          FROM c WHERE j.id = c.id
        RETURNING ",
    j_cols!(),
    "
    ), bump AS (
        UPDATE {s}.queue_limits l
           SET tat = ($8::timestamptz[])[(SELECT count(*) FROM claimed) + 1],
               version = l.version + 1
         WHERE l.queue = $1 AND EXISTS (SELECT 1 FROM gate)
    )
    SELECT g.passed, claimed.*
      FROM (SELECT count(*) AS passed FROM gate) g LEFT JOIN claimed ON true"
);

/// Claims up to `want` jobs from the limited `queue` for `claim`: as many as its limits admit.
/// Returns them, and how long the limits hold further claims back.
pub(super) async fn claim_limited(
    inner: &Inner,
    claim: &JobClaim,
    queue: &str,
    limits: QueueLimits,
    want: u32,
) -> StoreResult<(Vec<JobRow>, Option<Duration>)> {
    let cap = i64::from(limits.concurrency.unwrap_or(0));
    // Other processes may still come between a read and its claim; this one's claims take turns.
    let turn = inner.limited_claim_turn(queue);
    let _turn = turn.lock().await;
    for _ in 0..ATTEMPTS {
        let state = again_if_moved(|| {
            sqlx::query(&inner.sql.limit_state)
                .bind(queue)
                .bind(cap)
                .fetch_one(&inner.pool)
        })
        .await
        .map_err(map)?;
        let tat: Option<DateTime<Utc>> = state.try_get(0).map_err(map)?;
        let Some(version) = state.try_get::<Option<i64>, _>(1).map_err(map)? else {
            sqlx::query(&inner.sql.limit_row)
                .bind(queue)
                .execute(&inner.pool)
                .await
                .map_err(map)?;
            continue;
        };
        let running: i64 = state.try_get(2).map_err(map)?;
        let now = inner.clock.now();
        let admission = limits.admit(
            LimitState {
                tat,
                running: u32::try_from(running).unwrap_or(u32::MAX),
            },
            now,
            want,
        );
        if admission.allowed() == 0 {
            return Ok((Vec::new(), admission.held_back(0)));
        }
        let tats: Vec<Option<DateTime<Utc>>> = (0..=admission.allowed())
            .map(|n| admission.tat_after(n))
            .collect();
        let rows = again_if_moved(|| {
            sqlx::query(&inner.sql.claim_limited)
                .bind(queue)
                .bind(&claim.kinds)
                .bind(i64::from(admission.allowed()))
                .bind(now)
                .bind(add(now, claim.lease))
                .bind(&claim.worker_id)
                .bind(version)
                .bind(&tats)
                .fetch_all(&inner.pool)
        })
        .await
        .map_err(map)?;
        let passed: i64 = match rows.first() {
            Some(row) => row.try_get("passed").map_err(map)?,
            None => 0,
        };
        if passed == 0 {
            // Another claim wrote the state since it was read: read it again.
            continue;
        }
        let mut jobs = Vec::with_capacity(rows.len());
        for row in &rows {
            if row.try_get::<Option<i64>, _>("id").map_err(map)?.is_some() {
                jobs.push(decode(row)?);
            }
        }
        let held_back = admission.held_back(jobs.len() as u32);
        return Ok((jobs, held_back));
    }
    // Claims from other processes kept winning: this one steps aside for a moment.
    Ok((Vec::new(), Some(spooler_core::limit::CONCURRENCY_RECHECK)))
}
