//! The registry of live workers, as their heartbeats report them.

use crate::SqliteStore;
use crate::job::{from_micros, micros};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;
use spooler_core::store::WorkerInfo;
use spooler_core::store::prelude::*;
use spooler_core::{StoreError, StoreResult};

#[async_trait]
impl WorkerStore for SqliteStore {
    async fn worker_heartbeat(&self, worker: &WorkerInfo) -> StoreResult<()> {
        let db = &self.db;
        let invalid = |field: &'static str, e: serde_json::Error| StoreError::InvalidInput {
            field,
            message: e.to_string(),
        };
        let queues = serde_json::to_string(&worker.queues).map_err(|e| invalid("queues", e))?;
        let kinds = serde_json::to_string(&worker.kinds).map_err(|e| invalid("kinds", e))?;
        let w = worker.clone();
        db.write(move |ctx| {
            ctx.conn
                .prepare_cached(
                    "INSERT INTO spooler_workers \
                         (id, host, pid, queues, kinds, running, started_at, last_seen_at, version) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, \
                         queues = excluded.queues, kinds = excluded.kinds, running = excluded.running, \
                         started_at = excluded.started_at, last_seen_at = excluded.last_seen_at, \
                         version = excluded.version",
                )?
                .execute(params![
                    w.id,
                    w.host,
                    w.pid,
                    queues,
                    kinds,
                    w.running,
                    micros(w.started_at),
                    micros(ctx.now),
                    w.version
                ])?;
            Ok(())
        })
        .await
    }

    async fn worker_list(&self, since: DateTime<Utc>) -> StoreResult<Vec<WorkerInfo>> {
        let db = &self.db;
        let since = micros(since);
        let rows: Vec<WorkerRow> = db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT id, host, pid, queues, kinds, running, started_at, last_seen_at, version \
                         FROM spooler_workers WHERE last_seen_at >= ?1 ORDER BY id",
                    )?
                    .query_map([since], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                            r.get(8)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<_>>()?)
            })
            .await?;
        rows.into_iter()
            .map(
                |(id, host, pid, queues, kinds, running, started, seen, version)| {
                    let bad = |what: &str, e: serde_json::Error| StoreError::Decode {
                        id: 0,
                        message: format!("worker {id}: {what}: {e}"),
                    };
                    Ok(WorkerInfo {
                        queues: serde_json::from_str(&queues).map_err(|e| bad("queues", e))?,
                        kinds: serde_json::from_str(&kinds).map_err(|e| bad("kinds", e))?,
                        host,
                        pid,
                        version,
                        running,
                        started_at: from_micros(0, started)?,
                        last_seen_at: from_micros(0, seen)?,
                        id,
                    })
                },
            )
            .collect()
    }

    async fn worker_remove(&self, id: &str) -> StoreResult<()> {
        let db = &self.db;
        let id = id.to_string();
        db.write(move |ctx| {
            ctx.conn
                .prepare_cached("DELETE FROM spooler_workers WHERE id = ?1")?
                .execute(params![id])?;
            Ok(())
        })
        .await
    }
}

type WorkerRow = (String, String, u32, String, String, u32, i64, i64, String);
