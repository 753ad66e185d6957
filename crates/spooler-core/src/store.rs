//! The `Store` trait: every storage operation the runtime, server and CLI need, one params struct each.
//!
//! Every write on a running job is fenced by the [`LeaseRef`] (id and fence) it was claimed with:
//! each claim adds one to `fence`, so a worker whose lease was lost and whose job was claimed again
//! presents a stale fence and its write changes nothing.

use crate::error::StoreError;
use crate::job::{JobId, JobRow, NewJob};
use crate::operation::{JobFilter, Operation, OperationNew};
use crate::schedule::{ScheduleDeclare, ScheduleFire, ScheduleRow};
use crate::state::JobState;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// What a backend can do beyond the common contract. Asked, never assumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Inserts made by other processes wake this process's subscribers (Postgres `LISTEN/NOTIFY`).
    /// Without it, subscribers hear only this process's inserts and workers poll for the rest.
    pub cross_process_wakeups: bool,
    /// Jobs can be inserted inside the caller's own database transaction.
    pub transactional_enqueue: bool,
}

/// The fence of one claim: a job id and the claim's fencing token, which every claim raises by one
/// and nothing lowers. A release gives back the attempt of a job that never started, so two
/// claims can share an attempt number, but never a fence: an answer about one claim never
/// touches another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRef {
    /// The job.
    pub id: JobId,
    /// The claim's fencing token ([`JobRow::fence`](crate::JobRow::fence)).
    pub fence: i32,
}

/// The result of inserting one job.
#[derive(Debug, Clone, PartialEq)]
pub struct Inserted {
    /// The job now stored (for a duplicate: the existing one).
    pub job: JobRow,
    /// True when `unique_key` matched an unfinished job and nothing new was inserted.
    pub duplicate: bool,
}

/// Claim up to `limit` available jobs, highest priority first, then oldest `run_at`, then lowest id.
#[derive(Debug, Clone)]
pub struct JobClaim {
    /// Queues to claim from; paused queues are skipped.
    pub queues: Vec<String>,
    /// Only jobs of these kinds are claimed: a worker claims only what it can run.
    pub kinds: Vec<String>,
    /// At most this many.
    pub limit: u32,
    /// Recorded on the job while it runs.
    pub worker_id: String,
    /// How long the lease lasts unless extended.
    pub lease: Duration,
}

/// What a claim took.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    /// The jobs, now `running`, in claim order.
    pub jobs: Vec<JobRow>,
    /// Set when a queue's rate limit or global concurrency held the claim below its `limit`
    /// while jobs may still wait: how long until a claim may take more.
    pub held_back: Option<Duration>,
}

/// Extend the leases of running jobs held by one worker.
#[derive(Debug, Clone)]
pub struct LeaseExtend {
    /// The claims to extend.
    pub leases: Vec<LeaseRef>,
    /// The worker asking.
    pub worker_id: String,
    /// New lease length, from now.
    pub lease: Duration,
}

/// What extending one lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The job.
    pub id: JobId,
    /// False when the claim is no longer held (rescued, finished, claimed again): stop working on it.
    pub held: bool,
    /// True when cancellation was requested: stop it and record it cancelled.
    pub cancel_requested: bool,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Succeeded; `result` is kept on the job.
    Completed {
        /// A small JSON value, if any.
        result: Option<Value>,
    },
    /// Failed in a way that may be retried (a handler's error, a panic, a timeout): an error entry is
    /// appended and, with attempts left, the job runs again at `at` (`available` when it is not in
    /// the future, `scheduled` otherwise); see [`decide`](crate::transition::decide).
    Retry {
        /// What went wrong.
        error: String,
        /// When to try again: the retry policy's backoff.
        at: DateTime<Utc>,
    },
    /// Failed for good: attempts exhausted or not retryable (an error entry is appended).
    Failed {
        /// What went wrong.
        error: String,
    },
    /// Stopped by request or by the handler's choice.
    Cancelled {
        /// Why.
        reason: String,
    },
    /// Asked to run again later without spending an attempt (`max_attempts` grows by one).
    Snoozed {
        /// When to run again.
        until: DateTime<Utc>,
    },
    /// Given back before its handler started (a prefetched job released unspent): `available` at
    /// once, its attempt given back (`attempt` counts the times the handler started).
    Released,
    /// Stopped unfinished after its handler started, by a worker shutting down past its grace
    /// period: `available` at once; the attempt counts, and `max_attempts` grows by one, so a
    /// deploy spends none.
    Interrupted,
    /// The lease lapsed without a result (written by the rescuer, never by a worker): like
    /// `Retry` with a "lease expired" error, run again at `at`.
    LeaseExpired {
        /// When to try again: the retry policy's backoff.
        at: DateTime<Utc>,
    },
}

