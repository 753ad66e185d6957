//! Inserting jobs: validated and serialized on the caller's thread, written in multi-row statements, unique keys deduplicated.

use super::*;
use spooler_core::UniquePeriod;
use spooler_core::store::{QueueSettings, QueueSettingsMap};

/// A job ready to insert: validated, its JSON serialized on the caller's thread.
pub(crate) struct Prepared {
    job: NewJob,
    args: String,
    /// The job's tags as JSON, `None` when there are none (the statement stores `[]`).
    tags: Option<String>,
    /// The job's meta as JSON, `None` when empty.
    meta: Option<String>,
    /// The key the job is held by in the ledger when its queue makes jobs unique in a period.
    period: Option<(String, UniquePeriod)>,
}

/// What inserting one job did, before decoding.
pub(crate) enum Insert {
    New {
        id: JobId,
        state: JobState,
        created_at: DateTime<Utc>,
        job: NewJob,
    },
    Duplicate(RawJob),
}

impl Insert {
    /// The job's id, new or existing.
    pub(crate) fn id(&self) -> JobId {
        match self {
            Insert::New { id, .. } => *id,
            Insert::Duplicate(raw) => raw.id,
        }
    }

    /// What the caller is answered.
    pub(crate) fn decode(self) -> StoreResult<Inserted> {
        match self {
            Insert::Duplicate(raw) => Ok(Inserted {
                job: raw.decode()?,
                duplicate: true,
            }),
            Insert::New {
                id,
                created_at,
                job,
                ..
            } => Ok(Inserted {
                job: job.into_row(id, created_at),
                duplicate: false,
            }),
        }
    }
}

/// Validates `jobs` and serializes their JSON, each taking what it leaves unset from its queue's
/// `settings`. The jobs are moved, not copied: they come back in the answer.
pub(crate) fn prepare(
    jobs: Vec<NewJob>,
    settings: &QueueSettingsMap,
) -> StoreResult<Vec<Prepared>> {
    let mut prepared = Vec::with_capacity(jobs.len());
    for mut job in jobs {
        job.validate()?;
        let invalid = |field: &'static str, e: serde_json::Error| StoreError::InvalidInput {
            field,
            message: e.to_string(),
        };
        prepared.push(Prepared {
            args: serde_json::to_string(&job.args).map_err(|e| invalid("args", e))?,
            tags: if job.tags.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&job.tags).map_err(|e| invalid("tags", e))?)
            },
            meta: if job.meta.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&job.meta).map_err(|e| invalid("meta", e))?)
            },
            period: spooler_core::unique::period_key(settings.get(&job.queue), &job),
            job: {
                QueueSettings::fill(settings.get(&job.queue), &mut job);
                job
            },
        });
    }
    Ok(prepared)
}

/// Inserts `jobs`, each taking what it leaves unset from its queue's `settings`.
pub(crate) async fn insert_many(
    db: &Db,
    jobs: Vec<NewJob>,
    settings: &QueueSettingsMap,
) -> StoreResult<Vec<Inserted>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let prepared = prepare(jobs, settings)?;
    let done = db.write(move |ctx| insert_tx(ctx, prepared)).await?;
    super::decode_each(done, Insert::decode)
}

/// Columns written per inserted job.
const INSERT_COLUMNS: usize = 13;

/// The columns a statement can bind once for all its jobs when they share them (by their place
/// in the INSERT): the queue, the kind and the creation time.
const SHARED_COLUMNS: [usize; 3] = [0, 1, 7];

/// The most jobs one INSERT statement carries; smaller remainders go in power-of-two statements
/// so that at most 14 statement shapes are ever prepared (7 sizes, shared columns or not).
const INSERT_CHUNK: usize = 64;

/// `INSERT … VALUES (…), (…)` for `rows` jobs. Text costs SQLite an allocation and a copy per
/// value bound (rusqlite binds it `SQLITE_TRANSIENT`), so what jobs share is not bound per job as
/// text: the state as whether the job is scheduled, the tags as NULL when there are none, and,
/// with `shared`, the queue, kind and creation time once, as `?1`–`?3`, for every row.
fn insert_sql(rows: usize, shared: bool) -> String {
    let mut sql = String::from(
        "INSERT INTO spooler_jobs (queue, kind, args, state, priority, max_attempts, run_at, \
         created_at, timeout_ms, unique_key, tags, routed_from, meta) VALUES ",
    );
    let mut next = if shared { SHARED_COLUMNS.len() + 1 } else { 1 };
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..INSERT_COLUMNS {
            if c > 0 {
                sql.push_str(", ");
            }
            let p = match SHARED_COLUMNS.iter().position(|&s| s == c) {
                Some(i) if shared => i + 1,
                _ => {
                    next += 1;
                    next - 1
                }
            };
            sql.push_str(&match c {
                3 => format!("CASE WHEN ?{p} THEN 'scheduled' ELSE 'available' END"),
                10 => format!("coalesce(?{p}, '[]')"),
                _ => format!("?{p}"),
            });
        }
        sql.push(')');
    }
    sql
}

/// The INSERT statements for 1, 2, 4 … [`INSERT_CHUNK`] jobs, each without and with shared
/// columns (indexed by `shared`), built once.
static INSERT_SQL: std::sync::LazyLock<Vec<(usize, [String; 2])>> =
    std::sync::LazyLock::new(|| {
        let mut sizes = Vec::new();
        let mut n = INSERT_CHUNK;
        while n > 0 {
            sizes.push((n, [false, true].map(|shared| insert_sql(n, shared))));
            n /= 2;
        }
        sizes
    });

