//! The worker registry: heartbeats (which also tell the notifier which workers are this
//! process's own), the listing of live workers, and removal.

use crate::PgStore;
use crate::error::map;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use spooler_core::store::WorkerStore;
use spooler_core::{StoreError, StoreResult, WorkerInfo};
use sqlx::Row;
use std::collections::BTreeMap;

/// Records the worker `$1` as seen at `$8`, with what it runs.
pub(crate) const HEARTBEAT_SQL: &str = "INSERT INTO {s}.workers
        (id, host, pid, queues, kinds, running, started_at, last_seen_at, version)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (id) DO UPDATE
       SET host = EXCLUDED.host, pid = EXCLUDED.pid, queues = EXCLUDED.queues,
           kinds = EXCLUDED.kinds, running = EXCLUDED.running,
           started_at = EXCLUDED.started_at, last_seen_at = EXCLUDED.last_seen_at,
           version = EXCLUDED.version";

/// The workers seen since `$1`.
pub(crate) const LIST_SQL: &str =
    "SELECT id, host, pid, queues, kinds, running, started_at, last_seen_at, version
   FROM {s}.workers WHERE last_seen_at >= $1 ORDER BY id";

/// Forgets the worker `$1`.
pub(crate) const REMOVE_SQL: &str = "DELETE FROM {s}.workers WHERE id = $1";

#[async_trait]
impl WorkerStore for PgStore {
    async fn worker_heartbeat(&self, worker: &WorkerInfo) -> StoreResult<()> {
        let queues =
            serde_json::to_value(&worker.queues).map_err(|e| StoreError::InvalidInput {
                field: "queues",
                message: e.to_string(),
            })?;
        self.inner.local_workers.add(&worker.id);
        sqlx::query(&self.inner.sql.worker_heartbeat)
            .bind(&worker.id)
            .bind(&worker.host)
            .bind(i64::from(worker.pid))
            .bind(queues)
            .bind(&worker.kinds)
            .bind(i32::try_from(worker.running).unwrap_or(i32::MAX))
            .bind(worker.started_at)
            .bind(self.inner.clock.now())
            .bind(&worker.version)
            .execute(&self.inner.pool)
            .await
            .map_err(map)?;
        Ok(())
    }

    async fn worker_list(&self, since: DateTime<Utc>) -> StoreResult<Vec<WorkerInfo>> {
        let rows = sqlx::query(&self.inner.sql.worker_list)
            .bind(since)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(map)?;
        rows.iter()
            .map(|row| {
                let queues: Value = row.try_get(3).map_err(map)?;
                let queues: BTreeMap<String, u32> =
                    serde_json::from_value(queues).map_err(|e| StoreError::Decode {
                        id: 0,
                        message: format!("worker queues: {e}"),
                    })?;
                Ok(WorkerInfo {
                    id: row.try_get(0).map_err(map)?,
                    host: row.try_get(1).map_err(map)?,
                    pid: u32::try_from(row.try_get::<i64, _>(2).map_err(map)?).unwrap_or(0),
                    queues,
                    kinds: row.try_get(4).map_err(map)?,
                    running: u32::try_from(row.try_get::<i32, _>(5).map_err(map)?).unwrap_or(0),
                    started_at: row.try_get(6).map_err(map)?,
                    last_seen_at: row.try_get(7).map_err(map)?,
                    version: row.try_get(8).map_err(map)?,
                })
            })
            .collect()
    }

    async fn worker_remove(&self, id: &str) -> StoreResult<()> {
        self.inner.local_workers.remove(id);
        sqlx::query(&self.inner.sql.worker_remove)
            .bind(id)
            .execute(&self.inner.pool)
            .await
            .map_err(map)?;
        Ok(())
    }
}
