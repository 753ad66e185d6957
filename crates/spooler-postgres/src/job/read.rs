//! Reads: one job by id, and the listing (from the partition holding the state asked for).

use super::{decode, job_cols};
use crate::Inner;
use crate::error::map;
use spooler_core::{JobId, JobList, JobRow, StoreResult};

/// One job by id.
pub(crate) const GET_SQL: &str = concat!("SELECT ", job_cols!(), " FROM {s}.jobs WHERE id = $1");

pub(super) async fn get(inner: &Inner, id: JobId) -> StoreResult<Option<JobRow>> {
    let row = sqlx::query(&inner.sql.get)
        .bind(id)
        .fetch_optional(&inner.pool)
        .await
        .map_err(map)?;
    row.as_ref().map(decode).transpose()
}

/// The listing from `$table`, jobs matching `$state` (a condition on `$2`). With a state it reads
/// only the partition holding that state and compares the state plainly: a generic plan of
/// `($2 IS NULL OR state = $2)` on the parent walks every finished job to list the running ones
/// (131 ms with a million finished, against 0.2 ms).
macro_rules! list_from {
    ($table:literal, $state:literal) => {
        concat!(
            "SELECT ",
            job_cols!(),
            " FROM {s}.",
            $table,
            "
              WHERE ($1::text IS NULL OR queue = $1)
                AND ",
            $state,
            "
                AND ($3::text IS NULL OR kind = $3)
                AND ($4::int8 IS NULL OR id < $4)
                AND ($6::int8 IS NULL OR id > $6)
              ORDER BY id DESC
              LIMIT $5"
        )
    };
}

/// The listing of every state (`$2` is null).
pub(crate) const LIST_SQL: &str = list_from!("jobs", "$2::text IS NULL");

/// The listing of an unfinished state `$2`.
pub(crate) const LIST_ACTIVE_SQL: &str = list_from!("jobs_active", "state = $2");

/// The listing of a finished state `$2`.
pub(crate) const LIST_FINISHED_SQL: &str = list_from!("jobs_done", "state = $2");

/// The jobs routed from `$1`, oldest first, at most `$2` (a partial index on `routed_from`).
pub(crate) const ROUTED_FROM_OF_SQL: &str = concat!(
    "SELECT ",
    job_cols!(),
    " FROM {s}.jobs WHERE routed_from = $1 ORDER BY id LIMIT $2"
);

pub(super) async fn routed_from(inner: &Inner, id: JobId, limit: u32) -> StoreResult<Vec<JobRow>> {
    let rows = sqlx::query(&inner.sql.routed_from_of)
        .bind(id)
        .bind(i64::from(limit.min(1000)))
        .fetch_all(&inner.pool)
        .await
        .map_err(map)?;
    rows.iter().map(decode).collect()
}

pub(super) async fn list(inner: &Inner, list: &JobList) -> StoreResult<Vec<JobRow>> {
    let sql = match list.state {
        None => &inner.sql.list,
        Some(state) if state.is_finished() => &inner.sql.list_finished,
        Some(_) => &inner.sql.list_active,
    };
    let rows = sqlx::query(sql)
        .bind(list.queue.as_deref())
        .bind(list.state.map(|s| s.as_str()))
        .bind(list.kind.as_deref())
        .bind(list.before_id)
        .bind(i64::from(list.limit.min(1000)))
        .bind(list.after_id)
        .fetch_all(&inner.pool)
        .await
        .map_err(map)?;
    rows.iter().map(decode).collect()
}
