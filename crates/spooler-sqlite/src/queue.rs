//! Queue operations: pause, resume, the per-queue counts `queue_list` reports, and each queue's
//! stored defaults.

use crate::SqliteStore;
use crate::job::{from_micros, micros};
use async_trait::async_trait;
use rusqlite::params;
use spooler_core::store::prelude::*;
use spooler_core::store::{Keep, QueueInfo, QueueRetention, QueueSettings, StateCounts};
use spooler_core::{JobState, QueueLimits, Routes, StoreError, StoreResult};
use std::collections::BTreeMap;
use std::time::Duration;

fn check_name(queue: &str) -> StoreResult<()> {
    if queue.trim().is_empty() {
        return Err(StoreError::InvalidInput {
            field: "queue",
            message: "must not be empty".into(),
        });
    }
    Ok(())
}

#[async_trait]
impl QueueStore for SqliteStore {
    async fn queue_list(&self) -> StoreResult<Vec<QueueInfo>> {
        let db = &self.db;
        let (counts, oldest, paused) = db
            .read(|conn| {
                let counts: Vec<(String, String, i64)> = conn
                    .prepare_cached(
                        "SELECT queue, state, count(*) FROM spooler_jobs GROUP BY queue, state",
                    )?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let oldest: Vec<(String, i64)> = conn
                    .prepare_cached(
                        "SELECT queue, min(run_at) FROM spooler_jobs WHERE state = 'available' \
                         GROUP BY queue",
                    )?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let paused: Vec<String> = conn
                    .prepare_cached("SELECT name FROM spooler_queues WHERE paused = 1")?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                Ok((counts, oldest, paused))
            })
            .await?;
        let mut queues: BTreeMap<String, QueueInfo> = BTreeMap::new();
        for (name, state, n) in counts {
            let state: JobState = state
                .parse()
                .map_err(|message| StoreError::Decode { id: 0, message })?;
            entry(&mut queues, name).counts.add(state, n);
        }
        for (name, at) in oldest {
            entry(&mut queues, name).oldest_available_at = Some(from_micros(0, at)?);
        }
        for name in paused {
            entry(&mut queues, name).paused = true;
        }
        Ok(queues.into_values().collect())
    }

    async fn queue_pause(&self, queue: &str) -> StoreResult<()> {
        let db = &self.db;
        check_name(queue)?;
        let queue = queue.to_string();
        db.write(move |ctx| {
            ctx.conn
                .prepare_cached(
                    "INSERT INTO spooler_queues (name, paused, updated_at) VALUES (?1, 1, ?2) \
                     ON CONFLICT (name) DO UPDATE SET paused = 1, updated_at = excluded.updated_at",
                )?
                .execute(params![queue, micros(ctx.now)])?;
            Ok(())
        })
        .await
    }

    async fn queue_configure(&self, settings: &[QueueSettings]) -> StoreResult<()> {
        for s in settings {
            check_name(&s.queue)?;
            if s.max_attempts.is_some_and(|n| n < 1) {
                return Err(StoreError::InvalidInput {
                    field: "max_attempts",
                    message: format!("queue {}: must be at least 1", s.queue),
                });
            }
        }
        let settings = settings.to_vec();
        self.db.settings.forget();
        let written = self
            .db
            .write(move |ctx| {
                ctx.conn
                    .prepare_cached("DELETE FROM spooler_queue_settings")?
                    .execute([])?;
                let mut insert = ctx.conn.prepare_cached(
                    "INSERT INTO spooler_queue_settings (queue, max_attempts, timeout_ms, \
                       keep_completed_ms, keep_failed_ms, keep_cancelled_ms, routes, limits, unique_period, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?;
                for s in &settings {
                    let timeout_ms = s.timeout.map(spooler_core::job::timeout_ms);
                    let r = &s.retention;
                    insert.execute(params![
                        s.queue,
                        s.max_attempts,
                        timeout_ms,
                        r.completed.map(Keep::to_ms),
                        r.failed.map(Keep::to_ms),
                        r.cancelled.map(Keep::to_ms),
                        routes_json(&s.routes),
                        limits_json(&s.limits),
                        s.unique
                            .map(|u| serde_json::to_string(&u).expect("unique serializes")),
                        micros(ctx.now)
                    ])?;
                }
                Ok(())
            })
            .await;
        // Forgotten again: an insert may have read the old settings while these were written.
        self.db.settings.forget();
        written
    }

    async fn queue_settings(&self) -> StoreResult<Vec<QueueSettings>> {
        self.db
            .read(|conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT queue, max_attempts, timeout_ms, keep_completed_ms, keep_failed_ms, \
                         keep_cancelled_ms, routes, limits, unique_period FROM spooler_queue_settings ORDER BY queue",
                    )?
                    .query_map([], settings_row)?
                    .collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    async fn queue_resume(&self, queue: &str) -> StoreResult<()> {
        let db = &self.db;
        check_name(queue)?;
        let queue = queue.to_string();
        db.write(move |ctx| {
            let removed = ctx
                .conn
                .prepare_cached("DELETE FROM spooler_queues WHERE name = ?1")?
                .execute(params![queue])?;
            if removed > 0 {
                // Its available jobs can be claimed again: wake the workers that wait on it.
                ctx.wake(&queue);
            }
            Ok(())
        })
        .await
    }
}

fn settings_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<QueueSettings> {
    let timeout_ms: Option<i64> = r.get(2)?;
    let keep = |i: usize| -> rusqlite::Result<Option<Keep>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(Keep::from_ms))
    };
    Ok(QueueSettings {
        queue: r.get(0)?,
        max_attempts: r.get(1)?,
        timeout: timeout_ms.map(|ms| Duration::from_millis(ms.max(1) as u64)),
        retention: QueueRetention {
            completed: keep(3)?,
            failed: keep(4)?,
            cancelled: keep(5)?,
        },
        routes: json_column(r, 6)?.unwrap_or_default(),
        limits: json_column(r, 7)?.unwrap_or_default(),
        unique: json_column(r, 8)?,
    })
}

/// Column `i` of `r` decoded from JSON; `None` for NULL.
fn json_column<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<Option<T>> {
    r.get::<_, Option<String>>(i)?
        .map(|text| {
            serde_json::from_str(&text).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
            })
        })
        .transpose()
}

/// A queue's routes as stored: JSON, or NULL for none.
fn routes_json(routes: &Routes) -> Option<String> {
    (!routes.is_empty()).then(|| serde_json::to_string(routes).expect("routes serialize"))
}

/// A queue's limits as stored: JSON, or NULL for none.
fn limits_json(limits: &QueueLimits) -> Option<String> {
    (!limits.is_none()).then(|| serde_json::to_string(limits).expect("limits serialize"))
}

fn entry(queues: &mut BTreeMap<String, QueueInfo>, name: String) -> &mut QueueInfo {
    queues.entry(name.clone()).or_insert_with(|| QueueInfo {
        name,
        paused: false,
        counts: StateCounts::default(),
        oldest_available_at: None,
    })
}
