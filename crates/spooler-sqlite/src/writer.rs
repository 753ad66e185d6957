//! The connections: one writer OS thread that group-commits batches of operations, and a small
//! pool of read-only connections for reads of file databases.
//!
//! Every write is a closure sent to the writer thread. The thread takes one, drains whatever else
//! is queued (up to [`MAX_BATCH`]), runs them all in one `BEGIN IMMEDIATE … COMMIT` transaction,
//! each inside its own savepoint so that one operation's error rolls back only that operation,
//! and replies to every caller after the commit. Concurrent claims, completions and inserts thus
//! share one commit. Checkpoints run beside it, on a thread of their own (`checkpoint.rs`).

use crate::checkpoint::Checkpointer;
use crate::error::{OpError, copy_error, map_sql};
use chrono::{DateTime, Utc};
use rusqlite::Connection;
use spooler_core::{Clock, StoreError, StoreResult, Wakeup};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{Semaphore, broadcast, oneshot};

/// At most this many operations share one transaction.
pub(crate) const MAX_BATCH: usize = 256;

/// What an operation sees while it runs on the writer thread.
pub(crate) struct Ctx<'a> {
    /// The write connection, inside the batch's transaction.
    pub conn: &'a Connection,
    /// The store clock's time when this operation started.
    pub now: DateTime<Utc>,
    /// Queues in which this operation made jobs available (sent as wake-ups after the commit).
    wake: Vec<String>,
}

impl Ctx<'_> {
    /// Notes that jobs became available in `queue`: one wake-up per queue per operation.
    pub(crate) fn wake(&mut self, queue: &str) {
        if !self.wake.iter().any(|q| q == queue) {
            self.wake.push(queue.to_string());
        }
    }
}

/// One queued operation, type-erased.
trait Op: Send {
    /// Runs the operation inside the open transaction; true if it succeeded.
    fn run(&mut self, ctx: &mut Ctx<'_>, label: &str) -> bool;
    /// Replies to the caller once the batch's fate is known (`commit` is the batch's error, if any).
    fn reply(self: Box<Self>, commit: Result<(), &StoreError>, wakeups: &broadcast::Sender<Wakeup>);
    /// Whether the caller gave up waiting (its future was dropped, e.g. at a deadline).
    fn abandoned(&self) -> bool;
}

struct Task<T, F> {
    f: Option<F>,
    out: Option<StoreResult<T>>,
    wake: Vec<String>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Op for Task<T, F>
where
    T: Send,
    F: FnOnce(&mut Ctx<'_>) -> Result<T, OpError> + Send,
{
    fn run(&mut self, ctx: &mut Ctx<'_>, label: &str) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        ctx.wake.clear();
        let out = match catch_unwind(AssertUnwindSafe(|| f(ctx))) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.into_store(label)),
            Err(panic) => Err(StoreError::Database {
                message: format!(
                    "store operation on {label} panicked: {}",
                    panic_message(panic.as_ref())
                ),
            }),
        };
        let ok = out.is_ok();
        if ok {
            self.wake = std::mem::take(&mut ctx.wake);
        }
        self.out = Some(out);
        ok
    }

    fn reply(
        self: Box<Self>,
        commit: Result<(), &StoreError>,
        wakeups: &broadcast::Sender<Wakeup>,
    ) {
        let out = match (self.out, commit) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => {
                for queue in self.wake {
                    // No receivers is fine: nobody is waiting.
                    let _ = wakeups.send(Wakeup { queue });
                }
                Ok(v)
            }
            (_, Err(e)) => Err(copy_error(e)),
            (None, Ok(())) => Err(StoreError::Database {
                message: "store operation was not run".into(),
            }),
        };
        // The caller may have gone away (its future dropped) after its operation ran.
        let _ = self.reply.send(out);
    }

    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// The handle to the writer thread. Dropping it closes the channel; the thread finishes what is
/// queued, closes the connection and exits, and the drop waits for it.
pub(crate) struct Writer {
    tx: Option<mpsc::Sender<Box<dyn Op>>>,
    thread: Option<JoinHandle<()>>,
    label: String,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("label", &self.label)
            .finish()
    }
}

