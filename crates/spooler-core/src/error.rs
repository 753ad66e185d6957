//! Store errors: backend-neutral kinds, each naming what it concerns.

use crate::job::JobId;
use crate::state::JobState;

/// An error from a [`Store`](crate::Store). Database faults are mapped to these kinds so the
/// runtime never reads a backend's error codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No job has this id.
    #[error("job {id} not found")]
    JobNotFound {
        /// The id asked for.
        id: JobId,
    },
    /// No operation has this id.
    #[error("operation {id} not found")]
    OperationNotFound {
        /// The id asked for.
        id: i64,
    },
    /// No schedule has this name.
    #[error("schedule \"{name}\" not found")]
    ScheduleNotFound {
        /// The name asked for.
        name: String,
    },
    /// The job is in a state the operation does not apply to.
    #[error("job {id} is {state}: cannot {action} it")]
    InvalidState {
        /// The job.
        id: JobId,
        /// Its current state.
        state: JobState,
        /// What was asked: "cancel", "retry", "delete".
        action: &'static str,
    },
    /// A field of the request is invalid.
    #[error("invalid {field}: {message}")]
    InvalidInput {
        /// The field, as the API and CLI name it.
        field: &'static str,
        /// What is wrong and, when known, the fix.
        message: String,
    },
    /// The URL names no store this build knows.
    #[error(
        "unsupported store URL \"{url}\" (expected sqlite://PATH, sqlite::memory: or postgres://USER@HOST:PORT/DB)"
    )]
    UnsupportedUrl {
        /// The URL, without its password.
        url: String,
    },
    /// The store could not be opened or reached.
    #[error("cannot open store {url}: {message}")]
    Open {
        /// The URL or path, without its password.
        url: String,
        /// The cause and, when known, the fix.
        message: String,
    },
    /// The database is unreachable, timed out or shutting down; retrying later may succeed.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
    },
    /// A unique constraint was violated.
    #[error("unique violation: {message}")]
    UniqueViolation {
        /// Which constraint.
        message: String,
    },
    /// A transaction conflicted with another and may be retried.
    #[error("serialization failure: {message}")]
    SerializationFailure {
        /// What conflicted.
        message: String,
    },
    /// Applying migrations failed.
    #[error("migration {version} failed: {message}")]
    Migration {
        /// The migration number.
        version: i64,
        /// Why.
        message: String,
    },
    /// The backend cannot do this; see [`Capabilities`](crate::Capabilities).
    #[error("{what} is not supported by the {backend} store")]
    NotSupported {
        /// What was asked.
        what: &'static str,
        /// Which backend.
        backend: &'static str,
    },
    /// Any other database fault.
    #[error("database error: {message}")]
    Database {
        /// The database's message.
        message: String,
    },
    /// Stored data could not be decoded.
    #[error("corrupt row for job {id}: {message}")]
    Decode {
        /// The job whose row is bad (0 when unknown).
        id: JobId,
        /// What was wrong.
        message: String,
    },
}

impl StoreError {
    /// True for faults a retry may cure (connection loss, timeouts, serialization conflicts).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::SerializationFailure { .. }
        )
    }

    /// True when the caller's request was at fault (not found, wrong state, bad input).
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            StoreError::JobNotFound { .. }
                | StoreError::OperationNotFound { .. }
                | StoreError::ScheduleNotFound { .. }
                | StoreError::InvalidState { .. }
                | StoreError::InvalidInput { .. }
        )
    }
}

/// Removes the password from a URL such as `postgres://user:secret@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}://{}:***{}",
            &url[..scheme_end],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://me:secret@db:5432/jobs"),
            "postgres://me:***@db:5432/jobs"
        );
        assert_eq!(
            redact_url("postgres://me@db:5432/jobs"),
            "postgres://me@db:5432/jobs"
        );
        assert_eq!(redact_url("sqlite://jobs.db"), "sqlite://jobs.db");
    }

    #[test]
    fn messages_name_their_subject() {
        let e = StoreError::InvalidState {
            id: 7,
            state: JobState::Completed,
            action: "cancel",
        };
        assert_eq!(e.to_string(), "job 7 is completed: cannot cancel it");
    }
}
