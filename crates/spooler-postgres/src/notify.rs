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
//! A wake-up lost to a crash between the commit and the `NOTIFY`, or to a connection the task must
//! first reopen, costs a poll interval, never a job.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

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