/// One finished attempt to record.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFinish {
    /// The claim being finished; ignored unless it still holds the job.
    pub lease: LeaseRef,
    /// How it ended.
    pub outcome: Outcome,
}

/// Filters for listing jobs, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobList {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this kind.
    pub kind: Option<String>,
    /// At most this many (the store caps it at 1000).
    pub limit: u32,
    /// Only ids below this one: the cursor of the previous page.
    pub before_id: Option<JobId>,
    /// Only ids above this one: with `before_id`, bounds how many jobs a listing reads when
    /// what it asks for is rare (the dashboard lists window by window).
    pub after_id: Option<JobId>,
}

/// Counts of jobs per state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    /// `scheduled`
    pub scheduled: i64,
    /// `available`
    pub available: i64,
    /// `running`
    pub running: i64,
    /// `completed`
    pub completed: i64,
    /// `failed`
    pub failed: i64,
    /// `cancelled`
    pub cancelled: i64,
}

impl StateCounts {
    /// Adds `n` to the count of `state`.
    pub fn add(&mut self, state: JobState, n: i64) {
        *self.get_mut(state) += n;
    }

    /// Jobs in every state.
    pub fn total(&self) -> i64 {
        self.scheduled
            + self.available
            + self.running
            + self.completed
            + self.failed
            + self.cancelled
    }

    /// The count of `state`.
    pub fn get(&self, state: JobState) -> i64 {
        match state {
            JobState::Scheduled => self.scheduled,
            JobState::Available => self.available,
            JobState::Running => self.running,
            JobState::Completed => self.completed,
            JobState::Failed => self.failed,
            JobState::Cancelled => self.cancelled,
        }
    }

    fn get_mut(&mut self, state: JobState) -> &mut i64 {
        match state {
            JobState::Scheduled => &mut self.scheduled,
            JobState::Available => &mut self.available,
            JobState::Running => &mut self.running,
            JobState::Completed => &mut self.completed,
            JobState::Failed => &mut self.failed,
            JobState::Cancelled => &mut self.cancelled,
        }
    }
}

/// One queue as `queue_list` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueInfo {
    /// Its name.
    pub name: String,
    /// Paused queues are not claimed from.
    pub paused: bool,
    /// Jobs per state.
    pub counts: StateCounts,
    /// `run_at` of the oldest available job: how long work has waited.
    pub oldest_available_at: Option<DateTime<Utc>>,
}

/// End the attempts of running jobs whose lease lapsed, as [`Outcome::LeaseExpired`] decides.
#[derive(Debug, Clone)]
pub struct JobRescue {
    /// At most this many per call.
    pub limit: u32,
    /// The backoff each rescued job waits, by queue and kind.
    pub retry: std::sync::Arc<crate::retry::RetryPolicies>,
}

/// What a rescue did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RescueReport {
    /// To run again (`scheduled` for the backoff, or `available`).
    pub retried: Vec<JobId>,
    /// Out of attempts: now `failed`.
    pub failed: Vec<JobId>,
    /// Cancellation was asked for while the lease lapsed: now `cancelled`.
    pub cancelled: Vec<JobId>,
}

