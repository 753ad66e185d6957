//! Claims from a queue with limits: its limit state read, the admission asked of
//! [`QueueLimits::admit`], and the state written back, all in the claim's transaction (the one
//! writer's, so no other claim can come between).

use super::claim::{ClaimArgs, claim_rows};
use super::*;
use spooler_core::{LimitState, QueueLimits};

/// The queue's rate state, and its running jobs counted up to `$2` (the running set is small: the
/// partial index of running jobs serves it).
const STATE_SQL: &str = "SELECT (SELECT tat FROM spooler_queue_limits WHERE queue = ?1), \
     (SELECT count(*) FROM (SELECT 1 FROM spooler_jobs \
        WHERE state = 'running' AND queue = ?1 LIMIT ?2))";

/// Writes the rate state a claim leaves.
const WRITE_SQL: &str = "INSERT INTO spooler_queue_limits (queue, tat, version) VALUES (?1, ?2, 1) \
     ON CONFLICT (queue) DO UPDATE SET tat = excluded.tat, version = version + 1";

/// Claims up to `want` jobs from the limited `queue`: as many as its limits admit at `now`.
/// Returns them, and how long the limits hold further claims back.
pub(super) fn claim_limited(
    conn: &Connection,
    now: DateTime<Utc>,
    queue: &str,
    limits: QueueLimits,
    args: &ClaimArgs<'_>,
    want: u32,
) -> Result<(Vec<RawJob>, Option<Duration>), OpError> {
    let cap = i64::from(limits.concurrency.unwrap_or(0));
    let (tat, running): (Option<i64>, i64) = conn
        .prepare_cached(STATE_SQL)?
        .query_row(params![queue, cap], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let state = LimitState {
        tat: tat.and_then(DateTime::from_timestamp_micros),
        running: u32::try_from(running).unwrap_or(u32::MAX),
    };
    let admission = limits.admit(state, now, want);
    let rows = if admission.allowed() == 0 {
        Vec::new()
    } else {
        claim_rows(conn, &[queue.to_string()], args, admission.allowed())?
    };
    let claimed = rows.len() as u32;
    if let Some(tat) = admission.tat_after(claimed)
        && claimed > 0
    {
        conn.prepare_cached(WRITE_SQL)?
            .execute(params![queue, micros(tat)])?;
    }
    Ok((rows, admission.held_back(claimed)))
}
