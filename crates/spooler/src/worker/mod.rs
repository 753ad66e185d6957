//! The worker: registers handlers, runs a producer per queue, executes claimed jobs, batches their
//! outcomes, renews leases, and (on the elected leader) runs maintenance. Shutdown is graceful.
//!
//! Its background tasks share one shape: a struct made with `new` (`Producer`, `Heartbeat`,
//! `Maintenance`, `OperationRunner`) whose `run(stop)` loops until the stop channel turns true,
//! with one pass callable alone (`Heartbeat::beat`, `Maintenance::run_once`), and each reports
//! its events to [`TestSignals`]. The completer is the one driven by its channel instead: it
//! writes what it is sent until its handle is flushed and dropped, after everything else stopped.

mod completer;
pub(crate) mod executor;
mod heartbeat;
mod planner;
mod producer;

use crate::Error;
use crate::job::{BlockingHandler, BlockingJob, Handler, Job, TypedHandler};
use crate::maintenance::{Maintenance, MaintenanceConfig};
use spooler_core::{LeaseRef, RetryPolicies, RetryPolicy, Store};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot, watch};

/// Events the worker's tasks report, so that tests wait on them instead of sleeping (modelled on
/// River's `producerTestSignals`). Off (each a no-op) unless [`WorkerBuilder::test_signals`]
/// turned them on; each is a count that only grows. Not part of the API.
#[doc(hidden)]
#[derive(Clone, Default)]
pub struct TestSignals {
    /// A producer's claim came back (with jobs or without).
    pub claimed: Signal,
    /// A producer waits for an event with no claim under way: whatever it claimed has landed.
    pub idle: Signal,
    /// The completer wrote a batch of outcomes.
    pub flushed: Signal,
    /// A heartbeat (lease renewal and worker record) is done.
    pub heartbeat: Signal,
    /// A stopping worker's producers have all stopped: it claims nothing more.
    pub stopped_claiming: Signal,
}

impl TestSignals {
    fn on() -> Self {
        Self {
            claimed: Signal::on("claimed"),
            idle: Signal::on("idle"),
            flushed: Signal::on("flushed"),
            heartbeat: Signal::on("heartbeat"),
            stopped_claiming: Signal::on("stopped_claiming"),
        }
    }
}

