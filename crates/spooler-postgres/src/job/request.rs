//! Requests written by the SQL function `enqueue(kind, args, …)` become jobs here, through the same
//! insert as every enqueue (the queue's defaults, uniqueness), in the transaction that deletes
//! them. Every process does this: woken by the function's notification (`<schema>_requests`), at
//! connect, and every [`SWEEP_EVERY`] in case a notification was missed; `SKIP LOCKED` keeps
//! processes off each other's requests. A request that cannot become a job stays, with the reason.

use super::insert::{insert_on, queue_settings};
use crate::Inner;
use crate::error::map;
use chrono::{DateTime, Utc};
use serde_json::Value;
use spooler_core::{NewJob, StoreResult};
use sqlx::{Connection, Row};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// How often a process looks for requests without being told.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The longest one batch may take, whatever the network does.
const DEADLINE: Duration = Duration::from_secs(30);

/// Requests taken per transaction.
const BATCH: i64 = 1000;

/// The oldest requests no other process holds, locked until the transaction ends.
pub(crate) const TAKE_SQL: &str = "SELECT id, queue, kind, args, priority, run_at, max_attempts,
            timeout_ms, unique_key, tags
       FROM {s}.job_requests WHERE refused IS NULL
      ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED";

/// Whether a request waits: read outside any transaction, so a sweep that finds none (nearly
/// every one) holds no lock and opens no transaction.
pub(crate) const ANY_SQL: &str =
    "SELECT EXISTS (SELECT 1 FROM {s}.job_requests WHERE refused IS NULL)";

/// A transaction of the mover ends on the server if its connection goes silent mid-way, so a
/// half-open connection cannot keep the requests (or a `DROP SCHEMA`) waiting.
const IDLE_TIMEOUT_SQL: &str = "SET LOCAL idle_in_transaction_session_timeout = '5s'";

/// Deletes the requests `$1` that became jobs.
pub(crate) const DONE_SQL: &str = "DELETE FROM {s}.job_requests WHERE id = ANY($1)";

/// Keeps the requests `$1` that cannot become jobs, with the reasons `$2`.
pub(crate) const REFUSE_SQL: &str = "UPDATE {s}.job_requests r SET refused = x.why
       FROM unnest($1::int8[], $2::text[]) AS x(id, why) WHERE r.id = x.id";

/// Starts the task that turns requests into jobs for `inner`'s store; it ends when the store is
/// dropped. `wake` is notified by the listener when the function's notification arrives.
pub(crate) fn spawn(inner: Weak<Inner>, wake: Arc<Notify>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Some(inner) = inner.upgrade() else { return };
            loop {
                match tokio::time::timeout(DEADLINE, take(&inner)).await {
                    Ok(Ok(n)) if n as i64 == BATCH => continue,
                    Ok(Ok(_)) => break,
                    Err(_) => {
                        tracing::warn!(store = %inner.url, "turning SQL enqueue requests into jobs took over {DEADLINE:?}; trying again in {SWEEP_EVERY:?}");
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(store = %inner.url, error = %e, "cannot turn SQL enqueue requests into jobs; trying again in {SWEEP_EVERY:?}");
                        break;
                    }
                }
            }
            drop(inner);
            let _ = tokio::time::timeout(SWEEP_EVERY, wake.notified()).await;
        }
    })
}

/// Turns up to [`BATCH`] requests into jobs in one transaction; returns how many it took.
pub(crate) async fn take(inner: &Inner) -> StoreResult<usize> {
    match sqlx::query_scalar::<_, bool>(&inner.sql.request_any)
        .fetch_one(&inner.pool)
        .await
    {
        Ok(true) => {}
        Ok(false) => return Ok(0),
        // A schema not migrated to version 10 yet has no requests.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => return Ok(0),
        Err(e) => return Err(map(e)),
    }
    let settings = queue_settings(inner).await?;
    let mut conn = inner.pool.acquire().await.map_err(map)?;
    let mut tx = conn.begin().await.map_err(map)?;
    sqlx::query(IDLE_TIMEOUT_SQL)
        .execute(&mut *tx)
        .await
        .map_err(map)?;
    let rows = match sqlx::query(&inner.sql.request_take)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await
    {
        Ok(rows) => rows,
        // A schema not migrated to version 10 yet has no requests.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => return Ok(0),
        Err(e) => return Err(map(e)),
    };
    if rows.is_empty() {
        return Ok(0);
    }
    let (mut ids, mut jobs) = (Vec::new(), Vec::new());
    let (mut refused_ids, mut reasons) = (Vec::new(), Vec::new());
    for row in &rows {
        let id: i64 = row.try_get("id").map_err(map)?;
        let timeout_ms: Option<i64> = row.try_get("timeout_ms").map_err(map)?;
        let job = NewJob {
            queue: row.try_get("queue").map_err(map)?,
            kind: row.try_get("kind").map_err(map)?,
            args: row.try_get::<Value, _>("args").map_err(map)?,
            priority: row.try_get("priority").map_err(map)?,
            run_at: row
                .try_get::<Option<DateTime<Utc>>, _>("run_at")
                .map_err(map)?,
            max_attempts: row.try_get("max_attempts").map_err(map)?,
            timeout: timeout_ms.map(|ms| Duration::from_millis(ms.max(0) as u64)),
            unique_key: row.try_get("unique_key").map_err(map)?,
            tags: row.try_get("tags").map_err(map)?,
            ..NewJob::new("", Value::Null)
        };
        match job.validate() {
            Ok(()) => {
                ids.push(id);
                jobs.push(job);
            }
            Err(e) => {
                tracing::warn!(store = %inner.url, request = id, "an enqueue() request cannot become a job: {e}; it stays in job_requests with the reason");
                refused_ids.push(id);
                reasons.push(e.to_string());
            }
        }
    }
    let (_, woken) = insert_on(inner, &mut tx, &jobs, &settings, true).await?;
    sqlx::query(&inner.sql.request_done)
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(map)?;
    if !refused_ids.is_empty() {
        sqlx::query(&inner.sql.request_refuse)
            .bind(&refused_ids)
            .bind(&reasons)
            .execute(&mut *tx)
            .await
            .map_err(map)?;
    }
    tx.commit().await.map_err(map)?;
    inner.wake_local(woken);
    Ok(rows.len())
}
