//! Group commit of concurrent small enqueues: while earlier inserts are under way, the next ones
//! wait together and go as one statement and one commit.
//!
//! One commit per job caps a 2-core PostgreSQL near 8,000 single inserts a second (each commit
//! waits for its WAL flush). Callers here queue their jobs and at most [`FLUSHERS`] tasks write
//! what is queued: an idle store writes a lone job at once, as before, and a busy one writes
//! everything that arrived meanwhile in one `unnest` insert. Each caller is answered with its own
//! jobs, after the commit, as if it had inserted them alone.

use super::insert::insert_now;
use crate::Inner;
use spooler_core::store::QueueSettingsMap;
use spooler_core::{Inserted, NewJob, StoreError, StoreResult};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Inserts written at once, each by its own task on its own connection.
pub(crate) const FLUSHERS: usize = 4;

/// Requests of at least this many jobs are a batch already: they are written on their own.
pub(crate) const ALONE_FROM: usize = 100;

/// The most jobs one grouped insert carries.
const MOST_JOBS: usize = 1000;

/// One caller's jobs, waiting to be written.
struct Request {
    jobs: Vec<NewJob>,
    settings: Arc<QueueSettingsMap>,
    reply: oneshot::Sender<StoreResult<Vec<Inserted>>>,
}

/// The queue of waiting requests and the permits of the tasks that write them.
pub(crate) struct InsertGroup {
    waiting: Mutex<Vec<Request>>,
    flushers: Arc<Semaphore>,
}

impl std::fmt::Debug for InsertGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let waiting = self.waiting.lock().map_or(0, |w| w.len());
        f.debug_struct("InsertGroup")
            .field("waiting", &waiting)
            .field("free_flushers", &self.flushers.available_permits())
            .finish()
    }
}

impl Default for InsertGroup {
    fn default() -> Self {
        Self {
            waiting: Mutex::new(Vec::new()),
            flushers: Arc::new(Semaphore::new(FLUSHERS)),
        }
    }
}

impl InsertGroup {
    /// Takes the waiting requests, up to [`MOST_JOBS`] jobs (at least one request), leaving out
    /// those whose caller gave up: nobody would learn their jobs' ids.
    fn take(&self) -> Vec<Request> {
        let mut waiting = self.waiting.lock().expect("insert group lock");
        waiting.retain(|r| !r.reply.is_closed());
        let mut jobs = 0;
        let mut n = 0;
        while n < waiting.len() && (n == 0 || jobs + waiting[n].jobs.len() <= MOST_JOBS) {
            jobs += waiting[n].jobs.len();
            n += 1;
        }
        waiting.drain(..n).collect()
    }

    fn is_empty(&self) -> bool {
        self.waiting.lock().expect("insert group lock").is_empty()
    }
}

/// Inserts `jobs` (none taking a period key) with whatever other callers are inserting at the
/// same moment; answers as [`insert_plain`] would for `jobs` alone.
///
/// With a flusher free and nobody waiting, the caller writes its jobs itself, as an insert without
/// grouping would; otherwise it waits in the queue, and a flusher writes it with the others.
pub(crate) async fn insert(
    inner: &Arc<Inner>,
    jobs: &[NewJob],
    settings: Arc<QueueSettingsMap>,
) -> StoreResult<Vec<Inserted>> {
    let group = &inner.inserts;
    if group.is_empty()
        && let Ok(permit) = group.flushers.clone().try_acquire_owned()
    {
        let turn = Turn {
            inner: inner.clone(),
            permit: Some(permit),
        };
        let done = insert_now(inner, jobs, &settings).await;
        drop(turn);
        return done;
    }
    let (reply, answer) = oneshot::channel();
    group
        .waiting
        .lock()
        .expect("insert group lock")
        .push(Request {
            jobs: jobs.to_vec(),
            settings,
            reply,
        });
    if let Ok(permit) = group.flushers.clone().try_acquire_owned() {
        tokio::spawn(flush(inner.clone(), permit));
    }
    // Otherwise every permit is held, and each is handed on (below) before it is given back.
    answer.await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable {
            message: format!(
                "the insert into {} was dropped before it was written",
                inner.url
            ),
        })
    })
}

/// A caller writing its own jobs holds a flusher permit; when it is done (or gives up), the
/// permit is handed on to the requests that queued meanwhile.
struct Turn {
    inner: Arc<Inner>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            hand_on(&self.inner, permit);
        }
    }
}

/// Gives `permit` to a flusher of the waiting requests, or back. A request queued while every
/// permit was held found none: looking at the queue again after giving the permit back means it
/// is never left without a flusher.
fn hand_on(inner: &Arc<Inner>, permit: OwnedSemaphorePermit) {
    // A turn dropped as its runtime shuts down has nobody left to write for.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if !inner.inserts.is_empty() {
        runtime.spawn(flush(inner.clone(), permit));
        return;
    }
    drop(permit);
    if !inner.inserts.is_empty()
        && let Ok(permit) = inner.inserts.flushers.clone().try_acquire_owned()
    {
        runtime.spawn(flush(inner.clone(), permit));
    }
}

/// Writes waiting requests until none is left, then hands its permit on. Runs as its own task, so
/// a caller that gives up does not stop the insert of the others it carries.
async fn flush(inner: Arc<Inner>, permit: OwnedSemaphorePermit) {
    loop {
        let requests = inner.inserts.take();
        if requests.is_empty() {
            break;
        }
        write(&inner, requests).await;
    }
    hand_on(&inner, permit);
}

/// Writes `requests` in one insert and answers each caller with its own jobs. When the statement
/// fails for what it carried (not for the connection), nothing was written: each request is then
/// written on its own, so one caller's bad job fails only that caller.
async fn write(inner: &Arc<Inner>, mut requests: Vec<Request>) {
    if requests.len() == 1 {
        let request = requests.pop().expect("one request");
        let done = insert_now(inner, &request.jobs, &request.settings).await;
        let _ = request.reply.send(done);
        return;
    }
    let jobs: Vec<NewJob> = requests
        .iter()
        .flat_map(|r| r.jobs.iter().cloned())
        .collect();
    // The queues' defaults as the newest request read them (every request reads the same cache).
    let settings = requests.last().expect("requests").settings.clone();
    match insert_now(inner, &jobs, &settings).await {
        Ok(mut inserted) => {
            for r in requests.into_iter().rev() {
                let mine = inserted.split_off(inserted.len() - r.jobs.len());
                let _ = r.reply.send(Ok(mine));
            }
        }
        Err(StoreError::Unavailable { message }) => {
            for r in requests {
                let _ = r.reply.send(Err(StoreError::Unavailable {
                    message: message.clone(),
                }));
            }
        }
        Err(_) => {
            for r in requests {
                let done = insert_now(inner, &r.jobs, &r.settings).await;
                let _ = r.reply.send(done);
            }
        }
    }
}