impl RescueReport {
    /// Records that job `id` became `state`.
    pub fn record(&mut self, id: JobId, state: JobState) {
        match state {
            JobState::Failed => self.failed.push(id),
            JobState::Cancelled => self.cancelled.push(id),
            _ => self.retried.push(id),
        }
    }

    /// Whether nothing was rescued.
    pub fn is_empty(&self) -> bool {
        self.retried.is_empty() && self.failed.is_empty() && self.cancelled.is_empty()
    }

    /// Sorts each list by id.
    pub fn sort(&mut self) {
        self.retried.sort_unstable();
        self.failed.sort_unstable();
        self.cancelled.sort_unstable();
    }
}

/// Delete finished jobs older than their retention, in the queues `queues` names.
#[derive(Debug, Clone, Default)]
pub struct JobPrune {
    /// Delete `completed` jobs finished before this.
    pub completed_before: Option<DateTime<Utc>>,
    /// Delete `failed` jobs finished before this.
    pub failed_before: Option<DateTime<Utc>>,
    /// Delete `cancelled` jobs finished before this.
    pub cancelled_before: Option<DateTime<Utc>>,
    /// Which queues' jobs (every queue by default).
    pub queues: QueueScope,
    /// At most this many per call (batches keep transactions short).
    pub limit: u32,
}

/// A set of queues: the ones named, or all but the ones named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueScope {
    /// Only these queues.
    Only(Vec<String>),
    /// Every queue but these (`Except(vec![])` is every queue).
    Except(Vec<String>),
}

impl Default for QueueScope {
    fn default() -> Self {
        Self::Except(Vec::new())
    }
}

impl QueueScope {
    /// Whether `queue` is in the set.
    pub fn contains(&self, queue: &str) -> bool {
        match self {
            Self::Only(names) => names.iter().any(|n| n == queue),
            Self::Except(names) => !names.iter().any(|n| n == queue),
        }
    }

    /// The names and whether they are excluded, as stores bind them.
    pub fn parts(&self) -> (&[String], bool) {
        match self {
            Self::Only(names) => (names, false),
            Self::Except(names) => (names, true),
        }
    }
}

/// Try to become (or stay) the leader named `name`.
#[derive(Debug, Clone)]
pub struct LeaderElect {
    /// What is being led, e.g. "maintenance".
    pub name: String,
    /// Who asks: a unique id of the process.
    pub holder: String,
    /// How long leadership lasts unless renewed.
    pub ttl: Duration,
}

/// A live worker, as it reports itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Unique id of the worker.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// The spooler version it runs (empty when it did not say: a worker older than the field).
    #[serde(default)]
    pub version: String,
    /// Queues and their concurrency.
    pub queues: BTreeMap<String, u32>,
    /// Kinds it runs.
    pub kinds: Vec<String>,
    /// Jobs running now.
    pub running: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat (set by the store).
    pub last_seen_at: DateTime<Utc>,
}

/// How recent a worker's heartbeat must be for it to count as live.
pub const LIVE_WORKER_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// The queues whose jobs wait with no live worker to take them: jobs are `available`, the queue
/// is not paused, and none of `live` (the workers seen within [`LIVE_WORKER_WITHIN`], as
/// `worker_list` answers them) works it. Names in queue order.
pub fn queues_without_workers(queues: &[QueueInfo], live: &[WorkerInfo]) -> Vec<String> {
    queues
        .iter()
        .filter(|q| q.counts.available > 0 && !q.paused)
        .filter(|q| !live.iter().any(|w| w.queues.contains_key(&q.name)))
        .map(|q| q.name.clone())
        .collect()
}

/// A wake-up: jobs became available in `queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wakeup {
    /// The queue.
    pub queue: String,
}

