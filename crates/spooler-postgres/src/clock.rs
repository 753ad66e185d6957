//! The database's clock, read without a round trip: `clock_timestamp()` sampled at connect and
//! every [`RESYNC_EVERY`], carried forward by this process's monotonic clock.
//!
//! Leases, rescue, promotion and leadership compare times that different processes wrote, so they
//! must all read one clock: the database's. Sampling it (the probe with the shortest round trip
//! of a few, its midpoint) and adding monotonic time since gives the database's time within half
//! a round trip, and a process whose wall clock is wrong, or is stepped, reads the same time as
//! every other process. Every statement keeps its shape on both stores (time is a bind
//! parameter), and a test can still hand the store a manual clock instead.

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use spooler_core::{Clock, StoreResult};
use sqlx::PgPool;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

/// How often the sample is taken again (monotonic clocks drift by parts per million).
pub(crate) const RESYNC_EVERY: Duration = Duration::from_secs(30);

/// Probes per sample; the one with the shortest round trip is kept.
const PROBES: usize = 3;

/// A wall clock further than this from the database's is logged once per sample.
const SKEW_WARNING: TimeDelta = TimeDelta::seconds(1);

#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// The database's time at `at`.
    db: DateTime<Utc>,
    at: Instant,
    round_trip: Duration,
}

/// The database's clock; see the module documentation.
#[derive(Debug)]
pub(crate) struct DatabaseClock {
    anchor: RwLock<Anchor>,
}

impl Clock for DatabaseClock {
    fn now(&self) -> DateTime<Utc> {
        let anchor = *self.anchor.read().expect("clock lock");
        let since = TimeDelta::from_std(anchor.at.elapsed()).unwrap_or(TimeDelta::zero());
        (anchor.db + since).trunc_subsecs(6)
    }
}

impl DatabaseClock {
    /// Samples the database's clock through `pool`, each probe within `timeout`.
    pub(crate) async fn sample(
        pool: &PgPool,
        timeout: Duration,
        endpoint: &str,
    ) -> StoreResult<Arc<Self>> {
        let anchor = probe(pool, timeout, endpoint).await?;
        warn_on_skew(&anchor, endpoint);
        Ok(Arc::new(Self {
            anchor: RwLock::new(anchor),
        }))
    }

    /// Resamples every [`RESYNC_EVERY`] until the clock is dropped; a failed probe keeps the last
    /// sample (monotonic time carries it on) and is tried again at the next turn.
    pub(crate) fn keep_in_sync(
        clock: &Arc<Self>,
        pool: PgPool,
        timeout: Duration,
        endpoint: String,
    ) {
        let weak: Weak<Self> = Arc::downgrade(clock);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RESYNC_EVERY).await;
                let Some(clock) = weak.upgrade() else { return };
                match probe(&pool, timeout, &endpoint).await {
                    Ok(anchor) => {
                        warn_on_skew(&anchor, &endpoint);
                        *clock.anchor.write().expect("clock lock") = anchor;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "sampling the database's clock failed; keeping the last sample")
                    }
                }
            }
        });
    }
}

async fn probe(pool: &PgPool, timeout: Duration, endpoint: &str) -> StoreResult<Anchor> {
    let mut best: Option<Anchor> = None;
    for _ in 0..PROBES {
        let sent = Instant::now();
        let db: DateTime<Utc> = tokio::time::timeout(
            timeout,
            sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(pool),
        )
        .await
        .map_err(|_| spooler_core::StoreError::Unavailable {
            message: format!(
                "reading the clock of PostgreSQL at {endpoint}: no answer within {timeout:?}"
            ),
        })?
        .map_err(crate::error::map)?;
        let round_trip = sent.elapsed();
        if best.is_none_or(|b| round_trip < b.round_trip) {
            best = Some(Anchor {
                db,
                at: sent + round_trip / 2,
                round_trip,
            });
        }
    }
    Ok(best.expect("at least one probe"))
}

fn warn_on_skew(anchor: &Anchor, endpoint: &str) {
    let since = TimeDelta::from_std(anchor.at.elapsed()).unwrap_or(TimeDelta::zero());
    let skew = Utc::now() - (anchor.db + since);
    if skew.abs() > SKEW_WARNING {
        tracing::warn!(
            skew_ms = skew.num_milliseconds(),
            endpoint,
            "this process's clock differs from the database's; spooler times leases, rescue and leadership by the database's"
        );
    }
}
