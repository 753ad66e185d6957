//! Jobs: the row decoding, the helpers and SQL fragments the job statements share, and the
//! [`JobStore`] and [`JobAdminStore`] implementations, each operation in the submodule of its
//! concern. Every time is a bind parameter read from the store's clock; batches travel as arrays
//! expanded with `unnest`, but for large batches of new jobs, which are streamed with `COPY`.

pub(crate) mod claim;
pub(crate) mod copy;
pub(crate) mod finish;
pub(crate) mod group;
pub(crate) mod insert;
pub(crate) mod kept_plan;
pub(crate) mod limit;
pub(crate) mod maintenance;
pub(crate) mod manual;
pub(crate) mod read;
pub(crate) mod replay;
pub(crate) mod request;
pub(crate) mod route;
pub(crate) mod unique;

use crate::PgStore;
use crate::error::map;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use spooler_core::store::{JobAdminStore, JobStore};
use spooler_core::{
    AttemptError, Claimed, Inserted, JobClaim, JobFilter, JobFinish, JobId, JobList, JobPrune,
    JobRescue, JobRow, JobState, LeaseExtend, LeaseRef, LeaseStatus, NewJob, RescueReport,
    StoreError, StoreResult, Transition,
};
use sqlx::Row;
use sqlx::postgres::PgRow;
use std::collections::BTreeSet;
use std::time::Duration;

/// A written transition: the lease, the job's queue and its new state.
type Written = (LeaseRef, String, JobState);

/// The queues in which written transitions made jobs available.
fn available_queues(written: Vec<Written>) -> BTreeSet<String> {
    written
        .into_iter()
        .filter(|w| w.2 == JobState::Available)
        .map(|w| w.1)
        .collect()
}

/// Decided transitions as the arrays the write statement binds.
#[derive(Default)]
struct Writes {
    ids: Vec<JobId>,
    fences: Vec<i32>,
    states: Vec<&'static str>,
    run_ats: Vec<Option<DateTime<Utc>>>,
    finished_ats: Vec<Option<DateTime<Utc>>>,
    errors: Vec<Option<Value>>,
    results: Vec<Option<Value>>,
    max_attempts: Vec<Option<i32>>,
    attempts: Vec<Option<i32>>,
}

impl Writes {
    fn push(&mut self, lease: LeaseRef, t: Transition) {
        self.ids.push(lease.id);
        self.fences.push(lease.fence);
        self.states.push(t.state.as_str());
        self.run_ats.push(t.run_at);
        self.finished_ats.push(t.finished_at);
        self.errors
            .push(t.error.and_then(|e| serde_json::to_value(e).ok()));
        self.results.push(t.result);
        self.max_attempts.push(t.max_attempts);
        self.attempts.push(t.attempt);
    }
}

/// The job columns, in the order every statement returns them.
macro_rules! job_cols {
    () => {
        "id, queue, kind, args, state, priority, attempt, max_attempts, run_at, created_at, \
         started_at, finished_at, timeout_ms, unique_key, tags, errors, result, lease_expires_at, \
         worker_id, routed_from, cancel_requested, fence, origin, meta"
    };
}

/// The same columns qualified by the alias `j`.
macro_rules! j_cols {
    () => {
        "j.id, j.queue, j.kind, j.args, j.state, j.priority, j.attempt, j.max_attempts, j.run_at, \
         j.created_at, j.started_at, j.finished_at, j.timeout_ms, j.unique_key, j.tags, j.errors, \
         j.result, j.lease_expires_at, j.worker_id, j.routed_from, j.cancel_requested, j.fence, j.origin, j.meta"
    };
}

/// `SELECT` fragment that sends one notification per distinct queue of the rows of the CTE `$cte`
/// that are `available`: one NOTIFY per queue per statement, never one per job. `$channel` is the
/// parameter (`"$N"`) holding the channel.
macro_rules! notify_fragment {
    ($cte:literal, $channel:literal) => {
        concat!(
            "(SELECT count(*) FROM (SELECT pg_notify(",
            $channel,
            ", d.queue) FROM (SELECT DISTINCT queue FROM ",
            $cte,
            " WHERE state = 'available') d) n) AS notified"
        )
    };
}

/// The unfinished states, in which a unique key deduplicates.
macro_rules! unfinished {
    () => {
        "('scheduled', 'available', 'running')"
    };
}

pub(crate) use {j_cols, job_cols, notify_fragment, unfinished};

