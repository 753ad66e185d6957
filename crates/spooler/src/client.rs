//! The client, the one job API the server and the CLI adapt: enqueue typed or raw jobs, read,
//! list, wait for, cancel, retry and delete them, queues and their pause, pruning (operations by
//! filter are in `operations.rs`).

use crate::job::{BlockingJob, Job};
use crate::{ConnectOptions, Error, Retention};
use chrono::{DateTime, Utc};
use spooler_core::stats::{self, Granularity, StatsQuery};
use spooler_core::{
    Inserted, JobId, JobList, JobPrune, JobRow, Keep, NewJob, QueueInfo, QueueScope, Store,
    StoreError,
};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// What finished over a chart's span: [`Client::stats`].
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// The buckets' size.
    pub granularity: Granularity,
    /// The first bucket's start.
    pub since: DateTime<Utc>,
    /// The store's time when read.
    pub until: DateTime<Utc>,
    /// How far finished jobs have been rolled up: later ones are not counted yet.
    pub rolled_until: Option<DateTime<Utc>>,
    /// Every bucket from `since` to `until`.
    pub points: Vec<stats::ChartPoint>,
    /// Run and wait percentiles per queue and kind over the span.
    pub latencies: Vec<stats::Latency>,
}

/// Enqueues jobs and reads them back. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    store: Arc<dyn Store>,
    /// The long polls of every clone of this client, watched by one task.
    waiters: Arc<Waiters>,
}

/// Adds enqueued jobs, given by queue and kind, to the enqueued counter: one update per run of
/// jobs of one queue and kind, so a batch of a thousand alike costs one look-up of the counter,
/// not a thousand (and a batch of all different ones no more than before).
fn count_enqueued<'a>(jobs: impl Iterator<Item = (&'a str, &'a str)>) {
    let mut counts: Vec<((&str, &str), u64)> = Vec::new();
    for job in jobs {
        match counts.last_mut() {
            Some((last, n)) if *last == job => *n += 1,
            _ => counts.push((job, 1)),
        }
    }
    for ((queue, kind), n) in counts {
        metrics::counter!(
            crate::metrics::JOBS_ENQUEUED,
            "queue" => queue.to_string(),
            "kind" => kind.to_string()
        )
        .increment(n);
    }
}

