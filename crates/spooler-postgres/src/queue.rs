//! Queue statements: per-queue counts and oldest wait, pause and resume, each queue's stored
//! defaults.

use crate::PgStore;
use crate::error::map;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spooler_core::store::{Keep, QueueRetention, QueueSettings, QueueStore};
use spooler_core::{JobState, QueueInfo, QueueLimits, Routes, StoreError, StoreResult};
use sqlx::Row;
use std::collections::BTreeMap;

/// How many jobs each queue holds in each state, and its oldest available job's `run_at`.
pub(crate) const COUNTS_SQL: &str = "SELECT queue, state, count(*)::int8,
        min(run_at) FILTER (WHERE state = 'available')
   FROM {s}.jobs GROUP BY queue, state";

/// The paused queues.
pub(crate) const PAUSED_SQL: &str = "SELECT queue FROM {s}.paused_queues";

/// Pauses the queue `$1` (at `$2`); pausing a paused queue changes nothing.
pub(crate) const PAUSE_SQL: &str = "INSERT INTO {s}.paused_queues (queue, paused_at) VALUES ($1, $2) ON CONFLICT (queue) DO NOTHING";

/// Resuming wakes the queue's workers: its available jobs may be claimed again.
pub(crate) const RESUME_SQL: &str =
    "WITH r AS (DELETE FROM {s}.paused_queues WHERE queue = $1 RETURNING queue)
    SELECT pg_notify($2, queue) FROM r";

/// Makes two processes configuring at once take turns instead of colliding on the primary key.
pub(crate) const CONFIGURE_LOCK_SQL: &str = "LOCK TABLE {s}.queue_settings IN EXCLUSIVE MODE";

/// Deletes every queue's defaults, in the transaction that stores the new ones.
pub(crate) const CONFIGURE_CLEAR_SQL: &str = "DELETE FROM {s}.queue_settings";

/// Stores defaults given as arrays (after the old ones were deleted in the same transaction).
pub(crate) const CONFIGURE_SQL: &str = "INSERT INTO {s}.queue_settings
       (queue, max_attempts, timeout_ms, keep_completed_ms, keep_failed_ms, keep_cancelled_ms,
        routes, limits, unique_period, updated_at)
    SELECT q, m, t, kc, kf, kx, r, l, up, $7
      FROM unnest($1::text[], $2::int4[], $3::int8[], $4::int8[], $5::int8[], $6::int8[],
                  $8::jsonb[], $9::jsonb[], $10::jsonb[])
           AS u(q, m, t, kc, kf, kx, r, l, up)";

/// Every queue's stored defaults.
pub(crate) const SETTINGS_SQL: &str = "SELECT queue, max_attempts, timeout_ms,
        keep_completed_ms, keep_failed_ms, keep_cancelled_ms, routes, limits,
        unique_period
   FROM {s}.queue_settings ORDER BY queue";

/// Column `i` (named `name`) of `row` decoded from JSON; `None` for NULL.
fn json_column<T: serde::de::DeserializeOwned>(
    row: &sqlx::postgres::PgRow,
    i: usize,
    name: &str,
) -> Result<Option<T>, sqlx::Error> {
    row.try_get::<Option<serde_json::Value>, _>(i)?
        .map(|v| {
            serde_json::from_value(v).map_err(|e| sqlx::Error::ColumnDecode {
                index: name.into(),
                source: e.into(),
            })
        })
        .transpose()
}

/// Rows of [`SETTINGS_SQL`] as settings.
pub(crate) fn decode_settings(
    rows: &[sqlx::postgres::PgRow],
) -> Result<Vec<QueueSettings>, sqlx::Error> {
    rows.iter()
        .map(|row| {
            let timeout_ms: Option<i64> = row.try_get(2)?;
            let keep = |i: usize| -> Result<Option<Keep>, sqlx::Error> {
                Ok(row.try_get::<Option<i64>, _>(i)?.map(Keep::from_ms))
            };
            Ok(QueueSettings {
                queue: row.try_get(0)?,
                max_attempts: row.try_get(1)?,
                timeout: timeout_ms.map(|ms| std::time::Duration::from_millis(ms.max(1) as u64)),
                retention: QueueRetention {
                    completed: keep(3)?,
                    failed: keep(4)?,
                    cancelled: keep(5)?,
                },
                routes: json_column::<Routes>(row, 6, "routes")?.unwrap_or_default(),
                limits: json_column::<QueueLimits>(row, 7, "limits")?.unwrap_or_default(),
                unique: json_column(row, 8, "unique_period")?,
            })
        })
        .collect()
}

