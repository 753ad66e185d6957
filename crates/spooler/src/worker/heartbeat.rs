//! Heartbeats: renew the leases of running jobs, stop the ones whose lease was lost or whose
//! cancellation was requested, and record the worker as alive.

use super::{Abort, Shared};
use spooler_core::{LeaseExtend, WorkerInfo};
use std::sync::Arc;
use tokio::sync::watch;

pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(shared.settings.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {
                if *stop.borrow() {
                    // Keep renewing while jobs drain during the grace period.
                    drain(&shared).await;
                    return;
                }
            }
        }
        beat(&shared).await;
    }
}

async fn drain(shared: &Shared) {
    let mut tick = tokio::time::interval(shared.settings.heartbeat);
    tick.tick().await;
    while shared.running_count() > 0 {
        tokio::select! {
            _ = tick.tick() => beat(shared).await,
            _ = shared.idle.notified() => {}
        }
    }
}

async fn beat(shared: &Shared) {
    let leases: Vec<_> = shared
        .running
        .lock()
        .expect("running lock")
        .keys()
        .copied()
        .collect();
    if !leases.is_empty() {
        let extend = LeaseExtend {
            leases,
            worker_id: shared.id.to_string(),
            lease: shared.settings.lease,
        };
        match shared.store.job_lease_extend(&extend).await {
            Ok(statuses) => {
                // Statuses come in the order the leases were asked.
                let asked = extend.leases.iter().zip(&statuses);
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
            Err(e) => tracing::warn!(
                worker = %shared.id,
                store = %shared.store.describe(),
                error = %e,
                "renewing leases failed; retrying at the next heartbeat"
            ),
        }
    }
    let now = shared.store.clock().now();
    let info = WorkerInfo {
        id: shared.id.to_string(),
        host: super::hostname(),
        pid: std::process::id(),
        queues: shared.queues.clone(),
        kinds: shared.kinds.clone(),
        running: shared.running_count() as u32,
        started_at: shared.started_at,
        last_seen_at: now,
    };
    if let Err(e) = shared.store.worker_heartbeat(&info).await {
        tracing::debug!(worker = %shared.id, error = %e, "worker heartbeat failed");
    }
    shared.signals.heartbeat.notify();
}
