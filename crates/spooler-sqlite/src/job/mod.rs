//! Jobs in SQLite: the row ⇄ [`JobRow`] codec shared by the statements, and the `JobStore` and
//! `JobAdminStore` parts of the store, whose statements live in one submodule per concern.

use crate::error::OpError;
use crate::writer::Ctx;
use crate::{Db, SqliteStore};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension, Row, params};
use spooler_core::clock::add;
use spooler_core::store::prelude::*;
use spooler_core::store::{
    Claimed, Inserted, JobClaim, JobFinish, JobList, JobPrune, JobRescue, LeaseExtend, LeaseRef,
    LeaseStatus, Outcome, QueueSettingsMap, RescueReport,
};
use spooler_core::{
    AttemptError, Facts, JobId, JobRow, JobState, NewJob, StoreError, StoreResult, Transition,
    decide,
};
use std::time::Duration;

mod claim;
mod finish;
pub(crate) mod insert;
mod limit;
mod maintenance;
mod manual;
mod read;
mod replay;
mod route;
mod unique;

/// The columns of a job, in the order [`RawJob::from_row`] reads them.
pub(crate) const COLUMNS: &str = "id, queue, kind, args, state, priority, attempt, max_attempts, \
     run_at, created_at, started_at, finished_at, timeout_ms, unique_key, tags, errors, result, \
     lease_expires_at, worker_id, routed_from, cancel_requested, fence, origin, meta";

/// Clears a running job's lease in an `UPDATE … SET`.
const CLEAR_LEASE: &str = "worker_id = NULL, lease_expires_at = NULL";

/// The unfinished job holding the key `?1`, if any. Its condition is the unique index's, written
/// the same way (migration 16), so the planner finds the job by that index.
static UNIQUE_HOLDER_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {COLUMNS} FROM spooler_jobs WHERE unique_key = ?1 AND unique_key IS NOT NULL \
         AND (state = 'scheduled' OR state = 'available' OR state = 'running')"
    )
});

/// The most `job_list` returns.
const LIST_CAP: u32 = 1000;

/// Microseconds since the epoch, the stored form of a time.
pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// A stored time back as a `DateTime`.
pub(crate) fn from_micros(id: JobId, v: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| StoreError::Decode {
        id,
        message: format!("time {v} (microseconds since the epoch) is out of range"),
    })
}

