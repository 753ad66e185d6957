//! Queue counts that stay cheap on a big store: counted exactly on every request while the store
//! holds fewer than [`BIG`] jobs (the default of
//! [`ServerOptions::count_cache_above`](crate::ServerOptions::count_cache_above)); above it served
//! from the last exact count (its time said) while the next is taken in the background, at most
//! once per [`cached_for`] of what the last one cost. So a store of a million jobs costs one full
//! count every half minute however many readers poll, and a small store (every test's) is always
//! counted exactly. The line is drawn by size, not by how long a count took, so a slow moment on
//! a small store never makes its counts stale.

use crate::error::ApiError;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use spooler::QueueInfo;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A store holding fewer jobs than this is counted again for every request.
pub(crate) const BIG: i64 = 100_000;

/// How long an expensive count serves: fifty times what it cost, within 1 to 60 seconds.
pub(crate) fn cached_for(cost: Duration) -> Duration {
    (cost * 50).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Counts per queue, and whether they were taken for this request or earlier.
#[derive(Clone)]
pub(crate) struct Counted {
    pub queues: Arc<Vec<QueueInfo>>,
    /// The store's time when they were counted.
    pub at: DateTime<Utc>,
    /// Taken earlier than this request (the store is big enough to cache them).
    pub cached: bool,
}

struct Last {
    counted: Counted,
    /// Jobs counted in all.
    jobs: i64,
    cost: Duration,
    taken: Instant,
}

/// The last exact count and whether a refresh is under way.
#[derive(Default)]
pub(crate) struct CountCache {
    last: Mutex<Option<Last>>,
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

async fn count(state: &AppState) -> Result<(Counted, Duration), ApiError> {
    let started = Instant::now();
    let queues = state.inner.client.queues().await?;
    let at = state.inner.store.clock().now();
    let cost = started.elapsed();
    Ok((
        Counted {
            queues: Arc::new(queues),
            at,
            cached: false,
        },
        cost,
    ))
}

fn keep(state: &AppState, counted: &Counted, cost: Duration) {
    *state.inner.counts.last.lock().expect("counts lock") = Some(Last {
        counted: counted.clone(),
        cost,
        jobs: counted.queues.iter().map(|q| q.counts.total()).sum(),
        taken: Instant::now(),
    });
}

/// The queues with their counts: exact now when counting is cheap, else the last exact count
/// (refreshed in the background once it is [`cached_for`] its cost old).
pub(crate) async fn queues(state: &AppState) -> Result<Counted, ApiError> {
    let cache = &state.inner.counts;
    let stale = {
        let last = cache.last.lock().expect("counts lock");
        match &*last {
            Some(last) if last.jobs >= state.inner.options.count_cache_above => {
                let stale = last.taken.elapsed() >= cached_for(last.cost);
                Some((
                    Counted {
                        cached: true,
                        ..last.counted.clone()
                    },
                    stale,
                ))
            }
            _ => None,
        }
    };
    match stale {
        None => {
            let (counted, cost) = count(state).await?;
            keep(state, &counted, cost);
            Ok(counted)
        }
        Some((counted, stale)) => {
            if stale && let Ok(guard) = cache.refreshing.clone().try_lock_owned() {
                let state = state.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    match count(&state).await {
                        Ok((counted, cost)) => keep(&state, &counted, cost),
                        Err(e) => tracing::warn!(error = %e, "counting jobs per queue failed"),
                    }
                });
            }
            Ok(counted)
        }
    }
}

/// Drops the last count (after a pause or resume here), so the next read counts again.
pub(crate) fn forget(state: &AppState) {
    *state.inner.counts.last.lock().expect("counts lock") = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expensive_count_serves_fifty_times_its_cost_within_bounds() {
        assert_eq!(cached_for(Duration::from_millis(5)), Duration::from_secs(1));
        assert_eq!(
            cached_for(Duration::from_millis(600)),
            Duration::from_secs(30)
        );
        assert_eq!(cached_for(Duration::from_secs(5)), Duration::from_secs(60));
    }
}
