//! Throughput and latency history: finished jobs scanned from `jobs_done` (its `finished_at`
//! index) outside any transaction, grouped by minute, queue, kind, state and histogram bucket
//! (`width_bucket` over `spooler_core::stats::bounds`, the bounds Rust's `bucket_of` reads), then
//! added to the stored rows in one transaction that first moves the mark, so a second leader's
//! roll of the same stretch waits on the mark's row and then finds it moved.

use crate::PgStore;
use crate::error::map;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use spooler_core::stats::{
    Granularity, Histogram, StatsQuery, StatsRoll, StatsRow, StatsSample, bounds, merge_stored,
    prune_before, rollup,
};
use spooler_core::store::StatsStore;
use spooler_core::{JobState, StoreError, StoreResult};
use sqlx::Row;
use sqlx::postgres::PgRow;

/// How far finished jobs have been rolled up.
pub(crate) const MARK_SQL: &str = "SELECT rolled_until FROM {s}.stats_mark WHERE id = 1";

/// The first roll's mark, `$1`; no row when another roll wrote one first.
pub(crate) const MARK_FIRST_SQL: &str = "INSERT INTO {s}.stats_mark (id, rolled_until)
    VALUES (1, $1) ON CONFLICT (id) DO NOTHING";

/// Moves the mark from `$1` to `$2`; no row when it is no longer at `$1`.
pub(crate) const MARK_MOVE_SQL: &str =
    "UPDATE {s}.stats_mark SET rolled_until = $2 WHERE id = 1 AND rolled_until = $1";

/// The jobs that finished in `[$1, $2)`, grouped as `StatsSample`s, durations bucketed by the
/// bounds `$3` (milliseconds: the exact numeric product, then one rounding to float8, as Rust
/// divides microseconds).
pub(crate) const SCAN_SQL: &str = "SELECT
        date_bin('1 minute', finished_at, timestamptz '1970-01-01 00:00:00+00'), queue, kind, state,
        CASE WHEN started_at IS NULL THEN NULL ELSE
            width_bucket((extract(epoch FROM finished_at - started_at) * 1000)::float8, $3::float8[]) END,
        CASE WHEN started_at IS NULL THEN NULL ELSE
            width_bucket((greatest(extract(epoch FROM started_at - run_at), 0) * 1000)::float8, $3::float8[]) END,
        count(*)
   FROM {s}.jobs_done
  WHERE finished_at >= $1 AND finished_at < $2
  GROUP BY 1, 2, 3, 4, 5, 6";

/// The stored rows of the keys `($1, $2, $3, $4)`.
pub(crate) const STORED_SQL: &str =
    "SELECT granularity, bucket, queue, kind, completed, failed, cancelled, run, wait
   FROM {s}.stats
  WHERE (granularity, bucket, queue, kind) IN
        (SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[]))";

/// Writes whole rows, replacing those of the same key.
pub(crate) const PUT_SQL: &str =
    "INSERT INTO {s}.stats (granularity, bucket, queue, kind, completed, failed, cancelled, run, wait)
 SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[],
                      $5::int8[], $6::int8[], $7::int8[], $8::jsonb[], $9::jsonb[])
     ON CONFLICT (granularity, bucket, queue, kind) DO UPDATE
    SET completed = EXCLUDED.completed, failed = EXCLUDED.failed,
        cancelled = EXCLUDED.cancelled, run = EXCLUDED.run, wait = EXCLUDED.wait";

/// Deletes the rows of each granularity `$1[i]` older than `$2[i]`.
pub(crate) const PRUNE_SQL: &str = "DELETE FROM {s}.stats s
  USING unnest($1::text[], $2::timestamptz[]) AS p(granularity, before)
  WHERE s.granularity = p.granularity AND s.bucket < p.before";

/// The rows of granularity `$1` from `$2` on, of queue `$3` and kind `$4` when given.
pub(crate) const READ_SQL: &str =
    "SELECT granularity, bucket, queue, kind, completed, failed, cancelled, run, wait
   FROM {s}.stats
  WHERE granularity = $1 AND bucket >= $2
    AND ($3::text IS NULL OR queue = $3) AND ($4::text IS NULL OR kind = $4)
  ORDER BY bucket, queue, kind";

#[async_trait]
impl StatsStore for PgStore {
    async fn stats_mark(&self) -> StoreResult<Option<DateTime<Utc>>> {
        sqlx::query_scalar(&self.inner.sql.stats_mark)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(map)
    }

