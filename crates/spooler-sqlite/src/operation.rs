//! Operations by filter: count, create, step (one chunk per transaction, the cursor moved with
//! it), cancel and read; and the job filter as SQL.

use crate::error::OpError;
use crate::job::{from_micros, micros};
use crate::writer::Ctx;
use crate::{Db, SqliteStore};
use async_trait::async_trait;
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use spooler_core::store::prelude::*;
use spooler_core::{
    BulkAction, JobFilter, JobId, JobState, MAX_CHUNK, Operation, OperationNew, OperationState,
    StoreError, StoreResult,
};

/// `AND …` conditions for `filter`, with their values in order (anonymous `?` parameters).
fn filter_sql(filter: &JobFilter) -> (String, Vec<Sql>) {
    let mut sql = String::new();
    let mut args = Vec::new();
    let mut cond = |text: &str, value: Sql| {
        sql.push_str(" AND ");
        sql.push_str(text);
        args.push(value);
    };
    if let Some(q) = &filter.queue {
        cond("queue = ?", Sql::Text(q.clone()));
    }
    if let Some(s) = filter.state {
        cond("state = ?", Sql::Text(s.as_str().into()));
    }
    if let Some(k) = &filter.kind {
        cond("kind = ?", Sql::Text(k.clone()));
    }
    if let Some(t) = &filter.tag {
        cond(
            "EXISTS (SELECT 1 FROM json_each(tags) WHERE value = ?)",
            Sql::Text(t.clone()),
        );
    }
    if let Some(b) = filter.before {
        cond("created_at < ?", Sql::Integer(micros(b)));
    }
    if let Some(a) = filter.after {
        cond("created_at >= ?", Sql::Integer(micros(a)));
    }
    (sql, args)
}

fn count(conn: &Connection, filter: &JobFilter, max_id: Option<JobId>) -> Result<i64, OpError> {
    let (mut sql, mut args) = filter_sql(filter);
    if let Some(max) = max_id {
        sql.push_str(" AND id <= ?");
        args.push(Sql::Integer(max));
    }
    Ok(conn
        .prepare_cached(&format!(
            "SELECT count(*) FROM spooler_jobs WHERE 1 = 1{sql}"
        ))?
        .query_row(params_from_iter(args), |r| r.get(0))?)
}

pub(crate) async fn job_count(db: &Db, filter: &JobFilter) -> StoreResult<i64> {
    let filter = filter.clone();
    db.read(move |conn| count(conn, &filter, None)).await
}

const COLUMNS: &str = "id, action, filter, matched, affected, skipped, state, chunk, max_id, \
     done_through, created_at, updated_at, finished_at";

/// An operation row, read with [`COLUMNS`].
fn from_row(r: &Row<'_>) -> rusqlite::Result<Result<Operation, StoreError>> {
    let id: i64 = r.get(0)?;
    let action: String = r.get(1)?;
    let filter: String = r.get(2)?;
    let state: String = r.get(6)?;
    let finished_at: Option<i64> = r.get(12)?;
    let (created_at, updated_at): (i64, i64) = (r.get(10)?, r.get(11)?);
    let (matched, affected, skipped, chunk, max_id, done_through) = (
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
    );
    Ok((|| {
        let bad = |message: String| StoreError::Database {
            message: format!("operation {id}: {message}"),
        };
        Ok(Operation {
            id,
            action: action.parse().map_err(bad)?,
            filter: serde_json::from_str(&filter).map_err(|e| bad(e.to_string()))?,
            matched,
            affected,
            skipped,
            state: state.parse().map_err(bad)?,
            chunk,
            max_id,
            done_through,
            created_at: from_micros(id, created_at)?,
            updated_at: from_micros(id, updated_at)?,
            finished_at: finished_at.map(|f| from_micros(id, f)).transpose()?,
        })
    })())
}

fn select(conn: &Connection, id: i64) -> Result<Option<Operation>, OpError> {
    let op = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM spooler_operations WHERE id = ?1"
        ))?
        .query_row([id], from_row)
        .optional()?;
    Ok(op.transpose()?)
}

#[async_trait]
impl OperationStore for SqliteStore {
    async fn operation_create(&self, new: &OperationNew) -> StoreResult<Operation> {
        let db = &self.db;
        if new.chunk == 0 || new.chunk > MAX_CHUNK {
            return Err(StoreError::InvalidInput {
                field: "chunk",
                message: format!("must be between 1 and {MAX_CHUNK}"),
            });
        }
        let new = new.clone();
        let filter = serde_json::to_string(&new.filter).map_err(|e| StoreError::InvalidInput {
            field: "filter",
            message: e.to_string(),
        })?;
        db.write(move |ctx| {
            let max_id: JobId =
                ctx.conn
                    .query_row("SELECT coalesce(max(id), 0) FROM spooler_jobs", [], |r| {
                        r.get(0)
                    })?;
            let matched = count(ctx.conn, &new.filter, Some(max_id))?;
            let now = micros(ctx.now);
            let id: i64 = ctx.conn.query_row(
                "INSERT INTO spooler_operations (action, filter, matched, state, chunk, max_id, \
                 created_at, updated_at) VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6, ?6) RETURNING id",
                params![new.action.as_str(), filter, matched, new.chunk, max_id, now],
                |r| r.get(0),
            )?;
            select(ctx.conn, id)?.ok_or(OpError::Store(StoreError::OperationNotFound { id }))
        })
        .await
    }