/// Decodes one job row selected with the columns of `job_cols!`.
pub(crate) fn decode(row: &PgRow) -> StoreResult<JobRow> {
    let id: i64 = row.try_get("id").map_err(map)?;
    let bad = |message: String| StoreError::Decode { id, message };
    let get_err = |e: sqlx::Error| bad(e.to_string());
    let state: String = row.try_get("state").map_err(get_err)?;
    let state: JobState = state.parse().map_err(bad)?;
    let errors: Value = row.try_get("errors").map_err(get_err)?;
    let errors: Vec<AttemptError> =
        serde_json::from_value(errors).map_err(|e| bad(format!("errors: {e}")))?;
    let timeout_ms: Option<i64> = row.try_get("timeout_ms").map_err(get_err)?;
    Ok(JobRow {
        id,
        queue: row.try_get("queue").map_err(get_err)?,
        kind: row.try_get("kind").map_err(get_err)?,
        args: row.try_get("args").map_err(get_err)?,
        state,
        priority: row.try_get("priority").map_err(get_err)?,
        attempt: row.try_get("attempt").map_err(get_err)?,
        max_attempts: row.try_get("max_attempts").map_err(get_err)?,
        run_at: row.try_get("run_at").map_err(get_err)?,
        created_at: row.try_get("created_at").map_err(get_err)?,
        started_at: row.try_get("started_at").map_err(get_err)?,
        finished_at: row.try_get("finished_at").map_err(get_err)?,
        timeout: timeout_ms.map(|ms| Duration::from_millis(ms.max(0) as u64)),
        unique_key: row.try_get("unique_key").map_err(get_err)?,
        tags: row.try_get("tags").map_err(get_err)?,
        errors,
        result: row.try_get("result").map_err(get_err)?,
        lease_expires_at: row.try_get("lease_expires_at").map_err(get_err)?,
        worker_id: row.try_get("worker_id").map_err(get_err)?,
        routed_from: row.try_get("routed_from").map_err(get_err)?,
        origin: row
            .try_get::<Option<Value>, _>("origin")
            .map_err(get_err)?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| bad(format!("origin: {e}")))?,
        meta: match row.try_get::<Option<Value>, _>("meta").map_err(get_err)? {
            Some(Value::Object(meta)) => meta,
            Some(other) => return Err(bad(format!("meta: not an object: {other}"))),
            None => Default::default(),
        },
        cancel_requested: row.try_get("cancel_requested").map_err(get_err)?,
        fence: row.try_get("fence").map_err(get_err)?,
    })
}

#[async_trait]
impl JobStore for PgStore {
    async fn job_insert_many(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>> {
        insert::insert_many(&self.inner, &jobs).await
    }

    async fn job_claim(&self, claim: &JobClaim) -> StoreResult<Claimed> {
        claim::claim(&self.inner, claim).await
    }

    async fn job_lease_extend(&self, extend: &LeaseExtend) -> StoreResult<Vec<LeaseStatus>> {
        claim::lease_extend(&self.inner, extend).await
    }

    async fn job_finish_many(&self, finishes: &[JobFinish]) -> StoreResult<Vec<bool>> {
        finish::finish_many(&self.inner, finishes).await
    }

    async fn job_rescue(&self, rescue: &JobRescue) -> StoreResult<RescueReport> {
        maintenance::rescue(&self.inner, rescue).await
    }

    async fn job_promote(&self, limit: u32) -> StoreResult<u64> {
        maintenance::promote(&self.inner, limit).await
    }

    async fn job_prune(&self, prune: &JobPrune) -> StoreResult<u64> {
        maintenance::prune(&self.inner, prune).await
    }
}

#[async_trait]
impl JobAdminStore for PgStore {
    async fn job_replay(
        &self,
        replays: &[spooler_core::store::Replay],
    ) -> StoreResult<Vec<spooler_core::store::Replayed>> {
        replay::replay(&self.inner, replays).await
    }

    async fn job_cancel(&self, id: JobId) -> StoreResult<JobRow> {
        manual::cancel(&self.inner, id).await
    }

    async fn job_retry(&self, id: JobId) -> StoreResult<JobRow> {
        manual::retry(&self.inner, id).await
    }

    async fn job_delete(&self, id: JobId) -> StoreResult<JobRow> {
        manual::delete(&self.inner, id).await
    }

    async fn job_get(&self, id: JobId) -> StoreResult<Option<JobRow>> {
        read::get(&self.inner, id).await
    }

    async fn job_list(&self, list: &JobList) -> StoreResult<Vec<JobRow>> {
        read::list(&self.inner, list).await
    }

    async fn job_routed_from(&self, id: JobId, limit: u32) -> StoreResult<Vec<JobRow>> {
        read::routed_from(&self.inner, id, limit).await
    }

    /// Counted with the filter of operations (see `operation`).
    async fn job_count(&self, filter: &JobFilter) -> StoreResult<i64> {
        crate::operation::job_count(&self.inner, filter).await
    }
}
