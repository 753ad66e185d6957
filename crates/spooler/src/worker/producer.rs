//! The producer of one queue: claims as many jobs as there are free slots, in one call, when woken
//! by an insert, when a slot frees while work is waiting, or on the poll interval.

use super::{QueueSlots, Shared, executor};
use spooler_core::JobClaim;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

pub(crate) async fn run(
    shared: Arc<Shared>,
    slots: Arc<QueueSlots>,
    mut stop: watch::Receiver<bool>,
) {
    let mut wakeups = shared.store.subscribe();
    let poll = shared.settings.poll_interval;
    let mut next_poll = Instant::now() + poll;
    // Whether the queue may hold more jobs than we took: true at start, after a full claim, on a
    // wake-up and on each poll.
    let mut work_waiting = true;
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        let running = slots.running.load(Ordering::Acquire);
        let free = slots.concurrency.saturating_sub(running);
        if free > 0 && work_waiting {
            let limit = free.min(shared.settings.max_claim);
            let claim = JobClaim {
                queues: vec![slots.name.clone()],
                kinds: shared.kinds.clone(),
                limit,
                worker_id: shared.id.to_string(),
                lease: shared.settings.lease,
            };
            match shared.store.job_claim(&claim).await {
                Ok(jobs) => {
                    failures = 0;
                    work_waiting = jobs.len() as u32 == limit;
                    if !jobs.is_empty() {
                        metrics::counter!("spooler_jobs_claimed_total", "queue" => slots.name.clone())
                            .increment(jobs.len() as u64);
                    }
                    for job in jobs {
                        slots.running.fetch_add(1, Ordering::AcqRel);
                        tokio::spawn(executor::run(shared.clone(), slots.clone(), job));
                    }
                    next_poll = Instant::now() + poll;
                    if work_waiting && slots.running.load(Ordering::Acquire) < slots.concurrency {
                        continue;
                    }
                }
                Err(e) => {
                    failures += 1;
                    work_waiting = false;
                    let backoff =
                        Duration::from_millis(100 * 2u64.pow(failures.min(6))).min(poll * 5);
                    next_poll = Instant::now() + backoff;
                    tracing::warn!(
                        queue = %slots.name,
                        store = %shared.store.describe(),
                        error = %e,
                        "claim failed; retrying in {}",
                        spooler_core::format_duration(backoff)
                    );
                }
            }
        }
        tokio::select! {
            _ = slots.freed.notified(), if work_waiting => {}
            wake = wakeups.recv() => match wake {
                Ok(w) if w.queue == slots.name => work_waiting = true,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => work_waiting = true,
                Err(broadcast::error::RecvError::Closed) => {
                    // The store went away: fall back to polling.
                    wakeups = shared.store.subscribe();
                    tokio::time::sleep_until(next_poll).await;
                }
            },
            _ = tokio::time::sleep_until(next_poll) => {
                work_waiting = true;
                next_poll = Instant::now() + poll;
            }
            _ = stop.changed() => {}
        }
    }
}