/// The runtime's path: inserting, claiming, renewing and finishing jobs, and the maintenance
/// leader's rescue, promotion and pruning.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Inserts jobs in one transaction, in order; a job whose `unique_key` matches an unfinished
    /// job is not inserted and the existing one is returned (`duplicate: true`). The jobs are
    /// taken by value so that a store can move them into the rows it answers with instead of
    /// copying each one (the SQLite store does; the Postgres store still copies them).
    async fn job_insert_many(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>>;

    /// Inserts one job; see [`Store::job_insert_many`].
    async fn job_insert(&self, job: &NewJob) -> StoreResult<Inserted> {
        let mut inserted = self.job_insert_many(vec![job.clone()]).await?;
        inserted.pop().ok_or_else(|| StoreError::Database {
            message: "insert returned no row".into(),
        })
    }

    /// Claims up to `limit` available jobs: each becomes `running` with `attempt + 1`,
    /// `started_at = now`, a lease until `now + lease`, and `worker_id`. From a queue with
    /// limits ([`QueueSettings::limits`]) it takes no more than [`QueueLimits::admit`] allows,
    /// across every process sharing the store, and says when it was held back.
    ///
    /// [`QueueLimits::admit`]: crate::limit::QueueLimits::admit
    async fn job_claim(&self, claim: &JobClaim) -> StoreResult<Claimed>;

    /// Extends leases still held; reports, per lease asked and in the order asked, whether it is
    /// held and whether cancellation was requested. Leases not held are left alone.
    async fn job_lease_extend(&self, extend: &LeaseExtend) -> StoreResult<Vec<LeaseStatus>>;

    /// Records finished attempts in one transaction, each as [`decide`](crate::transition::decide)
    /// finds from its outcome and the job's facts read under the fence. Returns, aligned with
    /// `finishes`, whether each was accepted: false when its lease no longer holds the job (the
    /// fence), or when the same lease appears earlier in the call. `Outcome::LeaseExpired` is
    /// the rescuer's and is rejected here.
    async fn job_finish_many(&self, finishes: &[JobFinish]) -> StoreResult<Vec<bool>>;

    /// Ends the attempts of running jobs whose lease has lapsed, oldest lapse first, each as
    /// [`decide`](crate::transition::decide) finds for [`Outcome::LeaseExpired`] with the backoff
    /// of `retry`: an error entry records the lost lease; the job waits for its backoff, or is
    /// `failed` when out of attempts, or `cancelled` when cancellation was asked for.
    async fn job_rescue(&self, rescue: &JobRescue) -> StoreResult<RescueReport>;

    /// Moves up to `limit` `scheduled` jobs whose `run_at` has come to `available`; returns how many.
    async fn job_promote(&self, limit: u32) -> StoreResult<u64>;

    /// Deletes finished jobs past their retention, at most `limit`; returns how many.
    async fn job_prune(&self, prune: &JobPrune) -> StoreResult<u64>;
}

/// Jobs by hand and by filter: cancel, retry, delete, read, list and count.
#[async_trait]
pub trait JobAdminStore: Send + Sync {
    /// Cancels a job: `scheduled`/`available` become `cancelled`; a `running` job gets
    /// `cancel_requested` and its worker stops it. A finished job is `InvalidState`.
    async fn job_cancel(&self, id: JobId) -> StoreResult<JobRow>;

    /// Runs a job again now: `failed`, `cancelled`, `completed` and `scheduled` jobs become
    /// `available` (with one more attempt allowed if they had none left). A running job is
    /// `InvalidState`; an available one is returned unchanged.
    async fn job_retry(&self, id: JobId) -> StoreResult<JobRow>;

    /// Deletes a job that is not running, returning it as it was.
    async fn job_delete(&self, id: JobId) -> StoreResult<JobRow>;

    /// One job, if it exists.
    async fn job_get(&self, id: JobId) -> StoreResult<Option<JobRow>>;

    /// Jobs matching the filters, newest (highest id) first.
    async fn job_list(&self, list: &JobList) -> StoreResult<Vec<JobRow>>;

