//! Throughput and latency history: finished jobs rolled up per minute, hour and day, by queue and
//! kind, with run-time and wait-time histograms whose percentiles are read here, in Rust.
//!
//! The maintenance leader asks [`plan_roll`] which stretch of time to roll next; the store scans
//! the jobs that finished in it, grouped by minute, queue, kind, state and histogram bucket (the
//! bucket of a duration is [`bucket_of`]: Postgres computes it with `width_bucket` over
//! [`bounds`], SQLite with a function that calls `bucket_of`), turns the groups into rows with
//! [`rollup`], adds them to the rows already stored with [`StatsRow::merge`], and moves its mark
//! from `from` to `until` in the transaction that writes them, so a stretch is counted once
//! however many leaders roll it. Rows older than [`Granularity::kept`] are deleted by the same
//! transaction: the history stays bounded.

use crate::state::JobState;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

/// The size of a rollup's time buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// One row per minute; the last hour is shown.
    Minute,
    /// One row per hour; the last 7 days are shown.
    Hour,
    /// One row per day (UTC); the last 90 days are shown.
    Day,
}

impl Granularity {
    /// Every granularity, finest first.
    pub const ALL: [Granularity; 3] = [Self::Minute, Self::Hour, Self::Day];

    /// The bucket's length in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Self::Minute => 60,
            Self::Hour => 3_600,
            Self::Day => 86_400,
        }
    }

    /// The stored name: `minute`, `hour`, `day`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    /// The granularity named `name`, as [`Granularity::as_str`] writes it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == name)
    }

    /// The start of the bucket `at` falls in (UTC).
    pub fn floor(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let secs = at.timestamp().div_euclid(self.seconds()) * self.seconds();
        DateTime::from_timestamp(secs, 0).unwrap_or(at)
    }

    /// How much history a chart of this granularity shows: 60 minutes, 7 days, 90 days.
    pub fn shown(self) -> TimeDelta {
        match self {
            Self::Minute => TimeDelta::minutes(60),
            Self::Hour => TimeDelta::days(7),
            Self::Day => TimeDelta::days(90),
        }
    }

    /// How long rows are kept: what is shown and one bucket more; older rows are deleted.
    pub fn kept(self) -> TimeDelta {
        self.shown() + TimeDelta::seconds(self.seconds())
    }
}

impl std::fmt::Display for Granularity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A minute is rolled once it closed this long ago, so the outcomes of its last jobs, written by
/// transactions still under way when it closed, have committed.
pub const ROLL_LAG: Duration = Duration::from_secs(10);

/// The longest stretch one roll covers; a leader that is behind rolls again at once.
pub const ROLL_SPAN_MAX: TimeDelta = TimeDelta::hours(6);

/// How far back the first roll of a store reaches, so a store that already holds jobs shows them.
pub const FIRST_ROLL_BACK: TimeDelta = TimeDelta::days(1);

/// One stretch of time to roll up: the jobs that finished at or after `from` and before `until`.
/// The store writes it only while its mark still says `from` was rolled up to (or, with no mark,
/// while no roll has been written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsRoll {
    /// Where the store's mark is expected to be (`None`: never rolled).
    pub mark: Option<DateTime<Utc>>,
    /// The first instant covered.
    pub from: DateTime<Utc>,
    /// The first instant not covered; the store's mark after the roll.
    pub until: DateTime<Utc>,
}

/// The next stretch to roll, given the store's mark and its clock's `now`: whole minutes that
/// closed at least [`ROLL_LAG`] ago, at most [`ROLL_SPAN_MAX`] at once; `None` when nothing is due.
pub fn plan_roll(mark: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<StatsRoll> {
    let lag = TimeDelta::from_std(ROLL_LAG).unwrap_or_default();
    let closed = Granularity::Minute.floor(now - lag);
    let from = mark.unwrap_or(closed - FIRST_ROLL_BACK);
    (from < closed).then(|| StatsRoll {
        mark,
        from,
        until: closed.min(from + ROLL_SPAN_MAX),
    })
}

/// The lower bound of the first histogram bucket above the zeroth, in milliseconds.
const FIRST_BOUND_MS: f64 = 0.1;
/// Buckets per doubling: each spans a factor of 2^(1/8), about 9%.
const STEPS_PER_DOUBLING: i32 = 8;
/// Bounds from 0.1 ms to about 40 days.
const BOUND_COUNT: i32 = 281;

/// The histogram's bucket bounds in milliseconds, ascending. Bucket `i` holds durations `d` with
/// `bounds[i-1] <= d < bounds[i]` (bucket 0 those under the first bound, the last those at or
/// above the last): exactly what Postgres' `width_bucket(d, bounds)` answers.
pub fn bounds() -> &'static [f64] {
    static BOUNDS: OnceLock<Vec<f64>> = OnceLock::new();
    BOUNDS.get_or_init(|| {
        (0..BOUND_COUNT)
            .map(|k| FIRST_BOUND_MS * 2f64.powf(f64::from(k) / f64::from(STEPS_PER_DOUBLING)))
            .collect()
    })
}

