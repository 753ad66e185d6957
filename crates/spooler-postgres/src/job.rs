//! Job statements: insert (also inside the caller's transaction), claim, lease extension, finish,
//! cancel, retry, delete, get, list, rescue, promote and prune. Every time is a bind parameter read
//! from the store's clock; batches travel as arrays and are expanded with `unnest`.

use crate::error::{again_if_moved, map};
use crate::{Inner, PgStore};
use chrono::{DateTime, Utc};
use serde_json::Value;
use spooler_core::clock::add;
use spooler_core::{
    AttemptError, Facts, Inserted, JobClaim, JobFinish, JobId, JobList, JobPrune, JobRescue,
    JobRow, JobState, LeaseExtend, LeaseRef, LeaseStatus, NewJob, Outcome, RescueReport,
    StoreError, StoreResult, Transition, decide,
};
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, Row};
use std::collections::{BTreeSet, HashMap, HashSet};
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

/// The facts of an outcome that needs only the attempt.
fn lease_facts(lease: LeaseRef) -> Facts {
    Facts {
        attempt: lease.attempt,
        ..Facts::default()
    }
}

/// Reads `max_attempts, cancel_requested, worker_id` from column `at` on.
fn facts_of(row: &PgRow, attempt: i32, at: usize) -> Result<Facts, sqlx::Error> {
    Ok(Facts {
        attempt,
        max_attempts: row.try_get(at)?,
        cancel_requested: row.try_get(at + 1)?,
        worker_id: row.try_get(at + 2)?,
    })
}

/// Decided transitions as the arrays the write statement binds.
#[derive(Default)]
struct Writes {
    ids: Vec<JobId>,
    attempts: Vec<i32>,
    states: Vec<&'static str>,
    run_ats: Vec<Option<DateTime<Utc>>>,
    finished_ats: Vec<Option<DateTime<Utc>>>,
    errors: Vec<Option<Value>>,
    results: Vec<Option<Value>>,
    max_attempts: Vec<Option<i32>>,
}

impl Writes {
    fn push(&mut self, lease: LeaseRef, t: Transition) {
        self.ids.push(lease.id);
        self.attempts.push(lease.attempt);
        self.states.push(t.state.as_str());
        self.run_ats.push(t.run_at);
        self.finished_ats.push(t.finished_at);
        self.errors
            .push(t.error.and_then(|e| serde_json::to_value(e).ok()));
        self.results.push(t.result);
        self.max_attempts.push(t.max_attempts);
    }
}

/// The job columns, in the order every statement returns them.
pub(crate) const JOB_COLS: &str = "id, queue, kind, args, state, priority, attempt, max_attempts, \
     run_at, created_at, started_at, finished_at, timeout_ms, unique_key, tags, errors, result, \
     lease_expires_at, worker_id, routed_from, cancel_requested";

/// The same columns qualified by the alias `j`.
pub(crate) const J_COLS: &str = "j.id, j.queue, j.kind, j.args, j.state, j.priority, j.attempt, \
     j.max_attempts, j.run_at, j.created_at, j.started_at, j.finished_at, j.timeout_ms, \
     j.unique_key, j.tags, j.errors, j.result, j.lease_expires_at, j.worker_id, j.routed_from, \
     j.cancel_requested";

/// `SELECT` fragment that sends one notification per distinct queue of `{cte}` rows that are
/// `available`: one NOTIFY per queue per statement, never one per job. `$N` is the channel.
pub(crate) fn notify_fragment(cte: &str, channel_param: &str) -> String {
    format!(
        "(SELECT count(*) FROM (SELECT pg_notify({channel_param}, d.queue) \
         FROM (SELECT DISTINCT queue FROM {cte} WHERE state = 'available') d) n) AS notified"
    )
}

/// The unfinished states, in which a unique key deduplicates.
const UNFINISHED: &str = "('scheduled', 'available', 'running')";

/// The insert; with `notify`, it also sends the wake-ups, delivered at its transaction's commit.
pub(crate) fn insert_sql(notify: bool) -> String {
    let notify = if notify {
        notify_fragment("ins", "$12")
    } else {
        "$12::text AS channel".to_string()
    };
    format!(
        "WITH input AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::int4[], $5::timestamptz[],
                                 $6::int4[], $7::int8[], $8::text[], $9::jsonb[], $10::int8[])
              WITH ORDINALITY AS i(queue, kind, args, priority, run_at, max_attempts, timeout_ms,
                                   unique_key, tags, routed_from, ord)
        ), ins AS (
            INSERT INTO {{s}}.jobs_active (queue, kind, args, state, priority, max_attempts, run_at,
                                   created_at, timeout_ms, unique_key, tags, routed_from)
            SELECT queue, kind, args,
                   CASE WHEN coalesce(run_at, $11) > $11 THEN 'scheduled' ELSE 'available' END,
                   priority, max_attempts, coalesce(run_at, $11), $11, timeout_ms, unique_key,
                   CASE WHEN tags = '[]'::jsonb THEN '{{}}'::text[]
                        ELSE ARRAY(SELECT jsonb_array_elements_text(tags)) END,
                   routed_from
              FROM input ORDER BY ord
            ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
            RETURNING id, unique_key, queue, state
        )
        SELECT ins.id, ins.unique_key, {notify} FROM ins"
    )
}