impl Client {
    /// A client over an open store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            waiters: Arc::default(),
        }
    }

    /// Opens (and migrates) the store a URL names; see [`crate::connect`].
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Ok(Self::new(crate::connect(url).await?))
    }

    /// Opens the store a URL names, with options.
    pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Self, Error> {
        Ok(Self::new(crate::connect_with(url, options).await?))
    }

    /// The store, to share with a [`crate::Worker`].
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Starts enqueueing a typed job; set options on the returned builder, then `.await` it.
    pub fn enqueue<J: Job>(&self, job: J) -> Enqueue<'_> {
        let new = serde_json::to_value(&job)
            .map(|args| NewJob {
                max_attempts: J::MAX_ATTEMPTS,
                ..NewJob::new(J::KIND, args)
                    .queue(J::QUEUE)
                    .priority(J::PRIORITY)
            })
            .map_err(|source| Error::Args {
                kind: J::KIND.to_string(),
                source,
            });
        Enqueue { client: self, new }
    }

    /// Starts enqueueing a typed blocking job.
    pub fn enqueue_blocking<J: BlockingJob>(&self, job: J) -> Enqueue<'_> {
        let new = serde_json::to_value(&job)
            .map(|args| NewJob {
                max_attempts: J::MAX_ATTEMPTS,
                ..NewJob::new(J::KIND, args)
                    .queue(J::QUEUE)
                    .priority(J::PRIORITY)
            })
            .map_err(|source| Error::Args {
                kind: J::KIND.to_string(),
                source,
            });
        Enqueue { client: self, new }
    }

    /// Inserts one job as given.
    pub async fn enqueue_new(&self, job: NewJob) -> Result<Inserted, Error> {
        let mut inserted = self.enqueue_many(vec![job]).await?;
        Ok(inserted.remove(0))
    }

    /// Inserts many jobs in one transaction.
    pub async fn enqueue_many(&self, mut jobs: Vec<NewJob>) -> Result<Vec<Inserted>, Error> {
        for job in &mut jobs {
            crate::trace::stamp(&mut job.meta);
        }
        let inserted = self.store.job_insert_many(jobs).await?;
        count_enqueued(
            inserted
                .iter()
                .filter(|i| !i.duplicate)
                .map(|i| (i.job.queue.as_str(), i.job.kind.as_str())),
        );
        Ok(inserted)
    }

    /// Enqueues each message whose key was never replayed into this store (see
    /// [`JobAdminStore::job_replay`](spooler_core::store::JobAdminStore::job_replay)): a spill
    /// replayed twice enqueues every message once.
    pub async fn replay(
        &self,
        replays: &[spooler_core::store::Replay],
    ) -> Result<Vec<spooler_core::store::Replayed>, Error> {
        let replayed = self.store.job_replay(replays).await?;
        count_enqueued(
            replays
                .iter()
                .zip(&replayed)
                .filter(|(_, done)| done.enqueued)
                .map(|(r, _)| (r.job.queue.as_str(), r.job.kind.as_str())),
        );
        Ok(replayed)
    }

    /// The job as stored now; `JobNotFound` if there is none.
    pub async fn status(&self, id: JobId) -> Result<JobRow, Error> {
        self.store
            .job_get(id)
            .await?
            .ok_or(Error::Store(StoreError::JobNotFound { id }))
    }

    /// Waits until the job is `completed`, `failed` or `cancelled`, or `timeout` has passed, and
    /// returns it as it is then: look at its `state` to tell which.
    pub async fn wait(&self, id: JobId, timeout: Duration) -> Result<JobRow, Error> {
        self.wait_or(id, timeout, std::future::pending()).await
    }

    /// [`Client::wait`] that also answers, with the job as it is, as soon as `stop` completes (a
    /// server shutting down answers its long polls at once).
    ///
    /// Waiters share work: one task per client reads each waited-on job once per tick, however
    /// many wait on it (a thousand long polls on one job cost one store read per tick, not a
    /// thousand), and hands the finished job to all of them at once.
    pub async fn wait_or(
        &self,
        id: JobId,
        timeout: Duration,
        stop: impl Future<Output = ()>,
    ) -> Result<JobRow, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let job = self.status(id).await?;
        if job.state.is_finished() || timeout.is_zero() {
            return Ok(job);
        }
        let mut seen = self.waiters.watch(&self.store, id);
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                changed = seen.changed() => {
                    if changed.is_err() {
                        break; // the watcher is gone (its runtime is ending): read once more
                    }
                    match seen.borrow_and_update().clone() {
                        Some(Seen::Finished(job)) => return Ok(*job),
                        Some(Seen::Gone) => return Err(Error::Store(StoreError::JobNotFound { id })),
                        None => {}
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
                _ = &mut stop => break,
            }
        }
        self.status(id).await
    }

    /// A page of jobs matching `list`, newest first, and the cursor (`before_id`) of the next page,
    /// `None` on the last. A full page is followed by a one-row probe, so that a last page that
    /// happens to be full says it is the last.
    pub async fn list(&self, list: &JobList) -> Result<(Vec<JobRow>, Option<JobId>), Error> {
        let jobs = self.store.job_list(list).await?;
        let Some(last) = jobs.last().filter(|_| jobs.len() as u32 >= list.limit) else {
            return Ok((jobs, None));
        };
        let probe = JobList {
            limit: 1,
            before_id: Some(last.id),
            ..list.clone()
        };
        let more = !self.store.job_list(&probe).await?.is_empty();
        let next = more.then_some(last.id);
        Ok((jobs, next))
    }

    /// Cancels a job: a scheduled or available one at once, a running one by asking its worker.
    pub async fn cancel(&self, id: JobId) -> Result<JobRow, Error> {
        Ok(self.store.job_cancel(id).await?)
    }

    /// Runs a finished or scheduled job again now.
    pub async fn retry(&self, id: JobId) -> Result<JobRow, Error> {
        Ok(self.store.job_retry(id).await?)
    }

    /// Deletes a job that is not running; returns it as it was.
    pub async fn delete(&self, id: JobId) -> Result<JobRow, Error> {
        Ok(self.store.job_delete(id).await?)
    }

    /// Every queue with jobs or a pause flag, with counts per state and the oldest wait.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>, Error> {
        Ok(self.store.queue_list().await?)
    }

    /// What finished over the span a chart of `granularity` shows ([`Granularity::shown`]), of
    /// `queue` and `kind` when given: completed, failed and cancelled per bucket (zeros where
    /// none), and run and wait percentiles per queue and kind, from the history the maintenance
    /// leader rolls up.
    pub async fn stats(
        &self,
        granularity: Granularity,
        queue: Option<&str>,
        kind: Option<&str>,
    ) -> Result<Stats, Error> {
        let until = self.store.clock().now();
        let since = granularity.floor(until - granularity.shown());
        let rows = self
            .store
            .stats_read(&StatsQuery {
                granularity,
                since,
                queue: queue.map(str::to_string),
                kind: kind.map(str::to_string),
            })
            .await?;
        let rolled_until = self.store.stats_mark().await?;
        Ok(Stats {
            granularity,
            since,
            until,
            rolled_until,
            points: stats::chart(&rows, granularity, since, until),
            latencies: stats::latencies(&rows),
        })
    }

    /// Stops claims from `queue`; running jobs go on.
    pub async fn pause(&self, queue: &str) -> Result<(), Error> {
        Ok(self.store.queue_pause(queue).await?)
    }

    /// Lets claims from `queue` resume.
    pub async fn resume(&self, queue: &str) -> Result<(), Error> {
        Ok(self.store.queue_resume(queue).await?)
    }

    /// Deletes finished jobs older than their retention, `batch` rows per statement (short
    /// transactions), until none is left; returns how many. A queue whose stored settings give
    /// a state its own retention ([`QueueSettings::retention`](spooler_core::QueueSettings),
    /// from a config file's `[queues.NAME] retention`) keeps that state's jobs as long as they
    /// say; every other queue and state as `retention` says.
    pub async fn prune(&self, retention: &Retention, batch: u32) -> Result<u64, Error> {
        let now = self.store.clock().now();
        let settings = self.store.queue_settings().await?;
        let own: Vec<&spooler_core::QueueSettings> = settings
            .iter()
            .filter(|s| !s.retention.is_default())
            .collect();
        let default = (
            Keep::from_option(retention.completed),
            Keep::from_option(retention.failed),
            Keep::from_option(retention.cancelled),
        );
        let mut scopes: Vec<(QueueScope, (Keep, Keep, Keep))> = own
            .iter()
            .map(|s| {
                let r = &s.retention;
                (
                    QueueScope::Only(vec![s.queue.clone()]),
                    (
                        r.completed.unwrap_or(default.0),
                        r.failed.unwrap_or(default.1),
                        r.cancelled.unwrap_or(default.2),
                    ),
                )
            })
            .collect();
        scopes.push((
            QueueScope::Except(own.iter().map(|s| s.queue.clone()).collect()),
            default,
        ));
        let mut total = 0;
        for (queues, (completed, failed, cancelled)) in scopes {
            let prune = JobPrune {
                completed_before: completed.cutoff(now),
                failed_before: failed.cutoff(now),
                cancelled_before: cancelled.cutoff(now),
                queues,
                limit: batch.max(1),
            };
            loop {
                let n = self.store.job_prune(&prune).await?;
                total += n;
                if n < u64::from(prune.limit) {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        Ok(total)
    }
}

/// A job being enqueued: set options, then `.await` it for the job's id.
#[must_use = "an Enqueue does nothing until awaited"]
pub struct Enqueue<'a> {
    client: &'a Client,
    new: Result<NewJob, Error>,
}

impl Enqueue<'_> {
    fn with(mut self, f: impl FnOnce(&mut NewJob)) -> Self {
        if let Ok(new) = &mut self.new {
            f(new);
        }
        self
    }

    /// Puts it in `queue`.
    pub fn queue(self, queue: impl Into<String>) -> Self {
        let queue = queue.into();
        self.with(|j| j.queue = queue)
    }

    /// Runs it no sooner than `delay` from now.
    pub fn delay(self, delay: Duration) -> Self {
        let at = spooler_core::clock::add(self.client.store.clock().now(), delay);
        self.with(|j| j.run_at = Some(at))
    }

    /// Runs it no sooner than `at`.
    pub fn run_at(self, at: DateTime<Utc>) -> Self {
        self.with(|j| j.run_at = Some(at))
    }

    /// Sets its priority (higher runs first).
    pub fn priority(self, priority: i32) -> Self {
        self.with(|j| j.priority = priority)
    }

    /// Sets the attempts allowed.
    pub fn max_attempts(self, n: i32) -> Self {
        self.with(|j| j.max_attempts = Some(n))
    }

    /// Sets the per-attempt timeout.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.with(|j| j.timeout = Some(timeout))
    }

    /// Deduplicates against unfinished jobs with the same key.
    pub fn unique_key(self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.with(|j| j.unique_key = Some(key))
    }

    /// Adds tags.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(self, tags: I) -> Self {
        let tags: Vec<String> = tags.into_iter().map(Into::into).collect();
        self.with(|j| j.tags.extend(tags))
    }

    /// The job to be inserted, for inspection or for `enqueue_many`.
    pub fn into_new_job(self) -> Result<NewJob, Error> {
        self.new
    }

    /// Inserts it and returns the full result (the job row, and whether it was a duplicate).
    pub async fn inserted(self) -> Result<Inserted, Error> {
        self.client.enqueue_new(self.new?).await
    }

    /// Inserts it inside the caller's own Postgres transaction (`&mut *tx` of a
    /// [`sqlx::Transaction`](crate::sqlx::Transaction)): the job exists only if that transaction
    /// commits, and workers are woken when it does. The client's store must be a Postgres one.
    ///
    /// ```no_run
    /// # async fn demo(client: spooler::Client, pool: spooler::sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct SendEmail { to: String }
    /// # impl spooler::Job for SendEmail { const KIND: &'static str = "send_email";
    /// #     async fn run(self, _: spooler::JobContext) -> Result<(), spooler::JobError> { Ok(()) } }
    /// let mut tx = pool.begin().await?;
    /// spooler::sqlx::query("INSERT INTO users (email) VALUES ($1)")
    ///     .bind("a@example.com")
    ///     .execute(&mut *tx)
    ///     .await?;
    /// client.enqueue(SendEmail { to: "a@example.com".into() }).tx(&mut tx).await?;
    /// tx.commit().await?; // the user and the job, or neither
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "postgres")]
    pub async fn tx(self, tx: &mut crate::sqlx::PgConnection) -> Result<Inserted, Error> {
        let mut new = self.new?;
        crate::trace::stamp(&mut new.meta);
        let store = self.client.store.clone();
        let pg = store
            .as_any()
            .and_then(|s| s.downcast_ref::<crate::postgres::PgStore>())
            .ok_or_else(|| Error::Config {
                key: "store".into(),
                message: format!(
                    "enqueueing inside a Postgres transaction needs a Postgres store; this client's is {}",
                    store.describe()
                ),
            })?;
        let mut inserted = pg.job_insert_tx(tx, std::slice::from_ref(&new)).await?;
        inserted.pop().ok_or_else(|| {
            Error::Store(spooler_core::StoreError::Database {
                message: "insert returned no row".into(),
            })
        })
    }
}

