//! Following a queue's route in the transaction that ended a job: the routed job is inserted (and
//! given its origin) or, past `max_hops`, the reason is appended to the original's errors.

use super::*;
use spooler_core::route::{Next, may_route, route_for};
use spooler_core::store::QueueSettingsMap;

/// Follows the route, if any, that the queues' `settings` give a job of `queue` that just became
/// `state`; runs inside the transaction that wrote that state.
pub(super) fn follow(
    ctx: &mut Ctx<'_>,
    settings: &QueueSettingsMap,
    id: JobId,
    queue: &str,
    state: JobState,
) -> Result<(), OpError> {
    if !may_route(settings, queue, state) {
        return Ok(());
    }
    let Some(raw) = select_one(ctx.conn, id)? else {
        return Ok(());
    };
    let job = raw.decode()?;
    let Some(route) = route_for(settings, queue, &job.kind, state) else {
        return Ok(());
    };
    let error = match route.follow(&job, ctx.now) {
        Next::Enqueue { job: next, origin } => {
            match insert::prepare(vec![*next], settings) {
                Ok(prepared) => {
                    let routed = insert::insert_tx(ctx, prepared)?;
                    let routed = routed.first().map(insert::Insert::id);
                    ctx.conn
                        .prepare_cached("UPDATE spooler_jobs SET origin = ?2 WHERE id = ?1")?
                        .execute(params![
                            routed,
                            serde_json::to_string(&origin).expect("origin serializes")
                        ])?;
                    tracing::debug!(job = id, routed = ?routed, queue = %route.queue, "job routed");
                    return Ok(());
                }
                // A route the store cannot insert never blocks the original's end: it is noted.
                Err(e) => AttemptError {
                    attempt: job.attempt,
                    at: ctx.now,
                    message: format!("not routed to queue {}: {e}", route.queue),
                },
            }
        }
        Next::Stop(error) => error,
    };
    ctx.conn
        .prepare_cached(
            "UPDATE spooler_jobs SET errors = json_insert(errors, '$[#]', json(?2)) WHERE id = ?1",
        )?
        .execute(params![id, error_json(&error)])?;
    Ok(())
}

/// An error entry as the `errors` JSON keeps it.
pub(super) fn error_json(e: &AttemptError) -> String {
    serde_json::json!({"attempt": e.attempt, "at": json_time(e.at), "message": e.message})
        .to_string()
}
