//! The producer of one queue: claims jobs in batches, starts them as slots free, and keeps a small
//! adaptive buffer of claimed jobs so that a stream of short jobs costs one claim per many jobs.
//!
//! Claims happen when woken by an insert, when the buffer runs low while work is waiting, or on
//! the poll interval. The buffer (prefetch) grows while buffered jobs start within moments of
//! their claim, and shrinks to nothing when they wait: slow jobs are never hoarded away from
//! other workers, and a buffered job that waited a third of its lease is released unspent.

use super::{QueueSlots, Shared, executor};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use spooler_core::{JobClaim, JobFinish, JobRow, Outcome, StoreResult};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

/// Buffered jobs that all started within this of their claim grow the prefetch.
const QUICK_START: Duration = Duration::from_millis(50);
/// A buffered job that waited this long shrinks the prefetch.
const SLOW_START: Duration = Duration::from_millis(500);

/// A claim under way: how many jobs it asked for, the wake-up count when it was sent, its result.
type ClaimUnderWay = Pin<Box<dyn Future<Output = (u32, u64, StoreResult<Vec<JobRow>>)> + Send>>;

pub(crate) async fn run(
    shared: Arc<Shared>,
    slots: Arc<QueueSlots>,
    mut stop: watch::Receiver<bool>,
) {
    let mut wakeups = shared.store.subscribe();
    let poll = shared.settings.poll_interval;
    let max_claim = shared.settings.max_claim;
    let most_in_flight = shared.settings.claims_in_flight as usize;
    let stale_after = shared.settings.lease / 3;
    let mut next_poll = Instant::now() + poll;
    // Whether the queue may hold more jobs than we took: true at start, after a full claim, on a
    // wake-up and on each poll.
    let mut work_waiting = true;
    // Wake-ups and polls seen so far: a short claim sent before the latest one does not prove
    // the queue empty.
    let mut woken: u64 = 0;
    // Whether the last claim came back full: only then may several be under way.
    let mut backlog = false;
    let mut failures = 0u32;
    // Claimed jobs not started yet, oldest first, each with when its claim returned.
    let mut buffer: VecDeque<(Instant, JobRow)> = VecDeque::new();
    let mut claims: FuturesUnordered<ClaimUnderWay> = FuturesUnordered::new();
    // Jobs asked for by the claims under way.
    let mut asked: u32 = 0;
    // When the last claim that brought jobs returned; `None` until one did, so a worker that
    // just started does not take its first claim for a quick one and claim ahead.
    let mut claimed_at: Option<Instant> = None;
    let mut prefetch: u32 = 0;
    loop {
        if *stop.borrow() {
            // Nothing starts once shutdown began: claims under way are awaited and what they
            // took is handed back with the buffer.
            release(&shared, buffer.drain(..).map(|(_, job)| job));
            while let Some((_, _, result)) = claims.next().await {
                if let Ok(jobs) = result {
                    release(&shared, jobs.into_iter());
                }
            }
            return;
        }
        start_buffered(&shared, &slots, &mut buffer);
        if buffer.is_empty() {
            // Everything claimed has started, and slots are free again soon after the last claim
            // returned: the jobs are short, so claim further ahead. (Long jobs keep their slots:
            // no growth.)
            let free_now = slots.concurrency > slots.running.load(Ordering::Acquire);
            let quick = claimed_at.is_some_and(|at| at.elapsed() <= QUICK_START);
            if work_waiting && free_now && quick {
                prefetch = (prefetch.max(slots.concurrency) * 2)
                    .min(max_claim.saturating_mul(most_in_flight as u32));
            }
        } else {
            // The oldest buffered job's wait (buffered jobs start oldest first).
            let waited = buffer
                .front()
                .map_or(Duration::ZERO, |(at, _)| at.elapsed());
            if waited >= SLOW_START {
                prefetch /= 2;
            }
            if waited >= stale_after {
                // Slots stayed busy: hand these back unspent rather than let their leases lapse.
                release(&shared, buffer.drain(..).map(|(_, job)| job));
                prefetch = 0;
            }
        }
        let running = slots.running.load(Ordering::Acquire);
        let free = slots.concurrency.saturating_sub(running);
        // Jobs held or coming: buffered, and asked for by claims under way.
        let ahead = buffer.len() as u32 + asked;
        let want = (free + prefetch).saturating_sub(ahead).min(max_claim);
        // The first claim goes when slots are free and nothing is held for them, or (pipelining)
        // when what is held runs below half the prefetch; more go, while a backlog waits, as
        // long as they would not take more than slots and prefetch hold.
        let send = if claims.is_empty() {
            ahead == 0 || ahead < prefetch / 2
        } else {
            backlog && claims.len() < most_in_flight
        };
        if work_waiting && send && want > 0 && (free > 0 || prefetch > 0) {
            let claim = JobClaim {
                queues: vec![slots.name.clone()],
                kinds: shared.kinds.clone(),
                limit: want,
                worker_id: shared.id.to_string(),
                lease: shared.settings.lease,
            };
            let store = shared.store.clone();
            let sent_at = woken;
            asked += want;
            claims.push(Box::pin(async move {
                let result = store.job_claim(&claim).await;
                (claim.limit, sent_at, result)
            }));
            continue;
        }
        let stale_check = match buffer.front() {
            None => next_poll,
            Some((at, _)) => (*at + stale_after).min(next_poll),
        };
        tokio::select! {
            Some((limit, sent_at, result)) = claims.next(), if !claims.is_empty() => {
                asked -= limit;
                match result {
                    Ok(jobs) => {
                        failures = 0;
                        backlog = jobs.len() as u32 == limit;
                        // A short claim means the queue is empty, unless a wake-up came since.
                        work_waiting = backlog || sent_at != woken;
                        let now = Instant::now();
                        if !jobs.is_empty() {
                            metrics::counter!("spooler_jobs_claimed_total", "queue" => slots.name.clone())
                                .increment(jobs.len() as u64);
                            claimed_at = Some(now);
                        }
                        buffer.extend(jobs.into_iter().map(|job| (now, job)));
                        next_poll = now + poll;
                    }
                    Err(e) => {
                        failures += 1;
                        work_waiting = false;
                        backlog = false;
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
            _ = slots.freed.notified(), if work_waiting || !buffer.is_empty() => {}
            wake = wakeups.recv() => match wake {
                Ok(w) if w.queue == slots.name => {
                    work_waiting = true;
                    woken += 1;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    work_waiting = true;
                    woken += 1;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    // The store went away: fall back to polling.
                    wakeups = shared.store.subscribe();
                    tokio::time::sleep_until(next_poll).await;
                }
            },
            _ = tokio::time::sleep_until(stale_check) => {
                if Instant::now() >= next_poll {
                    work_waiting = true;
                    woken += 1;
                    next_poll = Instant::now() + poll;
                }
            }
            _ = stop.changed() => {}
        }
    }
}

/// Starts buffered jobs while the queue has free slots.
fn start_buffered(
    shared: &Arc<Shared>,
    slots: &Arc<QueueSlots>,
    buffer: &mut VecDeque<(Instant, JobRow)>,
) {
    while !buffer.is_empty() && slots.running.load(Ordering::Acquire) < slots.concurrency {
        let Some((_, job)) = buffer.pop_front() else {
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
            lease: job.lease(),
            outcome: Outcome::Released,
        });
    }
}
