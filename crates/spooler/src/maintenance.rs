//! Maintenance on one elected leader: rescue jobs whose lease lapsed, promote scheduled jobs whose
//! time has come, prune finished jobs past their retention; and, in loops of their own, fire due
//! schedules, roll finished jobs up into the throughput and latency history, and run the store's
//! housekeeping.

use crate::Error;
use crate::worker::Retention;
use spooler_core::{JobRescue, LeaderElect, RetryPolicies, Store, stats};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, watch};

/// The leadership name maintenance is elected under.
pub const LEADER_NAME: &str = "maintenance";

/// Maintenance timing; [`MaintenanceConfig::default`] suits most deployments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// How often the leader rescues and promotes, and followers try to become leader (1 s).
    pub interval: Duration,
    /// How long leadership lasts without renewal (5 s): a dead leader is replaced within it.
    pub leader_ttl: Duration,
    /// How often finished jobs are pruned (30 s).
    pub prune_interval: Duration,
    /// How long finished jobs are kept.
    pub retention: Retention,
    /// Rows per rescue, promote or prune statement (1,000).
    pub batch: u32,
    /// How often the leader rolls finished jobs up into the throughput and latency history
    /// (15 s); see [`spooler_core::stats`].
    pub stats_interval: Duration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            leader_ttl: Duration::from_secs(5),
            prune_interval: Duration::from_secs(30),
            retention: Retention::default(),
            batch: 1000,
            stats_interval: Duration::from_secs(15),
        }
    }
}

impl MaintenanceConfig {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let invalid = |key: &str, message: &str| {
            Err(Error::Config {
                key: format!("maintenance.{key}"),
                message: message.to_string(),
            })
        };
        if self.interval.is_zero() {
            return invalid("interval", "must be greater than zero");
        }
        if self.leader_ttl <= self.interval {
            return invalid("leader_ttl", "must be longer than the interval");
        }
        if self.stats_interval.is_zero() {
            return invalid("stats_interval", "must be greater than zero");
        }
        if self.batch == 0 {
            return invalid("batch", "must be at least 1");
        }
        Ok(())
    }
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Whether this process led the pass.
    pub leader: bool,
    /// Jobs made available again after their lease lapsed.
    pub rescued: usize,
    /// Jobs failed because their lease lapsed on the last attempt.
    pub rescued_failed: usize,
    /// Jobs cancelled because their lease lapsed after cancellation was asked for.
    pub rescued_cancelled: usize,
    /// Scheduled jobs made available.
    pub promoted: u64,
    /// Finished jobs deleted.
    pub pruned: u64,
}

/// The maintenance service. `run_once` does one pass (tests call it directly); `run` loops.
#[derive(Clone)]
pub struct Maintenance {
    store: Arc<dyn Store>,
    config: MaintenanceConfig,
    holder: String,
    retry: Arc<RetryPolicies>,
    is_leader: Arc<AtomicBool>,
    last_prune: Arc<Mutex<Option<tokio::time::Instant>>>,
    scheduler: Arc<crate::schedules::Scheduler>,
}

impl Maintenance {
    /// A maintenance service for `store`, electing as `holder`.
    pub fn new(store: Arc<dyn Store>, config: MaintenanceConfig, holder: String) -> Self {
        Self {
            store,
            config,
            holder,
            retry: Arc::new(RetryPolicies::default()),
            is_leader: Arc::new(AtomicBool::new(false)),
            last_prune: Arc::new(Mutex::new(None)),
            scheduler: Arc::default(),
        }
    }

    /// The backoff a rescued job waits, by queue and kind (the default policy unless set): a lapsed
    /// lease is a failed attempt like any other.
    pub fn retry_policies(mut self, retry: Arc<RetryPolicies>) -> Self {
        self.retry = retry;
        self
    }

