//! The listener: one dedicated connection that `LISTEN`s on the schema's channel and forwards each
//! notification to the store's broadcast of [`Wakeup`]s. It pings its connection when idle, so a
//! dropped or silently half-open connection is noticed; it then reconnects with backoff, listens
//! again, and wakes every queue that has available jobs (notifications may have been missed).
//! Notifications sent by this store's own notifier are skipped: its inserts woke this process's
//! workers directly (see `notify`).

use spooler_core::Wakeup;
use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPoolOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// Handle on the running listener task; dropping it stops the task.
#[derive(Debug)]
pub(crate) struct Listener {
    pid: Arc<AtomicI32>,
    reconnects: Arc<AtomicI32>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// The backend pid of the listening connection, while connected.
    pub(crate) fn pid(&self) -> Option<i32> {
        match self.pid.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// How many times the listener connected again after losing its connection.
    pub(crate) fn reconnects(&self) -> u32 {
        self.reconnects.load(Ordering::SeqCst).max(0) as u32
    }
}

/// The queues that have available jobs: a loose index scan over the claim index, one probe per
/// queue, however deep the backlog.
pub(crate) const AVAILABLE_QUEUES_SQL: &str = "WITH RECURSIVE q AS (
        (SELECT queue FROM {s}.jobs_active WHERE state = 'available' ORDER BY queue LIMIT 1)
        UNION ALL
        SELECT (SELECT j.queue FROM {s}.jobs_active j
                 WHERE j.state = 'available' AND j.queue > q.queue
                 ORDER BY j.queue LIMIT 1)
          FROM q WHERE q.queue IS NOT NULL)
    SELECT queue FROM q WHERE queue IS NOT NULL";

/// What the listener task needs.
pub(crate) struct Config {
    pub(crate) connect: PgConnectOptions,
    pub(crate) channel: String,
    /// The channel of `enqueue()` requests (`job::request`), and whom to tell.
    pub(crate) requests_channel: String,
    pub(crate) requests_wake: Arc<tokio::sync::Notify>,
    /// [`AVAILABLE_QUEUES_SQL`] for this store's schema.
    pub(crate) queues_sql: crate::Stmt,
    pub(crate) wake: broadcast::Sender<Wakeup>,
    pub(crate) ping_every: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) endpoint: String,
    /// The server process id of this store's notifier connection (0: none); forgotten on reconnect.
    pub(crate) own_notifier: Arc<AtomicI32>,
}

/// Starts the listener task.
pub(crate) fn spawn(config: Config) -> Listener {
    let pid = Arc::new(AtomicI32::new(0));
    let reconnects = Arc::new(AtomicI32::new(0));
    let task = tokio::spawn(run(config, pid.clone(), reconnects.clone()));
    Listener {
        pid,
        reconnects,
        task,
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

async fn run(config: Config, pid: Arc<AtomicI32>, reconnects: Arc<AtomicI32>) {
    let mut backoff = BACKOFF_MIN;
    let mut connected_before = false;
    loop {
        match connect(&config).await {
            Ok((mut listener, backend_pid)) => {
                pid.store(backend_pid, Ordering::SeqCst);
                backoff = BACKOFF_MIN;
                if connected_before {
                    // The server may have restarted and given the notifier's number to another
                    // process; the notifier publishes it again with its next wake-up.
                    config.own_notifier.store(0, Ordering::SeqCst);
                    reconnects.fetch_add(1, Ordering::SeqCst);
                    tracing::info!(endpoint = %config.endpoint, pid = backend_pid, "listener reconnected");
                    wake_every_queue(&config, &mut listener).await;
                    config.requests_wake.notify_one();
                }
                connected_before = true;
                let why = serve(&config, &mut listener).await;
                pid.store(0, Ordering::SeqCst);
                tracing::warn!(endpoint = %config.endpoint, reason = %why, "listener connection lost; reconnecting");
            }
            Err(e) => {
                tracing::warn!(endpoint = %config.endpoint, error = %e, retry_in = ?backoff, "listener cannot connect");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn connect(config: &Config) -> Result<(PgListener, i32), sqlx::Error> {
    // A pool of one, made for this connection: when it is dropped the connection goes with it.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .max_lifetime(None)
        .idle_timeout(None)
        .test_before_acquire(false)
        .acquire_timeout(config.ping_timeout.max(Duration::from_secs(1)))
        .connect_with(config.connect.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.eager_reconnect(false);
    let listen = async {
        listener
            .listen_all([config.channel.as_str(), config.requests_channel.as_str()])
            .await?;
        sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(&mut listener)
            .await
    };
    let pid = tokio::time::timeout(config.ping_timeout, listen)
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    Ok((listener, pid))
}

/// Forwards notifications until the connection is lost; returns why.
async fn serve(config: &Config, listener: &mut PgListener) -> String {
    loop {
        match tokio::time::timeout(config.ping_every, listener.try_recv()).await {
            Ok(Ok(Some(n))) => forward(config, &n),
            Ok(Ok(None)) => return "connection closed".into(),
            Ok(Err(e)) => return e.to_string(),
            Err(_idle) => {
                let ping = sqlx::query("SELECT 1").execute(&mut *listener);
                match tokio::time::timeout(config.ping_timeout, ping).await {
                    Ok(Ok(_)) => {
                        while let Some(n) = listener.next_buffered() {
                            forward(config, &n);
                        }
                    }
                    Ok(Err(e)) => return format!("ping failed: {e}"),
                    Err(_) => {
                        return format!(
                            "no answer to a ping within {:?} (half-open connection?)",
                            config.ping_timeout
                        );
                    }
                }
            }
        }
    }
}

/// Wakes the producers of the notification's queue, unless this store's notifier sent it; or the
/// task that takes `enqueue()` requests.
fn forward(config: &Config, notification: &PgNotification) {
    if notification.channel() == config.requests_channel {
        config.requests_wake.notify_one();
        return;
    }
    let own = config.own_notifier.load(Ordering::SeqCst);
    if own != 0 && notification.process_id() as i32 == own {
        return;
    }
    wake(config, notification.payload());
}

fn wake(config: &Config, queue: &str) {
    // No receiver is fine: nobody is waiting.
    let _ = config.wake.send(Wakeup {
        queue: queue.to_string(),
    });
}

async fn wake_every_queue(config: &Config, listener: &mut PgListener) {
    let queues = sqlx::query_scalar::<_, String>(&config.queues_sql).fetch_all(&mut *listener);
    match tokio::time::timeout(config.ping_timeout, queues).await {
        Ok(Ok(queues)) => {
            for queue in queues {
                wake(config, &queue);
            }
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "cannot list queues after reconnecting"),
        Err(_) => tracing::debug!("listing queues after reconnecting timed out"),
    }
}