/// The insert of one job by the store itself (no `NOTIFY`): a plain `VALUES` row, which plans in a
/// fraction of the time of the `unnest` form. With custom plans (see `PgStore::connect_with`) that
/// planning is on every single enqueue's path. Same parameters and result columns as
/// [`insert_sql`], each array replaced by its one element.
pub(crate) fn insert_one_sql() -> String {
    "INSERT INTO {s}.jobs_active (queue, kind, args, state, priority, max_attempts, run_at,
                                  created_at, timeout_ms, unique_key, tags, routed_from)
     VALUES ($1, $2, $3,
             CASE WHEN coalesce($5, $11) > $11 THEN 'scheduled' ELSE 'available' END,
             $4, $6, coalesce($5, $11), $11, $7, $8, $9, $10)
     ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
     RETURNING id, unique_key"
        .to_string()
}

pub(crate) fn existing_unique_sql() -> String {
    format!(
        "SELECT {JOB_COLS} FROM {{s}}.jobs
          WHERE unique_key = ANY($1) AND unique_key IS NOT NULL AND state IN {UNFINISHED}"
    )
}

pub(crate) fn latest_by_key_sql() -> String {
    format!("SELECT {JOB_COLS} FROM {{s}}.jobs WHERE unique_key = $1 ORDER BY id DESC LIMIT 1")
}

/// The claim. Each asked-for, unpaused queue is probed on the partial index `jobs_claim` with
/// `queue = q.name`, so the index hands rows over already in claim order and `LIMIT` stops the scan
/// after `limit` rows however deep the backlog; the outer sort orders at most `limit` rows per queue.
pub(crate) fn claim_sql() -> String {
    format!(
        "WITH c AS (
            SELECT x.id
              FROM unnest($1::text[]) AS q(name)
             CROSS JOIN LATERAL (
                SELECT a.id, a.priority, a.run_at FROM {{s}}.jobs_active a
                 WHERE a.state = 'available' AND a.queue = q.name AND a.kind = ANY($2)
                 ORDER BY a.priority DESC, a.run_at, a.id
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED
             ) x
             WHERE NOT EXISTS (SELECT 1 FROM {{s}}.paused_queues p WHERE p.queue = q.name)
             ORDER BY x.priority DESC, x.run_at, x.id
             LIMIT $3
        )
        UPDATE {{s}}.jobs_active j
           SET state = 'running', attempt = j.attempt + 1, started_at = $4,
               lease_expires_at = $5, worker_id = $6
          FROM c WHERE j.id = c.id
        RETURNING {J_COLS}"
    )
}

/// The claim from one queue, what a worker's producer asks for: the function of migration 3, whose
/// plan is made once per connection (see that migration). `$1` is the queue's name.
pub(crate) fn claim_one_sql() -> String {
    format!("SELECT {JOB_COLS} FROM {{s}}.claim_one($1, $2, $3, $4, $5, $6)")
}

/// The signature of the function [`claim_one_sql`] calls.
pub(crate) const CLAIM_ONE_FN: &str =
    "{s}.claim_one(text, text[], bigint, timestamptz, timestamptz, text)";

/// `sql` with the parameters of `claim` bound; `$1` is its one queue, or the array of all of them.
fn claim_query<'q>(
    sql: &'q str,
    claim: &'q JobClaim,
    now: DateTime<Utc>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let queues = distinct(&claim.queues);
    let query = match queues.as_slice() {
        [one] => sqlx::query(sql).bind(*one),
        _ => sqlx::query(sql).bind(queues),
    };
    query
        .bind(&claim.kinds)
        .bind(i64::from(claim.limit))
        .bind(now)
        .bind(add(now, claim.lease))
        .bind(&claim.worker_id)
}

pub(crate) const EXTEND_SQL: &str =
    "WITH u AS (SELECT * FROM unnest($1::int8[], $2::int4[]) AS u(id, attempt))
    UPDATE {s}.jobs_active j SET lease_expires_at = $3
      FROM u WHERE j.id = u.id AND j.attempt = u.attempt AND j.state = 'running'
    RETURNING j.id, j.attempt, j.cancel_requested";