/// One event of [`TestSignals`]: how many times it happened, and a wait until it happened so often.
#[doc(hidden)]
#[derive(Clone, Default)]
pub struct Signal(Option<Arc<(&'static str, watch::Sender<u64>)>>);

impl Signal {
    fn on(name: &'static str) -> Self {
        Self(Some(Arc::new((name, watch::Sender::new(0)))))
    }

    /// Counts one more event (nothing when signals are off).
    pub(crate) fn notify(&self) {
        if let Some((_, count)) = self.0.as_deref() {
            count.send_modify(|n| *n += 1);
        }
    }

    /// How many times the event happened so far.
    pub fn count(&self) -> u64 {
        self.0.as_deref().map_or(0, |(_, count)| *count.borrow())
    }

    /// Waits until the event happened at least `n` times and returns the count then.
    ///
    /// # Panics
    ///
    /// After `timeout`, or at once when signals are off.
    pub async fn wait_for(&self, n: u64, timeout: Duration) -> u64 {
        let Some((name, count)) = self.0.as_deref() else {
            panic!("test signals are off: build the worker with WorkerBuilder::test_signals()");
        };
        let mut rx = count.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await {
            Ok(Ok(c)) => *c,
            // The sender lives in `self`: the channel cannot close while we wait.
            Ok(Err(_)) => unreachable!("the {name} signal closed"),
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for the {name} signal to reach {n} (it is at {})",
                *count.borrow()
            ),
        }
    }

    /// Waits for one more event than happened before the call.
    ///
    /// # Panics
    ///
    /// As [`Signal::wait_for`].
    pub async fn wait_next(&self, timeout: Duration) -> u64 {
        self.wait_for(self.count() + 1, timeout).await
    }
}

/// How long finished jobs are kept before maintenance deletes them; `None` keeps them forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// `completed` jobs (24 h by default).
    pub completed: Option<Duration>,
    /// `failed` jobs (7 days by default).
    pub failed: Option<Duration>,
    /// `cancelled` jobs (7 days by default).
    pub cancelled: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            completed: Some(Duration::from_secs(24 * 3600)),
            failed: Some(Duration::from_secs(7 * 24 * 3600)),
            cancelled: Some(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

/// Why a running job is being stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Abort {
    /// Cancellation was requested: record it `cancelled`.
    CancelRequested,
    /// The lease is no longer held: record nothing, someone else owns the job now.
    LeaseLost,
    /// The worker is stopping and the grace period ran out: give the job back.
    Shutdown,
}

pub(crate) struct RunningJob {
    pub(crate) abort: Option<oneshot::Sender<Abort>>,
    /// Until when the lease is surely held, by this process's monotonic clock: the send time of
    /// the claim or of the last renewal answered, plus the lease.
    pub(crate) held_until: tokio::time::Instant,
}

/// Per-queue slot accounting shared by the producer and the executors.
pub(crate) struct QueueSlots {
    pub(crate) name: String,
    pub(crate) concurrency: u32,
    pub(crate) running: AtomicU32,
    pub(crate) freed: Notify,
}

pub(crate) struct Settings {
    pub(crate) lease: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) grace: Duration,
    pub(crate) default_timeout: Option<Duration>,
    pub(crate) max_claim: u32,
    pub(crate) claims_in_flight: u32,
    /// The backoff of failed attempts, also applied by this worker's rescues.
    pub(crate) retry: Arc<RetryPolicies>,
    /// See [`WorkerBuilder::test_outcome_delay`].
    pub(crate) test_outcome_delay: Option<Duration>,
}

impl Settings {
    /// The longest a claim or an outcome write may take before it is given up and tried again:
    /// a third of the lease, so a database that stops answering costs no more than that.
    pub(crate) fn store_deadline(&self) -> Duration {
        self.lease / 3
    }
}

/// State shared by the worker's tasks.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) id: Arc<str>,
    pub(crate) handlers: HashMap<String, Arc<dyn Handler>>,
    pub(crate) kinds: Vec<String>,
    pub(crate) queues: BTreeMap<String, u32>,
    pub(crate) settings: Settings,
    /// Keyed by the claim (id and attempt), not the id: when this worker claims a job again after
    /// losing its lease, the old run and the new one are two entries, stopped and renewed apart.
    pub(crate) running: Mutex<HashMap<LeaseRef, RunningJob>>,
    pub(crate) idle: Notify,
    pub(crate) completer: completer::CompleterHandle,
    pub(crate) started_at: chrono::DateTime<chrono::Utc>,
    pub(crate) signals: TestSignals,
    /// The application's values every job can read ([`WorkerBuilder::state`]).
    pub(crate) state: crate::job::AppState,
}

impl Shared {
    pub(crate) fn running_count(&self) -> usize {
        self.running.lock().expect("running lock").len()
    }

    /// Stops running jobs from outside; returns how many were told.
    pub(crate) fn abort(&self, leases: &[LeaseRef], why: Abort) -> usize {
        let mut running = self.running.lock().expect("running lock");
        let mut told = 0;
        for lease in leases {
            if let Some(tx) = running.get_mut(lease).and_then(|r| r.abort.take()) {
                told += usize::from(tx.send(why).is_ok());
            }
        }
        told
    }
}

