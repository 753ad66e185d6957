//! Throughput and latency history: finished jobs scanned on a read connection, grouped by
//! minute, queue, kind, state and histogram bucket (`spooler_bucket`, which calls
//! `spooler_core::stats::bucket_of`), then added to the stored rows by the writer under the mark.

use crate::SqliteStore;
use crate::error::OpError;
use crate::job::{from_micros, micros};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OptionalExtension, params};
use spooler_core::stats::{
    Granularity, Histogram, StatsQuery, StatsRoll, StatsRow, StatsSample, bucket_of, merge_stored,
    prune_before, rollup,
};
use spooler_core::store::prelude::*;
use spooler_core::{JobState, StoreError, StoreResult};

/// The finished jobs of `[?1, ?2)` grouped as [`StatsSample`]s; durations in milliseconds.
const SCAN: &str = "SELECT (finished_at / 60000000) * 60000000, queue, kind, state, \
         CASE WHEN started_at IS NULL THEN NULL \
              ELSE spooler_bucket((finished_at - started_at) / 1000.0) END, \
         CASE WHEN started_at IS NULL THEN NULL \
              ELSE spooler_bucket(max(started_at - run_at, 0) / 1000.0) END, \
         count(*) \
     FROM spooler_jobs \
     WHERE state IN ('completed', 'failed', 'cancelled') \
       AND finished_at >= ?1 AND finished_at < ?2 \
     GROUP BY 1, 2, 3, 4, 5, 6";

const COLUMNS: &str = "granularity, bucket, queue, kind, completed, failed, cancelled, run, wait";

#[async_trait]
impl StatsStore for SqliteStore {
    async fn stats_mark(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let mark: Option<i64> = self
            .db
            .read(|conn| {
                Ok(conn
                    .prepare_cached("SELECT rolled_until FROM spooler_stats_mark WHERE id = 1")?
                    .query_row([], |r| r.get(0))
                    .optional()?)
            })
            .await?;
        mark.map(|m| from_micros(0, m)).transpose()
    }

    async fn stats_roll(&self, roll: &StatsRoll) -> StoreResult<bool> {
        let (from, until) = (micros(roll.from), micros(roll.until));
        let raw = self.db.read(move |conn| scan(conn, from, until)).await?;
        let samples = raw
            .into_iter()
            .map(|(minute, queue, kind, state, run, wait, count)| {
                Ok(StatsSample {
                    minute: from_micros(0, minute)?,
                    state: state.parse::<JobState>().map_err(|e| StoreError::Decode {
                        id: 0,
                        message: format!("stats scan: state {state:?}: {e}"),
                    })?,
                    queue,
                    kind,
                    run,
                    wait,
                    count,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let new = rollup(&samples);
        let roll = *roll;
        self.db
            .write(move |ctx| {
                let conn = ctx.conn;
                let mark: Option<i64> = conn
                    .prepare_cached("SELECT rolled_until FROM spooler_stats_mark WHERE id = 1")?
                    .query_row([], |r| r.get(0))
                    .optional()?;
                if mark != roll.mark.map(micros) {
                    return Ok(false);
                }
                let mut stored = Vec::new();
                {
                    let mut get = conn.prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM spooler_stats \
                         WHERE granularity = ?1 AND bucket = ?2 AND queue = ?3 AND kind = ?4"
                    ))?;
                    for row in &new {
                        let found = get
                            .query_row(
                                params![
                                    row.granularity.as_str(),
                                    micros(row.bucket),
                                    row.queue,
                                    row.kind
                                ],
                                read_row,
                            )
                            .optional()?;
                        stored.extend(found.transpose()?);
                    }
                }
                let mut put = conn.prepare_cached(&format!(
                    "INSERT OR REPLACE INTO spooler_stats ({COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ))?;
                for row in merge_stored(stored, new) {
                    put.execute(params![
                        row.granularity.as_str(),
                        micros(row.bucket),
                        row.queue,
                        row.kind,
                        row.completed as i64,
                        row.failed as i64,
                        row.cancelled as i64,
                        encode(&row.run)?,
                        encode(&row.wait)?,
                    ])?;
                }
                conn.prepare_cached(
                    "INSERT INTO spooler_stats_mark (id, rolled_until) VALUES (1, ?1) \
                     ON CONFLICT (id) DO UPDATE SET rolled_until = excluded.rolled_until",
                )?
                .execute([micros(roll.until)])?;
                let mut prune = conn.prepare_cached(
                    "DELETE FROM spooler_stats WHERE granularity = ?1 AND bucket < ?2",
                )?;
                for g in Granularity::ALL {
                    prune.execute(params![g.as_str(), micros(prune_before(g, roll.until))])?;
                }
                Ok(true)
            })
            .await
    }

    async fn stats_read(&self, query: &StatsQuery) -> StoreResult<Vec<StatsRow>> {
        let query = query.clone();
        self.db
            .read(move |conn| {
                let rows = conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM spooler_stats \
                         WHERE granularity = ?1 AND bucket >= ?2 \
                           AND (?3 IS NULL OR queue = ?3) AND (?4 IS NULL OR kind = ?4) \
                         ORDER BY bucket, queue, kind"
                    ))?
                    .query_map(
                        params![
                            query.granularity.as_str(),
                            micros(query.since),
                            query.queue,
                            query.kind
                        ],
                        read_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows.into_iter().collect::<StoreResult<Vec<_>>>()?)
            })
            .await
    }
}

type Sample = (i64, String, String, String, Option<u16>, Option<u16>, u64);

/// Groups the finished jobs of `[from, until)`, with `spooler_bucket` registered on this
/// connection first (registering again replaces it: cheap, and no connection is left without).
fn scan(conn: &Connection, from: i64, until: i64) -> Result<Vec<Sample>, OpError> {
    conn.create_scalar_function(
        "spooler_bucket",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(i64::from(bucket_of(ctx.get::<f64>(0)?))),
    )?;
    Ok(conn
        .prepare_cached(SCAN)?
        .query_map([from, until], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get::<_, i64>(6)? as u64,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?)
}

/// One stored row; a row that does not decode is an error naming it.
fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoreResult<StatsRow>> {
    let granularity: String = r.get(0)?;
    let bucket: i64 = r.get(1)?;
    let queue: String = r.get(2)?;
    let kind: String = r.get(3)?;
    let (run, wait): (String, String) = (r.get(7)?, r.get(8)?);
    let (completed, failed, cancelled): (i64, i64, i64) = (r.get(4)?, r.get(5)?, r.get(6)?);
    Ok((|| {
        let bad = |message: String| StoreError::Decode {
            id: 0,
            message: format!("stats row {granularity} {bucket} {queue}/{kind}: {message}"),
        };
        let hist = |text: &str| {
            serde_json::from_str::<Histogram>(text).map_err(|e| bad(format!("histogram: {e}")))
        };
        Ok(StatsRow {
            granularity: Granularity::parse(&granularity)
                .ok_or_else(|| bad("unknown granularity".into()))?,
            bucket: from_micros(0, bucket)?,
            completed: completed as u64,
            failed: failed as u64,
            cancelled: cancelled as u64,
            run: hist(&run)?,
            wait: hist(&wait)?,
            queue: queue.clone(),
            kind: kind.clone(),
        })
    })())
}

fn encode(h: &Histogram) -> Result<String, OpError> {
    serde_json::to_string(h).map_err(|e| {
        OpError::Store(StoreError::InvalidInput {
            field: "histogram",
            message: e.to_string(),
        })
    })
}
