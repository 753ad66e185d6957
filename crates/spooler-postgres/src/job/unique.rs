//! Jobs unique within a period: their keys taken in the key ledger in the transaction that
//! inserts them, a held key answered with the job that holds it ([`spooler_core::unique`]).

use super::insert::insert_plain;
use super::{decode, job_cols};
use crate::Inner;
use crate::error::map;
use chrono::{DateTime, Utc};
use spooler_core::store::QueueSettingsMap;
use spooler_core::{Inserted, JobRow, NewJob, StoreError, StoreResult, UniquePeriod};
use sqlx::{PgConnection, Row};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Takes the period keys `$1` (at `$2`, each held until `$3[i]`) that are free: never claimed, or
/// their period is over. Answers those taken. A concurrent enqueue of the same key waits on the
/// primary key and then finds it held. Spill replays' keys (no expiry) are never taken again.
pub(crate) const PERIOD_CLAIM_SQL: &str = "INSERT INTO {s}.replays (key, replayed_at, expires_at)
    SELECT k, $2, e FROM unnest($1::text[], $3::timestamptz[]) AS u(k, e)
    ON CONFLICT (key) DO UPDATE
       SET replayed_at = excluded.replayed_at, expires_at = excluded.expires_at, job_id = NULL
     WHERE {s}.replays.expires_at IS NOT NULL AND {s}.replays.expires_at <= $2
    RETURNING key";

/// The jobs holding the keys `$1`, the keys locked (their latest version read) so that a holder
/// found missing can be replaced.
pub(crate) const PERIOD_HELD_SQL: &str =
    "SELECT key, job_id FROM {s}.replays WHERE key = ANY($1::text[]) FOR UPDATE";

/// The jobs `$1`.
pub(crate) const JOBS_BY_ID_SQL: &str = concat!(
    "SELECT ",
    job_cols!(),
    " FROM {s}.jobs WHERE id = ANY($1::int8[])"
);

/// Takes again the keys `$1` whose job was deleted, each held until `$3[i]` from `$2`.
pub(crate) const PERIOD_RETAKE_SQL: &str = "UPDATE {s}.replays r
       SET job_id = NULL, replayed_at = $2, expires_at = u.e
      FROM unnest($1::text[], $3::timestamptz[]) AS u(k, e) WHERE r.key = u.k";

/// What became of one job of the call.
enum Slot {
    /// Inserted: its index among the jobs inserted.
    Inserted(usize),
    /// Answered with the job holding its key.
    Held(String),
}

/// Inserts `jobs` on `conn`, inside a transaction, where some have period keys (`keys`, aligned
/// with `jobs`): as [`insert_plain`] for the rest.
pub(super) async fn insert_with_periods(
    inner: &Inner,
    conn: &mut PgConnection,
    jobs: &[NewJob],
    keys: Vec<Option<(String, UniquePeriod)>>,
    settings: &QueueSettingsMap,
    notify: bool,
) -> StoreResult<(Vec<Inserted>, BTreeSet<String>)> {
    for job in jobs {
        job.validate()?;
    }
    let now = inner.clock.now();
    let mut distinct: Vec<String> = Vec::new();
    let mut untils: Vec<DateTime<Utc>> = Vec::new();
    let mut seen = HashSet::new();
    for (key, period) in keys.iter().flatten() {
        if seen.insert(key.as_str()) {
            distinct.push(key.clone());
            untils.push(period.until(now));
        }
    }
    let mut free: HashSet<String> = sqlx::query_scalar(&inner.sql.period_claim)
        .bind(&distinct)
        .bind(now)
        .bind(&untils)
        .fetch_all(&mut *conn)
        .await
        .map_err(map)?
        .into_iter()
        .collect();
    let mut holders: HashMap<String, JobRow> = HashMap::new();
    let held: Vec<&String> = distinct.iter().filter(|k| !free.contains(*k)).collect();
    if !held.is_empty() {
        let rows = sqlx::query(&inner.sql.period_held)
            .bind(&held)
            .fetch_all(&mut *conn)
            .await
            .map_err(map)?;
        let mut by_id: HashMap<i64, String> = HashMap::new();
        for row in &rows {
            let key: String = row.try_get(0).map_err(map)?;
            if let Some(id) = row.try_get::<Option<i64>, _>(1).map_err(map)? {
                by_id.insert(id, key);
            }
        }
        let ids: Vec<i64> = by_id.keys().copied().collect();
        for row in sqlx::query(&inner.sql.jobs_by_id)
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(map)?
        {
            let job = decode(&row)?;
            if let Some(key) = by_id.get(&job.id) {
                holders.insert(key.clone(), job);
            }
        }
        // A key whose job was deleted within its period is free again.
        let (retake, retake_until): (Vec<&String>, Vec<DateTime<Utc>>) = distinct
            .iter()
            .zip(&untils)
            .filter(|(k, _)| !free.contains(*k) && !holders.contains_key(*k))
            .unzip();
        if !retake.is_empty() {
            sqlx::query(&inner.sql.period_retake)
                .bind(&retake)
                .bind(now)
                .bind(&retake_until)
                .execute(&mut *conn)
                .await
                .map_err(map)?;
            free.extend(retake.into_iter().cloned());
        }
    }
    // The first job of each free key, and every job without one, are inserted.
    let mut taken: HashSet<&str> = HashSet::new();
    let mut slots = Vec::with_capacity(jobs.len());
    let mut insert: Vec<NewJob> = Vec::new();
    let mut inserted_keys: Vec<&str> = Vec::new();
    for (job, key) in jobs.iter().zip(&keys) {
        match key {
            Some((key, _)) if !(free.contains(key) && taken.insert(key.as_str())) => {
                slots.push(Slot::Held(key.clone()));
            }
            other => {
                if let Some((key, _)) = other {
                    inserted_keys.push(key.as_str());
                }
                slots.push(Slot::Inserted(insert.len()));
                insert.push(job.clone());
            }
        }
    }
    let (inserted, woken) = insert_plain(inner, conn, &insert, settings, notify).await?;
    let key_jobs: HashMap<&str, &JobRow> = jobs
        .iter()
        .zip(&keys)
        .zip(&slots)
        .filter_map(|((_, key), slot)| match (key, slot) {
            (Some((key, _)), Slot::Inserted(i)) => Some((key.as_str(), &inserted[*i].job)),
            _ => None,
        })
        .collect();
    if !inserted_keys.is_empty() {
        let ids: Vec<i64> = inserted_keys.iter().map(|k| key_jobs[k].id).collect();
        sqlx::query(&inner.sql.replay_note)
            .bind(&inserted_keys)
            .bind(&ids)
            .execute(&mut *conn)
            .await
            .map_err(map)?;
    }
    let mut out = Vec::with_capacity(jobs.len());
    for slot in &slots {
        out.push(match slot {
            Slot::Inserted(i) => inserted[*i].clone(),
            Slot::Held(key) => Inserted {
                job: match key_jobs.get(key.as_str()) {
                    Some(job) => (*job).clone(),
                    None => holders
                        .get(key)
                        .cloned()
                        .ok_or_else(|| StoreError::Database {
                            message: format!("unique key {key} is held but no job holds it"),
                        })?,
                },
                duplicate: true,
            },
        });
    }
    Ok((out, woken))
}
