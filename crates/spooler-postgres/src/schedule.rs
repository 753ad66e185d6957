//! Periodic jobs: declared definitions, and ticks that move `next_run_at` under a compare-and-set
//! in the transaction that inserts the tick's job.

use crate::PgStore;
use crate::error::map;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spooler_core::store::{Inserted, ScheduleStore};
use spooler_core::{
    CatchUp, ScheduleDeclare, ScheduleDef, ScheduleFire, ScheduleRow, StoreError, StoreResult,
};
use sqlx::Row;

/// The columns a schedule is read with.
macro_rules! schedule_columns {
    () => {
        "name, cron, tz, job, catch_up, paused, next_run_at, last_run_at, last_job_id"
    };
}

/// Inserts or updates definitions given as arrays; `next_run_at` is kept while the cadence
/// (`cron`, `tz`) is unchanged, and with it `paused` and the last run.
pub(crate) const DECLARE_SQL: &str = "INSERT INTO {s}.schedules
       (name, owner, cron, tz, job, catch_up, next_run_at, updated_at)
    SELECT n, $2, c, z, j, u, x, $8
      FROM unnest($1::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::timestamptz[])
           AS d(n, c, z, j, u, x)
    ON CONFLICT (name) DO UPDATE SET
       next_run_at = CASE WHEN schedules.cron = excluded.cron
                           AND schedules.tz IS NOT DISTINCT FROM excluded.tz
                          THEN schedules.next_run_at ELSE excluded.next_run_at END,
       owner = excluded.owner, cron = excluded.cron, tz = excluded.tz, job = excluded.job,
       catch_up = excluded.catch_up, updated_at = excluded.updated_at";

/// Deletes the owner `$1`'s schedules not named in `$2`.
pub(crate) const REMOVE_OTHERS_SQL: &str =
    "DELETE FROM {s}.schedules WHERE owner = $1 AND NOT (name = ANY ($2))";

/// Every schedule, by name.
pub(crate) const LIST_SQL: &str = concat!(
    "SELECT ",
    schedule_columns!(),
    " FROM {s}.schedules ORDER BY name"
);

/// One schedule, locked for the transaction that fires it.
pub(crate) const LOCK_SQL: &str = "SELECT 1 FROM {s}.schedules WHERE name = $1 FOR UPDATE";

/// Moves a tick: only from the `next_run_at` it was planned from, only while not paused.
pub(crate) const ADVANCE_SQL: &str = "UPDATE {s}.schedules SET next_run_at = $1
     WHERE name = $2 AND next_run_at = $3 AND NOT paused";

/// Records the job a schedule enqueued.
pub(crate) const RAN_SQL: &str =
    "UPDATE {s}.schedules SET last_run_at = $1, last_job_id = $2 WHERE name = $3";

/// Pauses or resumes; a given `next_run_at` replaces the stored one.
pub(crate) const SET_PAUSED_SQL: &str = concat!(
    "UPDATE {s}.schedules SET paused = $1, next_run_at = coalesce($2, next_run_at), updated_at = $3
     WHERE name = $4 RETURNING ",
    schedule_columns!()
);

fn decode(row: &sqlx::postgres::PgRow) -> StoreResult<ScheduleRow> {
    let name: String = row.try_get(0).map_err(map)?;
    let bad = |message: String| StoreError::Decode { id: 0, message };
    let job: serde_json::Value = row.try_get(3).map_err(map)?;
    let job = serde_json::from_value(job).map_err(|e| bad(format!("schedule {name}: job: {e}")))?;
    let catch_up: String = row.try_get(4).map_err(map)?;
    let catch_up: CatchUp = catch_up.parse().map_err(bad)?;
    Ok(ScheduleRow {
        paused: row.try_get(5).map_err(map)?,
        next_run_at: row.try_get(6).map_err(map)?,
        last_run_at: row.try_get(7).map_err(map)?,
        last_job_id: row.try_get(8).map_err(map)?,
        def: ScheduleDef {
            name,
            cron: row.try_get(1).map_err(map)?,
            tz: row.try_get(2).map_err(map)?,
            job,
            catch_up,
        },
    })
}

