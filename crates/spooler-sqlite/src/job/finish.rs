//! Finishing attempts: completions many per statement, every other outcome decided by `decide` on facts read under the fence; the transition write the rescuer shares.

use super::*;
use spooler_core::store::QueueSettingsMap;
use std::sync::Arc;

/// One finish, the completion's result serialized on the caller's thread.
enum Finish {
    Completed(Option<String>),
    /// Any other outcome: decided in the transaction, from the job's facts.
    Other(Outcome),
}

pub(crate) async fn finish_many(
    db: &Db,
    settings: Arc<QueueSettingsMap>,
    finishes: &[JobFinish],
) -> StoreResult<Vec<bool>> {
    if finishes.is_empty() {
        return Ok(Vec::new());
    }
    let mut work = Vec::with_capacity(finishes.len());
    for f in finishes {
        let finish = match &f.outcome {
            Outcome::Completed { result } => Finish::Completed(
                result
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| StoreError::InvalidInput {
                        field: "result",
                        message: e.to_string(),
                    })?,
            ),
            other => {
                if let Outcome::Cancelled { reason } = other {
                    tracing::debug!(job = f.lease.id, reason = %reason, "job cancelled");
                }
                Finish::Other(other.clone())
            }
        };
        work.push((f.lease.id, f.lease.fence, finish));
    }
    db.write(move |ctx| finish_tx(ctx, &settings, work)).await
}

fn finish_tx(
    ctx: &mut Ctx<'_>,
    settings: &QueueSettingsMap,
    work: Vec<(JobId, i32, Finish)>,
) -> Result<Vec<bool>, OpError> {
    let mut acks = vec![false; work.len()];
    let (work, completed) = complete_many(ctx.conn, micros(ctx.now), work, &mut acks)?;
    if spooler_core::route::any_on_success(settings) {
        for (id, queue) in completed {
            route::follow(ctx, settings, id, &queue, JobState::Completed)?;
        }
    }
    for (i, id, fence, finish) in work {
        let lease = LeaseRef { id, fence };
        acks[i] = match finish {
            Finish::Completed(result) => {
                let t = decide(
                    &Outcome::Completed { result: None },
                    &Facts::default(),
                    ctx.now,
                );
                write_transition(ctx, settings, lease, &t, result)?
            }
            Finish::Other(outcome) => {
                let facts = if outcome.reads_facts() {
                    match facts(ctx.conn, lease)? {
                        Some(facts) => facts,
                        None => continue,
                    }
                } else {
                    Facts::default()
                };
                let t = decide(&outcome, &facts, ctx.now);
                write_transition(ctx, settings, lease, &t, None)?
            }
        };
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

/// Writes a decided transition on the job `lease` holds, clearing the lease; `result` is the
/// completion's result as JSON text. True if the fence held. Wakes the queue of a job made
/// available, and follows the route `settings` give a job made final.
pub(super) fn write_transition(
    ctx: &mut Ctx<'_>,
    settings: &QueueSettingsMap,
    lease: LeaseRef,
    t: &Transition,
    result: Option<String>,
) -> Result<bool, OpError> {
    let error = t.error.as_ref().map(route::error_json);
    let queue: Option<String> = ctx
        .conn
        .prepare_cached(&format!(
            "UPDATE spooler_jobs SET state = ?1, run_at = coalesce(?2, run_at), finished_at = ?3, \
             errors = CASE WHEN ?4 IS NULL THEN errors ELSE json_insert(errors, '$[#]', json(?4)) END, \
             result = ?5, max_attempts = coalesce(?6, max_attempts), \
             attempt = coalesce(?9, attempt), {CLEAR_LEASE} \
             WHERE id = ?7 AND fence = ?8 AND state = 'running' RETURNING queue"
        ))?
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

/// Completions, the bulk of all finishes, in one statement: one execution opens the table's and
/// indexes' cursors once for the lot. Sets their acks; returns the other finishes (with their
/// position) to be run one by one, and the jobs it completed with their queues.
#[allow(clippy::type_complexity)]
fn complete_many(
    conn: &Connection,
    now: i64,
    work: Vec<(JobId, i32, Finish)>,
    acks: &mut [bool],
) -> Result<(Vec<(usize, JobId, i32, Finish)>, Vec<(JobId, String)>), OpError> {
    let completions = work
        .iter()
        .filter(|w| matches!(w.2, Finish::Completed(_)))
        .count();
    let mut ids: Vec<JobId> = work.iter().map(|w| w.0).collect();
    ids.sort_unstable();
    ids.dedup();
    // A job named twice in one call is finished one by one, so that only its first finish counts.
    let bulk = completions >= 2 && ids.len() == work.len();
    let mut rest = Vec::with_capacity(if bulk {
        work.len() - completions
    } else {
        work.len()
    });
    let mut list = String::from("[");
    let mut listed: Vec<(JobId, usize)> = Vec::with_capacity(if bulk { completions } else { 0 });
    for (i, (id, fence, finish)) in work.into_iter().enumerate() {
        match finish {
            Finish::Completed(result) if bulk => {
                if !listed.is_empty() {
                    list.push(',');
                }
                // The result is JSON text carried as a JSON string: `->> 2` gives back the text.
                let result = match &result {
                    Some(text) => {
                        serde_json::to_string(text).map_err(|e| StoreError::InvalidInput {
                            field: "result",
                            message: e.to_string(),
                        })?
                    }
                    None => "null".to_string(),
                };
                list.push_str(&format!("[{id},{fence},{result}]"));
                listed.push((id, i));
            }
            other => rest.push((i, id, fence, other)),
        }
    }
    let mut done: Vec<(JobId, String)> = Vec::new();
    if !listed.is_empty() {
        list.push(']');
        done = conn
            .prepare_cached(&format!(
                "UPDATE spooler_jobs SET state = 'completed', finished_at = ?1, \
                 result = f.value ->> 2, {CLEAR_LEASE} \
                 FROM json_each(?2) AS f \
                 WHERE spooler_jobs.id = f.value ->> 0 AND spooler_jobs.fence = f.value ->> 1 \
                 AND spooler_jobs.state = 'running' \
                 RETURNING spooler_jobs.id, spooler_jobs.queue"
            ))?
            .query_map(params![now, list], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        done.sort_unstable();
        for (id, i) in listed {
            acks[i] = done.binary_search_by_key(&id, |d| d.0).is_ok();
        }
    }
    Ok((rest, done))
}