impl<'a> IntoFuture for Enqueue<'a> {
    type Output = Result<JobId, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { Ok(self.inserted().await?.job.id) })
    }
}

/// What the watcher saw of a waited-on job that ends the wait.
#[derive(Debug, Clone)]
enum Seen {
    /// The job finished, as it is now.
    Finished(Box<JobRow>),
    /// The job is gone (deleted or pruned).
    Gone,
}

/// The long polls of one client: the jobs waited on, each read by one watcher task on a backoff
/// of its own (2 ms doubling to 100 ms, as each waiter used to poll alone), shared by every waiter
/// of that job. The task runs while anything is waited on and ends when nothing is.
#[derive(Debug, Default)]
struct Waiters {
    state: std::sync::Mutex<WaitersState>,
    /// Rung when a job is added, so that its first read is not held up by others' backoff.
    added: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct WaitersState {
    jobs: std::collections::HashMap<JobId, Watched>,
    running: bool,
}

#[derive(Debug)]
struct Watched {
    seen: tokio::sync::watch::Sender<Option<Seen>>,
    next: tokio::time::Instant,
    pause: Duration,
}

impl Waiters {
    const FIRST_PAUSE: Duration = Duration::from_millis(2);
    const MAX_PAUSE: Duration = Duration::from_millis(100);
    /// Distinct jobs read at once in one tick.
    const READS_AT_ONCE: usize = 16;