/// Writes decided transitions ([`Transition`]), fenced by (id, attempt) on running jobs; the
/// statement decides nothing.
pub(crate) fn finish_sql() -> String {
    format!(
        "WITH u AS (
            SELECT * FROM unnest($1::int8[], $2::int4[], $3::text[], $4::timestamptz[],
                                 $5::timestamptz[], $6::jsonb[], $7::jsonb[], $8::int4[])
              AS u(id, attempt, state, run_at, finished_at, err, result, max_attempts)
        ), done AS (
            UPDATE {{s}}.jobs j SET
                state = u.state,
                run_at = coalesce(u.run_at, j.run_at),
                finished_at = u.finished_at,
                errors = CASE WHEN u.err IS NULL THEN j.errors
                              ELSE j.errors || jsonb_build_array(u.err) END,
                result = u.result,
                max_attempts = coalesce(u.max_attempts, j.max_attempts),
                lease_expires_at = NULL,
                worker_id = NULL
              FROM u
             WHERE j.id = u.id AND j.attempt = u.attempt AND j.state = 'running'
            RETURNING j.id, j.attempt, j.queue, j.state
        )
        SELECT done.id, done.attempt, done.queue, done.state, {notify} FROM done",
        notify = notify_fragment("done", "$9")
    )
}

/// The facts [`decide`] reads, of the running jobs the leases still hold, locked until the write.
pub(crate) const FACTS_SQL: &str =
    "SELECT j.id, j.attempt, j.max_attempts, j.cancel_requested, j.worker_id
      FROM {s}.jobs_active j
      JOIN unnest($1::int8[], $2::int4[]) AS u(id, attempt) ON j.id = u.id AND j.attempt = u.attempt
     WHERE j.state = 'running'
       FOR UPDATE OF j";

/// Running jobs whose lease lapsed, oldest lapse first, locked (skipping any another rescuer or
/// a finishing worker holds) with what deciding their rescue needs.
pub(crate) const LAPSED_SQL: &str =
    "SELECT id, attempt, max_attempts, cancel_requested, worker_id, queue, kind
      FROM {s}.jobs_active
     WHERE state = 'running' AND lease_expires_at < $1
     ORDER BY lease_expires_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED";

pub(crate) fn cancel_sql() -> String {
    format!(
        "UPDATE {{s}}.jobs SET
            state = CASE WHEN state = 'running' THEN 'running' ELSE 'cancelled' END,
            cancel_requested = cancel_requested OR state = 'running',
            finished_at = CASE WHEN state = 'running' THEN finished_at ELSE $2 END
          WHERE id = $1 AND state IN {UNFINISHED}
        RETURNING {JOB_COLS}"
    )
}

pub(crate) fn retry_sql() -> String {
    format!(
        "WITH r AS (
            UPDATE {{s}}.jobs SET state = 'available', run_at = $2, finished_at = NULL,
                   cancel_requested = false,
                   max_attempts = greatest(max_attempts, attempt + 1)
             WHERE id = $1 AND state IN ('scheduled', 'completed', 'failed', 'cancelled')
            RETURNING {JOB_COLS}
        )
        SELECT r.*, {notify} FROM r",
        notify = notify_fragment("r", "$3")
    )
}

pub(crate) fn delete_sql() -> String {
    format!("DELETE FROM {{s}}.jobs WHERE id = $1 AND state <> 'running' RETURNING {JOB_COLS}")
}

pub(crate) fn get_sql() -> String {
    format!("SELECT {JOB_COLS} FROM {{s}}.jobs WHERE id = $1")
}

/// The listing. With a state, it reads only the partition holding that state and compares the
/// state plainly: a generic plan of `($2 IS NULL OR state = $2)` on the parent walks every
/// finished job to list the running ones (131 ms with a million finished, against 0.2 ms).
pub(crate) fn list_sql(table: &str, by_state: bool) -> String {
    let state = if by_state {
        "state = $2"
    } else {
        "$2::text IS NULL"
    };
    format!(
        "SELECT {JOB_COLS} FROM {{s}}.{table}
          WHERE ($1::text IS NULL OR queue = $1)
            AND {state}
            AND ($3::text IS NULL OR kind = $3)
            AND ($4::int8 IS NULL OR id < $4)
          ORDER BY id DESC
          LIMIT $5"
    )
}

pub(crate) fn promote_sql() -> String {
    format!(
        "WITH c AS (
            SELECT id FROM {{s}}.jobs_active
             WHERE state = 'scheduled' AND run_at <= $1
             ORDER BY run_at, id
             LIMIT $2
             FOR UPDATE SKIP LOCKED
        ), p AS (
            UPDATE {{s}}.jobs_active j SET state = 'available' FROM c WHERE j.id = c.id
            RETURNING j.queue, j.state
        )
        SELECT p.queue, count(*) AS n, {notify} FROM p GROUP BY p.queue",
        notify = notify_fragment("p", "$3")
    )
}