    async fn operation_get(&self, id: i64) -> StoreResult<Option<Operation>> {
        let db = &self.db;
        db.read(move |conn| select(conn, id)).await
    }

    async fn operation_list_running(&self) -> StoreResult<Vec<Operation>> {
        let db = &self.db;
        db.read(|conn| {
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM spooler_operations WHERE state = 'running' ORDER BY id"
                ))?
                .query_map([], from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().collect::<Result<Vec<_>, StoreError>>()?)
        })
        .await
    }

    async fn operation_step(&self, id: i64) -> StoreResult<Operation> {
        let db = &self.db;
        db.write(move |ctx| {
            let op = select(ctx.conn, id)?.ok_or(StoreError::OperationNotFound { id })?;
            if !op.is_running() {
                return Ok(op);
            }
            let (filter, mut args) = filter_sql(&op.filter);
            let mut all = vec![Sql::Integer(op.done_through), Sql::Integer(op.max_id)];
            all.append(&mut args);
            all.push(Sql::Integer(i64::from(op.chunk)));
            let rows: Vec<(JobId, String)> = ctx
                .conn
                .prepare_cached(&format!(
                    "SELECT id, state FROM spooler_jobs WHERE id > ? AND id <= ?{filter} \
                     ORDER BY id LIMIT ?"
                ))?
                .query_map(params_from_iter(all), |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut targets = Vec::new();
            for (job, state) in &rows {
                let state: JobState = state
                    .parse()
                    .map_err(|message| StoreError::Decode { id: *job, message })?;
                if op.action.applies_to(state) {
                    targets.push(*job);
                }
            }
            let affected = apply(ctx, op.action, &targets)?;
            let skipped = rows.len() as i64 - affected;
            let last = rows.len() < op.chunk as usize;
            let done_through = if last {
                op.max_id
            } else {
                rows.last().map_or(op.max_id, |r| r.0)
            };
            let now = micros(ctx.now);
            ctx.conn
                .prepare_cached(
                    "UPDATE spooler_operations SET affected = affected + ?2, skipped = skipped + ?3, \
                     done_through = ?4, state = ?5, updated_at = ?6, finished_at = ?7 WHERE id = ?1",
                )?
                .execute(params![
                    id,
                    affected,
                    skipped,
                    done_through,
                    if last {
                        OperationState::Completed.as_str()
                    } else {
                        OperationState::Running.as_str()
                    },
                    now,
                    last.then_some(now)
                ])?;
            Ok(select(ctx.conn, id)?.ok_or(StoreError::OperationNotFound { id })?)
        })
        .await
    }

    async fn operation_cancel(&self, id: i64) -> StoreResult<Operation> {
        let db = &self.db;
        db.write(move |ctx| {
            let now = micros(ctx.now);
            ctx.conn
                .prepare_cached(
                    "UPDATE spooler_operations SET state = 'cancelled', updated_at = ?2, \
                     finished_at = ?2 WHERE id = ?1 AND state = 'running'",
                )?
                .execute(params![id, now])?;
            select(ctx.conn, id)?.ok_or(OpError::Store(StoreError::OperationNotFound { id }))
        })
        .await
    }
}

/// `state IN (…)` for the states `action` applies to.
fn states_sql(action: BulkAction) -> String {
    let names: Vec<String> = action
        .states()
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!("state IN ({})", names.join(", "))
}

/// Applies `action` to the jobs `ids` (chosen because it applies to their state); returns how
/// many changed. A retry that would give a second unfinished job the same unique key leaves that
/// job as it is (`OR IGNORE`): it is counted as skipped.
fn apply(ctx: &mut Ctx<'_>, action: BulkAction, ids: &[JobId]) -> Result<i64, OpError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let list = serde_json::to_string(ids).expect("ids serialize");
    let now = micros(ctx.now);
    let guard = states_sql(action);
    let changed = match action {
        BulkAction::Retry => {
            let queues: Vec<String> = ctx
                .conn
                .prepare_cached(&format!(
                    "UPDATE OR IGNORE spooler_jobs SET state = 'available', run_at = ?2, \
                     finished_at = NULL, result = NULL, cancel_requested = 0, worker_id = NULL, \
                     lease_expires_at = NULL, max_attempts = max(max_attempts, attempt + 1) \
                     WHERE id IN (SELECT value FROM json_each(?1)) AND {guard} RETURNING queue"
                ))?
                .query_map(params![list, now], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for q in &queues {
                ctx.wake(q);
            }
            queues.len()
        }
        BulkAction::Cancel => {
            let stopped = ctx
                .conn
                .prepare_cached(
                    "UPDATE spooler_jobs SET state = 'cancelled', finished_at = ?2 \
                     WHERE id IN (SELECT value FROM json_each(?1)) \
                     AND state IN ('scheduled', 'available')",
                )?
                .execute(params![list, now])?;
            let asked = ctx
                .conn
                .prepare_cached(
                    "UPDATE spooler_jobs SET cancel_requested = 1 \
                     WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'running'",
                )?
                .execute(params![list])?;
            stopped + asked
        }
        BulkAction::Delete => ctx
            .conn
            .prepare_cached(&format!(
                "DELETE FROM spooler_jobs WHERE id IN (SELECT value FROM json_each(?1)) AND {guard}"
            ))?
            .execute(params![list])?,
    };
    Ok(changed as i64)
}
