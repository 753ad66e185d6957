//! spooler-postgres: the PostgreSQL store, for many worker processes and machines on one database.
//!
//! Jobs are claimed with one `UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED)` statement on a
//! partial index of available jobs in claim order; results, lease extensions and inserts travel
//! many per statement as arrays expanded with `unnest`. Making jobs available sends one `NOTIFY`
//! per queue (after the commit for the store's own inserts, see `notify`); a background listener
//! turns them into [`Wakeup`]s for [`Store::subscribe`]. Jobs can be enqueued inside the caller's
//! own transaction with [`PgStore::job_insert_tx`]. Finished jobs live in their own partition, so
//! history never slows the claim. Every table lives in one configurable schema (default `spooler`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), spooler_core::StoreError> {
//! use spooler_core::Store;
//! let store = spooler_postgres::PgStore::connect("postgres://postgres@127.0.0.1:5432/app?schema=jobs").await?;
//! store.migrate().await?;
//! # Ok(()) }
//! ```

mod admin;
mod clock;
mod error;
mod job;
mod leader;
mod listen;
mod migrate;
mod notify;
mod operation;
mod queue;
mod vacuum;
mod worker;

pub use migrate::MIGRATIONS;

use async_trait::async_trait;
use spooler_core::error::redact_url;
use spooler_core::{Capabilities, Clock, Store, StoreError, StoreResult, Wakeup};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// A pooled connection idle this long is pinged before it is used.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The schema used when neither the options nor the URL name one.
pub const DEFAULT_SCHEMA: &str = "spooler";

/// How a [`PgStore`] connects and behaves.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Schema holding spooler's tables (default `spooler`); a `?schema=` in the URL overrides it.
    /// Letters, digits and `_`, at most 50 bytes, not starting with a digit.
    pub schema: String,
    /// Where every time written to the database comes from: `None` (the default) reads the
    /// database's own clock, so every process times leases, rescue and leadership alike; a test may
    /// hand in a manual clock.
    pub clock: Option<Arc<dyn Clock>>,
    /// Pool size (default 10). The listener has a connection of its own, and so has the task that
    /// sends wake-ups once this store has enqueued a job.
    pub max_connections: u32,
    /// Longest wait to connect or to get a pooled connection (default 5s).
    pub connect_timeout: Duration,
    /// Server-side limit on each statement (default 30s); migrations run without it.
    pub statement_timeout: Duration,
    /// How often an idle listener pings its connection to detect a dead or half-open one (default 5s).
    pub listener_ping_interval: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            schema: DEFAULT_SCHEMA.to_string(),
            clock: None,
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            listener_ping_interval: Duration::from_secs(5),
        }
    }
}

