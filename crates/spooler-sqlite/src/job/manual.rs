//! Operations on one job by hand: cancel, retry, delete.

use super::*;

fn existing(conn: &Connection, id: JobId) -> Result<(RawJob, JobState), OpError> {
    let raw = select_one(conn, id)?.ok_or(StoreError::JobNotFound { id })?;
    let state = raw.state()?;
    Ok((raw, state))
}

fn update_returning(conn: &Connection, sql: &str, p: &[&dyn ToSql]) -> Result<RawJob, OpError> {
    Ok(conn.prepare_cached(sql)?.query_row(p, RawJob::from_row)?)
}

pub(crate) async fn cancel(db: &Db, id: JobId) -> StoreResult<JobRow> {
    db.write(move |ctx| {
        let (_, state) = existing(ctx.conn, id)?;
        let now = micros(ctx.now);
        match state {
            JobState::Running => update_returning(
                ctx.conn,
                &format!(
                    "UPDATE spooler_jobs SET cancel_requested = 1 WHERE id = ?1 RETURNING {COLUMNS}"
                ),
                params![id],
            ),
            JobState::Scheduled | JobState::Available => update_returning(
                ctx.conn,
                &format!(
                    "UPDATE spooler_jobs SET state = 'cancelled', finished_at = ?2 \
                     WHERE id = ?1 RETURNING {COLUMNS}"
                ),
                params![id, now],
            ),
            state => Err(StoreError::InvalidState {
                id,
                state,
                action: "cancel",
            }
            .into()),
        }
    })
    .await?
    .decode()
}

pub(crate) async fn retry(db: &Db, id: JobId) -> StoreResult<JobRow> {
    db.write(move |ctx| {
        let (raw, state) = existing(ctx.conn, id)?;
        match state {
            JobState::Running => Err(StoreError::InvalidState {
                id,
                state,
                action: "retry",
            }
            .into()),
            JobState::Available => Ok(raw),
            _ => {
                let row = update_returning(
                    ctx.conn,
                    &format!(
                        "UPDATE spooler_jobs SET state = 'available', run_at = ?2, \
                         finished_at = NULL, result = NULL, cancel_requested = 0, {CLEAR_LEASE}, \
                         max_attempts = max(max_attempts, attempt + 1) \
                         WHERE id = ?1 RETURNING {COLUMNS}"
                    ),
                    params![id, micros(ctx.now)],
                )?;
                ctx.wake(&row.queue);
                Ok(row)
            }
        }
    })
    .await?
    .decode()
}

pub(crate) async fn delete(db: &Db, id: JobId) -> StoreResult<JobRow> {
    db.write(move |ctx| {
        let (_, state) = existing(ctx.conn, id)?;
        if state == JobState::Running {
            return Err(StoreError::InvalidState {
                id,
                state,
                action: "delete",
            }
            .into());
        }
        update_returning(
            ctx.conn,
            &format!("DELETE FROM spooler_jobs WHERE id = ?1 RETURNING {COLUMNS}"),
            params![id],
        )
    })
    .await?
    .decode()
}