pub(crate) const PRUNE_SQL: &str = "DELETE FROM {s}.jobs_done WHERE id IN (
        SELECT id FROM {s}.jobs_done
         WHERE finished_at < $4
           AND ((state = 'completed' AND finished_at < $1)
             OR (state = 'failed' AND finished_at < $2)
             OR (state = 'cancelled' AND finished_at < $3))
         LIMIT $5
         FOR UPDATE SKIP LOCKED)";

/// The queues of a claim, each once (a queue named twice would be probed twice).
fn distinct(queues: &[String]) -> Vec<&str> {
    let mut seen = HashSet::new();
    queues
        .iter()
        .map(String::as_str)
        .filter(|q| seen.insert(*q))
        .collect()
}

/// Decodes one job row selected with [`JOB_COLS`].
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
        cancel_requested: row.try_get("cancel_requested").map_err(get_err)?,
    })
}

/// Inserts `jobs` on `conn` in one statement; returns what was inserted (aligned with `jobs`) and
/// the queues that gained available jobs. Duplicates of a `unique_key` resolve to the unfinished
/// job holding it, or within the batch to the first job carrying it. With `notify` the statement
/// sends the wake-ups itself, delivered when the transaction commits; without, the caller sends
/// them once it has committed.
pub(crate) async fn insert_on(
    inner: &Inner,
    conn: &mut PgConnection,
    jobs: &[NewJob],
    notify: bool,
) -> StoreResult<(Vec<Inserted>, BTreeSet<String>)> {
    if jobs.is_empty() {
        return Ok((Vec::new(), BTreeSet::new()));
    }
    for job in jobs {
        job.validate()?;
    }
    let now = inner.clock.now();
    let n = jobs.len();
    let rows = if let [job] = jobs
        && !notify
    {
        sqlx::query(&inner.sql.insert_one)
            .bind(&job.queue)
            .bind(&job.kind)
            .bind(&job.args)
            .bind(job.priority)
            .bind(job.run_at)
            .bind(job.max_attempts)
            .bind(job.timeout_ms())
            .bind(&job.unique_key)
            .bind(&job.tags)
            .bind(job.routed_from)
            .bind(now)
            .fetch_all(&mut *conn)
            .await
            .map_err(map)?
    } else {
        insert_rows(inner, conn, jobs, notify, now).await?
    };
    // The statement returns ids and keys only: the rows themselves are what was sent. Ids are
    // drawn in input order, so sorted ids line up with the inputs that were inserted.
    let mut fresh: Vec<(i64, Option<String>)> = rows
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(map)?;
    fresh.sort_by_key(|(id, _)| *id);

    // Which keys got a new row, and which must be looked up among existing unfinished jobs.
    let inserted_keys: HashSet<String> = fresh.iter().filter_map(|(_, k)| k.clone()).collect();
    let missing: Vec<String> = jobs
        .iter()
        .filter_map(|j| j.unique_key.as_deref())
        .filter(|k| !inserted_keys.contains(*k))
        .map(str::to_string)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut by_key: HashMap<String, JobRow> = HashMap::new();
    if !missing.is_empty() {
        let rows = sqlx::query(&inner.sql.existing_unique)
            .bind(&missing)
            .fetch_all(&mut *conn)
            .await
            .map_err(map)?;
        for row in &rows {
            let job = decode(row)?;
            if let Some(k) = job.unique_key.clone() {
                by_key.insert(k, job);
            }
        }
        // The holder finished between the insert and the lookup: report the latest job with the key.
        for key in &missing {
            if !by_key.contains_key(key) {
                let row = sqlx::query(&inner.sql.latest_by_key)
                    .bind(key)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(map)?;
                let row = row.ok_or_else(|| StoreError::Database {
                    message: format!("unique key \"{key}\" conflicted but no job holds it"),
                })?;
                by_key.insert(key.clone(), decode(&row)?);
            }
        }
    }

    let mut fresh = fresh.into_iter();
    let mut out = Vec::with_capacity(n);
    let mut woken = BTreeSet::new();
    let mut seen_keys: HashSet<&str> = HashSet::new();
    for job in jobs {
        let inserted_here = match job.unique_key.as_deref() {
            None => true,
            Some(k) => inserted_keys.contains(k) && seen_keys.insert(k),
        };
        if inserted_here {
            let (id, _) = fresh.next().ok_or_else(|| StoreError::Database {
                message: "insert returned fewer rows than expected".into(),
            })?;
            let row = job.clone().into_row(id, now);
            if row.state == JobState::Available {
                woken.insert(row.queue.clone());
            }
            if let Some(k) = &row.unique_key {
                by_key.insert(k.clone(), row.clone());
            }
            out.push(Inserted {
                job: row,
                duplicate: false,
            });
        } else {
            let key = job.unique_key.as_deref().unwrap_or_default();
            let existing = by_key
                .get(key)
                .cloned()
                .ok_or_else(|| StoreError::Database {
                    message: format!("no job found for unique key \"{key}\""),
                })?;
            out.push(Inserted {
                job: existing,
                duplicate: true,
            });
        }
    }
    Ok((out, woken))
}