/// Every statement, with the schema filled in once at connect.
#[derive(Debug)]
pub(crate) struct Sql {
    /// Insert that notifies inside its transaction (for the caller's transactions).
    insert_notify: String,
    /// Insert whose wake-ups the notifier sends after the commit.
    insert: String,
    /// The same for exactly one job.
    insert_one: String,
    existing_unique: String,
    latest_by_key: String,
    claim: String,
    /// The claim from one queue.
    claim_one: String,
    extend: String,
    /// Writes decided transitions (finish and rescue).
    finish: String,
    /// Reads, under a row lock, the facts a decision needs.
    facts: String,
    cancel: String,
    retry: String,
    delete: String,
    get: String,
    list: String,
    list_active: String,
    list_finished: String,
    /// Locks running jobs whose lease lapsed, with their facts.
    lapsed: String,
    promote: String,
    prune: String,
    queue_counts: String,
    queue_paused: String,
    queue_pause: String,
    queue_resume: String,
    queue_configure: String,
    queue_settings: String,
    leader_elect: String,
    leader_resign: String,
    worker_heartbeat: String,
    worker_list: String,
    worker_remove: String,
    other_workers: String,
    available_queues: String,
    op_count: String,
    op_max_id: String,
    op_create: String,
    op_get: String,
    op_lock: String,
    op_running: String,
    op_chunk: String,
    op_advance: String,
    op_cancel: String,
    op_held_keys: String,
    op_retry_many: String,
    op_cancel_many: String,
    op_delete_many: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let q = |template: &str| template.replace("{s}", &format!("\"{schema}\""));
        Self {
            insert_notify: q(&job::insert::insert_sql(true)),
            insert: q(&job::insert::insert_sql(false)),
            insert_one: q(&job::insert::insert_one_sql()),
            existing_unique: q(&job::insert::existing_unique_sql()),
            latest_by_key: q(&job::insert::latest_by_key_sql()),
            claim: q(&job::claim::claim_sql()),
            claim_one: q(&job::claim::claim_one_sql()),
            extend: q(job::claim::EXTEND_SQL),
            finish: q(&job::finish::finish_sql()),
            facts: q(job::finish::FACTS_SQL),
            cancel: q(&job::manual::cancel_sql()),
            retry: q(&job::manual::retry_sql()),
            delete: q(&job::manual::delete_sql()),
            get: q(&job::read::get_sql()),
            list: q(&job::read::list_sql("jobs", false)),
            list_active: q(&job::read::list_sql("jobs_active", true)),
            list_finished: q(&job::read::list_sql("jobs_done", true)),
            lapsed: q(job::maintenance::LAPSED_SQL),
            promote: q(&job::maintenance::promote_sql()),
            prune: q(job::maintenance::PRUNE_SQL),
            queue_counts: q(queue::COUNTS_SQL),
            queue_paused: q(queue::PAUSED_SQL),
            queue_pause: q(queue::PAUSE_SQL),
            queue_resume: q(queue::RESUME_SQL),
            queue_configure: q(queue::CONFIGURE_SQL),
            queue_settings: q(queue::SETTINGS_SQL),
            leader_elect: q(leader::ELECT_SQL),
            leader_resign: q(leader::RESIGN_SQL),
            worker_heartbeat: q(worker::HEARTBEAT_SQL),
            worker_list: q(worker::LIST_SQL),
            worker_remove: q(worker::REMOVE_SQL),
            other_workers: q(notify::OTHER_WORKERS_SQL),
            op_count: q(&operation::count_sql()),
            op_max_id: q(operation::MAX_ID_SQL),
            op_create: q(&operation::create_sql()),
            op_get: q(&operation::get_sql()),
            op_lock: q(&operation::lock_sql()),
            op_running: q(&operation::running_sql()),
            op_chunk: q(&operation::chunk_sql()),
            op_advance: q(operation::ADVANCE_SQL),
            op_cancel: q(operation::CANCEL_SQL),
            op_held_keys: q(operation::HELD_KEYS_SQL),
            op_retry_many: q(&operation::retry_many_sql()),
            op_cancel_many: q(operation::CANCEL_MANY_SQL),
            op_delete_many: q(operation::DELETE_MANY_SQL),
            // A loose index scan over the claim index: one probe per queue, however deep the backlog.
            available_queues: q("WITH RECURSIVE q AS (
                    (SELECT queue FROM {s}.jobs_active WHERE state = 'available' ORDER BY queue LIMIT 1)
                    UNION ALL
                    SELECT (SELECT j.queue FROM {s}.jobs_active j
                             WHERE j.state = 'available' AND j.queue > q.queue
                             ORDER BY j.queue LIMIT 1)
                      FROM q WHERE q.queue IS NOT NULL)
                SELECT queue FROM q WHERE queue IS NOT NULL"),
        }
    }
}

pub(crate) struct Inner {
    pool: PgPool,
    sql: Sql,
    schema: String,
    channel: String,
    url: String,
    clock: Arc<dyn Clock>,
    wake: broadcast::Sender<Wakeup>,
    listener: listen::Listener,
    notifier: notify::Notifier,
    /// When the leader last looked at the queue table's statistics.
    last_housekeep: std::sync::Mutex<Option<std::time::Instant>>,
    /// Workers that heartbeat through this store: the notifier need not wake them.
    local_workers: notify::LocalWorkers,
}

impl Inner {
    /// Wakes this process's subscribers for `queues` (after a commit that made jobs available).
    pub(crate) fn wake_local(&self, queues: impl IntoIterator<Item = String>) {
        for queue in queues {
            let _ = self.wake.send(Wakeup { queue });
        }
    }
}

/// The PostgreSQL [`Store`]. Cheap to clone: clones share the pool and the listener, which stops
/// when the last clone is dropped.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.inner.url)
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

/// Splits `?schema=NAME` off a URL: returns the URL without it and the schema, if given.
fn take_schema_param(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("schema=") {
            Some(value) => {
                schema = Some(value.to_string());
                false
            }
            None => !pair.is_empty(),
        })
        .collect();
    if rest.is_empty() {
        (base.to_string(), schema)
    } else {
        (format!("{base}?{}", rest.join("&")), schema)
    }
}