/// The bucket a duration of `ms` milliseconds falls in: how many bounds are at or below it.
pub fn bucket_of(ms: f64) -> u16 {
    bounds().partition_point(|b| *b <= ms) as u16
}

/// A histogram of durations: how many fell in each bucket of [`bounds`]. Stored as
/// `[[bucket, count], ...]`, empty buckets left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<(u16, u64)>", into = "Vec<(u16, u64)>")]
pub struct Histogram {
    counts: BTreeMap<u16, u64>,
}

impl From<Vec<(u16, u64)>> for Histogram {
    fn from(pairs: Vec<(u16, u64)>) -> Self {
        let mut h = Histogram::default();
        for (bucket, n) in pairs {
            h.add(bucket, n);
        }
        h
    }
}

impl From<Histogram> for Vec<(u16, u64)> {
    fn from(h: Histogram) -> Self {
        h.counts.into_iter().collect()
    }
}

impl Histogram {
    /// Counts `n` durations in `bucket`.
    pub fn add(&mut self, bucket: u16, n: u64) {
        if n > 0 {
            *self.counts.entry(bucket).or_default() += n;
        }
    }

    /// Counts one duration.
    pub fn record(&mut self, d: Duration) {
        self.add(bucket_of(d.as_secs_f64() * 1000.0), 1);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (&bucket, &n) in &other.counts {
            self.add(bucket, n);
        }
    }

    /// How many durations it holds.
    pub fn count(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The duration below which a share `q` (0 to 1) of them fall, to within a bucket's width
    /// (about 9%): the geometric middle of the bucket that holds the rank. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&bucket, &n) in &self.counts {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_secs_f64(middle_ms(bucket) / 1000.0));
            }
        }
        None
    }
}

/// A bucket's representative duration in milliseconds.
fn middle_ms(bucket: u16) -> f64 {
    let b = bounds();
    let i = usize::from(bucket);
    match i {
        0 => FIRST_BOUND_MS / 2.0,
        i if i >= b.len() => b[b.len() - 1],
        i => (b[i - 1] * b[i]).sqrt(),
    }
}

/// One group of a store's scan: `count` jobs of `queue` and `kind` that ended in `state` within
/// the minute starting at `minute`, whose last attempt ran for a duration in bucket `run` and
/// waited (from `run_at` to its start) for one in bucket `wait`; both `None` for a job that never
/// started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSample {
    /// The start of the minute the jobs finished in.
    pub minute: DateTime<Utc>,
    /// Their queue.
    pub queue: String,
    /// Their kind.
    pub kind: String,
    /// `completed`, `failed` or `cancelled`.
    pub state: JobState,
    /// The run time's bucket.
    pub run: Option<u16>,
    /// The wait time's bucket.
    pub wait: Option<u16>,
    /// How many jobs.
    pub count: u64,
}

/// What finished in one bucket of time, of one queue and kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRow {
    /// The bucket's size.
    pub granularity: Granularity,
    /// The bucket's start.
    pub bucket: DateTime<Utc>,
    /// The queue.
    pub queue: String,
    /// The kind.
    pub kind: String,
    /// Jobs that completed.
    pub completed: u64,
    /// Jobs that failed for good.
    pub failed: u64,
    /// Jobs that were cancelled.
    pub cancelled: u64,
    /// How long their last attempt ran.
    pub run: Histogram,
    /// How long their last attempt waited to start after it was due.
    pub wait: Histogram,
}

/// A row's identity: granularity, bucket, queue, kind.
pub type StatsKey = (Granularity, DateTime<Utc>, String, String);

