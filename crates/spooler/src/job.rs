//! What a job is to the runtime: the typed `Job` and `BlockingJob` traits, the dynamic `Handler`,
//! the `JobContext` a run receives and the `JobError` outcomes it may return.

use async_trait::async_trait;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use spooler_core::JobRow;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a run that did not succeed wants to end.
#[derive(Debug, Clone, PartialEq)]
pub enum JobError {
    /// Failed; retry on the retry policy (or fail for good once attempts are exhausted).
    Retry(String),
    /// Failed; do not retry: the job becomes `failed` now.
    Fail(String),
    /// Stop: the job becomes `cancelled`.
    Cancel(String),
    /// Not now: run again after this long, without spending an attempt.
    Snooze(Duration),
}

impl JobError {
    /// A retryable failure.
    pub fn retry(message: impl Into<String>) -> Self {
        JobError::Retry(message.into())
    }

    /// A failure that must not be retried.
    pub fn fail(message: impl Into<String>) -> Self {
        JobError::Fail(message.into())
    }

    /// Cancels the job.
    pub fn cancel(message: impl Into<String>) -> Self {
        JobError::Cancel(message.into())
    }

    /// Runs the job again after `after` without spending an attempt.
    pub fn snooze(after: Duration) -> Self {
        JobError::Snooze(after)
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Retry(m) => write!(f, "{m}"),
            JobError::Fail(m) => write!(f, "{m} (not retried)"),
            JobError::Cancel(m) => write!(f, "cancelled: {m}"),
            JobError::Snooze(d) => write!(f, "snoozed for {}", spooler_core::format_duration(*d)),
        }
    }
}

/// Any error turns into a retryable failure carrying its message (and its causes), so `?` works in
/// `run` on every `std::error::Error`, on `anyhow::Error` and `Box<dyn Error + Send + Sync>`, and
/// on `String`/`&str` messages: whatever converts into a boxed error. `JobError` itself does not
/// implement `std::error::Error`, which is what makes this possible.
impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for JobError {
    fn from(e: E) -> Self {
        let e: Box<dyn std::error::Error + Send + Sync> = e.into();
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        JobError::Retry(message)
    }
}

/// The application's shared values a worker hands every job ([`crate::WorkerBuilder::state`]),
/// one per type.
#[derive(Clone, Default)]
pub(crate) struct AppState {
    values: Arc<std::collections::HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>>,
}

impl AppState {
    pub(crate) fn with<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        Arc::make_mut(&mut self.values).insert(std::any::TypeId::of::<T>(), Arc::new(value));
        self
    }

    fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.values
            .get(&std::any::TypeId::of::<T>())
            .and_then(|v| v.clone().downcast::<T>().ok())
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("values", &self.values.len())
            .finish()
    }
}

/// What a running job can see and say about its run.
#[derive(Debug, Clone)]
pub struct JobContext {
    job: Arc<JobRow>,
    worker_id: Arc<str>,
    cancelled: Arc<AtomicBool>,
    result: Arc<Mutex<Option<Value>>>,
    state: AppState,
}

impl JobContext {
    pub(crate) fn new(job: Arc<JobRow>, worker_id: Arc<str>, state: AppState) -> Self {
        Self {
            job,
            worker_id,
            cancelled: Arc::new(AtomicBool::new(false)),
            result: Arc::new(Mutex::new(None)),
            state,
        }
    }

    /// The application's value of type `T` the worker was given with
    /// [`WorkerBuilder::state`](crate::WorkerBuilder::state) (a database pool, an HTTP client):
    /// no globals. An error naming the type when the worker has none, so `?` retries the job.
    pub fn state<T: Send + Sync + 'static>(&self) -> Result<Arc<T>, JobError> {
        self.state.get::<T>().ok_or_else(|| {
            JobError::retry(format!(
                "worker {} was given no state of type {} (WorkerBuilder::state)",
                self.worker_id,
                std::any::type_name::<T>()
            ))
        })
    }

    /// The job's id.
    pub fn id(&self) -> i64 {
        self.job.id
    }

    /// This attempt's number, 1 for the first run.
    pub fn attempt(&self) -> i32 {
        self.job.attempt
    }

    /// Attempts allowed.
    pub fn max_attempts(&self) -> i32 {
        self.job.max_attempts
    }

    /// The job's queue.
    pub fn queue(&self) -> &str {
        &self.job.queue
    }

    /// The job's kind.
    pub fn kind(&self) -> &str {
        &self.job.kind
    }

    /// The whole job row as claimed.
    pub fn job(&self) -> &JobRow {
        &self.job
    }

    /// The id of the worker running it.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// True once the run should stop: cancellation was requested, the lease was lost, the timeout
    /// passed or the worker is shutting down. Async jobs are also stopped at their next `.await`;
    /// blocking jobs should check this between steps.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Keeps a small JSON value on the job as its result.
    pub fn set_result(&self, value: Value) {
        *self.result.lock().expect("result lock") = Some(value);
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub(crate) fn take_result(&self) -> Option<Value> {
        self.result.lock().expect("result lock").take()
    }
}

