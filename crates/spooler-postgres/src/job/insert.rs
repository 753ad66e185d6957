//! Insert: many jobs per statement (one by a plain `VALUES` row), inside the caller's transaction
//! with [`PgStore::job_insert_tx`], and the `unique_key` handling (duplicates resolve to the job
//! holding the key).

use super::{decode, job_cols, notify_fragment, unfinished};
use crate::error::map;
use crate::{Inner, PgStore};
use chrono::{DateTime, Utc};
use serde_json::Value;
use spooler_core::store::{QueueSettings, QueueSettingsMap};
use spooler_core::{Inserted, JobRow, JobState, NewJob, StoreError, StoreResult};
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, Row};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// The `unnest` insert, its result ending with `$returned`. `max_attempts` and `timeout_ms` come
/// resolved ([`QueueSettings::resolve`](spooler_core::store::QueueSettings::resolve)).
macro_rules! insert_unnest {
    ($returned:expr) => {
        concat!(
            "WITH input AS (
                SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::int4[], $5::timestamptz[],
                                     $6::int4[], $7::int8[], $8::text[], $9::jsonb[], $10::int8[],
                                     $13::jsonb[])
                  WITH ORDINALITY AS i(queue, kind, args, priority, run_at, max_attempts, timeout_ms,
                                       unique_key, tags, routed_from, meta, ord)
            ), ins AS (
                INSERT INTO {s}.jobs_active (queue, kind, args, state, priority, max_attempts, run_at,
                                       created_at, timeout_ms, unique_key, tags, routed_from, meta)
                SELECT i.queue, i.kind, i.args,
                       CASE WHEN coalesce(i.run_at, $11) > $11 THEN 'scheduled' ELSE 'available' END,
                       i.priority, i.max_attempts, coalesce(i.run_at, $11), $11, i.timeout_ms,
                       i.unique_key,
                       CASE WHEN i.tags = '[]'::jsonb THEN '{}'::text[]
                            ELSE ARRAY(SELECT jsonb_array_elements_text(i.tags)) END,
                       i.routed_from, i.meta
                  FROM input i ORDER BY i.ord
                ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
                RETURNING id, unique_key, queue, state
            )
            SELECT ins.id, ins.unique_key, ",
            $returned,
            " FROM ins"
        )
    };
}

/// The insert that also sends the wake-ups, delivered at its transaction's commit (for the
/// caller's transactions).
pub(crate) const INSERT_NOTIFY_SQL: &str = insert_unnest!(notify_fragment!("ins", "$12"));

/// The insert whose wake-ups the notifier sends after the commit (`$12` is unused).
pub(crate) const INSERT_SQL: &str = insert_unnest!("$12::text AS channel");

/// The insert of one job by the store itself (no `NOTIFY`): a plain `VALUES` row, which plans in a
/// fraction of the time of the `unnest` form. With custom plans (see `PgStore::connect_with`) that
/// planning is on every single enqueue's path. Same parameters and result columns as
/// [`INSERT_SQL`], each array replaced by its one element, but for the meta, which is `$12` here.
pub(crate) const INSERT_ONE_SQL: &str =
    "INSERT INTO {s}.jobs_active (queue, kind, args, state, priority, max_attempts, run_at,
                                  created_at, timeout_ms, unique_key, tags, routed_from, meta)
     VALUES ($1, $2, $3,
             CASE WHEN coalesce($5, $11) > $11 THEN 'scheduled' ELSE 'available' END,
             $4, $6, coalesce($5, $11), $11, $7, $8, $9, $10, $12)
     ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
     RETURNING id, unique_key";

/// The unfinished jobs holding any of the unique keys `$1`.
pub(crate) const EXISTING_UNIQUE_SQL: &str = concat!(
    "SELECT ",
    job_cols!(),
    " FROM {s}.jobs
      WHERE unique_key = ANY($1) AND unique_key IS NOT NULL AND state IN ",
    unfinished!()
);

/// The latest job with the unique key `$1`, finished or not.
pub(crate) const LATEST_BY_KEY_SQL: &str = concat!(
    "SELECT ",
    job_cols!(),
    " FROM {s}.jobs WHERE unique_key = $1 ORDER BY id DESC LIMIT 1"
);

