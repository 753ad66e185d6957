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
mod connect;
mod error;
mod job;
mod leader;
mod listen;
mod migrate;
mod notify;
mod operation;
mod queue;
mod schedule;
mod stats;
mod vacuum;
mod worker;

pub use migrate::MIGRATIONS;
/// Re-exported so that the caller's transactions and this store use one sqlx:
/// `spooler::sqlx::Transaction<'_, spooler::sqlx::Postgres>`.
pub use sqlx;

use async_trait::async_trait;
use connect::{connect_message, take_params, validate_schema};
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

/// One statement with the schema filled in, shared without copying: sqlx takes it as SQL that was
/// audited (its text is this crate's own `const`s; only the validated, quoted schema is put in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stmt(Arc<str>);

impl sqlx::SqlSafeStr for &Stmt {
    fn into_sql_str(self) -> sqlx::SqlStr {
        sqlx::AssertSqlSafe(self.0.clone()).into_sql_str()
    }
}

impl std::ops::Deref for Stmt {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Stmt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Declares [`Sql`], one field per statement (`name => template`, a `const` with `{s}` for the
/// schema, documented where it is defined), and `Sql::new`, which fills in the quoted schema.
macro_rules! statements {
    ($($name:ident => $template:expr,)*) => {
        /// Every statement, with the schema filled in once at connect.
        #[derive(Debug)]
        pub(crate) struct Sql {
            $($name: Stmt,)*
        }

        impl Sql {
            fn new(schema: &str) -> Self {
                let quoted = format!("\"{schema}\"");
                Self {
                    $($name: Stmt(Arc::from($template.replace("{s}", &quoted))),)*
                }
            }
        }
    };
}

statements! {
    insert_notify => job::insert::INSERT_NOTIFY_SQL,
    insert => job::insert::INSERT_SQL,
    insert_one => job::insert::INSERT_ONE_SQL,
    next_ids => job::copy::NEXT_IDS_SQL,
    copy_jobs => job::copy::COPY_JOBS_SQL,
    existing_unique => job::insert::EXISTING_UNIQUE_SQL,
    latest_by_key => job::insert::LATEST_BY_KEY_SQL,
    routed_from_of => job::read::ROUTED_FROM_OF_SQL,
    request_any => job::request::ANY_SQL,
    request_take => job::request::TAKE_SQL,
    request_done => job::request::DONE_SQL,
    request_refuse => job::request::REFUSE_SQL,
    claim => job::claim::CLAIM_SQL,
    claim_one => job::claim::CLAIM_ONE_SQL,
    claim_one_fn => job::claim::CLAIM_ONE_FN,
    extend => job::claim::EXTEND_SQL,
    limit_state => job::limit::LIMIT_STATE_SQL,
    limit_row => job::limit::LIMIT_ROW_SQL,
    claim_limited => job::limit::CLAIM_LIMITED_SQL,
    finish => job::finish::FINISH_SQL,
    finish_fn => job::finish::FINISH_FN,
    facts => job::finish::FACTS_SQL,
    routed_from => job::route::ROUTED_FROM_SQL,
    route_insert => job::route::ROUTE_INSERT_SQL,
    route_stop => job::route::ROUTE_STOP_SQL,
    replay_claim => job::replay::REPLAY_CLAIM_SQL,
    replay_note => job::replay::REPLAY_NOTE_SQL,
    period_claim => job::unique::PERIOD_CLAIM_SQL,
    period_held => job::unique::PERIOD_HELD_SQL,
    period_retake => job::unique::PERIOD_RETAKE_SQL,
    jobs_by_id => job::unique::JOBS_BY_ID_SQL,
    replayed => job::replay::REPLAYED_SQL,
    cancel => job::manual::CANCEL_SQL,
    retry => job::manual::RETRY_SQL,
    delete => job::manual::DELETE_SQL,
    get => job::read::GET_SQL,
    list => job::read::LIST_SQL,
    list_active => job::read::LIST_ACTIVE_SQL,
    list_finished => job::read::LIST_FINISHED_SQL,
    lapsed => job::maintenance::LAPSED_SQL,
    promote => job::maintenance::PROMOTE_SQL,
    prune => job::maintenance::PRUNE_SQL,
    queue_counts => queue::COUNTS_SQL,
    queue_paused => queue::PAUSED_SQL,
    queue_pause => queue::PAUSE_SQL,
    queue_resume => queue::RESUME_SQL,
    queue_settings_lock => queue::CONFIGURE_LOCK_SQL,
    queue_settings_clear => queue::CONFIGURE_CLEAR_SQL,
    queue_configure => queue::CONFIGURE_SQL,
    queue_settings => queue::SETTINGS_SQL,
    schedule_declare => schedule::DECLARE_SQL,
    schedule_remove_others => schedule::REMOVE_OTHERS_SQL,
    schedule_list => schedule::LIST_SQL,
    schedule_lock => schedule::LOCK_SQL,
    schedule_advance => schedule::ADVANCE_SQL,
    schedule_ran => schedule::RAN_SQL,
    schedule_set_paused => schedule::SET_PAUSED_SQL,
    leader_elect => leader::ELECT_SQL,
    leader_resign => leader::RESIGN_SQL,
    worker_heartbeat => worker::HEARTBEAT_SQL,
    worker_list => worker::LIST_SQL,
    worker_remove => worker::REMOVE_SQL,
    other_workers => notify::OTHER_WORKERS_SQL,
    available_queues => listen::AVAILABLE_QUEUES_SQL,
    op_count => operation::COUNT_SQL,
    op_max_id => operation::MAX_ID_SQL,
    op_create => operation::CREATE_SQL,
    op_get => operation::GET_SQL,
    op_lock => operation::LOCK_SQL,
    op_running => operation::RUNNING_SQL,
    op_chunk => operation::CHUNK_SQL,
    op_advance => operation::ADVANCE_SQL,
    op_cancel => operation::CANCEL_SQL,
    op_held_keys => operation::HELD_KEYS_SQL,
    op_retry_many => operation::RETRY_MANY_SQL,
    op_cancel_many => operation::CANCEL_MANY_SQL,
    op_delete_many => operation::DELETE_MANY_SQL,
    stats_mark => stats::MARK_SQL,
    stats_mark_first => stats::MARK_FIRST_SQL,
    stats_mark_move => stats::MARK_MOVE_SQL,
    stats_scan => stats::SCAN_SQL,
    stats_stored => stats::STORED_SQL,
    stats_put => stats::PUT_SQL,
    stats_prune => stats::PRUNE_SQL,
    stats_read => stats::READ_SQL,
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
    /// The queues' stored defaults, read at most once a `QueueSettingsCache::MAX_AGE` by inserts
    /// and claims.
    settings: spooler_core::store::QueueSettingsCache,
    /// Taken by this process's claims from a limited queue, one at a time per queue: they would
    /// only race each other for the queue's limit state (see `job::limit`), costing a read each.
    limited_claims:
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The task turning `enqueue()` requests into jobs (`job::request`); stopped on drop.
    requests: std::sync::OnceLock<AbortOnDrop>,
    /// Small enqueues waiting to be written together (`job::group`).
    inserts: job::group::InsertGroup,
}

/// A task aborted when its owner is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Inner {
    /// The lock this process's claims from the limited `queue` take turns on.
    pub(crate) fn limited_claim_turn(&self, queue: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.limited_claims.lock().expect("limited claims lock");
        turns.entry(queue.to_string()).or_default().clone()
    }

    /// Wakes every process's workers of `queues`, which a commit of this process's gave available
    /// jobs: other processes' through the notifier, this one's directly.
    pub(crate) fn announce(&self, queues: std::collections::BTreeSet<String>) {
        self.notifier.send(queues.iter().cloned());
        self.wake_local(queues);
    }

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

impl PgStore {
    /// Connects with default [`PgOptions`] (a `?schema=` in the URL is honoured).
    pub async fn connect(url: &str) -> StoreResult<PgStore> {
        Self::connect_with(url, PgOptions::default()).await
    }

    /// The SQL that applies the migrations after version `after` (0: all) to the schema `url`
    /// names (`?schema=`, default [`DEFAULT_SCHEMA`]) and records them as `spooler migrate` does,
    /// for users who run migrations with their own tool. Connects to nothing.
    pub fn migration_script(url: &str, after: i64) -> StoreResult<String> {
        let (_, params) = take_params(url)?;
        let schema = params.schema.unwrap_or_else(|| DEFAULT_SCHEMA.to_string());
        validate_schema(&schema)?;
        Ok(migrate::script(&schema, after))
    }

    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DB[?schema=NAME]`), failing within
    /// `connect_timeout` with an error naming host and port. Does not migrate: call
    /// [`Store::migrate`].
    ///
    /// TLS takes libpq's parameters: `sslmode` (`disable`, `prefer` — the default: TLS when the
    /// server offers it —, `require`, `verify-ca`, `verify-full`), `sslrootcert` (the CA to trust;
    /// without it the public CAs of the Mozilla list), `sslcert` and `sslkey` (a client
    /// certificate). `connect_timeout` (seconds, as libpq reads it, or a duration such as
    /// `500ms`) and `statement_timeout` (milliseconds, as PostgreSQL reads it, or a duration) in
    /// the URL override [`PgOptions`].
    pub async fn connect_with(url: &str, mut options: PgOptions) -> StoreResult<PgStore> {
        let redacted = redact_url(url);
        let (sqlx_url, params) = take_params(url)?;
        let schema = params.schema.unwrap_or(options.schema);
        validate_schema(&schema)?;
        if let Some(timeout) = params.connect_timeout {
            options.connect_timeout = timeout;
        }
        if let Some(timeout) = params.statement_timeout {
            options.statement_timeout = timeout;
        }
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
            Ok(Err(e)) => {
                return Err(open_err(connect_message(
                    &e,
                    &endpoint,
                    &user,
                    &database,
                    connect.get_ssl_mode(),
                )));
            }
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
        let requests_wake = Arc::new(tokio::sync::Notify::new());
        let listener = listen::spawn(listen::Config {
            connect,
            channel: channel.clone(),
            requests_channel: format!("{schema}_requests"),
            requests_wake: requests_wake.clone(),
            queues_sql: sql.available_queues.clone(),
            wake: wake.clone(),
            ping_every: options.listener_ping_interval,
            ping_timeout: options.connect_timeout,
            endpoint,
            own_notifier,
        });
        let inner = Arc::new(Inner {
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
            settings: Default::default(),
            limited_claims: Default::default(),
            requests: std::sync::OnceLock::new(),
            inserts: Default::default(),
        });
        let mover = job::request::spawn(Arc::downgrade(&inner), requests_wake);
        let _ = inner.requests.set(AbortOnDrop(mover));
        Ok(PgStore { inner })
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

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
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