/// `t` at the precision the store keeps.
fn trunc(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// An error entry's time as it is kept in the `errors` JSON.
fn json_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A job row as SQLite returns it, decoded into a [`JobRow`] off the writer thread.
#[derive(Debug)]
pub(crate) struct RawJob {
    id: i64,
    queue: String,
    kind: String,
    args: String,
    /// Parsed as the row is read (no string kept); why not when it names no state.
    state: Result<JobState, String>,
    priority: i32,
    attempt: i32,
    max_attempts: i32,
    run_at: i64,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    timeout_ms: Option<i64>,
    unique_key: Option<String>,
    /// `None` for the empty list most jobs have, which is not copied out of the row.
    tags: Option<String>,
    /// `None` for the empty list most jobs have, which is not copied out of the row.
    errors: Option<String>,
    result: Option<String>,
    lease_expires_at: Option<i64>,
    worker_id: Option<String>,
    routed_from: Option<i64>,
    cancel_requested: bool,
    fence: i32,
    origin: Option<String>,
    meta: Option<String>,
}

impl RawJob {
    /// Reads a row selected with [`COLUMNS`].
    pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            queue: r.get(1)?,
            kind: r.get(2)?,
            args: r.get(3)?,
            state: r.get_ref(4)?.as_str()?.parse(),
            priority: r.get(5)?,
            attempt: r.get(6)?,
            max_attempts: r.get(7)?,
            run_at: r.get(8)?,
            created_at: r.get(9)?,
            started_at: r.get(10)?,
            finished_at: r.get(11)?,
            timeout_ms: r.get(12)?,
            unique_key: r.get(13)?,
            tags: unless_empty_list(r, 14)?,
            errors: unless_empty_list(r, 15)?,
            result: r.get(16)?,
            lease_expires_at: r.get(17)?,
            worker_id: r.get(18)?,
            routed_from: r.get(19)?,
            cancel_requested: r.get(20)?,
            fence: r.get(21)?,
            origin: r.get(22)?,
            meta: r.get(23)?,
        })
    }

    fn state(&self) -> StoreResult<JobState> {
        self.state.clone().map_err(|message| StoreError::Decode {
            id: self.id,
            message,
        })
    }

    /// The job as spooler sees it.
    pub(crate) fn decode(self) -> StoreResult<JobRow> {
        let id = self.id;
        let bad = |what: &str, e: serde_json::Error| StoreError::Decode {
            id,
            message: format!("{what}: {e}"),
        };
        let time = |v: Option<i64>| v.map(|v| from_micros(id, v)).transpose();
        Ok(JobRow {
            id,
            state: self.state()?,
            args: serde_json::from_str(&self.args).map_err(|e| bad("args", e))?,
            queue: self.queue,
            kind: self.kind,
            priority: self.priority,
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            run_at: from_micros(id, self.run_at)?,
            created_at: from_micros(id, self.created_at)?,
            started_at: time(self.started_at)?,
            finished_at: time(self.finished_at)?,
            timeout: self
                .timeout_ms
                .map(|ms| Duration::from_millis(ms.max(0) as u64)),
            unique_key: self.unique_key,
            tags: match &self.tags {
                None => Vec::new(),
                Some(tags) => serde_json::from_str(tags).map_err(|e| bad("tags", e))?,
            },
            errors: match &self.errors {
                None => Vec::new(),
                Some(errors) => serde_json::from_str::<Vec<AttemptError>>(errors)
                    .map_err(|e| bad("errors", e))?,
            },
            result: self
                .result
                .map(|r| serde_json::from_str(&r))
                .transpose()
                .map_err(|e| bad("result", e))?,
            lease_expires_at: time(self.lease_expires_at)?,
            worker_id: self.worker_id,
            routed_from: self.routed_from,
            origin: self
                .origin
                .map(|o| serde_json::from_str(&o))
                .transpose()
                .map_err(|e| bad("origin", e))?,
            meta: self
                .meta
                .map(|m| serde_json::from_str(&m))
                .transpose()
                .map_err(|e| bad("meta", e))?
                .unwrap_or_default(),
            cancel_requested: self.cancel_requested,
            fence: self.fence,
        })
    }
}

/// A JSON list column's text, `None` when it is the empty list `[]`.
fn unless_empty_list(r: &Row<'_>, idx: usize) -> rusqlite::Result<Option<String>> {
    let text = r.get_ref(idx)?.as_str()?;
    Ok((text != "[]").then(|| text.to_string()))
}

fn decode_all(raws: Vec<RawJob>) -> StoreResult<Vec<JobRow>> {
    decode_each(raws, RawJob::decode)
}

/// Decodes each of `items` into a new vector. Collecting in place would keep the input's buffer
/// and reallocate it to the output's element size.
fn decode_each<T, U>(items: Vec<T>, decode: fn(T) -> StoreResult<U>) -> StoreResult<Vec<U>> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(decode(item)?);
    }
    Ok(out)
}

/// One job by id, built once: every read by id (`GET /v1/jobs/{id}`, a status) runs it.
static SELECT_ONE_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {COLUMNS} FROM spooler_jobs WHERE id = ?1"));

fn select_one(conn: &Connection, id: JobId) -> rusqlite::Result<Option<RawJob>> {
    conn.prepare_cached(&SELECT_ONE_SQL)?
        .query_row([id], RawJob::from_row)
        .optional()
}

