//! Finishing attempts: each outcome decided by `decide` (on facts read under the fence when it
//! needs them) and written one job at a time; the transition write the rescuer shares.

use super::*;
use spooler_core::store::QueueSettingsMap;
use std::sync::Arc;

/// One finish to write: its lease, its outcome (a completion's result taken out of it) and the
/// completion's result as JSON text, serialized on the caller's thread.
type Finish = (LeaseRef, Outcome, Option<String>);

pub(crate) async fn finish_many(
    db: &Db,
    settings: Arc<QueueSettingsMap>,
    finishes: &[JobFinish],
) -> StoreResult<Vec<bool>> {
    if finishes.is_empty() {
        return Ok(Vec::new());
    }
    let mut work: Vec<Finish> = Vec::with_capacity(finishes.len());
    for f in finishes {
        let finish = match &f.outcome {
            Outcome::Completed { result } => {
                let result = result
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| StoreError::InvalidInput {
                        field: "result",
                        message: e.to_string(),
                    })?;
                (f.lease, Outcome::Completed { result: None }, result)
            }
            other => {
                if let Outcome::Cancelled { reason } = other {
                    tracing::debug!(job = f.lease.id, reason = %reason, "job cancelled");
                }
                (f.lease, other.clone(), None)
            }
        };
        work.push(finish);
    }
    db.write(move |ctx| finish_tx(ctx, &settings, work)).await
}

/// Writes the finishes in order, so that of two finishes of one job only the first counts.
fn finish_tx(
    ctx: &mut Ctx<'_>,
    settings: &QueueSettingsMap,
    work: Vec<Finish>,
) -> Result<Vec<bool>, OpError> {
    let mut acks = Vec::with_capacity(work.len());
    for (lease, outcome, result) in work {
        let facts = if outcome.reads_facts() {
            match facts(ctx.conn, lease)? {
                Some(facts) => facts,
                None => {
                    acks.push(false);
                    continue;
                }
            }
        } else {
            Facts::default()
        };
        let t = decide(&outcome, &facts, ctx.now);
        acks.push(write_transition(ctx, settings, lease, &t, result)?);
    }
    Ok(acks)
}

/// The facts [`decide`] reads, of the job `lease` still holds; `None` when it holds it no more.
fn facts(conn: &Connection, lease: LeaseRef) -> Result<Option<Facts>, OpError> {
    Ok(conn
        .prepare_cached(
            "SELECT attempt, max_attempts, cancel_requested, worker_id FROM spooler_jobs \
             WHERE id = ?1 AND fence = ?2 AND state = 'running'",
        )?
        .query_row(params![lease.id, lease.fence], |r| {
            Ok(Facts {
                attempt: r.get(0)?,
                max_attempts: r.get(1)?,
                cancel_requested: r.get(2)?,
                worker_id: r.get(3)?,
            })
        })
        .optional()?)
}

/// Any transition: parameters ?1 state, ?2 run_at, ?3 finished_at, ?4 error, ?5 result,
/// ?6 max_attempts, ?7 id, ?8 fence, ?9 attempt.
static TRANSITION_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE spooler_jobs SET state = ?1, run_at = coalesce(?2, run_at), finished_at = ?3, \
         errors = CASE WHEN ?4 IS NULL THEN errors ELSE json_insert(errors, '$[#]', json(?4)) END, \
         result = ?5, max_attempts = coalesce(?6, max_attempts), \
         attempt = coalesce(?9, attempt), {CLEAR_LEASE} \
         WHERE id = ?7 AND fence = ?8 AND state = 'running' RETURNING queue"
    )
});

/// A transition that only ends the job (a completion): parameters ?1 state, ?2 finished_at,
/// ?3 result, ?4 id, ?5 fence. Without `RETURNING`, which costs a temporary table per execution:
/// its acknowledgement is the count of rows changed.
static END_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE spooler_jobs SET state = ?1, finished_at = ?2, result = ?3, {CLEAR_LEASE} \
         WHERE id = ?4 AND fence = ?5 AND state = 'running'"
    )
});

/// Writes a decided transition on the job `lease` holds, clearing the lease; `result` is the
/// completion's result as JSON text. True if the fence held. Wakes the queue of a job made
/// available, and follows the route `settings` give a job made final.
///
/// Completions, the bulk of all finishes, are written one statement each, the job's queue not
/// read back unless some queue routes them: 1.4 µs a job in `bench/sqlite-floor`, against 1.6 for
/// one statement over a JSON list of them (whose `RETURNING` gave the acknowledgements) and 3.3
/// for one statement each with `RETURNING`.
pub(super) fn write_transition(
    ctx: &mut Ctx<'_>,
    settings: &QueueSettingsMap,
    lease: LeaseRef,
    t: &Transition,
    result: Option<String>,
) -> Result<bool, OpError> {
    let only_ends = t.run_at.is_none()
        && t.error.is_none()
        && t.max_attempts.is_none()
        && t.attempt.is_none()
        && t.state != JobState::Available;
    if only_ends && !spooler_core::route::any_may_route(settings, t.state) {
        let changed = ctx.conn.prepare_cached(&END_SQL)?.execute(params![
            t.state.as_str(),
            t.finished_at.map(micros),
            result,
            lease.id,
            lease.fence
        ])?;
        return Ok(changed == 1);
    }
    let error = t.error.as_ref().map(route::error_json);
    let queue: Option<String> = ctx
        .conn
        .prepare_cached(&TRANSITION_SQL)?
        .query_row(
            params![
                t.state.as_str(),
                t.run_at.map(micros),
                t.finished_at.map(micros),
                error,
                result,
                t.max_attempts,
                lease.id,
                lease.fence,
                t.attempt
            ],
            |r| r.get(0),
        )
        .optional()?;
    match queue {
        Some(queue) => {
            if t.state == JobState::Available {
                ctx.wake(&queue);
            }
            route::follow(ctx, settings, lease.id, &queue, t.state)?;
            Ok(true)
        }
        None => Ok(false),
    }
}
