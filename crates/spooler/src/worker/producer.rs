//! The producer of one queue: claims jobs in batches, starts them as slots free, and keeps a small
//! adaptive buffer of claimed jobs so that a stream of short jobs costs one claim per many jobs.
//!
//! Claims happen when woken by an insert, when the buffer runs low while work is waiting, or on
//! the poll interval. The buffer (prefetch) grows while buffered jobs start within moments of
//! their claim, and shrinks to nothing when they wait: slow jobs are never hoarded away from
//! other workers, and a buffered job that waited a third of its lease is released unspent.

use super::{QueueSlots, Shared, executor};
use spooler_core::{JobClaim, JobFinish, JobRow, LeaseRef, Outcome};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

/// Buffered jobs that all started within this of their claim grow the prefetch.
const QUICK_START: Duration = Duration::from_millis(50);
/// A buffered job that waited this long shrinks the prefetch.
const SLOW_START: Duration = Duration::from_millis(500);

pub(crate) async fn run(
    shared: Arc<Shared>,
    slots: Arc<QueueSlots>,
    mut stop: watch::Receiver<bool>,
) {
    let mut wakeups = shared.store.subscribe();
    let poll = shared.settings.poll_interval;
    let max_claim = shared.settings.max_claim;
    let stale_after = shared.settings.lease / 3;
    let mut next_poll = Instant::now() + poll;
    // Whether the queue may hold more jobs than we took: true at start, after a full claim, on a
    // wake-up and on each poll.
    let mut work_waiting = true;
    let mut failures = 0u32;
    let mut buffer: VecDeque<JobRow> = VecDeque::new();
    let mut claimed_at = Instant::now();
    let mut prefetch: u32 = 0;
    loop {
        if *stop.borrow() {
            release(&shared, buffer.drain(..));
            return;
        }
        start_buffered(&shared, &slots, &mut buffer);
        if buffer.is_empty() {
            // Everything claimed has started, and slots are free again already: the jobs are
            // short, so claim further ahead. (Long jobs keep their slots: no growth.)
            let free_now = slots.concurrency > slots.running.load(Ordering::Acquire);
            if work_waiting && free_now && claimed_at.elapsed() <= QUICK_START {
                prefetch = (prefetch.max(slots.concurrency) * 2).min(max_claim);
            }
        } else {
            let waited = claimed_at.elapsed();
            if waited >= SLOW_START {
                prefetch /= 2;
            }
            if waited >= stale_after {
                // Slots stayed busy: hand these back unspent rather than let their leases lapse.
                release(&shared, buffer.drain(..));
                prefetch = 0;
            }
        }
        let running = slots.running.load(Ordering::Acquire);
        let free = slots.concurrency.saturating_sub(running);
        let buffered = buffer.len() as u32;
        // Claim when slots are free and nothing is buffered for them, or (pipelining) when the
        // buffer runs below half while jobs are running.
        let low = buffered == 0 || buffered < prefetch / 2;
        let want = (free + prefetch).saturating_sub(buffered).min(max_claim);
        if work_waiting && low && want > 0 && (free > 0 || prefetch > 0) {
            let claim = JobClaim {
                queues: vec![slots.name.clone()],
                kinds: shared.kinds.clone(),
                limit: want,
                worker_id: shared.id.to_string(),
                lease: shared.settings.lease,
            };
            match shared.store.job_claim(&claim).await {
                Ok(jobs) => {
                    failures = 0;
                    work_waiting = jobs.len() as u32 == want;
                    if !jobs.is_empty() {
                        metrics::counter!("spooler_jobs_claimed_total", "queue" => slots.name.clone())
                            .increment(jobs.len() as u64);
                        if buffer.is_empty() {
                            claimed_at = Instant::now();
                        }
                    }
                    buffer.extend(jobs);
                    if *stop.borrow() {
                        // Shutdown began while the claim was in flight: start nothing more.
                        release(&shared, buffer.drain(..));
                        return;
                    }
                    next_poll = Instant::now() + poll;
                    start_buffered(&shared, &slots, &mut buffer);
                    if work_waiting
                        && (slots.running.load(Ordering::Acquire) < slots.concurrency
                            || (buffer.len() as u32) < prefetch / 2)
                    {
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
        let stale_check = if buffer.is_empty() {
            next_poll
        } else {
            (claimed_at + stale_after).min(next_poll)
        };
        tokio::select! {
            _ = slots.freed.notified(), if work_waiting || !buffer.is_empty() => {}
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
            _ = tokio::time::sleep_until(stale_check) => {
                if Instant::now() >= next_poll {
                    work_waiting = true;
                    next_poll = Instant::now() + poll;
                }
            }
            _ = stop.changed() => {}
        }
    }
}

/// Starts buffered jobs while the queue has free slots.
fn start_buffered(shared: &Arc<Shared>, slots: &Arc<QueueSlots>, buffer: &mut VecDeque<JobRow>) {
    while !buffer.is_empty() && slots.running.load(Ordering::Acquire) < slots.concurrency {
        let Some(job) = buffer.pop_front() else {
            break;
        };
        slots.running.fetch_add(1, Ordering::AcqRel);
        executor::spawn(shared.clone(), slots.clone(), job);
    }
}

/// Hands claimed jobs that never started back to the queue without spending an attempt.
fn release(shared: &Shared, jobs: impl Iterator<Item = JobRow>) {
    for job in jobs {
        shared.completer.send(JobFinish {
            lease: LeaseRef {
                id: job.id,
                attempt: job.attempt,
            },
            outcome: Outcome::Released,
        });
    }
}
