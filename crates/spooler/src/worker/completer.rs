//! The completer: collects finished attempts from every executor and writes them many per store
//! call, so a burst of completions costs one transaction.

use super::Signal;
use spooler_core::{JobFinish, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most outcomes written in one call.
const MAX_BATCH: usize = 1000;

#[derive(Clone, Copy)]
struct Limits {
    deadline: Duration,
    give_up_after: Duration,
}

enum Message {
    Finish(JobFinish),
    /// Flush, then stop: the worker has stopped, and nothing is written behind its back.
    Close(oneshot::Sender<()>),
}

/// Sends outcomes to the completer task.
pub(crate) struct CompleterHandle {
    tx: mpsc::UnboundedSender<Message>,
}

impl CompleterHandle {
    /// Starts the completer task. Each write may take `deadline`; one that fails or times out is
    /// retried for up to `give_up_after` (the lease: after that the job is rescued and runs again
    /// anyway; a retried write is fenced, so one that landed after all is not applied twice).
    /// `flushed` is told of each batch written.
    pub(crate) fn start(
        store: Arc<dyn Store>,
        deadline: Duration,
        give_up_after: Duration,
        flushed: Signal,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let limits = Limits {
            deadline,
            give_up_after,
        };
        tokio::spawn(run(store, rx, limits, flushed));
        Self { tx }
    }

    pub(crate) fn send(&self, finish: JobFinish) {
        if self.tx.send(Message::Finish(finish)).is_err() {
            tracing::error!(
                "completer stopped: an outcome was not recorded; the job will be rescued when its lease expires"
            );
        }
    }

    /// Waits until everything sent before this call is written, then stops the completer: an
    /// outcome sent later is not written (it is logged, and the job is rescued after its lease),
    /// as when the process exits.
    pub(crate) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Message>,
    limits: Limits,
    flushed: Signal,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut closes = Vec::new();
    let mut closing = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Finish(f) => batch.push(f),
                Message::Close(ack) => {
                    closes.push(ack);
                    closing = true;
                }
            }
            next = if batch.len() < MAX_BATCH && !closing {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !batch.is_empty() {
            write(&*store, &batch, limits).await;
            batch.clear();
            flushed.notify();
        }
        for ack in closes.drain(..) {
            let _ = ack.send(());
        }
        if closing {
            rx.close();
            while let Ok(message) = rx.try_recv() {
                let Message::Finish(f) = message else {
                    continue;
                };
                tracing::error!(
                    job = f.lease.id,
                    "an outcome came after the worker stopped and was not recorded; the job runs again once its lease expires"
                );
            }
            return;
        }
    }
}

async fn write(store: &dyn Store, batch: &[JobFinish], limits: Limits) {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let result = match tokio::time::timeout(limits.deadline, store.job_finish_many(batch)).await
        {
            Ok(result) => result,
            Err(_) => Err(spooler_core::StoreError::Unavailable {
                message: format!(
                    "no answer within {}",
                    spooler_core::format_duration(limits.deadline)
                ),
            }),
        };
        match result {
            Ok(acks) => {
                for (finish, accepted) in batch.iter().zip(acks) {
                    if !accepted {
                        metrics::counter!(crate::metrics::JOBS_REJECTED).increment(1);
                        tracing::warn!(
                            job = finish.lease.id,
                            fence = finish.lease.fence,
                            "result rejected: the lease was lost and the job is another worker's now"
                        );
                    }
                }
                return;
            }
            Err(e) if started.elapsed() + pause < limits.give_up_after => {
                crate::metrics::store_error("record");
                tracing::warn!(store = %store.describe(), error = %e, jobs = batch.len(), "recording outcomes failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                crate::metrics::store_error("record");
                tracing::error!(
                    store = %store.describe(),
                    error = %e,
                    jobs = batch.len(),
                    "recording outcomes failed; giving up: these jobs run again once their leases expire"
                );
                return;
            }
        }
    }
}