/// A typed job that runs on the async runtime. Its fields are its arguments (serialized as JSON).
pub trait Job: Serialize + DeserializeOwned + Send + 'static {
    /// Names the handler; stored with each job.
    const KIND: &'static str;
    /// The queue it goes to unless the enqueue says otherwise.
    const QUEUE: &'static str = spooler_core::DEFAULT_QUEUE;
    /// Attempts allowed unless the enqueue says otherwise; `None` takes the queue's default (a
    /// queue's `max_attempts` in the server's config), else
    /// [`DEFAULT_MAX_ATTEMPTS`](spooler_core::DEFAULT_MAX_ATTEMPTS).
    const MAX_ATTEMPTS: Option<i32> = None;
    /// Priority unless the enqueue says otherwise.
    const PRIORITY: i32 = 0;

    /// Runs the job. `Err` values choose what happens next (see [`JobError`]); a panic is a
    /// retryable failure carrying the panic message.
    fn run(self, ctx: JobContext) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// A typed job whose work blocks (CPU, synchronous I/O): it runs on the blocking thread pool.
pub trait BlockingJob: Serialize + DeserializeOwned + Send + 'static {
    /// Names the handler; stored with each job.
    const KIND: &'static str;
    /// The queue it goes to unless the enqueue says otherwise.
    const QUEUE: &'static str = spooler_core::DEFAULT_QUEUE;
    /// Attempts allowed unless the enqueue says otherwise; `None` takes the queue's default (a
    /// queue's `max_attempts` in the server's config), else
    /// [`DEFAULT_MAX_ATTEMPTS`](spooler_core::DEFAULT_MAX_ATTEMPTS).
    const MAX_ATTEMPTS: Option<i32> = None;
    /// Priority unless the enqueue says otherwise.
    const PRIORITY: i32 = 0;

    /// Runs the job on a blocking thread. A thread cannot be interrupted: when the job times out,
    /// is cancelled, loses its lease or outlives a shutdown's grace period, its outcome is
    /// recorded at once but the thread runs on, holding its slot of the queue's concurrency, until
    /// `run` returns. To be stoppable, check [`JobContext::is_cancelled`] between steps and return
    /// when it turns true.
    fn run(self, ctx: JobContext) -> Result<(), JobError>;
}

/// A handler for jobs of one kind with JSON arguments: what typed jobs become, and what the job
/// server's built-in kinds implement directly.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one job; `Ok(Some(value))` keeps `value` as the job's result.
    async fn run(&self, args: Value, ctx: JobContext) -> Result<Option<Value>, JobError>;

    /// Whether it runs on the blocking pool (only for typed blocking jobs).
    #[doc(hidden)]
    fn is_blocking(&self) -> bool {
        false
    }
}

fn bad_args(kind: &str, e: serde_json::Error) -> JobError {
    JobError::Fail(format!("arguments of {kind} job do not decode: {e}"))
}

pub(crate) struct TypedHandler<J>(std::marker::PhantomData<fn() -> J>);

impl<J> TypedHandler<J> {
    pub(crate) fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

#[async_trait]
impl<J: Job> Handler for TypedHandler<J> {
    async fn run(&self, args: Value, ctx: JobContext) -> Result<Option<Value>, JobError> {
        let job: J = serde_json::from_value(args).map_err(|e| bad_args(J::KIND, e))?;
        job.run(ctx.clone()).await?;
        Ok(ctx.take_result())
    }
}

pub(crate) struct BlockingHandler<J>(std::marker::PhantomData<fn() -> J>);

impl<J> BlockingHandler<J> {
    pub(crate) fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

#[async_trait]
impl<J: BlockingJob> Handler for BlockingHandler<J> {
    async fn run(&self, args: Value, ctx: JobContext) -> Result<Option<Value>, JobError> {
        // Called from inside `spawn_blocking` by the executor (see `is_blocking`).
        let job: J = serde_json::from_value(args).map_err(|e| bad_args(J::KIND, e))?;
        job.run(ctx.clone())?;
        Ok(ctx.take_result())
    }

    fn is_blocking(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_become_retries_with_their_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(JobError::from(io), JobError::Retry("refused".into()));
    }
}