/// The queues' stored defaults, read again when the last read is older than
/// [`QueueSettingsCache::MAX_AGE`](spooler_core::store::QueueSettingsCache::MAX_AGE).
pub(crate) async fn queue_settings(inner: &Inner) -> StoreResult<std::sync::Arc<QueueSettingsMap>> {
    if let Some(settings) = inner.settings.fresh() {
        return Ok(settings);
    }
    let rows = sqlx::query(&inner.sql.queue_settings)
        .fetch_all(&inner.pool)
        .await
        .map_err(map)?;
    let settings = crate::queue::decode_settings(&rows).map_err(map)?;
    Ok(inner.settings.keep(settings))
}

/// Inserts `jobs` for [`JobStore::job_insert_many`](spooler_core::store::JobStore::job_insert_many):
/// a few jobs without period keys go with the other callers' of the moment ([`super::group`]).
pub(super) async fn insert_many(inner: &Arc<Inner>, jobs: &[NewJob]) -> StoreResult<Vec<Inserted>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    for job in jobs {
        job.validate()?;
    }
    let settings = queue_settings(inner).await?;
    let periods = jobs
        .iter()
        .any(|j| spooler_core::unique::period_key(settings.get(&j.queue), j).is_some());
    if !periods {
        return if jobs.len() < super::group::ALONE_FROM {
            super::group::insert(inner, jobs, settings).await
        } else {
            insert_now(inner, jobs, &settings).await
        };
    }
    // The period keys are taken in the transaction that inserts their jobs.
    let mut conn = inner.pool.acquire().await.map_err(map)?;
    let mut tx = conn.begin().await.map_err(map)?;
    let (out, woken) = insert_on(inner, &mut tx, jobs, &settings, false).await?;
    tx.commit().await.map_err(map)?;
    drop(conn);
    inner.announce(woken);
    Ok(out)
}

/// Inserts `jobs` (none taking a period key) on a connection of the pool, in one statement or,
/// for a large batch without unique keys, one `COPY` ([`super::copy`]), and wakes the workers of
/// the queues that gained available jobs.
pub(super) async fn insert_now(
    inner: &Inner,
    jobs: &[NewJob],
    settings: &QueueSettingsMap,
) -> StoreResult<Vec<Inserted>> {
    let mut conn = inner.pool.acquire().await.map_err(map)?;
    let (out, woken) = if super::copy::fits(jobs) {
        super::copy::insert_copy(inner, conn, jobs, settings).await?
    } else {
        let inserted = insert_plain(inner, &mut conn, jobs, settings, false).await?;
        drop(conn);
        inserted
    };
    inner.announce(woken);
    Ok(out)
}

impl PgStore {
    /// Inserts jobs on the caller's connection, typically `&mut *tx` of the caller's own
    /// `sqlx::Transaction<'_, Postgres>`: the jobs exist only if that transaction commits, and
    /// their wake-up (`NOTIFY`) is delivered by PostgreSQL at commit. Same semantics as
    /// [`JobStore::job_insert_many`](spooler_core::store::JobStore::job_insert_many) otherwise.
    pub async fn job_insert_tx(
        &self,
        tx: &mut PgConnection,
        jobs: &[NewJob],
    ) -> StoreResult<Vec<Inserted>> {
        let settings = queue_settings(&self.inner).await?;
        insert_on(&self.inner, tx, jobs, &settings, true)
            .await
            .map(|(inserted, _)| inserted)
    }
}

/// Inserts `jobs` on `conn` (inside a transaction when a job's queue makes jobs unique within a
/// period); returns what was inserted (aligned with `jobs`) and the queues that gained available
/// jobs. A job whose period key is held resolves to the job holding it ([`super::unique`]); the
/// rest as [`insert_plain`] says.
pub(crate) async fn insert_on(
    inner: &Inner,
    conn: &mut PgConnection,
    jobs: &[NewJob],
    settings: &QueueSettingsMap,
    notify: bool,
) -> StoreResult<(Vec<Inserted>, BTreeSet<String>)> {
    let keys: Vec<_> = jobs
        .iter()
        .map(|j| spooler_core::unique::period_key(settings.get(&j.queue), j))
        .collect();
    if keys.iter().all(Option::is_none) {
        return insert_plain(inner, conn, jobs, settings, notify).await;
    }
    super::unique::insert_with_periods(inner, conn, jobs, keys, settings, notify).await
}

