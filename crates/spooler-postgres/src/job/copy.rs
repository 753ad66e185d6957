//! Large batches without unique keys, written with `COPY … FROM STDIN`: no statement to plan,
//! no arrays to receive and expand, rows streamed straight into `jobs_active`. The ids are drawn
//! from the sequence first, so the rows answered are built here, as every insert builds them
//! ([`answered_row`]), and written as built.

use super::insert::{answered_row, meta_value, resolve};
use crate::Inner;
use crate::error::map;
use spooler_core::store::QueueSettingsMap;
use spooler_core::{Inserted, JobRow, JobState, NewJob, StoreError, StoreResult};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// Batches of at least this many jobs, none with a unique key, go by `COPY`; a smaller one is
/// cheaper as one statement (the `COPY` takes three round trips).
pub(crate) const COPY_FROM: usize = 100;

/// Rows sent at a time: the server parses and stores one part while the next is written here.
const SEND_EVERY: usize = 128;

/// `$1` new job ids, in order.
pub(crate) const NEXT_IDS_SQL: &str =
    "SELECT nextval('{s}.job_ids') FROM generate_series(1, $1::int8) ORDER BY 1";

/// The `COPY` of new jobs, in the text format [`write_row`] writes.
pub(crate) const COPY_JOBS_SQL: &str = "COPY {s}.jobs_active (id, queue, kind, args, state, \
     priority, max_attempts, run_at, created_at, timeout_ms, tags, routed_from, meta) FROM STDIN";

/// Whether `jobs` go by [`insert_copy`].
pub(crate) fn fits(jobs: &[NewJob]) -> bool {
    jobs.len() >= COPY_FROM && jobs.iter().all(|j| j.unique_key.is_none())
}

/// Inserts `jobs` (see [`fits`]) on `conn` with one `COPY`, which stores all of them or none;
/// returns what was inserted (aligned with `jobs`, ids increasing) and the queues that gained
/// available jobs, whose workers the caller wakes once the rows are stored.
///
/// A caller that gives up midway (its deadline passed) leaves the connection in the middle of
/// the `COPY` protocol, where the next statement on it would be answered out of turn (measured:
/// the next insert drew no ids). Unless its rows are stored, the connection is closed rather than
/// pooled; a refused batch, which is rare, costs one reconnection.
pub(crate) async fn insert_copy(
    inner: &Inner,
    conn: PoolConnection<Postgres>,
    jobs: &[NewJob],
    settings: &QueueSettingsMap,
) -> StoreResult<(Vec<Inserted>, BTreeSet<String>)> {
    let mut guard = CloseUnlessStored(Some(conn));
    let conn = guard.0.as_mut().expect("held until the rows are stored");
    let done = copy_on(inner, conn, jobs, settings).await;
    if done.is_ok() {
        guard.0.take();
    }
    done
}

/// A pooled connection closed on drop unless taken back out.
struct CloseUnlessStored(Option<PoolConnection<Postgres>>);

impl Drop for CloseUnlessStored {
    fn drop(&mut self) {
        if let Some(conn) = &mut self.0 {
            conn.close_on_drop();
        }
    }
}

/// The insert itself: ids drawn, rows built and streamed a part at a time.
async fn copy_on(
    inner: &Inner,
    conn: &mut PgConnection,
    jobs: &[NewJob],
    settings: &QueueSettingsMap,
) -> StoreResult<(Vec<Inserted>, BTreeSet<String>)> {
    for job in jobs {
        job.validate()?;
    }
    let now = inner.clock.now();
    let ids: Vec<i64> = sqlx::query_scalar(&inner.sql.next_ids)
        .bind(jobs.len() as i64)
        .fetch_all(&mut *conn)
        .await
        .map_err(map)?;
    if ids.len() != jobs.len() {
        return Err(StoreError::Database {
            message: format!("drew {} job ids for {} jobs", ids.len(), jobs.len()),
        });
    }
    let mut copy = conn.copy_in_raw(&inner.sql.copy_jobs).await.map_err(map)?;
    let mut data = String::with_capacity(SEND_EVERY * 192);
    let mut out = Vec::with_capacity(jobs.len());
    let mut woken = BTreeSet::new();
    for (i, (job, id)) in jobs.iter().zip(ids).enumerate() {
        let row = answered_row(job, id, now, resolve(settings, job));
        write_row(&mut data, &row)?;
        if row.state == JobState::Available {
            woken.insert(row.queue.clone());
        }
        out.push(Inserted {
            job: row,
            duplicate: false,
        });
        if (i + 1) % SEND_EVERY == 0 {
            copy.send(data.as_bytes()).await.map_err(map)?;
            data.clear();
        }
    }
    copy.send(data.as_bytes()).await.map_err(map)?;
    let stored = copy.finish().await.map_err(map)?;
    if stored != jobs.len() as u64 {
        return Err(StoreError::Database {
            message: format!("COPY stored {stored} of {} jobs", jobs.len()),
        });
    }
    Ok((out, woken))
}

/// Appends `row` as one line of `COPY`'s text format, in the columns of [`COPY_JOBS_SQL`].
fn write_row(out: &mut String, row: &JobRow) -> StoreResult<()> {
    let json = |field: &'static str, value: &serde_json::Value| {
        serde_json::to_string(value).map_err(|e| StoreError::InvalidInput {
            field,
            message: e.to_string(),
        })
    };
    let time = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S%.6f+00");
    let _ = write!(out, "{}\t", row.id);
    field(out, &row.queue);
    field(out, &row.kind);
    field(out, &json("args", &row.args)?);
    field(out, row.state.as_str());
    let _ = write!(
        out,
        "{}\t{}\t{}\t{}\t",
        row.priority,
        row.max_attempts,
        time(row.run_at),
        time(row.created_at)
    );
    match row.timeout {
        Some(t) => {
            let _ = write!(out, "{}\t", spooler_core::job::timeout_ms(t));
        }
        None => out.push_str("\\N\t"),
    }
    field(out, &array_literal(&row.tags));
    match row.routed_from {
        Some(id) => {
            let _ = write!(out, "{id}\t");
        }
        None => out.push_str("\\N\t"),
    }
    match meta_value(&row.meta) {
        Some(meta) => field(out, &json("meta", &meta)?),
        None => out.push_str("\\N\t"),
    }
    // The last field's tab becomes the line's end.
    out.pop();
    out.push('\n');
    Ok(())
}

/// Appends `value` and a tab, escaped for `COPY`'s text format: backslash, tab, newline and
/// carriage return are the characters it gives a meaning.
fn field(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\t');
}

/// `tags` as a `text[]` literal, every element quoted (so `NULL`, commas, braces and blanks are
/// plain text).
fn array_literal(tags: &[String]) -> String {
    let mut out = String::from("{");
    for (i, tag) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in tag.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_escape_what_copy_gives_a_meaning() {
        let mut out = String::new();
        field(&mut out, "a\\b\tc\nd\re \\N");
        assert_eq!(out, "a\\\\b\\tc\\nd\\re \\\\N\t");
    }

    #[test]
    fn tags_are_quoted_elements() {
        assert_eq!(array_literal(&[]), "{}");
        let tags = ["NULL", "a,b", "q\"d", "b\\s", "", "{x}"].map(String::from);
        assert_eq!(
            array_literal(&tags),
            r#"{"NULL","a,b","q\"d","b\\s","","{x}"}"#
        );
    }
}
