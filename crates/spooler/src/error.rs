//! The library's error type: a store fault, bad job arguments, or a bad worker configuration.

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
}
