//! Finish: outcomes decided by [`decide`] and written by one fenced statement; that transition
//! write and the locked read of the facts are shared with the rescue of lapsed leases.

use super::kept_plan::{KeptPlan, plan_text};
use super::{Writes, Written, available_queues};
use crate::error::{again_if_moved, map};
use crate::{Inner, PgStore};
use spooler_core::route::any_on_success;
use spooler_core::store::QueueSettingsMap;
use spooler_core::{Facts, JobFinish, JobState, LeaseRef, StoreResult, decide};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use std::collections::{HashMap, HashSet};

pub(super) async fn finish_many(inner: &Inner, finishes: &[JobFinish]) -> StoreResult<Vec<bool>> {
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
    let settings = super::insert::queue_settings(inner).await?;
    let written = again_if_moved(|| finish_tx(inner, &settings, &todo))
        .await
        .map_err(map)?;
    let accepted: HashSet<LeaseRef> = written.iter().map(|w| w.0).collect();
    inner.announce(available_queues(written));
    Ok(finishes
        .iter()
        .zip(sent)
        .map(|(f, sent)| sent && accepted.contains(&f.lease))
        .collect())
}

/// Writes decided transitions ([`Transition`](spooler_core::Transition)), fenced by (id, fence)
/// on running jobs: the function of migration 14, whose plan is made once per connection (see that
/// migration). It decides nothing; the wake-ups for jobs it made available are the caller's, after
/// the commit.
pub(crate) const FINISH_SQL: &str = "SELECT job_id, job_fence, job_queue, job_state FROM {s}.finish_jobs($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// The signature of the function [`FINISH_SQL`] calls.
pub(crate) const FINISH_FN: &str = "{s}.finish_jobs(int8[], int4[], text[], timestamptz[], \
     timestamptz[], jsonb[], jsonb[], int4[], int4[])";

/// The facts [`decide`] reads, of the running jobs the leases still hold, locked until the write.
pub(crate) const FACTS_SQL: &str =
    "SELECT j.id, j.fence, j.attempt, j.max_attempts, j.cancel_requested, j.worker_id
      FROM {s}.jobs_active j
      JOIN unnest($1::int8[], $2::int4[]) AS u(id, fence) ON j.id = u.id AND j.fence = u.fence
     WHERE j.state = 'running'
       FOR UPDATE OF j";

/// Decides and writes `finishes`. Outcomes that need only the lease (completions above all)
/// are written by one statement, unless a queue routes completed jobs; when any needs the job's
/// facts, they are read under a row lock and written in the same transaction, so a cancel asked
/// meanwhile is seen. Routes are followed in the transaction that writes the final states.
async fn finish_tx(
    inner: &Inner,
    settings: &QueueSettingsMap,
    finishes: &[&JobFinish],
) -> Result<Vec<Written>, sqlx::Error> {
    let now = inner.clock.now();
    let reading: Vec<LeaseRef> = finishes
        .iter()
        .filter(|f| f.outcome.reads_facts())
        .map(|f| f.lease)
        .collect();
    let mut writes = Writes::default();
    if reading.is_empty() {
        for f in finishes {
            writes.push(f.lease, decide(&f.outcome, &Facts::default(), now));
        }
        if !any_on_success(settings) {
            return write(inner, &mut *inner.pool.acquire().await?, &writes).await;
        }
        let mut tx = inner.pool.begin().await?;
        let written = write(inner, &mut tx, &writes).await?;
        super::route::follow(inner, &mut tx, settings, &written, now).await?;
        tx.commit().await?;
        return Ok(written);
    }
    let mut tx = inner.pool.begin().await?;
    let rows = sqlx::query(&inner.sql.facts)
        .bind(reading.iter().map(|l| l.id).collect::<Vec<_>>())
        .bind(reading.iter().map(|l| l.fence).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
    let mut facts: HashMap<LeaseRef, Facts> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let lease = LeaseRef {
            id: row.try_get(0)?,
            fence: row.try_get(1)?,
        };
        facts.insert(lease, facts_of(row, 2)?);
    }
    for f in finishes {
        let facts = if f.outcome.reads_facts() {
            match facts.get(&f.lease) {
                Some(facts) => facts.clone(),
                // No longer held: the fence rejects it.
                None => continue,
            }
        } else {
            Facts::default()
        };
        writes.push(f.lease, decide(&f.outcome, &facts, now));
    }
    let written = write(inner, &mut tx, &writes).await?;
    super::route::follow(inner, &mut tx, settings, &written, now).await?;
    tx.commit().await?;
    Ok(written)
}

/// Reads `attempt, max_attempts, cancel_requested, worker_id` from column `at` on.
pub(super) fn facts_of(row: &PgRow, at: usize) -> Result<Facts, sqlx::Error> {
    Ok(Facts {
        attempt: row.try_get(at)?,
        max_attempts: row.try_get(at + 1)?,
        cancel_requested: row.try_get(at + 2)?,
        worker_id: row.try_get(at + 3)?,
    })
}

/// Runs the transition write for `writes`; returns what each accepted row became.
pub(super) async fn write(
    inner: &Inner,
    conn: &mut PgConnection,
    writes: &Writes,
) -> Result<Vec<Written>, sqlx::Error> {
    if writes.ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(&inner.sql.finish)
        .bind(&writes.ids)
        .bind(&writes.fences)
        .bind(&writes.states)
        .bind(&writes.run_ats)
        .bind(&writes.finished_ats)
        .bind(&writes.errors)
        .bind(&writes.results)
        .bind(&writes.max_attempts)
        .bind(&writes.attempts)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| {
            let lease = LeaseRef {
                id: row.try_get(0)?,
                fence: row.try_get(1)?,
            };
            let state: String = row.try_get(3)?;
            let state = state
                .parse::<JobState>()
                .map_err(|e| sqlx::Error::Decode(e.into()))?;
            Ok((lease, row.try_get(2)?, state))
        })
        .collect()
}

impl PgStore {
    /// The plan the function `finish_jobs` keeps for writing outcomes (nothing is written): shows
    /// that each job is found by the primary key of `jobs_active`, whatever the statistics say.
    pub async fn explain_finish(&self) -> StoreResult<String> {
        let mut conn = self.inner.pool.acquire().await.map_err(map)?;
        let rows = KeptPlan {
            function: &self.inner.sql.finish_fn,
            marker: "finish",
            args: "'{1}', '{1}', '{completed}', '{NULL}', ARRAY[now()], '{NULL}', '{NULL}', \
                   '{NULL}', '{NULL}'"
                .into(),
        }
        .explain(&mut conn)
        .await?;
        plan_text(&rows)
    }
}
