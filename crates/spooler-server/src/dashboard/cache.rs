//! What the queue pages show (counts, live workers, stored settings), read from the store at most
//! once per [`MAX_AGE`] however many tabs poll: concurrent requests for a stale snapshot wait on
//! the one refresh under way instead of each asking the store. An action drops the snapshot, so
//! the page it leads to shows its effect.

use crate::error::ApiError;
use crate::state::AppState;
use spooler::QueueInfo;
use spooler::core::QueueSettings;
use spooler::core::stats::{Granularity, StatsQuery};
use spooler::core::store::{LIVE_WORKER_WITHIN, WorkerInfo};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a snapshot serves: three store reads per refresh, so at most 1.5 a second, and two
/// more per [`SPARK_MAX_AGE`] for the sparklines.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(2);

/// One read of what the queue pages show.
pub(crate) struct Snapshot {
    /// Every queue the store knows, and the configured ones with no jobs yet.
    pub queues: Vec<QueueInfo>,
    /// Workers with a fresh heartbeat.
    pub live: Vec<WorkerInfo>,
    /// The queues' stored settings.
    pub settings: Vec<QueueSettings>,
    /// Per queue, jobs finished in each of the last [`SPARK_MINUTES`] closed minutes; read
    /// again at most once per [`SPARK_MAX_AGE`] (the history changes once per roll).
    pub per_minute: Arc<BTreeMap<String, Vec<u64>>>,
    per_minute_taken: Instant,
    /// The store's time when it was read.
    pub now: chrono::DateTime<chrono::Utc>,
    /// When the counts were taken, and whether before this refresh (a big store's cached count).
    pub counted_at: chrono::DateTime<chrono::Utc>,
    pub counts_cached: bool,
    /// Counts the refreshes, so a page can say which one it shows.
    pub seq: u64,
    taken: Instant,
}

/// The latest snapshot and the lock one refresh holds.
#[derive(Default)]
pub(crate) struct SnapshotCache {
    latest: Mutex<Option<Arc<Snapshot>>>,
    refresh: tokio::sync::Mutex<u64>,
}

impl SnapshotCache {
    fn fresh(&self) -> Option<Arc<Snapshot>> {
        let latest = self.latest.lock().expect("snapshot lock");
        latest.clone().filter(|s| s.taken.elapsed() < MAX_AGE)
    }

    /// Forgets the snapshot (after an action).
    pub(crate) fn invalidate(&self) {
        *self.latest.lock().expect("snapshot lock") = None;
    }
}

/// The current snapshot, read again when older than [`MAX_AGE`], once for all who ask meanwhile.
pub(crate) async fn snapshot(state: &AppState) -> Result<Arc<Snapshot>, ApiError> {
    let cache = &state.inner.dashboard_cache;
    if let Some(s) = cache.fresh() {
        return Ok(s);
    }
    let mut seq = cache.refresh.lock().await;
    if let Some(s) = cache.fresh() {
        return Ok(s);
    }
    let (queues, counted) = crate::api::queues_with_configured(state).await?;
    let now = state.inner.store.clock().now();
    let window = chrono::TimeDelta::from_std(LIVE_WORKER_WITHIN).unwrap_or(chrono::TimeDelta::MAX);
    let live = state.inner.store.worker_list(now - window).await?;
    let settings = state.inner.store.queue_settings().await?;
    let previous = cache.latest.lock().expect("snapshot lock").clone();
    let (per_minute, per_minute_taken) = match previous {
        Some(p) if p.per_minute_taken.elapsed() < SPARK_MAX_AGE => {
            (p.per_minute.clone(), p.per_minute_taken)
        }
        _ => (Arc::new(per_minute(state, now).await?), Instant::now()),
    };
    *seq += 1;
    let snapshot = Arc::new(Snapshot {
        queues,
        live,
        settings,
        per_minute,
        per_minute_taken,
        now,
        counted_at: counted.at,
        counts_cached: counted.cached,
        seq: *seq,
        taken: Instant::now(),
    });
    *cache.latest.lock().expect("snapshot lock") = Some(snapshot.clone());
    Ok(snapshot)
}

/// How long the sparklines' counts serve: the leader rolls the history up every 15 s.
pub(crate) const SPARK_MAX_AGE: Duration = Duration::from_secs(15);

/// The overview's sparklines cover this many minutes.
pub(crate) const SPARK_MINUTES: i64 = 5;

/// Per queue, what finished in each of the last [`SPARK_MINUTES`] minutes the leader has rolled
/// up (zeros where none), oldest first: one read of the minute rows.
async fn per_minute(
    state: &AppState,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<BTreeMap<String, Vec<u64>>, ApiError> {
    let store = &state.inner.store;
    let Some(mark) = store.stats_mark().await? else {
        return Ok(BTreeMap::new());
    };
    // The last minute rolled up: the mark is the first instant not yet rolled.
    let last = Granularity::Minute.floor(mark.min(now)) - chrono::TimeDelta::minutes(1);
    let first = last - chrono::TimeDelta::minutes(SPARK_MINUTES - 1);
    let rows = store
        .stats_read(&StatsQuery {
            granularity: Granularity::Minute,
            since: first,
            queue: None,
            kind: None,
        })
        .await?;
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.bucket <= last) {
        let i = ((row.bucket - first).num_minutes()) as usize;
        let counts = out
            .entry(row.queue.clone())
            .or_insert_with(|| vec![0; SPARK_MINUTES as usize]);
        if let Some(c) = counts.get_mut(i) {
            *c += row.finished();
        }
    }
    Ok(out)
}