    /// The jobs routes made from job `id` (their `routed_from`), oldest first, at most `limit`
    /// (capped at 1,000): where a message went next.
    async fn job_routed_from(&self, id: JobId, limit: u32) -> StoreResult<Vec<JobRow>>;

    /// How many jobs match `filter` now (a dry run of an operation).
    async fn job_count(&self, filter: &JobFilter) -> StoreResult<i64>;

    /// Enqueues each message whose `key` was never replayed into this store, recording the key
    /// in the same transaction, so a spill replayed twice enqueues every message once. Answers,
    /// aligned with `replays`, the job each key enqueued (now or by an earlier replay).
    async fn job_replay(&self, replays: &[Replay]) -> StoreResult<Vec<Replayed>>;
}

/// A message to enqueue once however often it is replayed (a line of a `file` spill).
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// Names the message for good: `spill:JOB` for the spill line written by job `JOB`.
    pub key: String,
    /// The job to enqueue.
    pub job: NewJob,
}

/// What replaying one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// The job the key enqueued; `None` when an earlier replay's job was since deleted.
    pub id: Option<JobId>,
    /// True if enqueued by this call; false if the key was replayed before.
    pub enqueued: bool,
}

/// Queues: their counts, and pausing claims from them.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Every queue that has jobs or a pause flag, with counts per state and the oldest wait.
    async fn queue_list(&self) -> StoreResult<Vec<QueueInfo>>;

    /// Stops claims from `queue` (running jobs continue).
    async fn queue_pause(&self, queue: &str) -> StoreResult<()>;

    /// Lets claims from `queue` resume.
    async fn queue_resume(&self, queue: &str) -> StoreResult<()>;

    /// Stores the defaults of the queues `settings` names, and forgets those of every other queue
    /// (a config file that loads is the whole truth): from then on a job inserted into one of them
    /// without `max_attempts` or `timeout` takes the queue's, whoever inserts it.
    async fn queue_configure(&self, settings: &[QueueSettings]) -> StoreResult<()>;

    /// The stored defaults, by queue name.
    async fn queue_settings(&self) -> StoreResult<Vec<QueueSettings>>;
}

/// A queue's defaults for the jobs inserted into it without their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    /// The queue.
    pub queue: String,
    /// Attempts allowed.
    pub max_attempts: Option<i32>,
    /// Longest one attempt may run.
    #[serde(with = "crate::job::opt_millis", rename = "timeout_ms")]
    pub timeout: Option<Duration>,
    /// How long the queue's finished jobs are kept, where it differs from the default.
    #[serde(default)]
    pub retention: QueueRetention,
    /// Where its jobs go when they fail or complete ([`crate::route`]).
    #[serde(default, skip_serializing_if = "crate::route::Routes::is_empty")]
    pub routes: crate::route::Routes,
    /// Its rate limit and global concurrency ([`crate::limit`]), applied where jobs are claimed.
    #[serde(default, skip_serializing_if = "crate::limit::QueueLimits::is_none")]
    pub limits: crate::limit::QueueLimits,
    /// Jobs enqueued into it within a period of one like them are answered with that one
    /// ([`crate::unique`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<crate::unique::UniquePeriod>,
}

/// How long a queue keeps its finished jobs, per final state; `None` takes the default the
/// pruning process was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRetention {
    /// `completed` jobs.
    pub completed: Option<Keep>,
    /// `failed` jobs.
    pub failed: Option<Keep>,
    /// `cancelled` jobs.
    pub cancelled: Option<Keep>,
}

impl QueueRetention {
    /// True when every state takes the default.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// How long finished jobs are kept. In JSON: milliseconds, or -1 for forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "i64", from = "i64")]
pub enum Keep {
    /// For this long after they finished.
    For(Duration),
    /// Never pruned.
    Forever,
}

impl From<Keep> for i64 {
    fn from(k: Keep) -> i64 {
        k.to_ms()
    }
}

impl From<i64> for Keep {
    fn from(ms: i64) -> Keep {
        Keep::from_ms(ms)
    }
}

impl Keep {
    /// As stores keep it: milliseconds, or -1 for forever.
    pub fn to_ms(self) -> i64 {
        match self {
            Self::For(d) => crate::job::timeout_ms(d),
            Self::Forever => -1,
        }
    }

