//! Following queues' routes in the transaction that ended jobs: the routed jobs are inserted with
//! their origin by one statement (their wake-ups sent at commit), and a message past `max_hops`
//! gets the reason appended to its errors.

use super::{Written, decode, job_cols, notify_fragment};
use crate::Inner;
use chrono::{DateTime, Utc};
use serde_json::Value;
use spooler_core::route::{Next, may_route, route_for};
use spooler_core::store::QueueSettingsMap;
use spooler_core::{AttemptError, JobId, NewJob};
use sqlx::PgConnection;

/// The jobs `$1` as they are now (just made final).
pub(crate) const ROUTED_FROM_SQL: &str =
    concat!("SELECT ", job_cols!(), " FROM {s}.jobs WHERE id = ANY($1)");

/// Inserts routed jobs with their origin; `max_attempts` and `timeout_ms` come resolved.
pub(crate) const ROUTE_INSERT_SQL: &str = concat!(
    "WITH ins AS (
        INSERT INTO {s}.jobs_active (queue, kind, args, state, priority, max_attempts, run_at,
                                     created_at, timeout_ms, tags, routed_from, origin, meta)
        SELECT i.queue, i.kind, i.args,
               CASE WHEN coalesce(i.run_at, $10) > $10 THEN 'scheduled' ELSE 'available' END,
               i.priority, i.max_attempts, coalesce(i.run_at, $10), $10, i.timeout_ms,
               CASE WHEN i.tags = '[]'::jsonb THEN '{}'::text[]
                    ELSE ARRAY(SELECT jsonb_array_elements_text(i.tags)) END,
               i.routed_from, i.origin, i.meta
          FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::int4[], $5::timestamptz[],
                      $6::int4[], $7::int8[], $8::jsonb[], $9::int8[], $11::jsonb[], $13::jsonb[])
               AS i(queue, kind, args, priority, run_at, max_attempts, timeout_ms, tags,
                    routed_from, origin, meta)
        RETURNING id, queue, state
    )
    SELECT ins.id, ",
    notify_fragment!("ins", "$12"),
    " FROM ins"
);

/// Appends error entries `$2` to the jobs `$1`.
pub(crate) const ROUTE_STOP_SQL: &str =
    "UPDATE {s}.jobs j SET errors = j.errors || jsonb_build_array(u.err)
      FROM unnest($1::int8[], $2::jsonb[]) AS u(id, err) WHERE j.id = u.id";

/// Follows, on `conn` inside the transaction that wrote them, the routes the queues' `settings`
/// give the `written` transitions that made jobs final.
pub(super) async fn follow(
    inner: &Inner,
    conn: &mut PgConnection,
    settings: &QueueSettingsMap,
    written: &[Written],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let ids: Vec<JobId> = written
        .iter()
        .filter(|(_, queue, state)| may_route(settings, queue, *state))
        .map(|(lease, _, _)| lease.id)
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query(&inner.sql.routed_from)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
    let mut routed: Vec<(NewJob, Value)> = Vec::new();
    let mut stops: Vec<(JobId, Value)> = Vec::new();
    for row in &rows {
        let job = decode(row).map_err(|e| sqlx::Error::Decode(e.into()))?;
        let Some(route) = route_for(settings, &job.queue, &job.kind, job.state) else {
            continue;
        };
        let stop = |error: AttemptError| (job.id, serde_json::to_value(error).expect("error"));
        match route.follow(&job, now) {
            Next::Enqueue { job: next, origin } => match next.validate() {
                Ok(()) => {
                    tracing::debug!(job = job.id, queue = %route.queue, "job routed");
                    routed.push((*next, serde_json::to_value(origin).expect("origin")));
                }
                // A route the store cannot insert never blocks the original's end: it is noted.
                Err(e) => stops.push(stop(AttemptError {
                    attempt: job.attempt,
                    at: now,
                    message: format!("not routed to queue {}: {e}", route.queue),
                })),
            },
            Next::Stop(error) => stops.push(stop(error)),
        }
    }
    if !routed.is_empty() {
        insert(inner, conn, settings, &routed, now).await?;
    }
    if !stops.is_empty() {
        let (ids, errors): (Vec<JobId>, Vec<Value>) = stops.into_iter().unzip();
        sqlx::query(&inner.sql.route_stop)
            .bind(&ids)
            .bind(&errors)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Inserts the routed `jobs` with their origins.
async fn insert(
    inner: &Inner,
    conn: &mut PgConnection,
    settings: &QueueSettingsMap,
    jobs: &[(NewJob, Value)],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let col = |f: fn(&(NewJob, Value)) -> Value| jobs.iter().map(f).collect::<Vec<Value>>();
    let (max_attempts, timeout_ms): (Vec<i32>, Vec<Option<i64>>) = jobs
        .iter()
        .map(|(job, _)| super::insert::resolve(settings, job))
        .unzip();
    sqlx::query(&inner.sql.route_insert)
        .bind(
            jobs.iter()
                .map(|(j, _)| j.queue.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            jobs.iter()
                .map(|(j, _)| j.kind.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(col(|(j, _)| j.args.clone()))
        .bind(jobs.iter().map(|(j, _)| j.priority).collect::<Vec<_>>())
        .bind(jobs.iter().map(|(j, _)| j.run_at).collect::<Vec<_>>())
        .bind(&max_attempts)
        .bind(&timeout_ms)
        .bind(col(|(j, _)| Value::from(j.tags.clone())))
        .bind(jobs.iter().map(|(j, _)| j.routed_from).collect::<Vec<_>>())
        .bind(now)
        .bind(col(|(_, origin)| origin.clone()))
        .bind(&inner.channel)
        .bind(
            jobs.iter()
                .map(|(j, _)| super::insert::meta_value(&j.meta))
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *conn)
        .await?;
    Ok(())
}
