//! The library's error type: a store fault, bad job arguments, a bad worker configuration, a wait
//! that timed out, or a worker task that ended abnormally.

use spooler_core::StoreError;

/// An error from the client or the worker runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed or refused the request.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A job's arguments could not be turned into JSON.
    #[error("cannot serialize the arguments of a {kind} job: {source}")]
    Args {
        /// The job's kind.
        kind: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The worker's configuration is invalid.
    #[error("invalid worker configuration: {key}: {message}")]
    Config {
        /// The setting at fault.
        key: String,
        /// What is wrong and the fix.
        message: String,
    },
    /// Something awaited did not happen in time (the test kit's [`drain`](crate::testing::drain)).
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited, and what stood in the way.
        what: String,
        /// How long it waited.
        after: std::time::Duration,
    },
    /// The worker's task ended abnormally (it panicked or was aborted) instead of stopping.
    #[error("worker {worker} stopped abnormally: {message}")]
    WorkerTask {
        /// The worker's id.
        worker: String,
        /// What the runtime reported.
        message: String,
    },
}
