//! Operations by filter: count, create, step (one chunk per transaction, the cursor moved with
//! it), cancel and read; and the job filter as SQL.

use crate::error::{again_if_moved, map};
use crate::{Inner, PgStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spooler_core::store::OperationStore;
use spooler_core::{
    BulkAction, JobFilter, JobId, JobState, MAX_CHUNK, Operation, OperationNew, OperationState,
    StoreError, StoreResult,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use std::collections::{BTreeSet, HashSet};

/// The filter over `jobs`, parameters `$1`–`$6` (queue, state, kind, tag, before, after), each
/// matching all when null.
macro_rules! job_filter {
    () => {
        "($1::text IS NULL OR queue = $1)
           AND ($2::text IS NULL OR state = $2)
           AND ($3::text IS NULL OR kind = $3)
           AND ($4::text IS NULL OR $4 = ANY (tags))
           AND ($5::timestamptz IS NULL OR created_at < $5)
           AND ($6::timestamptz IS NULL OR created_at >= $6)"
    };
}

/// The operation columns, in the order [`decode`] reads them.
macro_rules! operation_cols {
    () => {
        "id, action, filter, matched, affected, skipped, state, chunk, max_id, done_through, \
         created_at, updated_at, finished_at"
    };
}

/// How many jobs the filter matches, up to the id `$7` when given.
pub(crate) const COUNT_SQL: &str = concat!(
    "SELECT count(*) FROM {s}.jobs WHERE ",
    job_filter!(),
    " AND ($7::int8 IS NULL OR id <= $7)"
);

/// Records a new operation over the jobs up to `$5`, running.
pub(crate) const CREATE_SQL: &str = concat!(
    "INSERT INTO {s}.operations (action, filter, matched, state, chunk, max_id, created_at,
                                 updated_at)
     VALUES ($1, $2, $3, 'running', $4, $5, $6, $6) RETURNING ",
    operation_cols!()
);

/// The highest job id yet: an operation covers the jobs that existed when it was created.
pub(crate) const MAX_ID_SQL: &str = "SELECT coalesce(max(id), 0) FROM {s}.jobs";

/// One operation by id.
pub(crate) const GET_SQL: &str = concat!(
    "SELECT ",
    operation_cols!(),
    " FROM {s}.operations WHERE id = $1"
);

/// One operation by id, locked for the step that moves it.
pub(crate) const LOCK_SQL: &str = concat!(
    "SELECT ",
    operation_cols!(),
    " FROM {s}.operations WHERE id = $1 FOR UPDATE"
);

/// The running operations, oldest first.
pub(crate) const RUNNING_SQL: &str = concat!(
    "SELECT ",
    operation_cols!(),
    " FROM {s}.operations WHERE state = 'running' ORDER BY id"
);

/// The next chunk of matching jobs after the cursor `$7` up to `$8`, at most `$9`, locked.
pub(crate) const CHUNK_SQL: &str = concat!(
    "SELECT id, state, unique_key FROM {s}.jobs
      WHERE ",
    job_filter!(),
    " AND id > $7 AND id <= $8
      ORDER BY id LIMIT $9
        FOR UPDATE"
);

/// Adds a chunk's counts and moves the cursor.
pub(crate) const ADVANCE_SQL: &str = "UPDATE {s}.operations
    SET affected = affected + $2, skipped = skipped + $3, done_through = $4, state = $5,
        updated_at = $6, finished_at = $7
  WHERE id = $1";

/// Cancels the operation `$1` if it is running.
pub(crate) const CANCEL_SQL: &str = "UPDATE {s}.operations
    SET state = 'cancelled', updated_at = $2, finished_at = $2
  WHERE id = $1 AND state = 'running'";

/// Unique keys among `$1` that an unfinished job holds.
pub(crate) const HELD_KEYS_SQL: &str =
    "SELECT unique_key FROM {s}.jobs_active WHERE unique_key = ANY ($1)";

/// Makes the jobs `$1` that are scheduled or finished available now; how many, the queues, and
/// the wake-ups.
pub(crate) const RETRY_MANY_SQL: &str = concat!(
    "WITH r AS (
        UPDATE {s}.jobs SET state = 'available', run_at = $2, finished_at = NULL,
               result = NULL, cancel_requested = false, worker_id = NULL,
               lease_expires_at = NULL, max_attempts = greatest(max_attempts, attempt + 1)
         WHERE id = ANY ($1) AND state IN ('scheduled', 'completed', 'failed', 'cancelled')
        RETURNING queue, state
    )
    SELECT (SELECT count(*) FROM r) AS n,
           (SELECT coalesce(array_agg(DISTINCT queue), '{}') FROM r) AS queues,
           ",
    crate::job::notify_fragment!("r", "$3")
);

