//! Runs one claimed job: its handler under the timeout, a panic caught as a failure, stopped from
//! outside on cancel, lost lease or shutdown; the outcome goes to the completer.

use super::{Abort, QueueSlots, RunningJob, Shared};
use crate::job::{JobContext, JobError};
use futures::FutureExt;
use spooler_core::{
    Facts, JobFinish, JobRow, JobState, Outcome, clock::add, decide, format_duration,
};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::sync::oneshot;
use tracing::Instrument;

/// How a run ended, before it is mapped to a stored outcome.
enum RunEnd {
    Returned(Result<Option<serde_json::Value>, JobError>),
    Panicked(String),
    TimedOut(std::time::Duration),
    Aborted(Abort),
}

/// Hands a claimed job to a new task. The job is registered as running before this returns, so
/// heartbeats renew its lease and a shutdown that starts before the task is first polled still
/// sees it, and stops it, instead of waiting on a job it does not know about.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    slots: Arc<QueueSlots>,
    job: JobRow,
    held_until: tokio::time::Instant,
) {
    let (abort_tx, abort_rx) = oneshot::channel();
    shared.running.lock().expect("running lock").insert(
        job.lease(),
        RunningJob {
            abort: Some(abort_tx),
            held_until,
        },
    );
    let slot = Arc::new(Slot(slots));
    // Everything the run logs, the handler's own lines included, carries the job.
    let span = tracing::info_span!(
        "job",
        job = job.id,
        kind = %job.kind,
        queue = %job.queue,
        attempt = job.attempt,
        worker = %shared.id,
        trace_id = crate::trace::trace_id(&job.meta),
    );
    // The run continues the trace of the span that enqueued the job.
    crate::trace::continue_trace(
        &span,
        job.meta
            .get(spooler_core::TRACEPARENT)
            .and_then(|t| t.as_str()),
    );
    tokio::spawn(run(shared, slot, job, abort_rx).instrument(span));
}

/// A taken slot of a queue, freed when the last holder lets go: the run's task, and for a
/// blocking job also its thread, which may outlive the run when the job timed out or was stopped.
struct Slot(Arc<QueueSlots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_one();
    }
}