/// Inserts `jobs` on `conn` in one statement; returns what was inserted (aligned with `jobs`) and
/// the queues that gained available jobs. Duplicates of a `unique_key` resolve to the unfinished
/// job holding it, or within the batch to the first job carrying it. With `notify` the statement
/// sends the wake-ups itself, delivered when the transaction commits; without, the caller sends
/// them once it has committed.
pub(crate) async fn insert_plain(
    inner: &Inner,
    conn: &mut PgConnection,
    jobs: &[NewJob],
    settings: &QueueSettingsMap,
    notify: bool,
) -> StoreResult<(Vec<Inserted>, BTreeSet<String>)> {
    if jobs.is_empty() {
        return Ok((Vec::new(), BTreeSet::new()));
    }
    for job in jobs {
        job.validate()?;
    }
    let resolved: Vec<(i32, Option<i64>)> = jobs.iter().map(|job| resolve(settings, job)).collect();
    let now = inner.clock.now();
    let n = jobs.len();
    let rows = if let [job] = jobs
        && !notify
    {
        sqlx::query(&inner.sql.insert_one)
            .bind(&job.queue)
            .bind(&job.kind)
            .bind(&job.args)
            .bind(job.priority)
            .bind(job.run_at)
            .bind(resolved[0].0)
            .bind(resolved[0].1)
            .bind(&job.unique_key)
            .bind(&job.tags)
            .bind(job.routed_from)
            .bind(now)
            .bind(meta_value(&job.meta))
            .fetch_all(&mut *conn)
            .await
            .map_err(map)?
    } else {
        insert_rows(inner, conn, jobs, &resolved, notify, now).await?
    };
    // The statement returns ids and keys only: the rest of each row is what was sent, with the
    // values resolved above. Ids are drawn in input order, so sorted ids line up with the inputs
    // that were inserted.
    let mut fresh: Vec<(i64, Option<String>)> = rows
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(map)?;
    fresh.sort_by_key(|(id, _)| *id);

    // Which keys got a new row, and which must be looked up among existing unfinished jobs.
    let inserted_keys: HashSet<String> = fresh.iter().filter_map(|(_, k)| k.clone()).collect();
    let missing: Vec<String> = jobs
        .iter()
        .filter_map(|j| j.unique_key.as_deref())
        .filter(|k| !inserted_keys.contains(*k))
        .map(str::to_string)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut by_key: HashMap<String, JobRow> = HashMap::new();
    if !missing.is_empty() {
        let rows = sqlx::query(&inner.sql.existing_unique)
            .bind(&missing)
            .fetch_all(&mut *conn)
            .await
            .map_err(map)?;
        for row in &rows {
            let job = decode(row)?;
            if let Some(k) = job.unique_key.clone() {
                by_key.insert(k, job);
            }
        }
        // The holder finished between the insert and the lookup: report the latest job with the key.
        for key in &missing {
            if !by_key.contains_key(key) {
                let row = sqlx::query(&inner.sql.latest_by_key)
                    .bind(key)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(map)?;
                let row = row.ok_or_else(|| StoreError::Database {
                    message: format!("unique key \"{key}\" conflicted but no job holds it"),
                })?;
                by_key.insert(key.clone(), decode(&row)?);
            }
        }
    }

    let mut fresh = fresh.into_iter();
    let mut out = Vec::with_capacity(n);
    let mut woken = BTreeSet::new();
    let mut seen_keys: HashSet<&str> = HashSet::new();
    for (job, &(max_attempts, timeout_ms)) in jobs.iter().zip(&resolved) {
        let inserted_here = match job.unique_key.as_deref() {
            None => true,
            Some(k) => inserted_keys.contains(k) && seen_keys.insert(k),
        };
        if inserted_here {
            let (id, _) = fresh.next().ok_or_else(|| StoreError::Database {
                message: "insert returned fewer rows than expected".into(),
            })?;
            let row = answered_row(job, id, now, (max_attempts, timeout_ms));
            if row.state == JobState::Available {
                woken.insert(row.queue.clone());
            }
            if let Some(k) = &row.unique_key {
                by_key.insert(k.clone(), row.clone());
            }
            out.push(Inserted {
                job: row,
                duplicate: false,
            });
        } else {
            let key = job.unique_key.as_deref().unwrap_or_default();
            let existing = by_key
                .get(key)
                .cloned()
                .ok_or_else(|| StoreError::Database {
                    message: format!("no job found for unique key \"{key}\""),
                })?;
            out.push(Inserted {
                job: existing,
                duplicate: true,
            });
        }
    }
    Ok((out, woken))
}