#[async_trait]
impl QueueStore for PgStore {
    async fn queue_configure(&self, settings: &[QueueSettings]) -> StoreResult<()> {
        for s in settings {
            if s.queue.trim().is_empty() {
                return Err(StoreError::InvalidInput {
                    field: "queue",
                    message: "must not be empty".into(),
                });
            }
            if s.max_attempts.is_some_and(|n| n < 1) {
                return Err(StoreError::InvalidInput {
                    field: "max_attempts",
                    message: format!("queue {}: must be at least 1", s.queue),
                });
            }
        }
        let queues: Vec<&str> = settings.iter().map(|s| s.queue.as_str()).collect();
        let attempts: Vec<Option<i32>> = settings.iter().map(|s| s.max_attempts).collect();
        let timeouts: Vec<Option<i64>> = settings
            .iter()
            .map(|s| s.timeout.map(spooler_core::job::timeout_ms))
            .collect();
        let keeps = |state: fn(&QueueRetention) -> Option<Keep>| -> Vec<Option<i64>> {
            settings
                .iter()
                .map(|s| state(&s.retention).map(Keep::to_ms))
                .collect()
        };
        let (keep_completed, keep_failed, keep_cancelled) = (
            keeps(|r| r.completed),
            keeps(|r| r.failed),
            keeps(|r| r.cancelled),
        );
        let routes: Vec<Option<serde_json::Value>> = settings
            .iter()
            .map(|s| {
                (!s.routes.is_empty())
                    .then(|| serde_json::to_value(&s.routes).expect("routes serialize"))
            })
            .collect();
        let limits: Vec<Option<serde_json::Value>> = settings
            .iter()
            .map(|s| {
                (!s.limits.is_none())
                    .then(|| serde_json::to_value(s.limits).expect("limits serialize"))
            })
            .collect();
        let unique: Vec<Option<serde_json::Value>> = settings
            .iter()
            .map(|s| {
                s.unique
                    .map(|u| serde_json::to_value(u).expect("unique serializes"))
            })
            .collect();
        // One transaction replaces the lot, under the lock.
        let mut tx = self.inner.pool.begin().await.map_err(map)?;
        for sql in [
            &self.inner.sql.queue_settings_lock,
            &self.inner.sql.queue_settings_clear,
        ] {
            sqlx::query(sql).execute(&mut *tx).await.map_err(map)?;
        }
        sqlx::query(&self.inner.sql.queue_configure)
            .bind(&queues)
            .bind(&attempts)
            .bind(&timeouts)
            .bind(&keep_completed)
            .bind(&keep_failed)
            .bind(&keep_cancelled)
            .bind(self.inner.clock.now())
            .bind(&routes)
            .bind(&limits)
            .bind(&unique)
            .execute(&mut *tx)
            .await
            .map_err(map)?;
        self.inner.settings.forget();
        let committed = tx.commit().await.map_err(map);
        // Forgotten again: an insert may have read the old settings meanwhile.
        self.inner.settings.forget();
        committed
    }

    async fn queue_settings(&self) -> StoreResult<Vec<QueueSettings>> {
        let rows = sqlx::query(&self.inner.sql.queue_settings)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(map)?;
        decode_settings(&rows).map_err(map)
    }

    async fn queue_list(&self) -> StoreResult<Vec<QueueInfo>> {
        let pool = &self.inner.pool;
        let rows = sqlx::query(&self.inner.sql.queue_counts)
            .fetch_all(pool)
            .await
            .map_err(map)?;
        let paused: Vec<String> = sqlx::query_scalar(&self.inner.sql.queue_paused)
            .fetch_all(pool)
            .await
            .map_err(map)?;
        let mut queues: BTreeMap<String, QueueInfo> = BTreeMap::new();
        let entry = |queues: &mut BTreeMap<String, QueueInfo>, name: &str| {
            queues
                .entry(name.to_string())
                .or_insert_with(|| QueueInfo {
                    name: name.to_string(),
                    paused: false,
                    counts: Default::default(),
                    oldest_available_at: None,
                })
                .clone()
        };
        for row in &rows {
            let name: String = row.try_get(0).map_err(map)?;
            let state: String = row.try_get(1).map_err(map)?;
            let state: JobState = state
                .parse()
                .map_err(|message| StoreError::Decode { id: 0, message })?;
            let count: i64 = row.try_get(2).map_err(map)?;
            let oldest: Option<DateTime<Utc>> = row.try_get(3).map_err(map)?;
            let mut info = entry(&mut queues, &name);
            info.counts.add(state, count);
            if oldest.is_some() {
                info.oldest_available_at = oldest;
            }
            queues.insert(name, info);
        }
        for name in paused {
            let mut info = entry(&mut queues, &name);
            info.paused = true;
            queues.insert(name, info);
        }
        Ok(queues.into_values().collect())
    }

    async fn queue_pause(&self, queue: &str) -> StoreResult<()> {
        sqlx::query(&self.inner.sql.queue_pause)
            .bind(queue)
            .bind(self.inner.clock.now())
            .execute(&self.inner.pool)
            .await
            .map_err(map)?;
        Ok(())
    }

    async fn queue_resume(&self, queue: &str) -> StoreResult<()> {
        sqlx::query(&self.inner.sql.queue_resume)
            .bind(queue)
            .bind(&self.inner.channel)
            .execute(&self.inner.pool)
            .await
            .map_err(map)?;
        self.inner.wake_local([queue.to_string()]);
        Ok(())
    }
}