/// Cancels the jobs `$1` that wait and asks the running ones to stop; how many.
pub(crate) const CANCEL_MANY_SQL: &str = "WITH c AS (
        UPDATE {s}.jobs SET state = 'cancelled', finished_at = $2
         WHERE id = ANY ($1) AND state IN ('scheduled', 'available')
        RETURNING id
    ), r AS (
        UPDATE {s}.jobs_active SET cancel_requested = true
         WHERE id = ANY ($1) AND state = 'running'
        RETURNING id
    )
    SELECT (SELECT count(*) FROM c) + (SELECT count(*) FROM r)";

/// Deletes the jobs `$1` that are not running; how many.
pub(crate) const DELETE_MANY_SQL: &str = "WITH d AS (
        DELETE FROM {s}.jobs WHERE id = ANY ($1) AND state <> 'running' RETURNING id
    )
    SELECT count(*) FROM d";

fn decode(row: &PgRow) -> Result<Operation, sqlx::Error> {
    let id: i64 = row.try_get(0)?;
    let bad = |message: String| sqlx::Error::Decode(format!("operation {id}: {message}").into());
    let action: String = row.try_get(1)?;
    let filter: serde_json::Value = row.try_get(2)?;
    let state: String = row.try_get(6)?;
    let chunk: i32 = row.try_get(7)?;
    Ok(Operation {
        id,
        action: action.parse().map_err(bad)?,
        filter: serde_json::from_value(filter).map_err(|e| bad(e.to_string()))?,
        matched: row.try_get(3)?,
        affected: row.try_get(4)?,
        skipped: row.try_get(5)?,
        state: state.parse().map_err(bad)?,
        chunk: chunk.max(1) as u32,
        max_id: row.try_get(8)?,
        done_through: row.try_get(9)?,
        created_at: row.try_get(10)?,
        updated_at: row.try_get(11)?,
        finished_at: row.try_get(12)?,
    })
}

/// Binds the filter as `$1`–`$6`.
fn bind_filter<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    f: &'q JobFilter,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(f.queue.as_deref())
        .bind(f.state.map(|s| s.as_str()))
        .bind(f.kind.as_deref())
        .bind(f.tag.as_deref())
        .bind(f.before)
        .bind(f.after)
}

/// How many jobs `filter` matches (the store's `job_count`).
pub(crate) async fn job_count(inner: &Inner, filter: &JobFilter) -> StoreResult<i64> {
    bind_filter(sqlx::query(&inner.sql.op_count), filter)
        .bind(None::<i64>)
        .fetch_one(&inner.pool)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(map)
}

