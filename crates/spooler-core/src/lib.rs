//! spooler-core: the job model, its states and transitions, the retry policy, errors and the `Store` trait.
//!
//! This crate does no I/O: it holds the types every other spooler crate shares and the one seam
//! (`Store`) through which the runtime reaches a database. Backends live in `spooler-sqlite` and
//! `spooler-postgres`; both run the conformance suite in [`testing`] (feature `testing`).
//!
//! | feature   | what it adds |
//! |-----------|--------------|
//! | `testing` | the store conformance suite, run by every backend's `tests/conformance.rs` |

pub mod clock;
pub mod duration;
pub mod error;
pub mod job;
pub mod limit;
pub mod operation;
pub mod retry;
pub mod route;
pub mod schedule;
pub mod state;
pub mod stats;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transition;
pub mod unique;

pub use clock::{Clock, ManualClock, SystemClock};
pub use duration::{format_duration, parse_duration};
pub use error::StoreError;
pub use job::{
    AttemptError, DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, JobId, JobRow, Meta, NewJob, TRACEPARENT,
    is_traceparent, json_contains,
};
pub use limit::{Admission, LimitState, QueueLimits, RateLimit};
pub use operation::{BulkAction, JobFilter, MAX_CHUNK, Operation, OperationNew, OperationState};
pub use retry::{RetryPolicies, RetryPolicy};
pub use route::{KindRoutes, Origin, Route, Routes};
pub use schedule::{Cadence, CatchUp, ScheduleDeclare, ScheduleDef, ScheduleFire, ScheduleRow};
pub use state::JobState;
pub use store::*;
pub use transition::{Facts, Transition, decide};
pub use unique::{UniqueBy, UniquePeriod};

/// Re-exported so that backends and users agree on one version.
pub use chrono;
/// Re-exported so that backends and users agree on one version.
pub use serde_json;
