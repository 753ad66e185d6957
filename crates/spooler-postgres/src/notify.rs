//! Wake-ups for other processes, sent after the commit that made jobs available.
//!
//! A `NOTIFY` inside the inserting transaction holds PostgreSQL's notification-queue lock through
//! that transaction's commit and WAL flush, so concurrent single-job enqueues would commit one at a
//! time (measured here with pgbench, 10 clients: 4,100 inserts/s with a NOTIFY in each against
//! 12,600 without). The store's own inserts therefore commit without one, and one task per store
//! sends the wake-ups afterwards: every queue named while a `NOTIFY` is in flight goes out in the
//! next one, in a transaction that does not wait for its WAL flush (it writes no data). Inserts in a
//! caller's transaction keep their `NOTIFY` inside it, delivered only if that transaction commits.
//!
//! The task sends on a connection of its own, whose server process id it publishes: this store's
//! listener skips notifications from it, since this process's workers were woken directly. Without
//! that, every enqueue came back as a second wake-up and a second, empty claim per producer, on the
//! same two cores as the claim that mattered.
//!
//! Nor is a `NOTIFY` sent when no other process runs a worker: the task looks at the `workers`
//! table (at most once a second) for a worker seen in the last ten minutes that did not heartbeat
//! through this store. A single process that enqueues and works (a service with its own worker)
//! thus pays for no `NOTIFY` at all; it took 0.13 ms off its median enqueue-to-start and a quarter
//! off its 99th percentile, the lock and the two server processes it wakes being on the same two
//! cores as the claim. A worker that starts elsewhere is heard of within a second, and polls meanwhile.
//!
//! A wake-up lost to a crash between the commit and the `NOTIFY`, or to a connection the task must
//! first reopen, costs a poll interval, never a job.

use spooler_core::Clock;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};
use std::collections::HashSet;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Whether a worker other than `$2` (this store's) was seen since `$1`.
pub(crate) const OTHER_WORKERS_SQL: &str = "SELECT EXISTS (
        SELECT 1 FROM {s}.workers WHERE last_seen_at >= $1 AND NOT (id = ANY ($2)))";

/// A worker seen this recently may be alive (heartbeats come every third of its lease).
const WORKER_SEEN_WITHIN: Duration = Duration::from_secs(600);
/// How long an answer about other workers is trusted.
const OTHERS_CHECKED_EVERY: Duration = Duration::from_secs(1);

/// The ids of the workers that heartbeat through this store.
#[derive(Debug, Default, Clone)]
pub(crate) struct LocalWorkers(Arc<Mutex<HashSet<String>>>);

impl LocalWorkers {
    pub(crate) fn add(&self, id: &str) {
        let mut ids = self.0.lock().expect("local workers lock");
        if !ids.contains(id) {
            ids.insert(id.to_string());
        }
    }

    pub(crate) fn remove(&self, id: &str) {
        self.0.lock().expect("local workers lock").remove(id);
    }

    fn ids(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("local workers lock")
            .iter()
            .cloned()
            .collect()
    }
}

/// One statement: notify each queue on the channel, committed without waiting for a WAL flush.
const NOTIFY_SQL: &str = "SELECT set_config('synchronous_commit', 'off', true),
        (SELECT count(pg_notify($1, q)) FROM unnest($2::text[]) AS q)";

/// What the notifying task needs.
pub(crate) struct Config {
    pub(crate) connect: PgConnectOptions,
    pub(crate) channel: String,
    /// Longest wait to connect or for a `NOTIFY` to be answered.
    pub(crate) timeout: Duration,
    /// Where the task publishes its connection's server process id (0 while it has none).
    pub(crate) pid: Arc<AtomicI32>,
    /// `host:port` for log messages.
    pub(crate) endpoint: String,
    /// [`OTHER_WORKERS_SQL`] for this store's schema.
    pub(crate) others_sql: crate::Stmt,
    pub(crate) local_workers: LocalWorkers,
    pub(crate) clock: Arc<dyn Clock>,
}

/// The handle to the notifying task; the task ends when the handle is dropped.
pub(crate) struct Notifier {
    tx: mpsc::UnboundedSender<String>,
}

impl Notifier {
    /// Starts the task that notifies `config.channel` through a connection of its own.
    pub(crate) fn spawn(config: Config) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(run(config, rx));
        Self { tx }
    }

    /// Wakes other processes' workers of `queues` (this process's are woken directly).
    pub(crate) fn send(&self, queues: impl IntoIterator<Item = String>) {
        for queue in queues {
            // The task only stops with the store.
            let _ = self.tx.send(queue);
        }
    }
}

async fn run(config: Config, mut rx: mpsc::UnboundedReceiver<String>) {
    // The connection and its server process id.
    let mut conn: Option<(PgConnection, i32)> = None;
    // Whether another process runs a worker, and when that was looked up.
    let mut others: Option<(Instant, bool)> = None;
    while let Some(first) = rx.recv().await {
        // In the order they were named: wake-ups arrive in commit order.
        let mut queues = vec![first];
        while let Ok(queue) = rx.try_recv() {
            if !queues.contains(&queue) {
                queues.push(queue);
            }
        }
        if conn.is_none() {
            conn = connect(&config).await;
        }
        let Some((c, pid)) = conn.as_mut() else {
            continue;
        };
        if others.is_none_or(|(at, _)| at.elapsed() >= OTHERS_CHECKED_EVERY) {
            others = other_workers(&config, c)
                .await
                .map(|yes| (Instant::now(), yes));
        }
        if others.is_some_and(|(_, yes)| !yes) {
            continue;
        }
        let send = sqlx::query(NOTIFY_SQL)
            .bind(&config.channel)
            .bind(&queues)
            .execute(&mut *c);
        let error = match tokio::time::timeout(config.timeout, send).await {
            Ok(Ok(_)) => {
                // Again after each send: the listener forgets it when it reconnects (the server
                // may have restarted and given the number to another process's connection).
                config.pid.store(*pid, Ordering::SeqCst);
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", config.timeout),
        };
        // Workers of other processes fall back to polling for these queues.
        config.pid.store(0, Ordering::SeqCst);
        conn = None;
        tracing::warn!(endpoint = %config.endpoint, channel = %config.channel, ?queues, %error, "cannot send wake-ups; reconnecting");
    }
}

/// Whether a worker that does not heartbeat through this store was seen lately; `None` when the
/// lookup failed (then the wake-ups are sent, and the send reports the trouble).
async fn other_workers(config: &Config, conn: &mut PgConnection) -> Option<bool> {
    let since = config.clock.now()
        - chrono::TimeDelta::from_std(WORKER_SEEN_WITHIN).unwrap_or(chrono::TimeDelta::MAX);
    let ask = sqlx::query_scalar::<_, bool>(&config.others_sql)
        .bind(since)
        .bind(config.local_workers.ids())
        .fetch_one(conn);
    match tokio::time::timeout(config.timeout, ask).await {
        Ok(Ok(yes)) => Some(yes),
        _ => None,
    }
}

/// Opens the task's connection and publishes its server process id; `None` (logged) on failure.
async fn connect(config: &Config) -> Option<(PgConnection, i32)> {
    let open = async {
        let mut conn = config.connect.connect().await?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await?;
        Ok::<_, sqlx::Error>((conn, pid))
    };
    let error = match tokio::time::timeout(config.timeout, open).await {
        Ok(Ok((conn, pid))) => {
            config.pid.store(pid, Ordering::SeqCst);
            return Some((conn, pid));
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {:?}", config.timeout),
    };
    tracing::warn!(endpoint = %config.endpoint, %error, "cannot open the connection that sends wake-ups");
    None
}