async fn run(
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    job: JobRow,
    abort_rx: oneshot::Receiver<Abort>,
) {
    let job = Arc::new(job);
    let lease = job.lease();
    if let Some(started_at) = job.started_at {
        // Runnable since its run_at (enqueue time, the end of a delay or a backoff).
        let waited = (started_at - job.run_at).to_std().unwrap_or_default();
        metrics::histogram!(
            crate::metrics::JOB_WAIT_SECONDS,
            "queue" => job.queue.clone(),
            "kind" => job.kind.clone()
        )
        .record(waited.as_secs_f64());
    }
    let running = metrics::gauge!(crate::metrics::JOBS_RUNNING, "queue" => job.queue.clone());
    running.increment(1.0);
    let ctx = JobContext::new(job.clone(), shared.id.clone(), shared.state.clone());
    let started = Instant::now();
    let handler = shared.handlers.get(&job.kind).cloned();
    let blocking = handler.as_ref().is_some_and(|h| h.is_blocking());
    let end = match handler {
        None => RunEnd::Returned(Err(JobError::Retry(format!(
            "worker {} has no handler for kind {}",
            shared.id, job.kind
        )))),
        Some(handler) => {
            let timeout = job.timeout.or(shared.settings.default_timeout);
            let args = job.args.clone();
            let handler_ctx = ctx.clone();
            let thread_slot = slot.clone();
            let work = async move {
                if handler.is_blocking() {
                    let rt = tokio::runtime::Handle::current();
                    let span = tracing::Span::current();
                    // The thread holds the slot until it returns, even past a timeout or a stop:
                    // it cannot be interrupted, and the queue's concurrency must not be exceeded.
                    match tokio::task::spawn_blocking(move || {
                        let _slot = thread_slot;
                        let _span = span.enter();
                        rt.block_on(handler.run(args, handler_ctx))
                    })
                    .await
                    {
                        Ok(result) => RunEnd::Returned(result),
                        Err(e) if e.is_panic() => RunEnd::Panicked(panic_message(e.into_panic())),
                        Err(e) => RunEnd::Panicked(e.to_string()),
                    }
                } else {
                    match AssertUnwindSafe(handler.run(args, handler_ctx))
                        .catch_unwind()
                        .await
                    {
                        Ok(result) => RunEnd::Returned(result),
                        Err(payload) => RunEnd::Panicked(panic_message(payload)),
                    }
                }
            };
            let timed = async move {
                match timeout {
                    Some(t) => tokio::time::timeout(t, work)
                        .await
                        .unwrap_or(RunEnd::TimedOut(t)),
                    None => work.await,
                }
            };
            let aborted = async move {
                match abort_rx.await {
                    Ok(why) => why,
                    Err(_) => std::future::pending().await,
                }
            };
            tokio::select! {
                end = timed => end,
                why = aborted => RunEnd::Aborted(why),
            }
        }
    };
    ctx.cancel();
    let elapsed = started.elapsed();
    if let Some(delay) = shared.settings.test_outcome_delay {
        tokio::time::sleep(delay).await;
    }

    let now = shared.store.clock().now();
    let retry = |error: String| Outcome::Retry {
        error,
        at: shared
            .settings
            .retry
            .retry_at(&job.queue, &job.kind, job.attempt, now),
    };
    let outcome = match end {
        RunEnd::Returned(Ok(result)) => Some(Outcome::Completed { result }),
        RunEnd::Returned(Err(JobError::Retry(message))) => Some(retry(message)),
        RunEnd::Returned(Err(JobError::Fail(message))) => Some(Outcome::Failed { error: message }),
        RunEnd::Returned(Err(JobError::Cancel(reason))) => Some(Outcome::Cancelled { reason }),
        RunEnd::Returned(Err(JobError::Snooze(d))) => Some(Outcome::Snoozed { until: add(now, d) }),
        RunEnd::Panicked(message) => Some(retry(format!("panicked: {message}"))),
        RunEnd::TimedOut(t) if blocking => Some(retry(format!(
            "timed out after {} (a blocking job cannot be interrupted: its thread runs on, holding its slot, until it returns; check JobContext::is_cancelled to stop early)",
            format_duration(t)
        ))),
        RunEnd::TimedOut(t) => Some(retry(format!("timed out after {}", format_duration(t)))),
        RunEnd::Aborted(Abort::CancelRequested) => Some(Outcome::Cancelled {
            reason: "cancellation requested".into(),
        }),
        RunEnd::Aborted(Abort::Shutdown) => Some(Outcome::Interrupted),
        RunEnd::Aborted(Abort::LeaseLost) => None,
    };
    match &outcome {
        Some(o) => {
            // What the store will decide, as far as this worker knows the job (a cancel asked
            // since its last heartbeat is seen only by the store's write). A completion needs
            // no decision to label, and makes none on this path.
            let expected = o.reads_facts().then(|| decide(o, &Facts::from(&*job), now));
            let label = outcome_label(o, expected.as_ref().map(|t| t.state));
            metrics::counter!(
                crate::metrics::JOBS_FINISHED,
                "queue" => job.queue.clone(),
                "kind" => job.kind.clone(),
                "outcome" => label
            )
            .increment(1);
            metrics::histogram!(
                crate::metrics::JOB_RUN_SECONDS,
                "queue" => job.queue.clone(),
                "kind" => job.kind.clone()
            )
            .record(elapsed.as_secs_f64());
            let error = match (o, &expected) {
                (Outcome::Failed { error }, _) => Some(error.as_str()),
                (_, Some(t)) => t.error.as_ref().map(|e| e.message.as_str()),
                _ => None,
            };
            if let Some(error) = error {
                tracing::warn!(job = job.id, kind = %job.kind, attempt = job.attempt, error = %error, "job {label}");
            }
        }
        None => tracing::warn!(
            job = job.id,
            attempt = job.attempt,
            "lease lost: another worker owns the job now; this run's result is dropped"
        ),
    }
    // The outcome is handed to the completer before the job leaves the running set: a shutdown
    // that sees no job running flushes the completer after every outcome reached it.
    if let Some(outcome) = outcome {
        shared.completer.send(JobFinish { lease, outcome });
    }
    shared.running.lock().expect("running lock").remove(&lease);
    running.decrement(1.0);
    drop(slot);
    shared.idle.notify_waiters();
}

/// The metric label of an outcome, given the state the worker expects it to lead to (known
/// without deciding for the outcomes that read no facts).
fn outcome_label(o: &Outcome, next: Option<JobState>) -> &'static str {
    match (o, next) {
        (Outcome::Completed { .. }, _) => "completed",
        (Outcome::Failed { .. }, _) => "failed",
        (Outcome::Cancelled { .. }, _) => "cancelled",
        (Outcome::Snoozed { .. }, _) => "snoozed",
        (Outcome::Released, _) => "released",
        (Outcome::Interrupted, _) => "interrupted",
        (_, Some(JobState::Failed)) => "failed",
        (_, Some(JobState::Cancelled)) => "cancelled",
        _ => "retried",
    }
}

pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