impl Writer {
    /// Starts the writer thread owning `conn` (and `checkpointer`, stopped before `conn` closes).
    pub(crate) fn start(
        conn: Connection,
        checkpointer: Option<Checkpointer>,
        label: String,
        clock: Arc<dyn Clock>,
        wakeups: broadcast::Sender<Wakeup>,
    ) -> StoreResult<Self> {
        let (tx, rx) = mpsc::channel::<Box<dyn Op>>();
        let thread_label = label.clone();
        let thread = std::thread::Builder::new()
            .name("spooler-sqlite-writer".into())
            .spawn(move || {
                writer_loop(
                    conn,
                    checkpointer,
                    rx,
                    &thread_label,
                    clock.as_ref(),
                    &wakeups,
                )
            })
            .map_err(|e| StoreError::Open {
                url: label.clone(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            label,
        })
    }

    /// Runs `f` on the writer thread inside a (shared) transaction and returns its result once
    /// the transaction has committed.
    pub(crate) async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_>) -> Result<T, OpError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let task: Box<dyn Op> = Box::new(Task {
            f: Some(f),
            out: None,
            wake: Vec::new(),
            reply,
        });
        let stopped = || StoreError::Unavailable {
            message: format!("the writer of store {} has stopped", self.label),
        };
        self.tx
            .as_ref()
            .ok_or_else(stopped)?
            .send(task)
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

fn writer_loop(
    conn: Connection,
    checkpointer: Option<Checkpointer>,
    rx: mpsc::Receiver<Box<dyn Op>>,
    label: &str,
    clock: &dyn Clock,
    wakeups: &broadcast::Sender<Wakeup>,
) {
    tracing::debug!(store = label, "sqlite writer started");
    let mut batch: Vec<Box<dyn Op>> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        run_batch(&conn, label, clock, &mut batch, wakeups);
    }
    // Channel closed: the last store handle is gone. The checkpoint connection closes first, so
    // this one is the last: it checkpoints and removes the WAL.
    drop(checkpointer);
    if let Err((_, e)) = conn.close() {
        tracing::warn!(store = label, error = %e, "closing the sqlite writer connection failed");
    }
    tracing::debug!(store = label, "sqlite writer stopped");
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn run_batch(
    conn: &Connection,
    label: &str,
    clock: &dyn Clock,
    batch: &mut Vec<Box<dyn Op>>,
    wakeups: &broadcast::Sender<Wakeup>,
) {
    let fail_all = |batch: &mut Vec<Box<dyn Op>>, e: &StoreError| {
        for op in batch.drain(..) {
            op.reply(Err(e), wakeups);
        }
    };
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        let e = match map_sql(e, label) {
            StoreError::Unavailable { .. } => StoreError::Unavailable {
                message: format!(
                    "database {label} is locked by another process and the busy timeout expired"
                ),
            },
            other => other,
        };
        fail_all(batch, &e);
        return;
    }
    // What waited here (behind another process's lock, say) past its caller's deadline is not
    // run: the caller has given up and may have tried again, and a claim nobody receives would
    // hold its jobs until their lease lapsed.
    batch.retain(|op| !op.abandoned());
    if batch.is_empty() {
        let _ = exec(conn, "ROLLBACK");
        return;
    }
    let single = batch.len() == 1;
    let mut ctx = Ctx {
        conn,
        now: clock.now(),
        wake: Vec::new(),
    };
    for op in batch.iter_mut() {
        ctx.now = clock.now();
        if single {
            if !op.run(&mut ctx, label) {
                // Its error is its own; nothing else is in this transaction.
                if !conn.is_autocommit() {
                    let _ = exec(conn, "ROLLBACK");
                }
                for op in batch.drain(..) {
                    op.reply(Ok(()), wakeups);
                }
                return;
            }
        } else {
            if let Err(e) = exec(conn, "SAVEPOINT op") {
                return abort(conn, label, batch, e, wakeups);
            }
            let ok = op.run(&mut ctx, label);
            if conn.is_autocommit() {
                // SQLite rolled the whole transaction back (I/O error, disk full): nothing holds.
                let e = StoreError::Database {
                    message: format!(
                        "the transaction on {label} was rolled back by sqlite; retry the operation"
                    ),
                };
                fail_all(batch, &e);
                return;
            }
            let end = if ok {
                exec(conn, "RELEASE op")
            } else {
                exec(conn, "ROLLBACK TO op").and_then(|_| exec(conn, "RELEASE op"))
            };
            if let Err(e) = end {
                return abort(conn, label, batch, e, wakeups);
            }
        }
    }
    if let Err(e) = exec(conn, "COMMIT") {
        return abort(conn, label, batch, e, wakeups);
    }
    for op in batch.drain(..) {
        op.reply(Ok(()), wakeups);
    }
}