    fn lock(&self) -> std::sync::MutexGuard<'_, WaitersState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits on `id` with the others who do; starts the watcher if it is not running.
    fn watch(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
        id: JobId,
    ) -> tokio::sync::watch::Receiver<Option<Seen>> {
        let mut state = self.lock();
        let receiver = match state.jobs.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.get().seen.subscribe(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let (seen, receiver) = tokio::sync::watch::channel(None);
                e.insert(Watched {
                    seen,
                    next: tokio::time::Instant::now() + Self::FIRST_PAUSE,
                    pause: Self::FIRST_PAUSE,
                });
                self.added.notify_one();
                receiver
            }
        };
        if !state.running {
            state.running = true;
            tokio::spawn(self.clone().run(store.clone()));
        }
        receiver
    }

    async fn run(self: Arc<Self>, store: Arc<dyn Store>) {
        use futures::StreamExt;
        loop {
            let (due, next) = {
                let mut state = self.lock();
                state.jobs.retain(|_, w| w.seen.receiver_count() > 0);
                if state.jobs.is_empty() {
                    state.running = false;
                    return;
                }
                let now = tokio::time::Instant::now();
                let due: Vec<JobId> = state
                    .jobs
                    .iter()
                    .filter(|(_, w)| w.next <= now)
                    .map(|(id, _)| *id)
                    .collect();
                let next = state.jobs.values().map(|w| w.next).min();
                (due, next.unwrap_or(now + Self::MAX_PAUSE))
            };
            if due.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = self.added.notified() => {}
                }
                continue;
            }
            let reads: Vec<(JobId, Result<Option<JobRow>, StoreError>)> =
                futures::stream::iter(due)
                    .map(|id| {
                        let store = store.clone();
                        async move { (id, store.job_get(id).await) }
                    })
                    .buffer_unordered(Self::READS_AT_ONCE)
                    .collect()
                    .await;
            let mut state = self.lock();
            for (id, read) in reads {
                let ends = match read {
                    Ok(Some(job)) if job.state.is_finished() => Some(Seen::Finished(Box::new(job))),
                    Ok(Some(_)) => None,
                    Ok(None) => Some(Seen::Gone),
                    Err(e) => {
                        // Waiters read the job themselves when their time is up.
                        tracing::debug!(job = id, error = %e, "long poll: reading the job failed");
                        None
                    }
                };
                match ends {
                    Some(seen) => {
                        if let Some(w) = state.jobs.remove(&id) {
                            w.seen.send_replace(Some(seen));
                        }
                    }
                    None => {
                        if let Some(w) = state.jobs.get_mut(&id) {
                            w.pause = (w.pause * 2).min(Self::MAX_PAUSE);
                            w.next = tokio::time::Instant::now() + w.pause;
                        }
                    }
                }
            }
        }
    }
}