    /// Whether this process led the latest pass.
    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Relaxed)
    }

    /// One pass: elect, and if leader rescue, promote, and prune when due.
    pub async fn run_once(&self) -> Result<MaintenanceReport, Error> {
        let mut report = MaintenanceReport::default();
        let elect = LeaderElect {
            name: LEADER_NAME.to_string(),
            holder: self.holder.clone(),
            ttl: self.config.leader_ttl,
        };
        let leader = self.store.leader_try_elect(&elect).await?;
        let was = self.is_leader.swap(leader, Ordering::Relaxed);
        if leader != was {
            tracing::info!(holder = %self.holder, leader, "maintenance leadership changed");
        }
        if !leader {
            return Ok(report);
        }
        report.leader = true;
        let rescue = self
            .store
            .job_rescue(&JobRescue {
                limit: self.config.batch,
                retry: self.retry.clone(),
            })
            .await?;
        report.rescued = rescue.retried.len();
        report.rescued_failed = rescue.failed.len();
        report.rescued_cancelled = rescue.cancelled.len();
        if !rescue.is_empty() {
            tracing::warn!(retried = ?rescue.retried, failed = ?rescue.failed, cancelled = ?rescue.cancelled, "rescued jobs whose lease expired");
        }
        loop {
            let n = self.store.job_promote(self.config.batch).await?;
            report.promoted += n;
            if n < u64::from(self.config.batch) {
                break;
            }
        }
        let mut last = self.last_prune.lock().await;
        let due = last.is_none_or(|t| t.elapsed() >= self.config.prune_interval);
        if due {
            *last = Some(tokio::time::Instant::now());
            report.pruned = self.prune().await?;
        }
        drop(last);
        Ok(report)
    }

    /// Deletes finished jobs past their retention, in batches.
    pub async fn prune(&self) -> Result<u64, Error> {
        crate::Client::new(self.store.clone())
            .prune(&self.config.retention, self.config.batch)
            .await
    }

    /// Rolls finished jobs up into the throughput and latency history, every stretch that is due
    /// by the store's clock (a leader that was away catches up, [`stats::ROLL_SPAN_MAX`] at a
    /// time). Answers how many stretches it wrote; a roll another leader wrote first ends it.
    pub async fn roll_stats(&self) -> Result<usize, Error> {
        let mut mark = self.store.stats_mark().await?;
        let mut rolled = 0;
        while let Some(roll) = stats::plan_roll(mark, self.store.clock().now()) {
            if !self.store.stats_roll(&roll).await? {
                break;
            }
            mark = Some(roll.until);
            rolled += 1;
        }
        Ok(rolled)
    }

    /// Loops [`Maintenance::run_once`] every interval until `stop` turns true, then resigns at
    /// once, so another process leads while this one still drains its jobs. Beside the passes, in
    /// a loop of its own, the leader asks the store for its housekeeping (on Postgres a VACUUM
    /// that may take minutes), which so never delays a rescue or a promotion.
    pub async fn run(&self, stop: watch::Receiver<bool>) {
        let passes = crate::every::every(self.config.interval, stop.clone(), || async {
            if let Err(e) = self.run_once().await {
                tracing::warn!(store = %self.store.describe(), error = %e, "maintenance pass failed");
            }
        });
        let stop_schedules = stop.clone();
        let stop_stats = stop.clone();
        let housekeeping = crate::every::every(self.config.interval, stop, || async {
            if self.is_leader()
                && let Err(e) = self.store.housekeep().await
            {
                tracing::warn!(store = %self.store.describe(), error = %e, "store housekeeping failed; will try again");
            }
        });
        // Checked every interval, so a new leader rolls at once, then every stats interval.
        let last_roll = std::sync::Mutex::new(None::<tokio::time::Instant>);
        let stats = crate::every::every(self.config.interval, stop_stats, || async {
            let due = last_roll
                .lock()
                .expect("roll time")
                .is_none_or(|t| t.elapsed() >= self.config.stats_interval);
            if !self.is_leader() || !due {
                return;
            }
            *last_roll.lock().expect("roll time") = Some(tokio::time::Instant::now());
            if let Err(e) = self.roll_stats().await {
                tracing::warn!(store = %self.store.describe(), error = %e, "rolling up job statistics failed; will try again");
            }
        });
        tokio::join!(
            passes,
            housekeeping,
            stats,
            self.run_schedules(stop_schedules)
        );
        self.resign().await;
    }

    /// While leader, fires each schedule at its tick: it sleeps until the earliest next run (by
    /// the store's clock), at most one interval, so a new or changed schedule and a change of
    /// leader are seen within it.
    async fn run_schedules(&self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let mut wait = self.config.interval;
            if self.is_leader() {
                match self.scheduler.pass(self.store.as_ref()).await {
                    Ok(pass) => {
                        if let Some(next) = pass.next_due {
                            let until = (next - self.store.clock().now())
                                .to_std()
                                .unwrap_or_default();
                            wait = wait.min(until.max(Duration::from_millis(1)));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(store = %self.store.describe(), error = %e, "schedule pass failed");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Gives up leadership so another process takes over at once.
    pub async fn resign(&self) {
        if self.is_leader.swap(false, Ordering::Relaxed)
            && let Err(e) = self.store.leader_resign(LEADER_NAME, &self.holder).await
        {
            tracing::warn!(error = %e, "could not resign maintenance leadership");
        }
    }
}