/// Runs the `unnest` insert of `jobs` (any number; with `notify`, the wake-ups are sent in it).
async fn insert_rows(
    inner: &Inner,
    conn: &mut PgConnection,
    jobs: &[NewJob],
    notify: bool,
    now: DateTime<Utc>,
) -> StoreResult<Vec<PgRow>> {
    let n = jobs.len();
    let mut queue = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut args = Vec::with_capacity(n);
    let mut priority = Vec::with_capacity(n);
    let mut run_at: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut max_attempts = Vec::with_capacity(n);
    let mut timeout_ms: Vec<Option<i64>> = Vec::with_capacity(n);
    let mut unique_key: Vec<Option<String>> = Vec::with_capacity(n);
    let mut tags = Vec::with_capacity(n);
    let mut routed_from: Vec<Option<i64>> = Vec::with_capacity(n);
    for job in jobs {
        queue.push(job.queue.as_str());
        kind.push(job.kind.as_str());
        args.push(&job.args);
        priority.push(job.priority);
        run_at.push(job.run_at);
        max_attempts.push(job.max_attempts);
        timeout_ms.push(job.timeout_ms());
        unique_key.push(job.unique_key.clone());
        tags.push(Value::from(job.tags.clone()));
        routed_from.push(job.routed_from);
    }
    let sql = if notify {
        &inner.sql.insert_notify
    } else {
        &inner.sql.insert
    };
    sqlx::query(sql)
        .bind(&queue)
        .bind(&kind)
        .bind(&args)
        .bind(&priority)
        .bind(&run_at)
        .bind(&max_attempts)
        .bind(&timeout_ms)
        .bind(&unique_key)
        .bind(&tags)
        .bind(&routed_from)
        .bind(now)
        .bind(&inner.channel)
        .fetch_all(&mut *conn)
        .await
        .map_err(map)
}

/// Whether `claim` names one queue (and so runs the function `claim_one`).
fn one_queue(claim: &JobClaim) -> bool {
    distinct(&claim.queues).len() == 1
}

/// `EXPLAIN EXECUTE` of the statement inside `claim_one`, read back from the database and prepared
/// with the function's settings, so the plan shown is the generic plan the function keeps.
async fn explain_claim_one(
    inner: &Inner,
    conn: &mut PgConnection,
    claim: &JobClaim,
    now: DateTime<Utc>,
) -> StoreResult<Vec<PgRow>> {
    let function = CLAIM_ONE_FN.replace("{s}", &format!("\"{}\"", inner.schema));
    let source: String =
        sqlx::query_scalar("SELECT prosrc FROM pg_proc WHERE oid = $1::regprocedure")
            .bind(&function)
            .fetch_one(&mut *conn)
            .await
            .map_err(map)?;
    let statement = source
        .split_once("-- claim:begin")
        .and_then(|(_, rest)| rest.split_once("-- claim:end"))
        .map(|(statement, _)| statement)
        .ok_or_else(|| StoreError::Database {
            message: format!("{function} has no claim:begin/claim:end markers"),
        })?;
    let mut tx = conn.begin().await.map_err(map)?;
    sqlx::raw_sql(&format!(
        "SET LOCAL plan_cache_mode = force_generic_plan;
         SET LOCAL enable_seqscan = off;
         SET LOCAL enable_bitmapscan = off;
         PREPARE spooler_claim_one(text, text[], bigint, timestamptz, timestamptz, text) AS {statement}"
    ))
    .execute(&mut *tx)
    .await
    .map_err(map)?;
    // EXECUTE takes no bound parameters: the server quotes them into the statement.
    let explain: String = claim_query(
        "SELECT format('EXPLAIN EXECUTE spooler_claim_one(%L, %L, %s, %L, %L, %L)',
                       $1::text, $2::text[], $3::bigint, $4::timestamptz, $5::timestamptz, $6::text)",
        claim,
        now,
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(map)?
    .try_get(0)
    .map_err(map)?;
    let rows = sqlx::raw_sql(&explain)
        .fetch_all(&mut *tx)
        .await
        .map_err(map)?;
    tx.rollback().await.map_err(map)?;
    Ok(rows)
}

