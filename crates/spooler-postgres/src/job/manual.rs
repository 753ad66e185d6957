//! Manual actions on one job: cancel, retry and delete.

use super::{decode, job_cols, notify_fragment, read, unfinished};
use crate::Inner;
use crate::error::{again_if_moved, map};
use spooler_core::{JobId, JobRow, JobState, StoreError, StoreResult};

/// Cancels an unfinished job: a running one is asked to stop (it stays running until its outcome).
pub(crate) const CANCEL_SQL: &str = concat!(
    "UPDATE {s}.jobs SET
        state = CASE WHEN state = 'running' THEN 'running' ELSE 'cancelled' END,
        cancel_requested = cancel_requested OR state = 'running',
        finished_at = CASE WHEN state = 'running' THEN finished_at ELSE $2 END
      WHERE id = $1 AND state IN ",
    unfinished!(),
    "
    RETURNING ",
    job_cols!()
);

pub(super) async fn cancel(inner: &Inner, id: JobId) -> StoreResult<JobRow> {
    let row = again_if_moved(|| {
        sqlx::query(&inner.sql.cancel)
            .bind(id)
            .bind(inner.clock.now())
            .fetch_optional(&inner.pool)
    })
    .await
    .map_err(map)?;
    match row {
        Some(row) => decode(&row),
        None => Err(state_error(inner, id, "cancel").await),
    }
}

/// Makes a scheduled or finished job available now, with one attempt more if it had none left.
pub(crate) const RETRY_SQL: &str = concat!(
    "WITH r AS (
        UPDATE {s}.jobs SET state = 'available', run_at = $2, finished_at = NULL,
               cancel_requested = false,
               max_attempts = greatest(max_attempts, attempt + 1)
         WHERE id = $1 AND state IN ('scheduled', 'completed', 'failed', 'cancelled')
        RETURNING ",
    job_cols!(),
    "
    )
    SELECT r.*, ",
    notify_fragment!("r", "$3"),
    " FROM r"
);

pub(super) async fn retry(inner: &Inner, id: JobId) -> StoreResult<JobRow> {
    let row = again_if_moved(|| {
        sqlx::query(&inner.sql.retry)
            .bind(id)
            .bind(inner.clock.now())
            .bind(&inner.channel)
            .fetch_optional(&inner.pool)
    })
    .await
    .map_err(map)?;
    if let Some(row) = row {
        let job = decode(&row)?;
        inner.wake_local([job.queue.clone()]);
        return Ok(job);
    }
    match read::get(inner, id).await? {
        Some(job) if job.state == JobState::Available => Ok(job),
        Some(job) => Err(StoreError::InvalidState {
            id,
            state: job.state,
            action: "retry",
        }),
        None => Err(StoreError::JobNotFound { id }),
    }
}

/// Deletes a job that is not running.
pub(crate) const DELETE_SQL: &str = concat!(
    "DELETE FROM {s}.jobs WHERE id = $1 AND state <> 'running' RETURNING ",
    job_cols!()
);

pub(super) async fn delete(inner: &Inner, id: JobId) -> StoreResult<JobRow> {
    let row = again_if_moved(|| {
        sqlx::query(&inner.sql.delete)
            .bind(id)
            .fetch_optional(&inner.pool)
    })
    .await
    .map_err(map)?;
    match row {
        Some(row) => decode(&row),
        None => Err(state_error(inner, id, "delete").await),
    }
}

/// The job's current state, for the error of an operation that did not apply to it.
async fn state_error(inner: &Inner, id: JobId, action: &'static str) -> StoreError {
    match read::get(inner, id).await {
        Ok(Some(job)) => StoreError::InvalidState {
            id,
            state: job.state,
            action,
        },
        Ok(None) => StoreError::JobNotFound { id },
        Err(e) => e,
    }
}
