//! Replay: messages enqueued once per key, the keys recorded in the transaction that inserts the
//! jobs.

use super::insert::{insert_on, queue_settings};
use crate::Inner;
use crate::error::map;
use spooler_core::store::{Replay, Replayed};
use spooler_core::{JobId, NewJob, StoreResult};
use sqlx::Row;
use std::collections::{HashMap, HashSet};

/// Records the keys `$1` not replayed before, answering those.
pub(crate) const REPLAY_CLAIM_SQL: &str = "INSERT INTO {s}.replays (key, replayed_at)
    SELECT k, $2 FROM unnest($1::text[]) AS k ON CONFLICT (key) DO NOTHING RETURNING key";

/// Notes the job each key `$1` enqueued (`$2`).
pub(crate) const REPLAY_NOTE_SQL: &str = "UPDATE {s}.replays r SET job_id = u.id
      FROM unnest($1::text[], $2::int8[]) AS u(k, id) WHERE r.key = u.k";

/// The job each of the keys `$1` enqueued.
pub(crate) const REPLAYED_SQL: &str =
    "SELECT key, job_id FROM {s}.replays WHERE key = ANY($1::text[])";

pub(crate) async fn replay(inner: &Inner, replays: &[Replay]) -> StoreResult<Vec<Replayed>> {
    if replays.is_empty() {
        return Ok(Vec::new());
    }
    for r in replays {
        r.job.validate()?;
    }
    let settings = queue_settings(inner).await?;
    let keys: Vec<&str> = replays.iter().map(|r| r.key.as_str()).collect();
    let mut tx = inner.pool.begin().await.map_err(map)?;
    let fresh: HashSet<String> = sqlx::query_scalar(&inner.sql.replay_claim)
        .bind(&keys)
        .bind(inner.clock.now())
        .fetch_all(&mut *tx)
        .await
        .map_err(map)?
        .into_iter()
        .collect();
    // The first message of each fresh key is enqueued; later ones with that key in this call
    // are answered the job it got.
    let mut first: HashSet<&str> = HashSet::new();
    let enqueue: Vec<bool> = replays
        .iter()
        .map(|r| fresh.contains(&r.key) && first.insert(r.key.as_str()))
        .collect();
    let jobs: Vec<NewJob> = replays
        .iter()
        .zip(&enqueue)
        .filter(|(_, e)| **e)
        .map(|(r, _)| r.job.clone())
        .collect();
    let (inserted, _) = insert_on(inner, &mut tx, &jobs, &settings, true).await?;
    let mut ids: HashMap<String, Option<JobId>> = HashMap::new();
    let enqueued_keys: Vec<&str> = replays
        .iter()
        .zip(&enqueue)
        .filter(|(_, e)| **e)
        .map(|(r, _)| r.key.as_str())
        .collect();
    let enqueued_ids: Vec<JobId> = inserted.iter().map(|i| i.job.id).collect();
    if !enqueued_keys.is_empty() {
        sqlx::query(&inner.sql.replay_note)
            .bind(&enqueued_keys)
            .bind(&enqueued_ids)
            .execute(&mut *tx)
            .await
            .map_err(map)?;
    }
    for (k, id) in enqueued_keys.iter().zip(&enqueued_ids) {
        ids.insert(k.to_string(), Some(*id));
    }
    let earlier: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| !ids.contains_key(*k))
        .collect();
    if !earlier.is_empty() {
        let rows = sqlx::query(&inner.sql.replayed)
            .bind(&earlier)
            .fetch_all(&mut *tx)
            .await
            .map_err(map)?;
        for row in rows {
            ids.insert(row.try_get(0).map_err(map)?, row.try_get(1).map_err(map)?);
        }
    }
    tx.commit().await.map_err(map)?;
    Ok(replays
        .iter()
        .zip(enqueue)
        .map(|(r, enqueued)| Replayed {
            id: ids.get(&r.key).copied().flatten(),
            enqueued,
        })
        .collect())
}
