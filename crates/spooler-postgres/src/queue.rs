//! Queue statements: per-queue counts and oldest wait, pause and resume.

use crate::PgStore;
use crate::error::map;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spooler_core::store::QueueStore;
use spooler_core::{JobState, QueueInfo, StoreError, StoreResult};
use sqlx::Row;
use std::collections::BTreeMap;

pub(crate) const COUNTS_SQL: &str = "SELECT queue, state, count(*)::int8,
        min(run_at) FILTER (WHERE state = 'available')
   FROM {s}.jobs GROUP BY queue, state";

pub(crate) const PAUSED_SQL: &str = "SELECT queue FROM {s}.paused_queues";

pub(crate) const PAUSE_SQL: &str = "INSERT INTO {s}.paused_queues (queue, paused_at) VALUES ($1, $2) ON CONFLICT (queue) DO NOTHING";

/// Resuming wakes the queue's workers: its available jobs may be claimed again.
pub(crate) const RESUME_SQL: &str =
    "WITH r AS (DELETE FROM {s}.paused_queues WHERE queue = $1 RETURNING queue)
    SELECT pg_notify($2, queue) FROM r";

#[async_trait]
impl QueueStore for PgStore {
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