    /// From what [`Keep::to_ms`] stored.
    pub fn from_ms(ms: i64) -> Self {
        if ms < 0 {
            Self::Forever
        } else {
            Self::For(Duration::from_millis(ms as u64))
        }
    }

    /// As a process's default says it: `None` is forever.
    pub fn from_option(keep: Option<Duration>) -> Self {
        keep.map_or(Self::Forever, Self::For)
    }

    /// The time before which finished jobs go, from `now`; `None` for forever.
    pub fn cutoff(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Forever => None,
            Self::For(d) => chrono::TimeDelta::from_std(d)
                .ok()
                .and_then(|d| now.checked_sub_signed(d)),
        }
    }
}

impl QueueSettings {
    /// Settings of `queue` that change nothing: every field at its default.
    pub fn new(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            max_attempts: None,
            timeout: None,
            retention: QueueRetention::default(),
            routes: crate::route::Routes::default(),
            limits: crate::limit::QueueLimits::default(),
            unique: None,
        }
    }

    /// What `job` gets for `max_attempts` and `timeout`: its own values win, then its queue's
    /// `settings`, then [`crate::DEFAULT_MAX_ATTEMPTS`] and no timeout. Every store inserts what
    /// this answers.
    pub fn resolve(settings: Option<&QueueSettings>, job: &NewJob) -> (i32, Option<Duration>) {
        let max_attempts = job
            .max_attempts
            .or(settings.and_then(|s| s.max_attempts))
            .unwrap_or(crate::DEFAULT_MAX_ATTEMPTS);
        let timeout = job.timeout.or(settings.and_then(|s| s.timeout));
        (max_attempts, timeout)
    }

    /// Fills what `job` leaves unset as [`QueueSettings::resolve`] says.
    pub fn fill(settings: Option<&QueueSettings>, job: &mut NewJob) {
        let (max_attempts, timeout) = Self::resolve(settings, job);
        job.max_attempts = Some(max_attempts);
        job.timeout = timeout;
    }
}

/// The queues' settings as a store last read them, by queue, kept for [`QueueSettingsCache::MAX_AGE`]
/// so an insert costs no extra read. A store forgets them when it configures queues itself;
/// another process's configuration is seen within `MAX_AGE`.
#[derive(Debug, Default)]
pub struct QueueSettingsCache {
    read: std::sync::Mutex<Option<(std::time::Instant, Arc<QueueSettingsMap>)>>,
}

/// Queue settings by queue name.
pub type QueueSettingsMap = std::collections::HashMap<String, QueueSettings>;

impl QueueSettingsCache {
    /// How long a read stays good.
    pub const MAX_AGE: Duration = Duration::from_secs(1);

    /// The settings read less than [`Self::MAX_AGE`] ago, if any.
    pub fn fresh(&self) -> Option<Arc<QueueSettingsMap>> {
        let read = self.read.lock().expect("settings cache lock");
        read.as_ref()
            .filter(|(at, _)| at.elapsed() < Self::MAX_AGE)
            .map(|(_, map)| map.clone())
    }

    /// Keeps `settings`, just read, and returns them by queue.
    pub fn keep(&self, settings: Vec<QueueSettings>) -> Arc<QueueSettingsMap> {
        let map: Arc<QueueSettingsMap> =
            Arc::new(settings.into_iter().map(|s| (s.queue.clone(), s)).collect());
        *self.read.lock().expect("settings cache lock") =
            Some((std::time::Instant::now(), map.clone()));
        map
    }