impl StatsRow {
    /// An empty row for `key`.
    pub fn empty(key: StatsKey) -> Self {
        let (granularity, bucket, queue, kind) = key;
        Self {
            granularity,
            bucket,
            queue,
            kind,
            completed: 0,
            failed: 0,
            cancelled: 0,
            run: Histogram::default(),
            wait: Histogram::default(),
        }
    }

    /// The row's identity.
    pub fn key(&self) -> StatsKey {
        (
            self.granularity,
            self.bucket,
            self.queue.clone(),
            self.kind.clone(),
        )
    }

    /// Adds `other`'s counts and histograms to this row's.
    pub fn merge(&mut self, other: &StatsRow) {
        self.completed += other.completed;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        self.run.merge(&other.run);
        self.wait.merge(&other.wait);
    }

    /// Every job the row counts.
    pub fn finished(&self) -> u64 {
        self.completed + self.failed + self.cancelled
    }
}

/// The rows a scan's groups make, at every granularity, one per key, in key order.
pub fn rollup(samples: &[StatsSample]) -> Vec<StatsRow> {
    let mut rows: BTreeMap<StatsKey, StatsRow> = BTreeMap::new();
    for s in samples {
        for g in Granularity::ALL {
            let key = (g, g.floor(s.minute), s.queue.clone(), s.kind.clone());
            let row = rows
                .entry(key.clone())
                .or_insert_with(|| StatsRow::empty(key));
            match s.state {
                JobState::Completed => row.completed += s.count,
                JobState::Failed => row.failed += s.count,
                JobState::Cancelled => row.cancelled += s.count,
                _ => continue,
            }
            if let Some(b) = s.run {
                row.run.add(b, s.count);
            }
            if let Some(b) = s.wait {
                row.wait.add(b, s.count);
            }
        }
    }
    rows.into_values().collect()
}

/// The rows to write: each of `new` added to the stored row of its key in `stored`, if any.
pub fn merge_stored(stored: Vec<StatsRow>, new: Vec<StatsRow>) -> Vec<StatsRow> {
    let mut by_key: BTreeMap<StatsKey, StatsRow> =
        stored.into_iter().map(|r| (r.key(), r)).collect();
    new.into_iter()
        .map(|row| match by_key.remove(&row.key()) {
            Some(mut stored) => {
                stored.merge(&row);
                stored
            }
            None => row,
        })
        .collect()
}

/// Rows of granularity `g` that start before this are deleted by a roll up to `until`.
pub fn prune_before(g: Granularity, until: DateTime<Utc>) -> DateTime<Utc> {
    g.floor(until) - g.kept()
}

/// Which rows to read: one granularity from `since` on, optionally of one queue and one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery {
    /// The granularity.
    pub granularity: Granularity,
    /// Rows whose bucket starts at or after this.
    pub since: DateTime<Utc>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
}

/// One bucket of a chart: what finished in it, over every row read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChartPoint {
    /// The bucket's start.
    pub at: DateTime<Utc>,
    /// Jobs that completed.
    pub completed: u64,
    /// Jobs that failed for good.
    pub failed: u64,
    /// Jobs that were cancelled.
    pub cancelled: u64,
}

/// Every bucket of granularity `g` from the one holding `since` to the one holding `until`, with
/// what `rows` count in it (zeros where none), in time order.
pub fn chart(
    rows: &[StatsRow],
    g: Granularity,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<ChartPoint> {
    let mut points = BTreeMap::new();
    let mut at = g.floor(since);
    let step = TimeDelta::seconds(g.seconds());
    while at <= until {
        points.insert(
            at,
            ChartPoint {
                at,
                completed: 0,
                failed: 0,
                cancelled: 0,
            },
        );
        at += step;
    }
    for row in rows.iter().filter(|r| r.granularity == g) {
        if let Some(p) = points.get_mut(&row.bucket) {
            p.completed += row.completed;
            p.failed += row.failed;
            p.cancelled += row.cancelled;
        }
    }
    points.into_values().collect()
}

/// Run and wait percentiles of one queue and kind over a span.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// The queue.
    pub queue: String,
    /// The kind.
    pub kind: String,
    /// Jobs that started (the percentiles count these).
    pub started: u64,
    /// Jobs finished, started or not.
    pub finished: u64,
    /// Jobs that failed for good.
    pub failed: u64,
    /// Run time p50, p95, p99.
    pub run: [Option<Duration>; 3],
    /// Wait time p50, p95, p99.
    pub wait: [Option<Duration>; 3],
}