impl SqliteStore {
    /// The queues' settings every insert applies, read at most every
    /// [`QueueSettingsCache::MAX_AGE`](spooler_core::store::QueueSettingsCache::MAX_AGE).
    pub(crate) async fn insert_settings(
        &self,
    ) -> StoreResult<std::sync::Arc<spooler_core::store::QueueSettingsMap>> {
        Ok(match self.db.settings.fresh() {
            Some(settings) => settings,
            None => self.db.settings.keep(self.queue_settings().await?),
        })
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn job_insert_many(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>> {
        let settings = self.insert_settings().await?;
        insert::insert_many(&self.db, jobs, &settings).await
    }

    async fn job_claim(&self, claim: &JobClaim) -> StoreResult<Claimed> {
        let settings = self.insert_settings().await?;
        claim::claim(&self.db, claim, &settings).await
    }

    async fn job_lease_extend(&self, extend: &LeaseExtend) -> StoreResult<Vec<LeaseStatus>> {
        claim::lease_extend(&self.db, extend).await
    }

    async fn job_finish_many(&self, finishes: &[JobFinish]) -> StoreResult<Vec<bool>> {
        if finishes.is_empty() {
            return Ok(Vec::new());
        }
        let settings = self.insert_settings().await?;
        finish::finish_many(&self.db, settings, finishes).await
    }

    async fn job_rescue(&self, rescue: &JobRescue) -> StoreResult<RescueReport> {
        let settings = self.insert_settings().await?;
        maintenance::rescue(&self.db, settings, rescue).await
    }

    async fn job_promote(&self, limit: u32) -> StoreResult<u64> {
        maintenance::promote(&self.db, limit).await
    }

    async fn job_prune(&self, prune: &JobPrune) -> StoreResult<u64> {
        maintenance::prune(&self.db, prune).await
    }
}

#[async_trait]
impl JobAdminStore for SqliteStore {
    async fn job_replay(
        &self,
        replays: &[spooler_core::store::Replay],
    ) -> StoreResult<Vec<spooler_core::store::Replayed>> {
        let settings = self.insert_settings().await?;
        replay::replay(&self.db, &settings, replays).await
    }

    async fn job_cancel(&self, id: JobId) -> StoreResult<JobRow> {
        manual::cancel(&self.db, id).await
    }

    async fn job_retry(&self, id: JobId) -> StoreResult<JobRow> {
        manual::retry(&self.db, id).await
    }

    async fn job_delete(&self, id: JobId) -> StoreResult<JobRow> {
        manual::delete(&self.db, id).await
    }

    async fn job_get(&self, id: JobId) -> StoreResult<Option<JobRow>> {
        read::get(&self.db, id).await
    }

    async fn job_list(&self, list: &JobList) -> StoreResult<Vec<JobRow>> {
        read::list(&self.db, list).await
    }

    async fn job_routed_from(&self, id: JobId, limit: u32) -> StoreResult<Vec<JobRow>> {
        read::routed_from(&self.db, id, limit).await
    }

    async fn job_count(&self, filter: &spooler_core::JobFilter) -> StoreResult<i64> {
        crate::operation::job_count(&self.db, filter).await
    }
}

#[cfg(test)]
mod tests {
    use super::claim::claim_sql;
    use super::*;

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
        let rows: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        rows.join("\n")
    }

    fn migrated() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        crate::migrate::migrate(&conn, 0).unwrap();
        conn
    }

    #[test]
    fn claims_read_the_partial_index_in_claim_order() {
        let conn = migrated();
        for (queues, kinds) in [(1, 1), (1, 3)] {
            let p = plan(&conn, &claim_sql(queues, kinds));
            assert!(
                p.contains("USING INDEX spooler_jobs_claim (queue=?)"),
                "{p}"
            );
            assert!(
                !p.contains("TEMP B-TREE"),
                "the backlog is never sorted:\n{p}"
            );
        }
        // Several queues: each read in index order, only the heads (≤ limit rows each) merged.
        let p = plan(&conn, &claim_sql(3, 2));
        assert_eq!(
            p.matches("USING INDEX spooler_jobs_claim (queue=?)")
                .count(),
            3,
            "{p}"
        );
    }

    #[test]
    fn maintenance_statements_use_their_indexes() {
        let conn = migrated();
        let cases = [
            (
                "SELECT id FROM spooler_jobs WHERE state = 'scheduled' AND run_at <= ?1 \
                 ORDER BY run_at, id LIMIT ?2",
                "spooler_jobs_scheduled",
            ),
            (
                "SELECT id FROM spooler_jobs WHERE state = 'running' AND lease_expires_at < ?1 \
                 ORDER BY lease_expires_at LIMIT ?3",
                "spooler_jobs_lease",
            ),
            (
                "SELECT id FROM spooler_jobs WHERE state = ?1 AND finished_at < ?2 \
                 ORDER BY finished_at LIMIT ?3",
                "spooler_jobs_finished",
            ),
            (&UNIQUE_HOLDER_SQL, "spooler_jobs_unique"),
        ];
        for (sql, index) in cases {
            let p = plan(&conn, sql);
            assert!(p.contains(index), "{sql}\n{p}");
            assert!(!p.contains("TEMP B-TREE"), "{sql}\n{p}");
        }
    }
}