    /// Forgets what was read (after this store configured the queues).
    pub fn forget(&self) {
        *self.read.lock().expect("settings cache lock") = None;
    }
}

/// Operations by filter, run in chunks (see [`crate::operation`]).
#[async_trait]
pub trait OperationStore: Send + Sync {
    /// Creates a `running` operation over the jobs that exist now (ids up to the highest), with
    /// `matched` counted in the same transaction.
    async fn operation_create(&self, new: &OperationNew) -> StoreResult<Operation>;

    /// One operation, if it exists.
    async fn operation_get(&self, id: i64) -> StoreResult<Option<Operation>>;

    /// Operations still `running`, oldest first: what a restarted process resumes.
    async fn operation_list_running(&self) -> StoreResult<Vec<Operation>>;

    /// Runs the next chunk of a running operation in one transaction: the next `chunk` covered
    /// jobs after `done_through` that match the filter are acted on where
    /// [`applies_to`](crate::operation::BulkAction::applies_to) their state and counted as skipped otherwise; `done_through`
    /// and the counts move in the same transaction, and the operation is `completed` once none
    /// is left. An operation that is not running is returned unchanged; `OperationNotFound`
    /// when there is none.
    async fn operation_step(&self, id: i64) -> StoreResult<Operation>;

    /// Stops a running operation (`cancelled`); the chunks done stay done. A finished operation
    /// is returned unchanged.
    async fn operation_cancel(&self, id: i64) -> StoreResult<Operation>;
}

/// Leadership of background duties, and the upkeep the leader runs.
#[async_trait]
pub trait LeaderStore: Send + Sync {
    /// Takes or renews leadership of `name`; true if `holder` leads until `now + ttl`.
    async fn leader_try_elect(&self, elect: &LeaderElect) -> StoreResult<bool>;

    /// Gives up leadership of `name` if `holder` has it, so another process takes over at once.
    async fn leader_resign(&self, name: &str, holder: &str) -> StoreResult<()>;