fn not_found(name: &str) -> StoreError {
    StoreError::ScheduleNotFound {
        name: name.to_string(),
    }
}

#[async_trait]
impl ScheduleStore for PgStore {
    async fn schedule_declare(&self, declare: &ScheduleDeclare) -> StoreResult<()> {
        let mut names = Vec::new();
        let (mut crons, mut tzs, mut jobs, mut catch_ups, mut nexts) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (def, next) in &declare.schedules {
            def.validate()?;
            names.push(def.name.clone());
            crons.push(def.cron.clone());
            tzs.push(def.tz.clone());
            jobs.push(
                serde_json::to_value(&def.job).map_err(|e| StoreError::InvalidInput {
                    field: "job",
                    message: e.to_string(),
                })?,
            );
            catch_ups.push(def.catch_up.as_str());
            nexts.push(*next);
        }
        let inner = &self.inner;
        let mut tx = inner.pool.begin().await.map_err(map)?;
        sqlx::query(&inner.sql.schedule_declare)
            .bind(&names)
            .bind(&declare.owner)
            .bind(&crons)
            .bind(&tzs)
            .bind(&jobs)
            .bind(&catch_ups)
            .bind(&nexts)
            .bind(inner.clock.now())
            .execute(&mut *tx)
            .await
            .map_err(map)?;
        if declare.remove_others {
            sqlx::query(&inner.sql.schedule_remove_others)
                .bind(&declare.owner)
                .bind(&names)
                .execute(&mut *tx)
                .await
                .map_err(map)?;
        }
        tx.commit().await.map_err(map)
    }

    async fn schedule_list(&self) -> StoreResult<Vec<ScheduleRow>> {
        let rows = sqlx::query(&self.inner.sql.schedule_list)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(map)?;
        rows.iter().map(decode).collect()
    }

    async fn schedule_fire(&self, fire: &ScheduleFire) -> StoreResult<Option<Inserted>> {
        if let Some(job) = &fire.job {
            job.validate()?;
        }
        let inner = &self.inner;
        let settings = crate::job::insert::queue_settings(inner).await?;
        let mut tx = inner.pool.begin().await.map_err(map)?;
        let exists = sqlx::query(&inner.sql.schedule_lock)
            .bind(&fire.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map)?;
        if exists.is_none() {
            return Err(not_found(&fire.name));
        }
        if let (Some(due), Some(next)) = (fire.due, fire.next_run_at) {
            let moved = sqlx::query(&inner.sql.schedule_advance)
                .bind(next)
                .bind(&fire.name)
                .bind(due)
                .execute(&mut *tx)
                .await
                .map_err(map)?
                .rows_affected();
            if moved == 0 {
                return Ok(None);
            }
        }
        let inserted = match &fire.job {
            Some(job) => {
                let (mut inserted, _) = crate::job::insert::insert_on(
                    inner,
                    &mut tx,
                    std::slice::from_ref(job),
                    &settings,
                    true,
                )
                .await?;
                let inserted = inserted.pop().expect("one job inserted");
                sqlx::query(&inner.sql.schedule_ran)
                    .bind(inner.clock.now())
                    .bind(inserted.job.id)
                    .bind(&fire.name)
                    .execute(&mut *tx)
                    .await
                    .map_err(map)?;
                Some(inserted)
            }
            None => None,
        };
        tx.commit().await.map_err(map)?;
        Ok(inserted)
    }

    async fn schedule_set_paused(
        &self,
        name: &str,
        paused: bool,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<ScheduleRow> {
        let row = sqlx::query(&self.inner.sql.schedule_set_paused)
            .bind(paused)
            .bind(next_run_at)
            .bind(self.inner.clock.now())
            .bind(name)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(map)?
            .ok_or_else(|| not_found(name))?;
        decode(&row)
    }
}
