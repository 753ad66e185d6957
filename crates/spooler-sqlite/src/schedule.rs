//! Periodic jobs: declared definitions, and ticks that move `next_run_at` under a compare-and-set
//! in the transaction that inserts the tick's job.

use crate::SqliteStore;
use crate::error::OpError;
use crate::job::insert::{insert_tx, prepare};
use crate::job::{from_micros, micros};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};
use spooler_core::store::Inserted;
use spooler_core::store::prelude::*;
use spooler_core::{
    CatchUp, ScheduleDeclare, ScheduleDef, ScheduleFire, ScheduleRow, StoreError, StoreResult,
};

const COLUMNS: &str =
    "name, cron, tz, job, catch_up, paused, next_run_at, last_run_at, last_job_id";

/// A schedule row as SQLite returns it, decoded off the writer thread.
struct RawSchedule {
    name: String,
    cron: String,
    tz: Option<String>,
    job: String,
    catch_up: String,
    paused: bool,
    next_run_at: i64,
    last_run_at: Option<i64>,
    last_job_id: Option<i64>,
}

impl RawSchedule {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            name: r.get(0)?,
            cron: r.get(1)?,
            tz: r.get(2)?,
            job: r.get(3)?,
            catch_up: r.get(4)?,
            paused: r.get(5)?,
            next_run_at: r.get(6)?,
            last_run_at: r.get(7)?,
            last_job_id: r.get(8)?,
        })
    }

    fn decode(self) -> StoreResult<ScheduleRow> {
        let bad = |message: String| StoreError::Decode { id: 0, message };
        let job = serde_json::from_str(&self.job)
            .map_err(|e| bad(format!("schedule {}: job: {e}", self.name)))?;
        let catch_up: CatchUp = self.catch_up.parse().map_err(bad)?;
        Ok(ScheduleRow {
            next_run_at: from_micros(0, self.next_run_at)?,
            last_run_at: self.last_run_at.map(|t| from_micros(0, t)).transpose()?,
            last_job_id: self.last_job_id,
            paused: self.paused,
            def: ScheduleDef {
                name: self.name,
                cron: self.cron,
                tz: self.tz,
                job,
                catch_up,
            },
        })
    }
}

fn select(conn: &Connection, name: &str) -> Result<Option<RawSchedule>, OpError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM spooler_schedules WHERE name = ?1"
        ))?
        .query_row([name], RawSchedule::from_row)
        .optional()?)
}

fn not_found(name: &str) -> OpError {
    StoreError::ScheduleNotFound {
        name: name.to_string(),
    }
    .into()
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn schedule_declare(&self, declare: &ScheduleDeclare) -> StoreResult<()> {
        let mut rows = Vec::with_capacity(declare.schedules.len());
        for (def, next) in &declare.schedules {
            def.validate()?;
            let job = serde_json::to_string(&def.job).map_err(|e| StoreError::InvalidInput {
                field: "job",
                message: e.to_string(),
            })?;
            rows.push((def.clone(), job, micros(*next)));
        }
        let (owner, remove_others) = (declare.owner.clone(), declare.remove_others);
        self.db
            .write(move |ctx| {
                let now = micros(ctx.now);
                let mut upsert = ctx.conn.prepare_cached(
                    "INSERT INTO spooler_schedules \
                       (name, owner, cron, tz, job, catch_up, next_run_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (name) DO UPDATE SET \
                       next_run_at = CASE WHEN spooler_schedules.cron = excluded.cron \
                           AND spooler_schedules.tz IS excluded.tz \
                         THEN spooler_schedules.next_run_at ELSE excluded.next_run_at END, \
                       owner = excluded.owner, cron = excluded.cron, tz = excluded.tz, \
                       job = excluded.job, catch_up = excluded.catch_up, \
                       updated_at = excluded.updated_at",
                )?;
                for (def, job, next) in &rows {
                    upsert.execute(params![
                        def.name,
                        owner,
                        def.cron,
                        def.tz,
                        job,
                        def.catch_up.as_str(),
                        next,
                        now
                    ])?;
                }
                if remove_others {
                    let keep: Vec<&str> = rows.iter().map(|(d, _, _)| d.name.as_str()).collect();
                    let keep = serde_json::to_string(&keep).expect("names serialize");
                    ctx.conn
                        .prepare_cached(
                            "DELETE FROM spooler_schedules WHERE owner = ?1 \
                             AND name NOT IN (SELECT value FROM json_each(?2))",
                        )?
                        .execute(params![owner, keep])?;
                }
                Ok(())
            })
            .await
    }

    async fn schedule_list(&self) -> StoreResult<Vec<ScheduleRow>> {
        let raws = self
            .db
            .read(|conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM spooler_schedules ORDER BY name"
                    ))?
                    .query_map([], RawSchedule::from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        raws.into_iter().map(RawSchedule::decode).collect()
    }

    async fn schedule_fire(&self, fire: &ScheduleFire) -> StoreResult<Option<Inserted>> {
        let prepared = match &fire.job {
            Some(job) => Some(prepare(vec![job.clone()], &*self.insert_settings().await?)?),
            None => None,
        };
        let fire = fire.clone();
        let inserted = self
            .db
            .write(move |ctx| {
                if select(ctx.conn, &fire.name)?.is_none() {
                    return Err(not_found(&fire.name));
                }
                if let (Some(due), Some(next)) = (fire.due, fire.next_run_at) {
                    let moved = ctx
                        .conn
                        .prepare_cached(
                            "UPDATE spooler_schedules SET next_run_at = ?1 \
                             WHERE name = ?2 AND next_run_at = ?3 AND paused = 0",
                        )?
                        .execute(params![micros(next), fire.name, micros(due)])?;
                    if moved == 0 {
                        return Ok(None);
                    }
                }
                let Some(prepared) = prepared else {
                    return Ok(None);
                };
                let inserted = insert_tx(ctx, prepared)?
                    .into_iter()
                    .next()
                    .expect("one job prepared");
                ctx.conn
                    .prepare_cached(
                        "UPDATE spooler_schedules SET last_run_at = ?1, last_job_id = ?2 \
                         WHERE name = ?3",
                    )?
                    .execute(params![micros(ctx.now), inserted.id(), fire.name])?;
                Ok(Some(inserted))
            })
            .await?;
        inserted.map(|i| i.decode()).transpose()
    }

    async fn schedule_set_paused(
        &self,
        name: &str,
        paused: bool,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<ScheduleRow> {
        let name = name.to_string();
        let raw = self
            .db
            .write(move |ctx| {
                ctx.conn
                    .prepare_cached(
                        "UPDATE spooler_schedules SET paused = ?1, \
                           next_run_at = coalesce(?2, next_run_at), updated_at = ?3 \
                         WHERE name = ?4",
                    )?
                    .execute(params![
                        paused,
                        next_run_at.map(micros),
                        micros(ctx.now),
                        name
                    ])?;
                select(ctx.conn, &name)?.ok_or_else(|| not_found(&name))
            })
            .await?;
        raw.decode()
    }
}
