//! Heartbeats: renew the leases of running jobs, stop the ones whose lease was lost or whose
//! cancellation was requested, stop the ones whose lease may lapse before a renewal could land
//! (a worker cut off from its database stops its runs before another worker may take them), and
//! record the worker as alive.
//!
//! One cadence from start to the end of a shutdown's grace period: a beat every `heartbeat`, and
//! after a failed one every quarter of it. Each store call has a deadline of a quarter heartbeat.

use super::{Abort, Shared};
use spooler_core::{LeaseExtend, LeaseRef, WorkerInfo};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The heartbeat task of one worker, in the shape of every background task here (`Maintenance`,
/// `Producer`): made with `new`, looped by `run` until told to stop, one pass by `beat`.
pub(crate) struct Heartbeat {
    shared: Arc<Shared>,
}

impl Heartbeat {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Beats until `stop` turns true and no job runs any more (the grace period included).
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let shared = &self.shared;
        let every = shared.settings.heartbeat;
        let mut next = Instant::now();
        loop {
            let stopping = *stop.borrow();
            if stopping && shared.running_count() == 0 {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.changed(), if !stopping => continue,
                _ = shared.idle.notified(), if stopping => continue,
            }
            let started = Instant::now();
            let renewed = self.beat().await;
            next = started + if renewed { every } else { every / 4 };
        }
    }

    /// One beat; whether every lease asked for got an answer.
    pub(crate) async fn beat(&self) -> bool {
        beat(&self.shared).await
    }
}

/// The longest a heartbeat's store call may take.
pub(crate) fn deadline(heartbeat: Duration) -> Duration {
    heartbeat / 4
}

async fn beat(shared: &Shared) -> bool {
    let settings = &shared.settings;
    let deadline = deadline(settings.heartbeat);
    let leases: Vec<LeaseRef> = shared
        .running
        .lock()
        .expect("running lock")
        .keys()
        .copied()
        .collect();
    let mut renewed = true;
    if !leases.is_empty() {
        let extend = LeaseExtend {
            leases,
            worker_id: shared.id.to_string(),
            lease: settings.lease,
        };
        let sent = Instant::now();
        match tokio::time::timeout(deadline, shared.store.job_lease_extend(&extend)).await {
            Ok(Ok(statuses)) => {
                // Statuses come in the order the leases were asked.
                let asked = extend.leases.iter().zip(&statuses);
                {
                    let mut running = shared.running.lock().expect("running lock");
                    for (lease, _) in asked.clone().filter(|(_, s)| s.held) {
                        if let Some(run) = running.get_mut(lease) {
                            run.held_until = sent + settings.lease;
                        }
                    }
                }
                let lost: Vec<_> = asked
                    .clone()
                    .filter(|(_, s)| !s.held)
                    .map(|(l, _)| *l)
                    .collect();
                let cancel: Vec<_> = asked
                    .filter(|(_, s)| s.held && s.cancel_requested)
                    .map(|(l, _)| *l)
                    .collect();
                if !lost.is_empty() {
                    shared.abort(&lost, Abort::LeaseLost);
                }
                if !cancel.is_empty() {
                    shared.abort(&cancel, Abort::CancelRequested);
                }
            }
            Ok(Err(e)) => {
                renewed = false;
                crate::metrics::store_error("renew");
                tracing::warn!(
                    worker = %shared.id,
                    store = %shared.store.describe(),
                    error = %e,
                    "renewing leases failed; retrying shortly"
                );
            }
            Err(_) => {
                renewed = false;
                crate::metrics::store_error("renew");
                tracing::warn!(
                    worker = %shared.id,
                    store = %shared.store.describe(),
                    "renewing leases got no answer within {}; retrying shortly",
                    spooler_core::format_duration(deadline)
                );
            }
        }
    }
    stop_expiring(shared, settings.heartbeat / 2);
    let info = WorkerInfo {
        id: shared.id.to_string(),
        host: super::hostname(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        queues: shared.queues.clone(),
        kinds: shared.kinds.clone(),
        running: shared.running_count() as u32,
        started_at: shared.started_at,
        last_seen_at: shared.store.clock().now(),
    };
    match tokio::time::timeout(deadline, shared.store.worker_heartbeat(&info)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(worker = %shared.id, error = %e, "worker heartbeat failed"),
        Err(_) => tracing::debug!(worker = %shared.id, "worker heartbeat got no answer in time"),
    }
    shared.signals.heartbeat.notify();
    renewed
}

/// Stops the runs whose lease, as last renewed, lapses within `margin`: they can no longer be
/// renewed in time, and another worker may take the job once it lapses.
fn stop_expiring(shared: &Shared, margin: Duration) {
    let horizon = Instant::now() + margin;
    let expiring: Vec<LeaseRef> = shared
        .running
        .lock()
        .expect("running lock")
        .iter()
        .filter(|(_, run)| run.held_until <= horizon && run.abort.is_some())
        .map(|(lease, _)| *lease)
        .collect();
    if !expiring.is_empty() {
        tracing::warn!(
            worker = %shared.id,
            jobs = ?expiring.iter().map(|l| l.id).collect::<Vec<_>>(),
            "leases could not be renewed before they lapse: stopping these runs (another worker will take the jobs)"
        );
        shared.abort(&expiring, Abort::LeaseLost);
    }
}
