//! Claim (from many queues by one statement, from one by the function `claim_one`), the plan
//! of a claim ([`PgStore::explain_claim`]) and lease extension.

use super::kept_plan::{KeptPlan, plan_text};
use super::{decode, j_cols, job_cols};
use crate::error::{again_if_moved, map};
use crate::{Inner, PgStore};
use chrono::{DateTime, Utc};
use spooler_core::clock::add;
use spooler_core::{Claimed, JobClaim, JobRow, LeaseExtend, LeaseRef, LeaseStatus, StoreResult};
use sqlx::Row;
use std::collections::{HashMap, HashSet};

/// The claim. Each asked-for, unpaused queue is probed on the partial index `jobs_claim` with
/// `queue = q.name`, so the index hands rows over already in claim order and `LIMIT` stops the scan
/// after `limit` rows however deep the backlog; the outer sort orders at most `limit` rows per queue.
pub(crate) const CLAIM_SQL: &str = concat!(
    "WITH c AS (
        SELECT x.id
          FROM unnest($1::text[]) AS q(name)
         CROSS JOIN LATERAL (
            SELECT a.id, a.priority, a.run_at FROM {s}.jobs_active a
             WHERE a.state = 'available' AND a.queue = q.name AND a.kind = ANY($2)
             ORDER BY a.priority DESC, a.run_at, a.id
             LIMIT $3
             FOR UPDATE SKIP LOCKED
         ) x
         WHERE NOT EXISTS (SELECT 1 FROM {s}.paused_queues p WHERE p.queue = q.name)
         ORDER BY x.priority DESC, x.run_at, x.id
         LIMIT $3
    )
    UPDATE {s}.jobs_active j
       SET state = 'running', attempt = j.attempt + 1, fence = j.fence + 1, started_at = $4,
           lease_expires_at = $5, worker_id = $6
      FROM c WHERE j.id = c.id
    RETURNING ",
    j_cols!()
);

/// The claim from one queue, what a worker's producer asks for: the function of migration 3, whose
/// plan is made once per connection (see that migration). `$1` is the queue's name.
pub(crate) const CLAIM_ONE_SQL: &str = concat!(
    "SELECT ",
    job_cols!(),
    " FROM {s}.claim_one($1, $2, $3, $4, $5, $6)"
);

/// The signature of the function [`CLAIM_ONE_SQL`] calls.
pub(crate) const CLAIM_ONE_FN: &str =
    "{s}.claim_one(text, text[], bigint, timestamptz, timestamptz, text)";

/// `sql` with the parameters of `claim` bound; `$1` is its one queue, or the array of all of them.
fn claim_query<'q>(
    sql: impl sqlx::SqlSafeStr,
    claim: &'q JobClaim,
    now: DateTime<Utc>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    claim_query_of(sql, claim, distinct(&claim.queues), claim.limit, now)
}

/// `sql` with `queues`, `limit` and the rest of `claim` bound.
fn claim_query_of<'q>(
    sql: impl sqlx::SqlSafeStr,
    claim: &'q JobClaim,
    queues: Vec<&'q str>,
    limit: u32,
    now: DateTime<Utc>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let query = sqlx::query(sql);
    let query = match queues.as_slice() {
        [one] => query.bind(*one),
        _ => query.bind(queues),
    };
    query
        .bind(&claim.kinds)
        .bind(i64::from(limit))
        .bind(now)
        .bind(add(now, claim.lease))
        .bind(&claim.worker_id)
}

/// The queues of a claim, each once (a queue named twice would be probed twice).
fn distinct(queues: &[String]) -> Vec<&str> {
    let mut seen = HashSet::new();
    queues
        .iter()
        .map(String::as_str)
        .filter(|q| seen.insert(*q))
        .collect()
}

pub(super) async fn claim(inner: &Inner, claim: &JobClaim) -> StoreResult<Claimed> {
    if claim.limit == 0 || claim.queues.is_empty() || claim.kinds.is_empty() {
        return Ok(Claimed::default());
    }
    let settings = super::insert::queue_settings(inner).await?;
    let queues: Vec<String> = distinct(&claim.queues)
        .into_iter()
        .map(str::to_string)
        .collect();
    let (plain, limited) = spooler_core::limit::split_by_limits(&queues, &settings);
    let mut jobs = if plain.is_empty() {
        Vec::new()
    } else {
        claim_plain(inner, claim, &plain, claim.limit).await?
    };
    let mut held_back = None;
    for (queue, limits) in limited {
        let left = claim.limit.saturating_sub(jobs.len() as u32);
        if left == 0 {
            break;
        }
        let (claimed, held) =
            super::limit::claim_limited(inner, claim, &queue, limits, left).await?;
        jobs.extend(claimed);
        held_back = spooler_core::limit::sooner(held_back, held);
    }
    jobs.sort_by(JobRow::claim_order);
    Ok(Claimed { jobs, held_back })
}

