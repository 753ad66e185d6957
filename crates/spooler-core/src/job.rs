//! The job row as stored, and the request to insert one.

use crate::state::JobState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// A job's id: increasing, assigned by the store.
pub type JobId = i64;

/// The queue a job goes to when none is named.
pub const DEFAULT_QUEUE: &str = "default";

/// Attempts a job gets when neither the job nor its queue says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 25;

/// One failed attempt, kept on the job for as long as the job is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// The attempt that failed (1 for the first run).
    pub attempt: i32,
    /// When it failed.
    pub at: DateTime<Utc>,
    /// What went wrong: the handler's error, the panic message, "timed out after 5s", "lease expired".
    pub message: String,
}

/// A job as the store holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRow {
    /// Increasing id assigned at insert.
    pub id: JobId,
    /// The queue it waits in.
    pub queue: String,
    /// Names the handler that runs it.
    pub kind: String,
    /// The handler's arguments.
    pub args: Value,
    /// Where it is in its life; see `docs/state-machine.md`.
    pub state: JobState,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts spent: every claim adds one and a release of a job that never started gives it
    /// back, so it counts the handler's starts, plus claims lost with a process that died (the
    /// store cannot tell those from a start, and counting them stops a job that kills its worker).
    pub attempt: i32,
    /// Attempts allowed before the job is `failed`.
    pub max_attempts: i32,
    /// When it may run (for `scheduled`), or when it became runnable.
    pub run_at: DateTime<Utc>,
    /// When it was inserted.
    pub created_at: DateTime<Utc>,
    /// When its latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached `completed`, `failed` or `cancelled`.
    pub finished_at: Option<DateTime<Utc>>,
    /// Longest a single attempt may run; `None` means the worker's default.
    #[serde(with = "opt_millis", rename = "timeout_ms")]
    pub timeout: Option<Duration>,
    /// Enqueueing another job with this key while this one is unfinished returns this one.
    pub unique_key: Option<String>,
    /// Free-form labels.
    pub tags: Vec<String>,
    /// One entry per failed attempt, oldest first.
    pub errors: Vec<AttemptError>,
    /// A small JSON value the handler returned.
    pub result: Option<Value>,
    /// While running: when the lease lapses unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// While running: the worker holding the lease.
    pub worker_id: Option<String>,
    /// The job whose failure (or success) route enqueued this one.
    pub routed_from: Option<JobId>,
    /// For a routed job: the job its chain began with, and the hops taken since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<crate::route::Origin>,
    /// What travels with the job besides its args: `traceparent` (W3C trace context) of the span
    /// that enqueued it, which the run's span continues ([`Meta`]).
    #[serde(default, skip_serializing_if = "Meta::is_empty")]
    pub meta: Meta,
    /// Set when cancellation of a running job was asked for; the worker stops it.
    pub cancel_requested: bool,
    /// The fencing token of its latest claim: every claim adds one, nothing takes one away, so a
    /// late write from an earlier claim ([`LeaseRef`](crate::store::LeaseRef)) is always rejected.
    #[serde(default, skip_serializing)]
    pub fence: i32,
}

impl JobRow {
    /// Claim order: higher priority first, then the older `run_at`, then the lower id. Stores
    /// claim in this order and hand claimed jobs back in it.
    pub fn claim_order(a: &JobRow, b: &JobRow) -> std::cmp::Ordering {
        b.priority
            .cmp(&a.priority)
            .then(a.run_at.cmp(&b.run_at))
            .then(a.id.cmp(&b.id))
    }

    /// The fence of the current claim: what a worker must present to finish or extend it.
    pub fn lease(&self) -> crate::store::LeaseRef {
        crate::store::LeaseRef {
            id: self.id,
            fence: self.fence,
        }
    }
}

/// A timeout as stores keep it: whole milliseconds, at least one.
pub fn timeout_ms(timeout: Duration) -> i64 {
    i64::try_from(timeout.as_millis())
        .unwrap_or(i64::MAX)
        .max(1)
}

/// A job's metadata: a JSON object that travels with it (copied to the jobs its routes make),
/// apart from the args its handler reads. `traceparent` holds the W3C trace context of the span
/// that enqueued it.
pub type Meta = serde_json::Map<String, Value>;

/// The W3C `traceparent` in a job's [`Meta`].
pub const TRACEPARENT: &str = "traceparent";

/// Whether `text` has the shape of a W3C `traceparent` (version 00: `00-` 32 hex digits of trace
/// id, `-` 16 of parent span id, `-` 2 of flags; ids not all zero).
pub fn is_traceparent(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0')
}

/// Whether JSON `have` contains `want`: objects by their keys, recursively (every key of `want`
/// present in `have` with a value that contains `want`'s); anything else by equality. The one
/// rule for "args matching" wherever jobs are searched by their args.
pub fn json_contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(have), Value::Object(want)) => want
            .iter()
            .all(|(k, w)| have.get(k).is_some_and(|h| json_contains(h, w))),
        _ => have == want,
    }
}