#[async_trait]
impl OperationStore for PgStore {
    async fn operation_create(&self, new: &OperationNew) -> StoreResult<Operation> {
        if new.chunk == 0 || new.chunk > MAX_CHUNK {
            return Err(StoreError::InvalidInput {
                field: "chunk",
                message: format!("must be between 1 and {MAX_CHUNK}"),
            });
        }
        let filter = serde_json::to_value(&new.filter).map_err(|e| StoreError::InvalidInput {
            field: "filter",
            message: e.to_string(),
        })?;
        let now = self.inner.clock.now();
        let mut tx = self.inner.pool.begin().await.map_err(map)?;
        let max_id: i64 = sqlx::query_scalar(&self.inner.sql.op_max_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(map)?;
        let matched: i64 = bind_filter(sqlx::query(&self.inner.sql.op_count), &new.filter)
            .bind(Some(max_id))
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(map)?;
        let row = sqlx::query(&self.inner.sql.op_create)
            .bind(new.action.as_str())
            .bind(&filter)
            .bind(matched)
            .bind(new.chunk as i32)
            .bind(max_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(map)?;
        let op = decode(&row).map_err(map)?;
        tx.commit().await.map_err(map)?;
        Ok(op)
    }

    async fn operation_get(&self, id: i64) -> StoreResult<Option<Operation>> {
        let row = sqlx::query(&self.inner.sql.op_get)
            .bind(id)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(map)?;
        row.as_ref().map(decode).transpose().map_err(map)
    }

    async fn operation_list_running(&self) -> StoreResult<Vec<Operation>> {
        let rows = sqlx::query(&self.inner.sql.op_running)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(map)?;
        rows.iter()
            .map(decode)
            .collect::<Result<_, _>>()
            .map_err(map)
    }

    async fn operation_cancel(&self, id: i64) -> StoreResult<Operation> {
        sqlx::query(&self.inner.sql.op_cancel)
            .bind(id)
            .bind(self.inner.clock.now())
            .execute(&self.inner.pool)
            .await
            .map_err(map)?;
        self.operation_get(id)
            .await?
            .ok_or(StoreError::OperationNotFound { id })
    }

    async fn operation_step(&self, id: i64) -> StoreResult<Operation> {
        let (op, woken) = again_if_moved(|| self.step_tx(id)).await.map_err(map)?;
        let op = op.ok_or(StoreError::OperationNotFound { id })?;
        self.inner.wake_local(woken);
        Ok(op)
    }
}

impl PgStore {
    /// One chunk in one transaction: the operation row locked, the chunk's jobs locked, the action
    /// applied where it applies, the counts and cursor moved.
    async fn step_tx(&self, id: i64) -> Result<(Option<Operation>, Vec<String>), sqlx::Error> {
        let now = self.inner.clock.now();
        let mut tx = self.inner.pool.begin().await?;
        let Some(row) = sqlx::query(&self.inner.sql.op_lock)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok((None, Vec::new()));
        };
        let op = decode(&row)?;
        if !op.is_running() {
            return Ok((Some(op), Vec::new()));
        }
        let rows = bind_filter(sqlx::query(&self.inner.sql.op_chunk), &op.filter)
            .bind(op.done_through)
            .bind(op.max_id)
            .bind(i64::from(op.chunk))
            .fetch_all(&mut *tx)
            .await?;
        let mut targets = Vec::new();
        let mut keyed: Vec<(JobId, String)> = Vec::new();
        for row in &rows {
            let job: JobId = row.try_get(0)?;
            let state: String = row.try_get(1)?;
            let state: JobState = state
                .parse()
                .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
            if op.action.applies_to(state) {
                match row.try_get::<Option<String>, _>(2)? {
                    Some(key) if op.action == BulkAction::Retry => keyed.push((job, key)),
                    _ => targets.push(job),
                }
            }
        }
        targets.extend(self.retryable_keyed(&mut tx, keyed).await?);
        let (affected, woken) = self.apply(&mut tx, op.action, &targets, now).await?;
        let skipped = rows.len() as i64 - affected;
        let last = rows.len() < op.chunk as usize;
        let done_through = match rows.last() {
            Some(row) if !last => row.try_get(0)?,
            _ => op.max_id,
        };
        let state = if last {
            OperationState::Completed
        } else {
            OperationState::Running
        };
        sqlx::query(&self.inner.sql.op_advance)
            .bind(id)
            .bind(affected)
            .bind(skipped)
            .bind(done_through)
            .bind(state.as_str())
            .bind(now)
            .bind(last.then_some(now))
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&self.inner.sql.op_get)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let op = decode(&row)?;
        tx.commit().await?;
        Ok((Some(op), woken))
    }

    /// Of finished jobs with a unique key about to be retried, those whose key no unfinished job
    /// holds, and only the first per key: a retry must not make two unfinished jobs share a key
    /// (the others are skipped).
    async fn retryable_keyed(
        &self,
        conn: &mut PgConnection,
        keyed: Vec<(JobId, String)>,
    ) -> Result<Vec<JobId>, sqlx::Error> {
        if keyed.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = keyed.iter().map(|k| k.1.as_str()).collect();
        let held: Vec<String> = sqlx::query_scalar(&self.inner.sql.op_held_keys)
            .bind(&keys)
            .fetch_all(conn)
            .await?;
        let mut taken: HashSet<String> = held.into_iter().collect();
        Ok(keyed
            .into_iter()
            .filter_map(|(id, key)| taken.insert(key).then_some(id))
            .collect())
    }

    /// Applies `action` to `ids`; returns how many changed and the queues a retry made jobs
    /// available in.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        action: BulkAction,
        ids: &[JobId],
        now: DateTime<Utc>,
    ) -> Result<(i64, Vec<String>), sqlx::Error> {
        if ids.is_empty() {
            return Ok((0, Vec::new()));
        }
        match action {
            BulkAction::Retry => {
                let row = sqlx::query(&self.inner.sql.op_retry_many)
                    .bind(ids)
                    .bind(now)
                    .bind(&self.inner.channel)
                    .fetch_one(conn)
                    .await?;
                let queues: Vec<String> = row.try_get(1)?;
                let woken: BTreeSet<String> = queues.into_iter().collect();
                Ok((row.try_get(0)?, woken.into_iter().collect()))
            }
            BulkAction::Cancel => Ok((
                sqlx::query_scalar(&self.inner.sql.op_cancel_many)
                    .bind(ids)
                    .bind(now)
                    .fetch_one(conn)
                    .await?,
                Vec::new(),
            )),
            BulkAction::Delete => Ok((
                sqlx::query_scalar(&self.inner.sql.op_delete_many)
                    .bind(ids)
                    .fetch_one(conn)
                    .await?,
                Vec::new(),
            )),
        }
    }
}