/// Builds a [`Worker`]; every setting has a default and is checked by [`WorkerBuilder::build`].
pub struct WorkerBuilder {
    store: Arc<dyn Store>,
    handlers: HashMap<String, Arc<dyn Handler>>,
    queues: BTreeMap<String, u32>,
    lease: Duration,
    heartbeat: Option<Duration>,
    poll_interval: Duration,
    grace: Duration,
    default_timeout: Option<Duration>,
    max_claim: u32,
    claims_in_flight: u32,
    retry: RetryPolicies,
    maintenance: bool,
    maintenance_config: MaintenanceConfig,
    id: Option<String>,
    test_signals: bool,
    test_outcome_delay: Option<Duration>,
    schedules: Vec<spooler_core::ScheduleDef>,
    state: crate::job::AppState,
}

impl WorkerBuilder {
    /// Runs jobs of `J::KIND` with `J::run`.
    pub fn register<J: Job>(self) -> Self {
        self.handler(J::KIND, Arc::new(TypedHandler::<J>::new()))
    }

    /// Runs jobs of `J::KIND` with `J::run` on the blocking thread pool.
    pub fn register_blocking<J: BlockingJob>(self) -> Self {
        self.handler(J::KIND, Arc::new(BlockingHandler::<J>::new()))
    }

    /// Runs jobs of `kind` with a dynamic handler.
    pub fn handler(mut self, kind: &str, handler: Arc<dyn Handler>) -> Self {
        self.handlers.insert(kind.to_string(), handler);
        self
    }

    /// Works `queue` with up to `concurrency` jobs at once. Without any, the worker works
    /// `"default"` with 10.
    pub fn queue(mut self, queue: &str, concurrency: u32) -> Self {
        self.queues.insert(queue.to_string(), concurrency);
        self
    }

