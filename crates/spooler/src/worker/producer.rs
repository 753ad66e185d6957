//! The producer of one queue: claims jobs in batches, starts them as slots free, and keeps a small
//! adaptive buffer of claimed jobs so that a stream of short jobs costs one claim per many jobs.
//!
//! Claims happen when woken by an insert, when the buffer runs low while work is waiting, or on
//! the poll interval. The buffer (prefetch) grows while buffered jobs start within moments of
//! their claim, and shrinks to nothing when they wait: slow jobs are never hoarded away from
//! other workers, and a buffered job that waited a third of its lease is released unspent.
//!
//! Those decisions are the [`ClaimPlanner`]'s (`planner.rs`); this loop only does the I/O.

use super::planner::{Ask, Buffered, ClaimPlanner, PlannerSettings};
use super::{QueueSlots, Shared, executor};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use spooler_core::{Claimed, JobClaim, JobFinish, JobRow, Outcome, StoreResult};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

/// A claim under way: what the planner asked for, and its result.
type ClaimUnderWay = Pin<Box<dyn Future<Output = (Ask, Instant, StoreResult<Claimed>)> + Send>>;

/// A claimed job waiting for a slot.
struct Waiting {
    /// When its claim returned.
    at: Instant,
    /// Until when its lease is surely held: the claim's send time plus the lease.
    held_until: Instant,
    job: JobRow,
}

/// The producer task of one queue, in the shape of every background task here (`Maintenance`,
/// `Heartbeat`): made with `new`, looped by `run` until told to stop.
pub(crate) struct Producer {
    shared: Arc<Shared>,
    slots: Arc<QueueSlots>,
}

impl Producer {
    pub(crate) fn new(shared: Arc<Shared>, slots: Arc<QueueSlots>) -> Self {
        Self { shared, slots }
    }

    /// Claims and starts jobs until `stop` turns true; then hands back what it claimed but did
    /// not start.
    pub(crate) async fn run(self, stop: watch::Receiver<bool>) {
        run(self.shared, self.slots, stop).await
    }
}

/// Does the I/O the [`ClaimPlanner`] asks for: claims, starts and releases jobs, and tells the
/// planner what happened (claims returned, wake-ups, polls, buffered jobs' waits).
async fn run(shared: Arc<Shared>, slots: Arc<QueueSlots>, mut stop: watch::Receiver<bool>) {
    let mut wakeups = shared.store.subscribe();
    let signals = &shared.signals;
    let mut planner = ClaimPlanner::new(
        PlannerSettings {
            concurrency: slots.concurrency,
            max_claim: shared.settings.max_claim,
            claims_in_flight: shared.settings.claims_in_flight,
            lease: shared.settings.lease,
            poll_interval: shared.settings.poll_interval,
        },
        Instant::now(),
    );
    // Claimed jobs not started yet, oldest first.
    let mut buffer: VecDeque<Waiting> = VecDeque::new();
    let mut claims: FuturesUnordered<ClaimUnderWay> = FuturesUnordered::new();
    loop {
        if *stop.borrow() {
            // Nothing starts once shutdown began: claims under way are awaited and what they
            // took is handed back with the buffer.
            release(&shared, buffer.drain(..).map(|c| c.job));
            while let Some((_, _, result)) = claims.next().await {
                if let Ok(claimed) = result {
                    release(&shared, claimed.jobs.into_iter());
                }
            }
            return;
        }
        start_buffered(&shared, &slots, &mut buffer);
        let now = Instant::now();
        let free = slots
            .concurrency
            .saturating_sub(slots.running.load(Ordering::Acquire));
        match buffer.front() {
            None => planner.buffer_empty(now, free),
            Some(first) => {
                if planner.buffer_waited(now.saturating_duration_since(first.at))
                    == Buffered::Release
                {
                    release(&shared, buffer.drain(..).map(|c| c.job));
                }
            }
        }
        if let Some(ask) = planner.next_claim(free, buffer.len() as u32) {
            let claim = JobClaim {
                queues: vec![slots.name.clone()],
                kinds: shared.kinds.clone(),
                limit: ask.limit,
                worker_id: shared.id.to_string(),
                lease: shared.settings.lease,
            };
            let store = shared.store.clone();
            let deadline = shared.settings.store_deadline();
            claims.push(Box::pin(async move {
                let sent = Instant::now();
                let result = match tokio::time::timeout(deadline, store.job_claim(&claim)).await {
                    Ok(result) => result,
                    // A claim that committed all the same leaves its jobs running until their
                    // lease lapses; they are rescued then.
                    Err(_) => Err(spooler_core::StoreError::Unavailable {
                        message: format!(
                            "{}: the claim got no answer within {}",
                            store.describe(),
                            spooler_core::format_duration(deadline)
                        ),
                    }),
                };
                (ask, sent, result)
            }));
            continue;
        }
        if planner.claims_under_way() == 0 {
            signals.idle.notify();
        }
        let wake_at = planner.wake_at(buffer.front().map(|c| c.at));
        tokio::select! {
            Some((ask, sent, result)) = claims.next(), if !claims.is_empty() => {
                let now = Instant::now();
                match result {
                    Ok(Claimed { jobs, held_back }) => {
                        planner.claim_returned(ask, jobs.len() as u32, held_back, now);
                        if !jobs.is_empty() {
                            metrics::counter!(crate::metrics::JOBS_CLAIMED, "queue" => slots.name.clone())
                                .increment(jobs.len() as u64);
                        }
                        let held_until = sent + shared.settings.lease;
                        buffer.extend(jobs.into_iter().map(|job| Waiting { at: now, held_until, job }));
                        signals.claimed.notify();
                    }
                    Err(e) => {
                        let backoff = planner.claim_failed(ask, now);
                        crate::metrics::store_error("claim");
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
            _ = slots.freed.notified(), if planner.wants_free_slots(buffer.len()) => {}
            wake = wakeups.recv() => match wake {
                Ok(w) if w.queue == slots.name => planner.woken(),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => planner.woken(),
                Err(broadcast::error::RecvError::Closed) => {
                    // The store went away: fall back to polling.
                    wakeups = shared.store.subscribe();
                    tokio::time::sleep_until(planner.next_poll()).await;
                }
            },
            _ = tokio::time::sleep_until(wake_at) => planner.timer_fired(Instant::now()),
            _ = stop.changed() => {}
        }
    }
}

/// Starts buffered jobs while the queue has free slots.
fn start_buffered(shared: &Arc<Shared>, slots: &Arc<QueueSlots>, buffer: &mut VecDeque<Waiting>) {
    while !buffer.is_empty() && slots.running.load(Ordering::Acquire) < slots.concurrency {
        let Some(claimed) = buffer.pop_front() else {
            break;
        };
        slots.running.fetch_add(1, Ordering::AcqRel);
        executor::spawn(
            shared.clone(),
            slots.clone(),
            claimed.job,
            claimed.held_until,
        );
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