/// Rolls back the batch's transaction and fails every operation in it with `e`.
fn abort(
    conn: &Connection,
    label: &str,
    batch: &mut Vec<Box<dyn Op>>,
    e: rusqlite::Error,
    wakeups: &broadcast::Sender<Wakeup>,
) {
    if !conn.is_autocommit() {
        let _ = exec(conn, "ROLLBACK");
    }
    let e = map_sql(e, label);
    tracing::warn!(store = label, error = %e, "sqlite write batch failed");
    for op in batch.drain(..) {
        op.reply(Err(&e), wakeups);
    }
}

/// Read-only connections to a database file, opened on demand, at most `size` at once.
#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    label: String,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Readers {
    pub(crate) fn new(path: PathBuf, label: String, busy_timeout: Duration, size: usize) -> Self {
        Self {
            path,
            label,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size),
        }
    }

    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(conn);
        }
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)
            .and_then(|c| {
                c.busy_timeout(self.busy_timeout)?;
                c.set_prepared_statement_cache_capacity(64);
                crate::plan_once(&c)?;
                Ok(c)
            })
            .map_err(|e| map_sql(e, &self.label))?;
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }

    /// Runs `f`, a read of one row by its key, on the caller's thread when an idle connection is
    /// at hand, else as [`Readers::run`] does. The hop to the blocking pool and back (two thread
    /// wake-ups) costs more than such a read: `GET /v1/jobs/{id}` served 26–28k requests a second
    /// through it, 36k without. The connection's busy timeout is off meanwhile, so a read that
    /// would wait for a lock (another process recovering the WAL, say) never stalls the caller's
    /// runtime: it goes to the blocking pool and waits there.
    pub(crate) async fn run_point<T, F>(self: &Arc<Self>, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, OpError> + Send + 'static,
    {
        let permit = self.permits.try_acquire();
        // Taken in a statement of its own: the lock must be released before `put` takes it again.
        let idle = match permit {
            Ok(_) => self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop(),
            Err(_) => None,
        };
        if let Some(conn) = idle {
            let out = conn
                .busy_timeout(Duration::ZERO)
                .map_err(OpError::from)
                .and_then(|()| f(&conn));
            if conn.busy_timeout(self.busy_timeout).is_ok() {
                self.put(conn);
            }
            match out {
                Err(OpError::Sql(e)) if crate::error::is_busy(&e) => {}
                out => return out.map_err(|e| e.into_store(&self.label)),
            }
        }
        drop(permit);
        self.run(move |conn| f(conn)).await
    }

    /// Runs `f` on a read-only connection on tokio's blocking pool.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, OpError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable {
                message: format!("the read pool of store {} is closed", self.label),
            })?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = this.take()?;
            let out = f(&conn);
            this.put(conn);
            out.map_err(|e| e.into_store(&this.label))
        })
        .await
        .map_err(|e| StoreError::Database {
            message: format!("read on {} failed: {e}", self.label),
        })?
    }
}