    /// How long a claim lasts without renewal (30 s by default). A dead worker's jobs run again
    /// about this long after it died; heartbeats renew it every third of it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often leases are renewed (a third of the lease by default).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = Some(every);
        self
    }

    /// How often an idle queue is polled for jobs nobody woke it for (1 s by default).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// How long running jobs may take to finish after shutdown starts (10 s by default); the
    /// rest are released for another worker.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Timeout of an attempt whose job sets none (none by default).
    pub fn default_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Most jobs one claim takes (100 by default).
    pub fn max_claim(mut self, n: u32) -> Self {
        self.max_claim = n;
        self
    }

    /// Claims a queue may have under way at once while a backlog waits (4 by default): while one
    /// waits for its commit the next are already running. With Postgres two raised the drain by
    /// half over one, and four by a fifth over two. 1 claims strictly one after another. A queue that is not backlogged (its last claim
    /// came back short) has one claim at a time whatever this says.
    pub fn claims_in_flight(mut self, n: u32) -> Self {
        self.claims_in_flight = n;
        self
    }

    /// The retry policy of every job unless its queue or kind has one.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry.default = policy;
        self
    }

    /// The retry policy of jobs in `queue`.
    pub fn queue_retry_policy(mut self, queue: &str, policy: RetryPolicy) -> Self {
        self.retry.by_queue.insert(queue.to_string(), policy);
        self
    }

    /// The retry policy of jobs of `kind` (wins over the queue's).
    pub fn kind_retry_policy(mut self, kind: &str, policy: RetryPolicy) -> Self {
        self.retry.by_kind.insert(kind.to_string(), policy);
        self
    }

    /// Whether this worker takes part in maintenance (rescue, promotion, pruning) when elected
    /// leader; on by default.
    pub fn maintenance(mut self, on: bool) -> Self {
        self.maintenance = on;
        self
    }

    /// How long finished jobs are kept.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.maintenance_config.retention = retention;
        self
    }

    /// Maintenance timing (interval, leader ttl, batch sizes).
    pub fn maintenance_config(mut self, config: MaintenanceConfig) -> Self {
        self.maintenance_config = config;
        self
    }

    /// A fixed worker id (by default host-pid-random).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Turns on the [`TestSignals`] that [`Worker::test_signals`] and
    /// [`WorkerHandle::test_signals`] hand out. For tests; not part of the API.
    #[doc(hidden)]
    pub fn test_signals(mut self) -> Self {
        self.test_signals = true;
        self
    }

    /// Holds every run for `delay` between its handler's return and the hand-off of its outcome,
    /// widening a window a shutdown must not lose an outcome in. Fault injection for tests; not
    /// part of the API.
    #[doc(hidden)]
    pub fn test_outcome_delay(mut self, delay: Duration) -> Self {
        self.test_outcome_delay = Some(delay);
        self
    }

    /// Shares `value` with every job this worker runs, read typed with
    /// [`JobContext::state`](crate::JobContext::state): a database pool, an HTTP client, a
    /// config. One value per type; giving a type again replaces it.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state = self.state.with(value);
        self
    }

    /// Declares a schedule when the worker starts (as owner `app`): each tick enqueues its job
    /// once, whichever process leads maintenance. A schedule of the same name declared elsewhere
    /// is replaced by this definition.
    pub fn schedule(mut self, schedule: spooler_core::ScheduleDef) -> Self {
        self.schedules.push(schedule);
        self
    }

    /// Checks the settings and makes the worker.
    pub fn build(mut self) -> Result<Worker, Error> {
        let invalid = |key: &str, message: &str| {
            Err(Error::Config {
                key: key.to_string(),
                message: message.to_string(),
            })
        };
        if self.handlers.is_empty() {
            return invalid(
                "handlers",
                "no job kinds registered (call register::<YourJob>() or handler(kind, ..))",
            );
        }
        if self.queues.is_empty() {
            self.queues
                .insert(spooler_core::DEFAULT_QUEUE.to_string(), 10);
        }
        if let Some((q, _)) = self.queues.iter().find(|(_, c)| **c == 0) {
            return invalid(&format!("queues.{q}.concurrency"), "must be at least 1");
        }
        if self.lease < Duration::from_millis(100) {
            return invalid("lease", "must be at least 100ms");
        }
        let heartbeat = self.heartbeat.unwrap_or(self.lease / 3);
        if heartbeat >= self.lease {
            return invalid("heartbeat", "must be shorter than the lease");
        }
        if self.poll_interval.is_zero() {
            return invalid("poll_interval", "must be greater than zero");
        }
        if self.max_claim == 0 {
            return invalid("max_claim", "must be at least 1");
        }
        if !(1..=16).contains(&self.claims_in_flight) {
            return invalid("claims_in_flight", "must be between 1 and 16");
        }
        self.maintenance_config.validate()?;
        for schedule in &self.schedules {
            schedule.validate()?;
        }
        let id = self.id.unwrap_or_else(default_worker_id);
        let mut kinds: Vec<String> = self.handlers.keys().cloned().collect();
        kinds.sort();
        let store = self.store.clone();
        let signals = if self.test_signals {
            TestSignals::on()
        } else {
            TestSignals::default()
        };
        let completer = completer::CompleterHandle::start(
            store.clone(),
            self.lease / 3,
            self.lease,
            signals.flushed.clone(),
        );
        let shared = Arc::new(Shared {
            started_at: store.clock().now(),
            store,
            id: id.into(),
            handlers: self.handlers,
            kinds,
            queues: self.queues,
            settings: Settings {
                lease: self.lease,
                heartbeat,
                poll_interval: self.poll_interval,
                grace: self.grace,
                default_timeout: self.default_timeout,
                max_claim: self.max_claim,
                claims_in_flight: self.claims_in_flight,
                retry: Arc::new(self.retry),
                test_outcome_delay: self.test_outcome_delay,
            },
            running: Mutex::new(HashMap::new()),
            idle: Notify::new(),
            completer,
            signals,
            state: self.state,
        });
        Ok(Worker {
            shared,
            maintenance: self.maintenance.then_some(self.maintenance_config),
            schedules: self.schedules,
        })
    }
}

fn default_worker_id() -> String {
    let host = hostname();
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

pub(crate) fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".to_string())
}