    /// Upkeep the database needs now and then, run by the maintenance leader after each pass:
    /// PostgreSQL vacuums and analyzes the queue table when many rows changed since the last
    /// time (autovacuum may be off or behind, and a stale plan or a head of dead index entries
    /// would slow every claim). Cheap when there is nothing to do; the default does nothing.
    async fn housekeep(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// Periodic jobs (see [`crate::schedule`]): declared definitions, and ticks fenced on
/// `next_run_at` so each enqueues exactly one job however many processes fire it.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Writes definitions as [`ScheduleDeclare`] says, in one transaction.
    async fn schedule_declare(&self, declare: &ScheduleDeclare) -> StoreResult<()>;

    /// Every schedule, by name.
    async fn schedule_list(&self) -> StoreResult<Vec<ScheduleRow>>;

    /// In one transaction: for a tick, moves `next_run_at` from `due` to `next_run_at` only if
    /// the row still has `due` and is not paused (else writes nothing and answers `None`); then
    /// inserts the job, if any, as `job_insert` would, and records it as `last_job_id` with
    /// `last_run_at` now. Answers the inserted job (`None` also for a skipped tick).
    /// `ScheduleNotFound` when there is no such schedule.
    async fn schedule_fire(&self, fire: &ScheduleFire) -> StoreResult<Option<Inserted>>;

    /// Pauses or resumes a schedule; on resume `next_run_at`, when given, replaces the stored one
    /// (the ticks missed while paused are not caught up). `ScheduleNotFound` when there is none.
    async fn schedule_set_paused(
        &self,
        name: &str,
        paused: bool,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<ScheduleRow>;
}

/// The registry of live workers.
#[async_trait]
pub trait WorkerStore: Send + Sync {
    /// Records a worker's heartbeat (`last_seen_at` is set to now).
    async fn worker_heartbeat(&self, worker: &WorkerInfo) -> StoreResult<()>;

    /// Workers seen since `since`.
    async fn worker_list(&self, since: DateTime<Utc>) -> StoreResult<Vec<WorkerInfo>>;

    /// Removes a worker's record (on shutdown).
    async fn worker_remove(&self, id: &str) -> StoreResult<()>;
}

/// Throughput and latency history, rolled up by the maintenance leader ([`crate::stats`]).
#[async_trait]
pub trait StatsStore: Send + Sync {
    /// How far finished jobs have been rolled up (`None`: never).
    async fn stats_mark(&self) -> StoreResult<Option<DateTime<Utc>>>;

    /// Rolls up the jobs that finished in `[roll.from, roll.until)`: adds them to the stored rows
    /// of every granularity ([`crate::stats::rollup`], [`crate::stats::merge_stored`]), moves the
    /// mark to `roll.until` and deletes rows past [`crate::stats::prune_before`], in one
    /// transaction, only while the mark is still `roll.mark`. False (and nothing written) when
    /// another roll moved the mark first.
    async fn stats_roll(&self, roll: &crate::stats::StatsRoll) -> StoreResult<bool>;

    /// The stored rows `query` asks for, by bucket, queue and kind.
    async fn stats_read(
        &self,
        query: &crate::stats::StatsQuery,
    ) -> StoreResult<Vec<crate::stats::StatsRow>>;
}

/// The only seam between spooler and a database, composed of one trait per concern. Implemented
/// by `spooler-sqlite` and `spooler-postgres`; specified by the conformance suite in
/// [`crate::testing`]. Calling a method of a part needs that part in scope: `use
/// spooler_core::store::prelude::*` brings them all.
#[async_trait]
pub trait Store:
    JobStore
    + JobAdminStore
    + QueueStore
    + OperationStore
    + LeaderStore
    + ScheduleStore
    + WorkerStore
    + StatsStore
    + std::fmt::Debug
    + 'static
{
    /// The backend's name: "sqlite", "postgres".
    fn backend(&self) -> &'static str;

    /// What this backend can do beyond the common contract.
    fn capabilities(&self) -> Capabilities;

    /// The store's URL, password removed, for messages.
    fn describe(&self) -> String;

    /// Applies pending migrations; safe to call from many processes at once.
    async fn migrate(&self) -> StoreResult<()>;

    /// Wake-ups when jobs become available. Every store delivers its own process's inserts;
    /// with `cross_process_wakeups`, other processes' too. A lagging receiver should simply poll.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Wakeup>;

    /// The store's clock.
    fn clock(&self) -> &dyn crate::Clock;

    /// The store as its concrete type, for what only one backend offers (a Postgres store
    /// inserts inside the caller's transaction): `store.as_any()?.downcast_ref::<PgStore>()`.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// The `Store` trait and its parts, for `use spooler_core::store::prelude::*`.
pub mod prelude {
    pub use super::{
        JobAdminStore, JobStore, LeaderStore, OperationStore, QueueStore, ScheduleStore,
        StatsStore, Store, WorkerStore,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_unpaused_queue_no_live_worker_works_is_named() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let queue = |name: &str, available: i64, paused: bool| QueueInfo {
            name: name.into(),
            paused,
            counts: StateCounts {
                available,
                ..Default::default()
            },
            oldest_available_at: None,
        };
        let worker = |queue: &str| WorkerInfo {
            id: format!("w-{queue}"),
            host: "h".into(),
            pid: 1,
            version: String::new(),
            queues: BTreeMap::from([(queue.to_string(), 10)]),
            kinds: vec![],
            running: 0,
            started_at: now,
            last_seen_at: now,
        };
        let queues = [
            queue("default", 5, false),
            queue("mail-out", 3, false),
            queue("held", 4, true),
            queue("idle", 0, false),
            queue("stale", 2, false),
        ];
        // `stale`'s worker stopped heartbeating: it is not among the live ones.
        let live = [worker("default")];
        assert_eq!(
            queues_without_workers(&queues, &live),
            ["mail-out", "stale"]
        );
    }
}