/// The percentiles [`latencies`] reports.
pub const PERCENTILES: [f64; 3] = [0.50, 0.95, 0.99];

/// Per queue and kind, the run and wait percentiles of every row in `rows` (rows of one
/// granularity), in queue and kind order.
pub fn latencies(rows: &[StatsRow]) -> Vec<Latency> {
    let mut merged: BTreeMap<(String, String), StatsRow> = BTreeMap::new();
    for row in rows {
        merged
            .entry((row.queue.clone(), row.kind.clone()))
            .or_insert_with(|| StatsRow::empty(row.key()))
            .merge(row);
    }
    merged
        .into_values()
        .map(|r| Latency {
            started: r.run.count(),
            finished: r.finished(),
            failed: r.failed,
            run: PERCENTILES.map(|q| r.run.quantile(q)),
            wait: PERCENTILES.map(|q| r.wait.quantile(q)),
            queue: r.queue,
            kind: r.kind,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn a_bucket_is_the_count_of_bounds_at_or_below() {
        let b = bounds();
        assert_eq!(b.len(), 281);
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(0.1), 1);
        assert_eq!(bucket_of(b[40]), 41);
        assert_eq!(bucket_of(b[40] - 1e-9), 40);
        assert_eq!(bucket_of(f64::MAX), 281);
        assert!(b.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn quantiles_fall_within_a_bucket_of_the_truth() {
        let mut h = Histogram::default();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        for (q, truth) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
            let got = h.quantile(q).unwrap().as_secs_f64() * 1000.0;
            assert!(
                (got / truth - 1.0).abs() < 0.1,
                "p{q}: {got} ms, truth {truth}"
            );
        }
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn a_histogram_round_trips_as_pairs() {
        let mut h = Histogram::default();
        h.add(3, 2);
        h.add(40, 1);
        h.add(7, 0);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, "[[3,2],[40,1]]");
        assert_eq!(serde_json::from_str::<Histogram>(&json).unwrap(), h);
    }

    #[test]
    fn a_roll_covers_closed_minutes_after_the_mark_and_no_more_than_its_span() {
        let now = at(1_800_000_125); // 2 min 5 s past a minute boundary
        let closed = Granularity::Minute.floor(now - TimeDelta::seconds(10));
        assert_eq!(closed, at(1_800_000_060));
        let first = plan_roll(None, now).unwrap();
        assert_eq!(first.from, closed - FIRST_ROLL_BACK);
        assert_eq!(first.until, first.from + ROLL_SPAN_MAX);
        assert_eq!(first.mark, None);
        let next = plan_roll(Some(at(1_800_000_000)), now).unwrap();
        assert_eq!((next.from, next.until), (at(1_800_000_000), closed));
        assert_eq!(plan_roll(Some(closed), now), None);
    }

    #[test]
    fn samples_roll_up_into_every_granularity_and_merge_with_stored_rows() {
        let minute = at(1_800_000_060);
        let sample = |state, run, count| StatsSample {
            minute,
            queue: "q".into(),
            kind: "k".into(),
            state,
            run,
            wait: run,
            count,
        };
        let rows = rollup(&[
            sample(JobState::Completed, Some(10), 3),
            sample(JobState::Failed, Some(20), 1),
            sample(JobState::Cancelled, None, 2),
        ]);
        assert_eq!(rows.len(), 3);
        for (row, g) in rows.iter().zip(Granularity::ALL) {
            assert_eq!(row.granularity, g);
            assert_eq!(row.bucket, g.floor(minute));
            assert_eq!((row.completed, row.failed, row.cancelled), (3, 1, 2));
            assert_eq!(row.run.count(), 4);
        }
        let merged = merge_stored(vec![rows[1].clone()], rows.clone());
        assert_eq!(merged[1].completed, 6);
        assert_eq!(merged[0].completed, 3);
        let points = chart(&rows, Granularity::Minute, minute, minute);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].failed, 1);
        let lat = latencies(&rows[..1]);
        assert_eq!(lat[0].started, 4);
        assert_eq!(lat[0].finished, 6);
    }

    #[test]
    fn rows_are_kept_for_what_is_shown_and_one_bucket() {
        let until = at(1_800_003_600);
        assert_eq!(
            prune_before(Granularity::Minute, until),
            until - TimeDelta::minutes(61)
        );
        assert_eq!(Granularity::parse("hour"), Some(Granularity::Hour));
        assert_eq!(Granularity::parse("week"), None);
    }
}