impl PgStore {
    pub(crate) async fn insert_many_impl(&self, jobs: &[NewJob]) -> StoreResult<Vec<Inserted>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        for job in jobs {
            job.validate()?;
        }
        let mut conn = self.inner.pool.acquire().await.map_err(map)?;
        let (out, woken) = insert_on(&self.inner, &mut conn, jobs, false).await?;
        drop(conn);
        self.inner.notifier.send(woken.iter().cloned());
        self.inner.wake_local(woken);
        Ok(out)
    }

    pub(crate) async fn claim_impl(&self, claim: &JobClaim) -> StoreResult<Vec<JobRow>> {
        if claim.limit == 0 || claim.queues.is_empty() || claim.kinds.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.inner.clock.now();
        let rows = again_if_moved(|| {
            let sql = if one_queue(claim) {
                &self.inner.sql.claim_one
            } else {
                &self.inner.sql.claim
            };
            claim_query(sql, claim, now).fetch_all(&self.inner.pool)
        })
        .await
        .map_err(map)?;
        let mut jobs: Vec<JobRow> = rows.iter().map(decode).collect::<StoreResult<_>>()?;
        jobs.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.run_at.cmp(&b.run_at))
                .then(a.id.cmp(&b.id))
        });
        Ok(jobs)
    }

    /// The plan PostgreSQL uses for `claim` (nothing is claimed): shows whether the claim is served
    /// by the partial index of available jobs rather than a scan and a sort. For one queue it is the
    /// kept plan of the function `claim_one`, made under that function's settings.
    pub async fn explain_claim(&self, claim: &JobClaim) -> StoreResult<String> {
        let now = self.inner.clock.now();
        let rows = if one_queue(claim) {
            let mut conn = self.inner.pool.acquire().await.map_err(map)?;
            let explained = explain_claim_one(&self.inner, &mut conn, claim, now).await;
            // A prepared statement outlives the transaction; do not leave it on a pooled connection
            // (nor one that may still hold it).
            let deallocate = sqlx::raw_sql("DEALLOCATE spooler_claim_one")
                .execute(&mut *conn)
                .await;
            if deallocate.is_err() {
                conn.detach();
            }
            explained?
        } else {
            claim_query(&format!("EXPLAIN {}", self.inner.sql.claim), claim, now)
                .fetch_all(&self.inner.pool)
                .await
                .map_err(map)?
        };
        let lines = rows
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(map)?;
        Ok(lines.join("\n"))
    }

    pub(crate) async fn extend_impl(&self, extend: &LeaseExtend) -> StoreResult<Vec<LeaseStatus>> {
        if extend.leases.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.inner.clock.now();
        let ids: Vec<i64> = extend.leases.iter().map(|l| l.id).collect();
        let attempts: Vec<i32> = extend.leases.iter().map(|l| l.attempt).collect();
        let rows = again_if_moved(|| {
            sqlx::query(&self.inner.sql.extend)
                .bind(&ids)
                .bind(&attempts)
                .bind(add(now, extend.lease))
                .fetch_all(&self.inner.pool)
        })
        .await
        .map_err(map)?;
        let mut held: HashMap<LeaseRef, bool> = HashMap::new();
        for row in &rows {
            let lease = LeaseRef {
                id: row.try_get(0).map_err(map)?,
                attempt: row.try_get(1).map_err(map)?,
            };
            held.insert(lease, row.try_get(2).map_err(map)?);
        }
        Ok(extend
            .leases
            .iter()
            .map(|l| match held.get(l) {
                Some(&cancel_requested) => LeaseStatus {
                    id: l.id,
                    held: true,
                    cancel_requested,
                },
                None => LeaseStatus {
                    id: l.id,
                    held: false,
                    cancel_requested: false,
                },
            })
            .collect())
    }

    pub(crate) async fn finish_impl(&self, finishes: &[JobFinish]) -> StoreResult<Vec<bool>> {
        if finishes.is_empty() {
            return Ok(Vec::new());
        }
        // The first finish of a claim counts; a repeat in the same batch is rejected like a late one.
        let mut first: HashSet<LeaseRef> = HashSet::new();
        let sent: Vec<bool> = finishes.iter().map(|f| first.insert(f.lease)).collect();
        let todo: Vec<&JobFinish> = finishes
            .iter()
            .zip(&sent)
            .filter_map(|(f, &sent)| sent.then_some(f))
            .collect();
        let written = again_if_moved(|| self.finish_tx(&todo))
            .await
            .map_err(map)?;
        let accepted: HashSet<LeaseRef> = written.iter().map(|w| w.0).collect();
        self.inner.wake_local(available_queues(written));
        Ok(finishes
            .iter()
            .zip(sent)
            .map(|(f, sent)| sent && accepted.contains(&f.lease))
            .collect())
    }

    /// Decides and writes `finishes`. Outcomes that need only the lease (completions above all)
    /// are written by one statement; when any needs the job's facts, they are read under a row
    /// lock and written in the same transaction, so a cancel asked meanwhile is seen.
    async fn finish_tx(&self, finishes: &[&JobFinish]) -> Result<Vec<Written>, sqlx::Error> {
        let now = self.inner.clock.now();
        let reading: Vec<LeaseRef> = finishes
            .iter()
            .filter(|f| f.outcome.reads_facts())
            .map(|f| f.lease)
            .collect();
        let mut writes = Writes::default();
        if reading.is_empty() {
            for f in finishes {
                writes.push(f.lease, decide(&f.outcome, &lease_facts(f.lease), now));
            }
            return self
                .write(&mut *self.inner.pool.acquire().await?, &writes)
                .await;
        }
        let mut tx = self.inner.pool.begin().await?;
        let rows = sqlx::query(&self.inner.sql.facts)
            .bind(reading.iter().map(|l| l.id).collect::<Vec<_>>())
            .bind(reading.iter().map(|l| l.attempt).collect::<Vec<_>>())
            .fetch_all(&mut *tx)
            .await?;
        let mut facts: HashMap<LeaseRef, Facts> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let lease = LeaseRef {
                id: row.try_get(0)?,
                attempt: row.try_get(1)?,
            };
            facts.insert(lease, facts_of(row, lease.attempt, 2)?);
        }
        for f in finishes {
            let facts = if f.outcome.reads_facts() {
                match facts.get(&f.lease) {
                    Some(facts) => facts.clone(),
                    // No longer held: the fence rejects it.
                    None => continue,
                }
            } else {
                lease_facts(f.lease)
            };
            writes.push(f.lease, decide(&f.outcome, &facts, now));
        }
        let written = self.write(&mut tx, &writes).await?;
        tx.commit().await?;
        Ok(written)
    }

    /// Runs the transition write for `writes`; returns what each accepted row became.
    async fn write(
        &self,
        conn: &mut PgConnection,
        writes: &Writes,
    ) -> Result<Vec<Written>, sqlx::Error> {
        if writes.ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&self.inner.sql.finish)
            .bind(&writes.ids)
            .bind(&writes.attempts)
            .bind(&writes.states)
            .bind(&writes.run_ats)
            .bind(&writes.finished_ats)
            .bind(&writes.errors)
            .bind(&writes.results)
            .bind(&writes.max_attempts)
            .bind(&self.inner.channel)
            .fetch_all(conn)
            .await?;
        rows.iter()
            .map(|row| {
                let lease = LeaseRef {
                    id: row.try_get(0)?,
                    attempt: row.try_get(1)?,
                };
                let state: String = row.try_get(3)?;
                let state = state
                    .parse::<JobState>()
                    .map_err(|e| sqlx::Error::Decode(e.into()))?;
                Ok((lease, row.try_get(2)?, state))
            })
            .collect()
    }

    /// The job's current state, for the error of an operation that did not apply to it.
    async fn state_error(&self, id: JobId, action: &'static str) -> StoreError {
        match self.get_impl(id).await {
            Ok(Some(job)) => StoreError::InvalidState {
                id,
                state: job.state,
                action,
            },
            Ok(None) => StoreError::JobNotFound { id },
            Err(e) => e,
        }
    }

    pub(crate) async fn cancel_impl(&self, id: JobId) -> StoreResult<JobRow> {
        let row = again_if_moved(|| {
            sqlx::query(&self.inner.sql.cancel)
                .bind(id)
                .bind(self.inner.clock.now())
                .fetch_optional(&self.inner.pool)
        })
        .await
        .map_err(map)?;
        match row {
            Some(row) => decode(&row),
            None => Err(self.state_error(id, "cancel").await),
        }
    }

    pub(crate) async fn retry_impl(&self, id: JobId) -> StoreResult<JobRow> {
        let row = again_if_moved(|| {
            sqlx::query(&self.inner.sql.retry)
                .bind(id)
                .bind(self.inner.clock.now())
                .bind(&self.inner.channel)
                .fetch_optional(&self.inner.pool)
        })
        .await
        .map_err(map)?;
        if let Some(row) = row {
            let job = decode(&row)?;
            self.inner.wake_local([job.queue.clone()]);
            return Ok(job);
        }
        match self.get_impl(id).await? {
            Some(job) if job.state == JobState::Available => Ok(job),
            Some(job) => Err(StoreError::InvalidState {
                id,
                state: job.state,
                action: "retry",
            }),
            None => Err(StoreError::JobNotFound { id }),
        }
    }

    pub(crate) async fn delete_impl(&self, id: JobId) -> StoreResult<JobRow> {
        let row = again_if_moved(|| {
            sqlx::query(&self.inner.sql.delete)
                .bind(id)
                .fetch_optional(&self.inner.pool)
        })
        .await
        .map_err(map)?;
        match row {
            Some(row) => decode(&row),
            None => Err(self.state_error(id, "delete").await),
        }
    }

    pub(crate) async fn get_impl(&self, id: JobId) -> StoreResult<Option<JobRow>> {
        let row = sqlx::query(&self.inner.sql.get)
            .bind(id)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(map)?;
        row.as_ref().map(decode).transpose()
    }

    pub(crate) async fn list_impl(&self, list: &JobList) -> StoreResult<Vec<JobRow>> {
        let sql = match list.state {
            None => &self.inner.sql.list,
            Some(state) if state.is_finished() => &self.inner.sql.list_finished,
            Some(_) => &self.inner.sql.list_active,
        };
        let rows = sqlx::query(sql)
            .bind(list.queue.as_deref())
            .bind(list.state.map(|s| s.as_str()))
            .bind(list.kind.as_deref())
            .bind(list.before_id)
            .bind(i64::from(list.limit.min(1000)))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(map)?;
        rows.iter().map(decode).collect()
    }

    pub(crate) async fn rescue_impl(&self, rescue: &JobRescue) -> StoreResult<RescueReport> {
        let mut report = RescueReport::default();
        if rescue.limit == 0 {
            return Ok(report);
        }
        let written = again_if_moved(|| self.rescue_tx(rescue))
            .await
            .map_err(map)?;
        for (lease, _, state) in &written {
            report.record(lease.id, *state);
        }
        report.sort();
        self.inner.wake_local(available_queues(written));
        Ok(report)
    }

    /// Locks lapsed leases, decides each rescue and writes them in one transaction.
    async fn rescue_tx(&self, rescue: &JobRescue) -> Result<Vec<Written>, sqlx::Error> {
        let now = self.inner.clock.now();
        let mut tx = self.inner.pool.begin().await?;
        let rows = sqlx::query(&self.inner.sql.lapsed)
            .bind(now)
            .bind(i64::from(rescue.limit))
            .fetch_all(&mut *tx)
            .await?;
        let mut writes = Writes::default();
        for row in &rows {
            let lease = LeaseRef {
                id: row.try_get(0)?,
                attempt: row.try_get(1)?,
            };
            let facts = facts_of(row, lease.attempt, 2)?;
            let queue: String = row.try_get(5)?;
            let kind: String = row.try_get(6)?;
            let at = rescue.retry.retry_at(&queue, &kind, lease.attempt, now);
            writes.push(lease, decide(&Outcome::LeaseExpired { at }, &facts, now));
        }
        let written = self.write(&mut tx, &writes).await?;
        tx.commit().await?;
        Ok(written)
    }

    pub(crate) async fn promote_impl(&self, limit: u32) -> StoreResult<u64> {
        if limit == 0 {
            return Ok(0);
        }
        let now = self.inner.clock.now();
        let rows = again_if_moved(|| {
            sqlx::query(&self.inner.sql.promote)
                .bind(now)
                .bind(i64::from(limit))
                .bind(&self.inner.channel)
                .fetch_all(&self.inner.pool)
        })
        .await
        .map_err(map)?;
        let mut total = 0u64;
        let mut woken = BTreeSet::new();
        for row in &rows {
            woken.insert(row.try_get::<String, _>(0).map_err(map)?);
            total += row.try_get::<i64, _>(1).map_err(map)? as u64;
        }
        self.inner.wake_local(woken);
        Ok(total)
    }

    pub(crate) async fn prune_impl(&self, prune: &JobPrune) -> StoreResult<u64> {
        let cutoffs = [
            prune.completed_before,
            prune.failed_before,
            prune.cancelled_before,
        ];
        let Some(latest) = cutoffs.iter().flatten().max().copied() else {
            return Ok(0);
        };
        if prune.limit == 0 {
            return Ok(0);
        }
        let done = again_if_moved(|| {
            sqlx::query(&self.inner.sql.prune)
                .bind(prune.completed_before)
                .bind(prune.failed_before)
                .bind(prune.cancelled_before)
                .bind(latest)
                .bind(i64::from(prune.limit))
                .execute(&self.inner.pool)
        })
        .await
        .map_err(map)?;
        Ok(done.rows_affected())
    }
}
