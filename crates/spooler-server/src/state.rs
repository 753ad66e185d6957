//! The state every handler shares: the store, the client, the token, limits and the configured queues.

use metrics_exporter_prometheus::PrometheusHandle;
use spooler::{Client, Store};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How the API behaves: auth, limits and defaults.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// When set, every `/v1` call needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// A second token that may read everything (`GET` on `/v1`, every dashboard page) and change
    /// nothing; only meaningful beside `token`.
    pub read_token: Option<String>,
    /// Largest request body accepted, in bytes (1 MiB by default); larger bodies get 413.
    pub body_limit: usize,
    /// Most jobs one `POST /v1/jobs/batch` may carry (1,000 by default); more get 413.
    pub batch_limit: usize,
    /// Longest `?wait=` honoured on `GET /v1/jobs/{id}` (60 s by default); longer waits are cut to it.
    pub max_wait: Duration,
    /// The configured queues: listed by `GET /v1/queues` even while they hold no jobs. (Their
    /// defaults for enqueued jobs live in the store, see
    /// [`crate::run::configure_store`], so every enqueue applies them, not only the API's.)
    pub queues: BTreeSet<String>,
    /// Serve `/metrics` from the process-wide Prometheus recorder (installed on first use).
    pub metrics: bool,
    /// Check the arguments of built-in kinds (`http`, `tcp`, `command`, `file`, `sleep`) when
    /// they are enqueued, answering a mistake with a 422 ([`crate::kinds::check_args`]); on by
    /// default. Turn it off when the app that nests the router has kinds of its own by those names.
    pub check_builtin_args: bool,
    /// Where `file` jobs may write, for that check (the working directory by default).
    pub file_allow: crate::kinds::FileAllow,
    /// Where `http` and `tcp` jobs may go, for that check (`[net]`).
    pub net: crate::kinds::NetPolicy,
    /// The server listens on a loopback address only: a request whose `Host` is not a loopback
    /// name (`localhost`, `*.localhost`, `127.0.0.1`, `[::1]`) is refused, so a page whose own
    /// name resolves to 127.0.0.1 (DNS rebinding) cannot reach it. Set by `spooler serve`.
    pub loopback_only: bool,
    /// A store holding at least this many jobs has its counts per queue cached and taken again
    /// in the background ([`crate::counts`]); 100,000 by default.
    pub count_cache_above: i64,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            token: None,
            read_token: None,
            body_limit: 1024 * 1024,
            batch_limit: 1000,
            max_wait: Duration::from_secs(60),
            queues: BTreeSet::new(),
            metrics: true,
            check_builtin_args: true,
            file_allow: crate::kinds::FileAllow::default(),
            net: crate::kinds::NetPolicy::default(),
            loopback_only: false,
            count_cache_above: crate::counts::BIG,
        }
    }
}

/// What the router's handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) client: Client,
    pub(crate) options: ServerOptions,
    pub(crate) metrics: Option<PrometheusHandle>,
    /// True once the server is shutting down: open long polls answer at once.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    /// Keys the dashboard's CSRF fields when no token is configured.
    pub(crate) dashboard_secret: [u8; 32],
    /// The last count of jobs per queue, for stores big enough to cache it.
    pub(crate) counts: crate::counts::CountCache,
    /// What the dashboard's queue pages show, shared by every tab.
    pub(crate) dashboard_cache: crate::dashboard::SnapshotCache,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.inner.store.describe())
            .field("auth", &self.inner.options.token.is_some())
            .finish()
    }
}

impl AppState {
    /// State over an open (and migrated) store.
    pub fn new(store: Arc<dyn Store>, options: ServerOptions) -> Self {
        let metrics = options.metrics.then(crate::metrics::prometheus_handle);
        Self {
            inner: Arc::new(Inner {
                client: Client::new(store.clone()),
                store,
                options,
                metrics,
                stopping: tokio::sync::watch::Sender::new(false),
                dashboard_secret: rand::random(),
                dashboard_cache: Default::default(),
                counts: Default::default(),
            }),
        }
    }

    /// Tells open long polls (`GET /v1/jobs/{id}?wait=`) to answer now with the job as it is, so
    /// that a graceful shutdown does not wait for them. Call it when shutdown begins; later long
    /// polls answer at once too.
    pub fn begin_shutdown(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// The store the API reads and writes.
    pub fn store(&self) -> Arc<dyn Store> {
        self.inner.store.clone()
    }

    /// The options it was built with.
    pub fn options(&self) -> &ServerOptions {
        &self.inner.options
    }
}