fn validate_schema(schema: &str) -> StoreResult<()> {
    let mut chars = schema.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && schema.len() <= 50;
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidInput {
            field: "schema",
            message: format!(
                "\"{schema}\" is not a valid schema name (use letters, digits and _, at most 50 bytes, not starting with a digit)"
            ),
        })
    }
}

/// The cause of a failed connect and, when known, the fix.
fn connect_message(err: &sqlx::Error, endpoint: &str, user: &str, database: &str) -> String {
    if let sqlx::Error::Database(db) = err {
        let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
        let fix = match code.as_str() {
            "28P01" | "28000" => {
                format!(" (check the user \"{user}\" and its password in the URL)")
            }
            "3D000" => format!(" (create it: createdb -h HOST -p PORT {database})"),
            "53300" => {
                " (too many connections: lower max_connections or raise the server's)".into()
            }
            _ => String::new(),
        };
        return format!("PostgreSQL at {endpoint} refused: {}{fix}", db.message());
    }
    format!(
        "cannot reach PostgreSQL at {endpoint}: {err} (is the server running and accepting TCP connections on {endpoint}? check the host and port in the URL)"
    )
}

impl PgStore {
    /// Connects with default [`PgOptions`] (a `?schema=` in the URL is honoured).
    pub async fn connect(url: &str) -> StoreResult<PgStore> {
        Self::connect_with(url, PgOptions::default()).await
    }

    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DB[?schema=NAME]`), failing within
    /// `connect_timeout` with an error naming host and port. Does not migrate: call
    /// [`Store::migrate`].
    pub async fn connect_with(url: &str, options: PgOptions) -> StoreResult<PgStore> {
        let redacted = redact_url(url);
        let (sqlx_url, url_schema) = take_schema_param(url);
        let schema = url_schema.unwrap_or(options.schema);
        validate_schema(&schema)?;
        let open_err = |message: String| StoreError::Open {
            url: redacted.clone(),
            message,
        };
        let connect = PgConnectOptions::from_str(&sqlx_url)
            .map_err(|e| open_err(format!("invalid PostgreSQL URL: {e}")))?;
        // How the connections show in pg_stat_activity: `?application_name=` names a process.
        let application_name = connect
            .get_application_name()
            .unwrap_or("spooler")
            .to_string();
        let connect = connect
            .application_name(&application_name)
            .options([
                (
                    "statement_timeout",
                    format!("{}", options.statement_timeout.as_millis()),
                ),
                // The claim must walk the claim index in order and stop at its LIMIT. Right after
                // a burst of inserts the statistics say the backlog is tiny, and the planner would
                // rather bitmap-scan the whole backlog and sort it: hundreds of ms per claim.
                ("enable_bitmapscan", "off".to_string()),
                // Plan every statement for the table as it is now. After five runs PostgreSQL may
                // keep a generic plan for a connection's lifetime; one made while the queue was
                // empty (a vacuumed idle queue, then a trickle) scans the whole table on every
                // finish and claim once a burst arrives, until the next ANALYZE: we measured a
                // 200,000-job burst drain at 10,500–17,000 jobs/s that way, against 29,500–33,000.
                ("plan_cache_mode", "force_custom_plan".to_string()),
                // A process that vanishes mid-transaction (its host lost, a partition) must not
                // hold row locks for the kernel's two hours: the server probes the connection
                // after 10 s of silence and drops it after three unanswered probes 5 s apart.
                // (The client side of the same fault is covered by a deadline on every call of
                // the worker's.) A transaction left open by a stuck process ends after a minute.
                ("tcp_keepalives_idle", "10".to_string()),
                ("tcp_keepalives_interval", "5".to_string()),
                ("tcp_keepalives_count", "3".to_string()),
                ("idle_in_transaction_session_timeout", "60000".to_string()),
            ])
            .log_statements(tracing::log::LevelFilter::Trace);
        let endpoint = if connect.get_host().starts_with('/') {
            format!("{}/.s.PGSQL.{}", connect.get_host(), connect.get_port())
        } else {
            format!("{}:{}", connect.get_host(), connect.get_port())
        };
        let user = connect.get_username().to_string();
        let database = connect.get_database().unwrap_or(&user).to_string();
        let ping_timeout = options.connect_timeout;
        let pool_options = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.connect_timeout)
            // sqlx pings every connection it hands out: a round trip before each enqueue and each
            // claim (0.12 ms of the idle-worker latency, measured). Like pgx's pool, ping only one
            // that sat idle, which may have died unnoticed; a busy one that dies fails a statement,
            // which its caller retries (claims, outcomes, heartbeats) or reports (enqueue).
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                Box::pin(async move {
                    if meta.idle_for < PING_AFTER_IDLE {
                        return Ok(true);
                    }
                    match tokio::time::timeout(ping_timeout, sqlx::Connection::ping(conn)).await {
                        Ok(Ok(())) => Ok(true),
                        // Not usable: the pool closes it and opens another.
                        Ok(Err(_)) | Err(_) => Ok(false),
                    }
                })
            });
        let pool = match tokio::time::timeout(
            options.connect_timeout,
            pool_options.connect_with(connect.clone()),
        )
        .await
        {
            Ok(Ok(pool)) => pool,
            Ok(Err(e)) => return Err(open_err(connect_message(&e, &endpoint, &user, &database))),
            Err(_) => {
                return Err(open_err(format!(
                    "cannot reach PostgreSQL at {endpoint}: no answer within {:?} (is the host reachable and the port open?)",
                    options.connect_timeout
                )));
            }
        };
        let clock: Arc<dyn Clock> = match options.clock {
            Some(clock) => clock,
            None => {
                let clock =
                    clock::DatabaseClock::sample(&pool, options.connect_timeout, &endpoint).await?;
                clock::DatabaseClock::keep_in_sync(
                    &clock,
                    pool.clone(),
                    options.connect_timeout,
                    endpoint.clone(),
                );
                clock
            }
        };
        let sql = Sql::new(&schema);
        let channel = format!("{schema}_jobs");
        let (wake, _) = broadcast::channel(1024);
        let own_notifier = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let local_workers = notify::LocalWorkers::default();
        let notifier = notify::Notifier::spawn(notify::Config {
            others_sql: sql.other_workers.clone(),
            local_workers: local_workers.clone(),
            clock: clock.clone(),
            connect: connect.clone(),
            channel: channel.clone(),
            timeout: options.connect_timeout,
            pid: own_notifier.clone(),
            endpoint: endpoint.clone(),
        });
        let listener = listen::spawn(listen::Config {
            connect,
            channel: channel.clone(),
            queues_sql: sql.available_queues.clone(),
            wake: wake.clone(),
            ping_every: options.listener_ping_interval,
            ping_timeout: options.connect_timeout,
            endpoint,
            own_notifier,
        });
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                sql,
                schema,
                channel,
                url: redacted,
                clock,
                wake,
                listener,
                notifier,
                last_housekeep: std::sync::Mutex::new(None),
                local_workers,
            }),
        })
    }

    /// The connection pool (for the caller's own transactions, e.g. with [`PgStore::job_insert_tx`]).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema holding spooler's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The `LISTEN/NOTIFY` channel of this schema: `<schema>_jobs`; the payload is a queue name.
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    /// The server process id of the listener's connection while it is connected (`None` while it
    /// reconnects): lets tests and operators find it in `pg_stat_activity`.
    pub fn listener_backend_pid(&self) -> Option<i32> {
        self.inner.listener.pid()
    }

    /// How many times the listener has reconnected after losing its connection.
    pub fn listener_reconnects(&self) -> u32 {
        self.inner.listener.reconnects()
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cross_process_wakeups: true,
            transactional_enqueue: true,
        }
    }

    fn describe(&self) -> String {
        self.inner.url.clone()
    }

    async fn migrate(&self) -> StoreResult<()> {
        migrate::run(&self.inner.pool, &self.inner.schema, self.inner.clock.now()).await
    }

    fn subscribe(&self) -> broadcast::Receiver<Wakeup> {
        self.inner.wake.subscribe()
    }

    fn clock(&self) -> &dyn Clock {
        self.inner.clock.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_param_is_split_off() {
        assert_eq!(
            take_schema_param("postgres://u@h:5432/db?schema=t1"),
            ("postgres://u@h:5432/db".to_string(), Some("t1".to_string()))
        );
        assert_eq!(
            take_schema_param("postgres://u@h/db?sslmode=disable&schema=t1&application_name=x"),
            (
                "postgres://u@h/db?sslmode=disable&application_name=x".to_string(),
                Some("t1".to_string())
            )
        );
        assert_eq!(
            take_schema_param("postgres://u@h/db"),
            ("postgres://u@h/db".to_string(), None)
        );
    }

    #[test]
    fn schema_names_are_identifiers() {
        assert!(validate_schema("spooler").is_ok());
        assert!(validate_schema("t_1").is_ok());
        for bad in ["", "1a", "a-b", "a\"b", "a;drop", &"x".repeat(51)] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }
}
