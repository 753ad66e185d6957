//! Jobs unique within a period: their keys taken in the key ledger in the transaction that
//! inserts them, a held key answered with the job that holds it ([`spooler_core::unique`]).

use super::*;
use spooler_core::UniquePeriod;

/// Takes a period key in the ledger (`?1`, at `?2`, held until `?3`) unless it is held: claimed
/// before, its period not over and its job still there. Spill replays' keys (no expiry) are never
/// taken again.
const PERIOD_CLAIM_SQL: &str = "INSERT INTO spooler_replays (key, replayed_at, expires_at) \
     VALUES (?1, ?2, ?3) ON CONFLICT (key) DO UPDATE \
     SET replayed_at = excluded.replayed_at, expires_at = excluded.expires_at, job_id = NULL \
     WHERE spooler_replays.expires_at IS NOT NULL AND (spooler_replays.expires_at <= ?2 \
        OR NOT EXISTS (SELECT 1 FROM spooler_jobs j WHERE j.id = spooler_replays.job_id))";

/// Takes `key` for a job inserted at `now` into a queue unique for `period`; if it is held,
/// answers the job holding it instead.
pub(super) fn take_key(
    conn: &Connection,
    key: &str,
    period: &UniquePeriod,
    now: DateTime<Utc>,
) -> Result<Option<RawJob>, OpError> {
    let taken = conn.prepare_cached(PERIOD_CLAIM_SQL)?.execute(params![
        key,
        micros(now),
        micros(period.until(now))
    ])?;
    if taken > 0 {
        return Ok(None);
    }
    let holder = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM spooler_jobs \
             WHERE id = (SELECT job_id FROM spooler_replays WHERE key = ?1)"
        ))?
        .query_row([key], RawJob::from_row)
        .optional()?
        .ok_or_else(|| StoreError::Database {
            message: format!("unique key {key} is held but its job is gone"),
        })?;
    Ok(Some(holder))
}

/// Records that `key` is held by the job `id`, inserted in this transaction.
pub(super) fn note_key(conn: &Connection, key: &str, id: Option<JobId>) -> Result<(), OpError> {
    conn.prepare_cached("UPDATE spooler_replays SET job_id = ?2 WHERE key = ?1")?
        .execute(params![key, id])?;
    Ok(())
}