/// Claims up to `limit` jobs from `queues` (none limited) in one statement: the function
/// `claim_one` for one queue.
async fn claim_plain(
    inner: &Inner,
    claim: &JobClaim,
    queues: &[String],
    limit: u32,
) -> StoreResult<Vec<JobRow>> {
    let now = inner.clock.now();
    let rows = again_if_moved(|| {
        let sql = if queues.len() == 1 {
            &inner.sql.claim_one
        } else {
            &inner.sql.claim
        };
        let queues = queues.iter().map(String::as_str).collect();
        claim_query_of(sql, claim, queues, limit, now).fetch_all(&inner.pool)
    })
    .await
    .map_err(map)?;
    rows.iter().map(decode).collect()
}

/// Whether `claim` names one queue (and so runs the function `claim_one`).
fn one_queue(claim: &JobClaim) -> bool {
    distinct(&claim.queues).len() == 1
}

impl PgStore {
    /// The plan PostgreSQL uses for `claim` (nothing is claimed): shows whether the claim is served
    /// by the partial index of available jobs rather than a scan and a sort. For one queue it is the
    /// kept plan of the function `claim_one`, made under that function's settings.
    pub async fn explain_claim(&self, claim: &JobClaim) -> StoreResult<String> {
        let now = self.inner.clock.now();
        let rows = if one_queue(claim) {
            let mut conn = self.inner.pool.acquire().await.map_err(map)?;
            // EXECUTE takes no bound parameters: the server quotes them into the statement.
            let args: String = claim_query(
                "SELECT format('%L, %L, %s, %L, %L, %L', $1::text, $2::text[], $3::bigint,
                               $4::timestamptz, $5::timestamptz, $6::text)",
                claim,
                now,
            )
            .fetch_one(&mut *conn)
            .await
            .map_err(map)?
            .try_get(0)
            .map_err(map)?;
            KeptPlan {
                function: &self.inner.sql.claim_one_fn,
                marker: "claim",
                args,
            }
            .explain(&mut conn)
            .await?
        } else {
            claim_query(
                sqlx::AssertSqlSafe(format!("EXPLAIN {}", self.inner.sql.claim)),
                claim,
                now,
            )
            .fetch_all(&self.inner.pool)
            .await
            .map_err(map)?
        };
        plan_text(&rows)
    }
}

/// Extends the leases `($1[i], $2[i])` still held to `$3`; returns those it extended, with
/// whether a cancel was asked.
pub(crate) const EXTEND_SQL: &str =
    "WITH u AS (SELECT * FROM unnest($1::int8[], $2::int4[]) AS u(id, fence))
    UPDATE {s}.jobs_active j SET lease_expires_at = $3
      FROM u WHERE j.id = u.id AND j.fence = u.fence AND j.state = 'running'
    RETURNING j.id, j.fence, j.cancel_requested";

pub(super) async fn lease_extend(
    inner: &Inner,
    extend: &LeaseExtend,
) -> StoreResult<Vec<LeaseStatus>> {
    if extend.leases.is_empty() {
        return Ok(Vec::new());
    }
    let now = inner.clock.now();
    let ids: Vec<i64> = extend.leases.iter().map(|l| l.id).collect();
    let fences: Vec<i32> = extend.leases.iter().map(|l| l.fence).collect();
    let rows = again_if_moved(|| {
        sqlx::query(&inner.sql.extend)
            .bind(&ids)
            .bind(&fences)
            .bind(add(now, extend.lease))
            .fetch_all(&inner.pool)
    })
    .await
    .map_err(map)?;
    let mut held: HashMap<LeaseRef, bool> = HashMap::new();
    for row in &rows {
        let lease = LeaseRef {
            id: row.try_get(0).map_err(map)?,
            fence: row.try_get(1).map_err(map)?,
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