/// Runs jobs. Build one with [`Worker::builder`], then [`Worker::run_until`] or [`Worker::start`].
pub struct Worker {
    shared: Arc<Shared>,
    maintenance: Option<MaintenanceConfig>,
    schedules: Vec<spooler_core::ScheduleDef>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.shared.id)
            .field("queues", &self.shared.queues)
            .field("kinds", &self.shared.kinds)
            .finish()
    }
}

impl Worker {
    /// Starts building a worker over `store`.
    pub fn builder(store: Arc<dyn Store>) -> WorkerBuilder {
        WorkerBuilder {
            store,
            handlers: HashMap::new(),
            queues: BTreeMap::new(),
            lease: Duration::from_secs(30),
            heartbeat: None,
            poll_interval: Duration::from_secs(1),
            grace: Duration::from_secs(10),
            default_timeout: None,
            max_claim: 100,
            claims_in_flight: 4,
            retry: RetryPolicies::default(),
            maintenance: true,
            maintenance_config: MaintenanceConfig::default(),
            id: None,
            test_signals: false,
            test_outcome_delay: None,
            schedules: Vec::new(),
            state: Default::default(),
        }
    }

    /// This worker's id, as recorded on the jobs it runs.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The store it works.
    pub fn store(&self) -> Arc<dyn Store> {
        self.shared.store.clone()
    }

    /// The queues it works.
    pub fn queues(&self) -> Vec<String> {
        self.shared.queues.keys().cloned().collect()
    }

    /// The kinds it has handlers for.
    pub fn kinds(&self) -> &[String] {
        &self.shared.kinds
    }

    /// The events this worker reports to tests (no-ops unless built with
    /// [`WorkerBuilder::test_signals`]). Not part of the API.
    #[doc(hidden)]
    pub fn test_signals(&self) -> TestSignals {
        self.shared.signals.clone()
    }