/// A job to insert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// The queue; [`DEFAULT_QUEUE`] by default.
    pub queue: String,
    /// Names the handler.
    pub kind: String,
    /// The handler's arguments.
    pub args: Value,
    /// Higher runs first; 0 by default.
    pub priority: i32,
    /// When to run; `None` (the default) means now.
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts allowed; `None` (the default) takes the queue's setting stored with
    /// [`QueueStore::queue_configure`](crate::store::QueueStore::queue_configure), else
    /// [`DEFAULT_MAX_ATTEMPTS`].
    pub max_attempts: Option<i32>,
    /// Longest one attempt may run.
    #[serde(with = "opt_millis", rename = "timeout_ms")]
    pub timeout: Option<Duration>,
    /// Deduplicates against unfinished jobs with the same key.
    pub unique_key: Option<String>,
    /// Free-form labels.
    pub tags: Vec<String>,
    /// The job that routed to this one.
    pub routed_from: Option<JobId>,
    /// What travels with the job besides its args ([`Meta`]); empty by default.
    #[serde(default, skip_serializing_if = "Meta::is_empty")]
    pub meta: Meta,
}

impl NewJob {
    /// A job of `kind` with `args` and every other field at its default.
    pub fn new(kind: impl Into<String>, args: Value) -> Self {
        Self {
            queue: DEFAULT_QUEUE.to_string(),
            kind: kind.into(),
            args,
            priority: 0,
            run_at: None,
            max_attempts: None,
            timeout: None,
            unique_key: None,
            tags: Vec::new(),
            routed_from: None,
            meta: Meta::default(),
        }
    }

    /// Sets the queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets when it may run.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Sets the attempts allowed.
    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Sets the unique key.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The per-attempt timeout as stores keep it: whole milliseconds, at least one.
    pub fn timeout_ms(&self) -> Option<i64> {
        self.timeout.map(timeout_ms)
    }

    /// The row a store holds right after inserting this job as `id` at `now`: `available`, or
    /// `scheduled` when `run_at` is later than `now`. Times are truncated to microseconds, as
    /// stored; a store builds the row it returns from this instead of reading it back, then sets
    /// `max_attempts` and `timeout` as the queue's defaults resolved them.
    pub fn into_row(self, id: JobId, now: DateTime<Utc>) -> JobRow {
        use chrono::SubsecRound;
        let now = now.trunc_subsecs(6);
        let run_at = self.run_at.map_or(now, |at| at.trunc_subsecs(6));
        let timeout = self.timeout_ms().map(|ms| Duration::from_millis(ms as u64));
        JobRow {
            id,
            queue: self.queue,
            kind: self.kind,
            args: self.args,
            state: if run_at > now {
                JobState::Scheduled
            } else {
                JobState::Available
            },
            priority: self.priority,
            attempt: 0,
            max_attempts: self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            run_at,
            created_at: now,
            started_at: None,
            finished_at: None,
            timeout,
            unique_key: self.unique_key,
            tags: self.tags,
            errors: Vec::new(),
            result: None,
            lease_expires_at: None,
            worker_id: None,
            routed_from: self.routed_from,
            origin: None,
            meta: self.meta,
            cancel_requested: false,
            fence: 0,
        }
    }

    /// Checks what a store cannot check for itself; the error names the field.
    pub fn validate(&self) -> Result<(), crate::StoreError> {
        let invalid = |field: &'static str, message: &str| {
            Err(crate::StoreError::InvalidInput {
                field,
                message: message.to_string(),
            })
        };
        if self.kind.trim().is_empty() {
            return invalid("kind", "must not be empty");
        }
        if self.kind.len() > 200 {
            return invalid("kind", "must be at most 200 bytes");
        }
        if self.queue.trim().is_empty() {
            return invalid("queue", "must not be empty");
        }
        if self.queue.len() > 200 {
            return invalid("queue", "must be at most 200 bytes");
        }
        if self.max_attempts.is_some_and(|n| n < 1) {
            return invalid("max_attempts", "must be at least 1");
        }
        if let Some(t) = self.timeout
            && t.is_zero()
        {
            return invalid("timeout", "must be greater than zero");
        }
        if let Some(tp) = self.meta.get(TRACEPARENT)
            && !tp.as_str().is_some_and(is_traceparent)
        {
            return invalid(
                "meta.traceparent",
                "must be a W3C traceparent: 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>",
            );
        }
        Ok(())
    }
}

/// Serde for `Option<Duration>` as whole milliseconds.
pub mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Writes milliseconds, or null.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    /// Reads milliseconds, or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Serde for `Duration` as whole milliseconds.
pub mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Writes milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    /// Reads milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
