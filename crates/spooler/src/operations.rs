//! Operations by filter from the client (start, drive, read, cancel) and the runner that resumes
//! every running operation, so one survives a restart of the process that started it.

use crate::{Client, Error};
use spooler_core::{BulkAction, JobFilter, MAX_CHUNK, Operation, OperationNew, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// After a chunk that took `busy`, an operation waits this many times as long (at most
/// [`MAX_PAUSE`]): its chunks take a thirteenth of the time it runs, so the jobs workers claim and
/// finish beside it keep most of the store's write capacity (on SQLite, its one writer). Measured
/// on a million-job store, an unpaced retry of 100,000 jobs cut a worker's drain rate to a fifth
/// while it ran, a pause of 4× to 0.61-0.75×, and this one left it at 0.71-1.13× (mean 0.90);
/// that retry then takes 6-8 s on SQLite and 26 s on Postgres (docs/performance.md).
pub const PAUSE_PER_BUSY: u32 = 12;

/// The longest pause between two chunks.
pub const MAX_PAUSE: Duration = Duration::from_secs(2);

fn pause_after(busy: Duration) -> Duration {
    (busy * PAUSE_PER_BUSY).min(MAX_PAUSE)
}

impl Client {
    /// How many jobs match `filter` now: what an operation would cover (a dry run).
    pub async fn count(&self, filter: &JobFilter) -> Result<i64, Error> {
        Ok(self.store().job_count(filter).await?)
    }

    /// Creates an operation applying `action` to every job matching `filter` now, in chunks of
    /// at most 1,000 jobs per transaction, and starts driving it on this runtime. It is durable:
    /// if this process stops, an [`OperationRunner`] (every worker runs one) resumes it where
    /// the last chunk left it.
    pub async fn bulk(&self, action: BulkAction, filter: JobFilter) -> Result<Operation, Error> {
        let op = self.bulk_create(action, filter, MAX_CHUNK).await?;
        let client = self.clone();
        let id = op.id;
        tokio::spawn(async move {
            if let Err(e) = client.operation_drive(id).await {
                tracing::warn!(operation = id, error = %e, "operation stopped; a runner will resume it");
            }
        });
        Ok(op)
    }

    /// Creates an operation without driving it, with `chunk` jobs per transaction (1–1,000).
    pub async fn bulk_create(
        &self,
        action: BulkAction,
        filter: JobFilter,
        chunk: u32,
    ) -> Result<Operation, Error> {
        let op = self
            .store()
            .operation_create(&OperationNew {
                action,
                filter,
                chunk,
            })
            .await?;
        tracing::info!(operation = op.id, action = %op.action, matched = op.matched, "operation created");
        Ok(op)
    }

    /// Runs an operation's chunks here until it is finished (or cancelled); returns it then.
    pub async fn operation_drive(&self, id: i64) -> Result<Operation, Error> {
        self.operation_drive_with(id, |_| {}).await
    }

    /// [`Client::operation_drive`] that shows `progress` the operation after every chunk.
    pub async fn operation_drive_with(
        &self,
        id: i64,
        mut progress: impl FnMut(&Operation),
    ) -> Result<Operation, Error> {
        loop {
            let started = tokio::time::Instant::now();
            let op = self.store().operation_step(id).await?;
            if !op.is_running() {
                return Ok(op);
            }
            progress(&op);
            tokio::time::sleep(pause_after(started.elapsed())).await;
        }
    }

    /// The operation as stored now; `OperationNotFound` if there is none.
    pub async fn operation(&self, id: i64) -> Result<Operation, Error> {
        self.store()
            .operation_get(id)
            .await?
            .ok_or(Error::Store(StoreError::OperationNotFound { id }))
    }

    /// Stops a running operation; what it did so far stays done.
    pub async fn operation_cancel(&self, id: i64) -> Result<Operation, Error> {
        Ok(self.store().operation_cancel(id).await?)
    }
}

/// Resumes running operations: every `interval` it drives each to its end. Any number of runners
/// may share a store; each chunk is one transaction that locks the operation, so they take turns.
#[derive(Debug, Clone)]
pub struct OperationRunner {
    client: Client,
    interval: Duration,
}

impl OperationRunner {
    /// A runner over `store` looking for work every second.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            client: Client::new(store),
            interval: Duration::from_secs(1),
        }
    }

    /// Looks for work every `interval` instead.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Drives every running operation to its end; returns how many it finished.
    pub async fn run_once(&self) -> Result<usize, Error> {
        let mut finished = 0;
        for op in self.client.store().operation_list_running().await? {
            tracing::info!(
                operation = op.id,
                done_through = op.done_through,
                max_id = op.max_id,
                "resuming operation"
            );
            let op = self.client.operation_drive(op.id).await?;
            tracing::info!(operation = op.id, state = ?op.state, affected = op.affected, skipped = op.skipped, "operation finished");
            finished += 1;
        }
        Ok(finished)
    }

    /// Loops [`OperationRunner::run_once`] every interval until `stop` turns true.
    pub async fn run(&self, stop: watch::Receiver<bool>) {
        crate::every::every(self.interval, stop, || async {
            if let Err(e) = self.run_once().await {
                tracing::warn!(store = %self.client.store().describe(), error = %e, "running operations failed; will try again");
            }
        })
        .await;
    }
}