    /// Runs until `shutdown` completes, then stops gracefully: no new claims; running jobs get the
    /// grace period to finish; the rest are released so another worker takes them at once;
    /// buffered outcomes are written before this returns.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        self.run(async move {
            shutdown.await;
            Stop::Graceful
        })
        .await
    }

    /// Runs until `stop` says how to stop.
    async fn run(self, stop: impl Future<Output = Stop>) -> Result<(), Error> {
        let shared = self.shared;
        if !self.schedules.is_empty() {
            crate::Client::new(shared.store.clone())
                .declare_schedules("app", &self.schedules, false)
                .await?;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut producers = tokio::task::JoinSet::new();
        let mut tasks = tokio::task::JoinSet::new();
        for (queue, concurrency) in &shared.queues {
            let slots = Arc::new(QueueSlots {
                name: queue.clone(),
                concurrency: *concurrency,
                running: AtomicU32::new(0),
                freed: Notify::new(),
            });
            producers.spawn(producer::Producer::new(shared.clone(), slots).run(stop_rx.clone()));
        }
        tasks.spawn(heartbeat::Heartbeat::new(shared.clone()).run(stop_rx.clone()));
        let maintenance = self.maintenance.map(|config| {
            let m = Maintenance::new(shared.store.clone(), config, shared.id.to_string())
                .retry_policies(shared.settings.retry.clone());
            let stop = stop_rx.clone();
            let operations = crate::OperationRunner::new(shared.store.clone());
            let ops_stop = stop_rx.clone();
            tokio::spawn(async move {
                // Operations by filter resume here too, beside (not inside) the maintenance
                // pass, so a long operation never delays rescue or promotion.
                tokio::join!(m.run(stop), operations.run(ops_stop));
            })
        });
        tracing::info!(
            worker = %shared.id,
            store = %shared.store.describe(),
            queues = ?shared.queues,
            kinds = ?shared.kinds,
            "worker started"
        );

        let how = stop.await;
        tracing::info!(worker = %shared.id, running = shared.running_count(), "worker stopping");
        let _ = stop_tx.send(true);
        let mut deadline = tokio::time::Instant::now() + shared.settings.grace;
        // Producers stop first (a claim in flight is released, not started), so that the set of
        // running jobs is final before the grace period starts.
        while producers.join_next().await.is_some() {}
        shared.signals.stopped_claiming.notify();
        if let Stop::Retire(mut hurry) = how {
            // Replaced by another worker: running jobs run to their end, however long, unless the
            // process is told to stop; then they get the grace period.
            loop {
                let idle = shared.idle.notified();
                if shared.running_count() == 0 || *hurry.borrow() {
                    break;
                }
                tokio::select! {
                    _ = idle => {}
                    changed = hurry.changed() => if changed.is_err() { break },
                }
            }
            deadline = tokio::time::Instant::now() + shared.settings.grace;
        }
        // Running jobs get the rest of the grace period.
        loop {
            let idle = shared.idle.notified();
            if shared.running_count() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                break;
            }
        }
        let left: Vec<LeaseRef> = shared
            .running
            .lock()
            .expect("running lock")
            .keys()
            .copied()
            .collect();
        if !left.is_empty() {
            tracing::warn!(
                worker = %shared.id,
                jobs = ?left.iter().map(|l| l.id).collect::<Vec<_>>(),
                "grace period over: releasing running jobs for another worker"
            );
            shared.abort(&left, Abort::Shutdown);
            let release_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while shared.running_count() > 0 {
                let idle = shared.idle.notified();
                if shared.running_count() == 0
                    || tokio::time::timeout_at(release_deadline, idle)
                        .await
                        .is_err()
                {
                    break;
                }
            }
        }
        while tasks.join_next().await.is_some() {}
        shared.completer.close().await;
        // Maintenance resigned its leadership as soon as it saw the stop.
        if let Some(task) = maintenance {
            let _ = task.await;
        }
        if let Err(e) = shared.store.worker_remove(&shared.id).await {
            tracing::warn!(worker = %shared.id, error = %e, "could not remove the worker record");
        }
        tracing::info!(worker = %shared.id, "worker stopped");
        Ok(())
    }

    /// Starts the worker on the runtime and returns a handle that stops it.
    pub fn start(self) -> WorkerHandle {
        let (tx, rx) = oneshot::channel::<Stop>();
        let id = self.shared.id.to_string();
        let signals = self.shared.signals.clone();
        let task = tokio::spawn(self.run(async move { rx.await.unwrap_or(Stop::Graceful) }));
        WorkerHandle {
            id,
            stop: Some(tx),
            task,
            signals,
        }
    }
}

/// How a worker stops.
enum Stop {
    /// Running jobs get the grace period.
    Graceful,
    /// Running jobs run to their end, until the receiver turns true; then the grace period.
    Retire(watch::Receiver<bool>),
}

/// A started worker; [`WorkerHandle::shutdown`] stops it gracefully.
pub struct WorkerHandle {
    id: String,
    stop: Option<oneshot::Sender<Stop>>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
    signals: TestSignals,
}

impl WorkerHandle {
    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The events the worker reports to tests (no-ops unless built with
    /// [`WorkerBuilder::test_signals`]). Not part of the API.
    #[doc(hidden)]
    pub fn test_signals(&self) -> &TestSignals {
        &self.signals
    }

    /// Stops the worker gracefully and waits until it has.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.stop_as(Stop::Graceful).await
    }

    /// Stops the worker for another that replaces it (a reloaded config): it claims nothing more,
    /// its running jobs run to their end however long they take, and then it stops. Once `hurry`
    /// turns true (the process is shutting down) the rest get the grace period, as in
    /// [`WorkerHandle::shutdown`].
    pub async fn retire(self, hurry: watch::Receiver<bool>) -> Result<(), Error> {
        self.stop_as(Stop::Retire(hurry)).await
    }

    async fn stop_as(mut self, how: Stop) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(how);
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(Error::WorkerTask {
                worker: self.id.clone(),
                message: e.to_string(),
            }),
        }
    }
}