    async fn stats_roll(&self, roll: &StatsRoll) -> StoreResult<bool> {
        let inner = &self.inner;
        let groups = sqlx::query(&inner.sql.stats_scan)
            .bind(roll.from)
            .bind(roll.until)
            .bind(bounds())
            .fetch_all(&inner.pool)
            .await
            .map_err(map)?;
        let samples = groups.iter().map(sample).collect::<StoreResult<Vec<_>>>()?;
        let new = rollup(&samples);

        let mut tx = inner.pool.begin().await.map_err(map)?;
        let moved = match roll.mark {
            None => sqlx::query(&inner.sql.stats_mark_first).bind(roll.until),
            Some(mark) => sqlx::query(&inner.sql.stats_mark_move)
                .bind(mark)
                .bind(roll.until),
        }
        .execute(&mut *tx)
        .await
        .map_err(map)?
        .rows_affected();
        if moved == 0 {
            return Ok(false);
        }
        let keys = Columns::of(&new);
        let stored = sqlx::query(&inner.sql.stats_stored)
            .bind(&keys.granularity)
            .bind(&keys.bucket)
            .bind(&keys.queue)
            .bind(&keys.kind)
            .fetch_all(&mut *tx)
            .await
            .map_err(map)?
            .iter()
            .map(stats_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let rows = Columns::of(&merge_stored(stored, new));
        sqlx::query(&inner.sql.stats_put)
            .bind(&rows.granularity)
            .bind(&rows.bucket)
            .bind(&rows.queue)
            .bind(&rows.kind)
            .bind(&rows.completed)
            .bind(&rows.failed)
            .bind(&rows.cancelled)
            .bind(&rows.run)
            .bind(&rows.wait)
            .execute(&mut *tx)
            .await
            .map_err(map)?;
        let (names, before): (Vec<&str>, Vec<DateTime<Utc>>) = Granularity::ALL
            .iter()
            .map(|&g| (g.as_str(), prune_before(g, roll.until)))
            .unzip();
        sqlx::query(&inner.sql.stats_prune)
            .bind(names)
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(map)?;
        tx.commit().await.map_err(map)?;
        Ok(true)
    }

    async fn stats_read(&self, query: &StatsQuery) -> StoreResult<Vec<StatsRow>> {
        sqlx::query(&self.inner.sql.stats_read)
            .bind(query.granularity.as_str())
            .bind(query.since)
            .bind(query.queue.as_deref())
            .bind(query.kind.as_deref())
            .fetch_all(&self.inner.pool)
            .await
            .map_err(map)?
            .iter()
            .map(stats_row)
            .collect()
    }
}

/// Rows as one array per column, for `unnest`.
#[derive(Default)]
struct Columns {
    granularity: Vec<&'static str>,
    bucket: Vec<DateTime<Utc>>,
    queue: Vec<String>,
    kind: Vec<String>,
    completed: Vec<i64>,
    failed: Vec<i64>,
    cancelled: Vec<i64>,
    run: Vec<Value>,
    wait: Vec<Value>,
}

impl Columns {
    fn of(rows: &[StatsRow]) -> Self {
        let mut c = Columns::default();
        let json = |h: &Histogram| serde_json::to_value(h).unwrap_or(Value::Array(vec![]));
        for r in rows {
            c.granularity.push(r.granularity.as_str());
            c.bucket.push(r.bucket);
            c.queue.push(r.queue.clone());
            c.kind.push(r.kind.clone());
            c.completed.push(r.completed as i64);
            c.failed.push(r.failed as i64);
            c.cancelled.push(r.cancelled as i64);
            c.run.push(json(&r.run));
            c.wait.push(json(&r.wait));
        }
        c
    }
}

fn sample(row: &PgRow) -> StoreResult<StatsSample> {
    let state: String = row.try_get(3).map_err(map)?;
    let bucket = |i: usize| -> StoreResult<Option<u16>> {
        Ok(row
            .try_get::<Option<i32>, _>(i)
            .map_err(map)?
            .map(|b| u16::try_from(b).unwrap_or(u16::MAX)))
    };
    Ok(StatsSample {
        minute: row.try_get(0).map_err(map)?,
        queue: row.try_get(1).map_err(map)?,
        kind: row.try_get(2).map_err(map)?,
        state: state.parse::<JobState>().map_err(|e| StoreError::Decode {
            id: 0,
            message: format!("stats scan: state {state:?}: {e}"),
        })?,
        run: bucket(4)?,
        wait: bucket(5)?,
        count: row.try_get::<i64, _>(6).map_err(map)? as u64,
    })
}

fn stats_row(row: &PgRow) -> StoreResult<StatsRow> {
    let granularity: String = row.try_get(0).map_err(map)?;
    let bucket: DateTime<Utc> = row.try_get(1).map_err(map)?;
    let queue: String = row.try_get(2).map_err(map)?;
    let kind: String = row.try_get(3).map_err(map)?;
    let bad = |message: String| StoreError::Decode {
        id: 0,
        message: format!("stats row {granularity} {bucket} {queue}/{kind}: {message}"),
    };
    let hist = |i: usize| -> StoreResult<Histogram> {
        serde_json::from_value(row.try_get::<Value, _>(i).map_err(map)?)
            .map_err(|e| bad(format!("histogram: {e}")))
    };
    Ok(StatsRow {
        granularity: Granularity::parse(&granularity)
            .ok_or_else(|| bad("unknown granularity".into()))?,
        bucket,
        completed: row.try_get::<i64, _>(4).map_err(map)? as u64,
        failed: row.try_get::<i64, _>(5).map_err(map)? as u64,
        cancelled: row.try_get::<i64, _>(6).map_err(map)? as u64,
        run: hist(7)?,
        wait: hist(8)?,
        queue,
        kind,
    })
}