/// What `job` leaves unset, from its queue's settings: (max_attempts, timeout in whole ms).
pub(crate) fn resolve(settings: &QueueSettingsMap, job: &NewJob) -> (i32, Option<i64>) {
    let (max_attempts, timeout) = QueueSettings::resolve(settings.get(&job.queue), job);
    (max_attempts, timeout.map(spooler_core::job::timeout_ms))
}

/// The row an insert of `job` as `id` at `now` answers, with its `resolved` defaults.
pub(crate) fn answered_row(
    job: &NewJob,
    id: i64,
    now: DateTime<Utc>,
    (max_attempts, timeout_ms): (i32, Option<i64>),
) -> JobRow {
    let mut row = job.clone().into_row(id, now);
    row.max_attempts = max_attempts;
    row.timeout = timeout_ms.map(|ms| std::time::Duration::from_millis(ms as u64));
    row
}

/// Runs the `unnest` insert of `jobs` (any number; with `notify`, the wake-ups are sent in it).
async fn insert_rows(
    inner: &Inner,
    conn: &mut PgConnection,
    jobs: &[NewJob],
    resolved: &[(i32, Option<i64>)],
    notify: bool,
    now: DateTime<Utc>,
) -> StoreResult<Vec<PgRow>> {
    let n = jobs.len();
    let mut queue = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut args = Vec::with_capacity(n);
    let mut priority = Vec::with_capacity(n);
    let mut run_at: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut max_attempts = Vec::with_capacity(n);
    let mut timeout_ms: Vec<Option<i64>> = Vec::with_capacity(n);
    let mut unique_key: Vec<Option<String>> = Vec::with_capacity(n);
    let mut tags = Vec::with_capacity(n);
    let mut routed_from: Vec<Option<i64>> = Vec::with_capacity(n);
    let mut meta: Vec<Option<Value>> = Vec::with_capacity(n);
    for (job, &(attempts, timeout)) in jobs.iter().zip(resolved) {
        queue.push(job.queue.as_str());
        kind.push(job.kind.as_str());
        args.push(&job.args);
        priority.push(job.priority);
        run_at.push(job.run_at);
        max_attempts.push(attempts);
        timeout_ms.push(timeout);
        unique_key.push(job.unique_key.clone());
        tags.push(Value::from(job.tags.clone()));
        routed_from.push(job.routed_from);
        meta.push(meta_value(&job.meta));
    }
    let sql = if notify {
        &inner.sql.insert_notify
    } else {
        &inner.sql.insert
    };
    sqlx::query(sql)
        .bind(&queue)
        .bind(&kind)
        .bind(&args)
        .bind(&priority)
        .bind(&run_at)
        .bind(&max_attempts)
        .bind(&timeout_ms)
        .bind(&unique_key)
        .bind(&tags)
        .bind(&routed_from)
        .bind(now)
        .bind(&inner.channel)
        .bind(&meta)
        .fetch_all(&mut *conn)
        .await
        .map_err(map)
}

/// A job's meta as the `meta` column holds it: NULL when empty.
pub(crate) fn meta_value(meta: &spooler_core::Meta) -> Option<Value> {
    (!meta.is_empty()).then(|| Value::Object(meta.clone()))
}