/// A job about to be inserted: everything bound, computed.
struct NewRow {
    p: Prepared,
    state: JobState,
    run_at_us: i64,
    timeout_ms: Option<i64>,
}

/// Inserts `prepared` inside the writer's open transaction, waking the queues that got available jobs.
pub(crate) fn insert_tx(
    ctx: &mut Ctx<'_>,
    prepared: Vec<Prepared>,
) -> Result<Vec<Insert>, OpError> {
    let conn = ctx.conn;
    let now = ctx.now;
    let now_us = micros(now);
    let mut out = Vec::with_capacity(prepared.len());
    let mut pending: Vec<NewRow> = Vec::new();
    for p in prepared {
        let run_at = trunc(p.job.run_at.unwrap_or(now));
        let state = if run_at > now {
            JobState::Scheduled
        } else {
            JobState::Available
        };
        let row = NewRow {
            state,
            run_at_us: micros(run_at),
            timeout_ms: p.job.timeout_ms(),
            p,
        };
        if let Some(key) = &row.p.job.unique_key {
            // Everything before it is inserted first, so a duplicate earlier in the batch is found.
            flush(conn, &mut pending, &mut out, now, now_us)?;
            let existing = conn
                .prepare_cached(&UNIQUE_HOLDER_SQL)?
                .query_row([key], RawJob::from_row)
                .optional()?;
            if let Some(raw) = existing {
                out.push(Insert::Duplicate(raw));
                continue;
            }
            pending.push(row);
            flush(conn, &mut pending, &mut out, now, now_us)?;
        } else if let Some((key, period)) = &row.p.period {
            flush(conn, &mut pending, &mut out, now, now_us)?;
            if let Some(holder) = super::unique::take_key(conn, key, period, now)? {
                out.push(Insert::Duplicate(holder));
                continue;
            }
            let key = key.clone();
            pending.push(row);
            flush(conn, &mut pending, &mut out, now, now_us)?;
            super::unique::note_key(conn, &key, out.last().map(Insert::id))?;
        } else {
            pending.push(row);
        }
    }
    flush(conn, &mut pending, &mut out, now, now_us)?;
    for ins in &out {
        if let Insert::New {
            state: JobState::Available,
            job,
            ..
        } = ins
        {
            ctx.wake(&job.queue);
        }
    }
    Ok(out)
}

/// Inserts `pending` in multi-row statements (one statement execution opens the table's and every
/// index's cursors once for many rows), appending the results to `out` in order.
fn flush(
    conn: &Connection,
    pending: &mut Vec<NewRow>,
    out: &mut Vec<Insert>,
    now: DateTime<Utc>,
    now_us: i64,
) -> Result<(), OpError> {
    let mut rows = std::mem::take(pending).into_iter().peekable();
    while rows.peek().is_some() {
        let left = rows.len();
        let (n, forms) = INSERT_SQL
            .iter()
            .find(|(n, _)| *n <= left)
            .expect("a statement for one row exists");
        let n = *n;
        let chunk: Vec<NewRow> = rows.by_ref().take(n).collect();
        let (queue, kind) = (&chunk[0].p.job.queue, &chunk[0].p.job.kind);
        let shared = n > 1
            && chunk
                .iter()
                .all(|r| r.p.job.queue == *queue && r.p.job.kind == *kind);
        let sql = &forms[usize::from(shared)];
        let mut args: Vec<&dyn ToSql> = Vec::with_capacity(n * INSERT_COLUMNS);
        if shared {
            args.extend([queue as &dyn ToSql, kind, &now_us]);
        }
        for r in &chunk {
            let columns: [&dyn ToSql; INSERT_COLUMNS] = [
                &r.p.job.queue,
                &r.p.job.kind,
                &r.p.args,
                // Whether the job is scheduled (else available), as the statement takes it.
                if r.state == JobState::Scheduled {
                    &true
                } else {
                    &false
                },
                &r.p.job.priority,
                &r.p.job.max_attempts,
                &r.run_at_us,
                &now_us,
                &r.timeout_ms,
                &r.p.job.unique_key,
                &r.p.tags,
                &r.p.job.routed_from,
                &r.p.meta,
            ];
            args.extend(
                columns
                    .into_iter()
                    .enumerate()
                    .filter(|(c, _)| !shared || !SHARED_COLUMNS.contains(c))
                    .map(|(_, v)| v),
            );
        }
        let inserted = conn.prepare_cached(sql)?.execute(&args[..])?;
        drop(args);
        if inserted != chunk.len() {
            return Err(StoreError::Database {
                message: format!("insert stored {inserted} of {} jobs", chunk.len()),
            }
            .into());
        }
        // Rows are inserted in VALUES order, each taking the next id (AUTOINCREMENT never
        // reuses or skips back, and this transaction is the only writer): the last id minus the
        // count is the first.
        let first = conn.last_insert_rowid() - chunk.len() as i64 + 1;
        for (id, r) in (first..).zip(chunk) {
            out.push(Insert::New {
                id,
                state: r.state,
                created_at: now,
                job: r.p.job,
            });
        }
    }
    Ok(())
}
