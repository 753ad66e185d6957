//! `spooler serve`, `spooler worker` and `spooler migrate`: the long-running processes and the
//! schema step, configured from flags over environment over the config file.

use crate::logging::{self, LogFormat};
use anyhow::{Context, anyhow};
use clap::Args;
use spooler_server::config::Config;
use spooler_server::reload::ReloadingWorker;
use spooler_server::run::{
    ListenOptions, WorkerOverrides, configure_store, serve_with, server_options, shutdown_signal,
};
use spooler_server::{AppState, router};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The store when nothing names one.
pub const DEFAULT_STORE: &str = "sqlite://spooler.db";
/// The listen address when nothing names one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";

/// Flags every long-running command shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The store: sqlite://path, sqlite::memory: or postgres://user@host:5432/db [default: sqlite://spooler.db]
    #[arg(long, env = "SPOOLER_STORE")]
    pub store: Option<String>,
    /// Config file (TOML); flags and SPOOLER_* variables override it.
    #[arg(long, env = "SPOOLER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format on stderr [default: pretty on a terminal, JSON lines otherwise].
    #[arg(long, value_enum, env = "SPOOLER_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl Common {
    /// Loads the config file (if any) and starts logging.
    fn setup(&self) -> anyhow::Result<(Config, String)> {
        let config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let format = self
            .log_format
            .or_else(|| {
                config
                    .log_format
                    .as_deref()
                    .and_then(LogFormat::from_config)
            })
            .unwrap_or(LogFormat::Auto);
        logging::init(format, config.log_level.as_deref());
        let store = self
            .store
            .clone()
            .or_else(|| config.store.clone())
            .unwrap_or_else(|| DEFAULT_STORE.to_string());
        Ok((config, store))
    }
}

/// Worker flags.
#[derive(Debug, Clone, Args)]
pub struct WorkerFlags {
    /// A queue to work and its concurrency, NAME=CONCURRENCY (repeatable) [default: the config's queues, else default=10].
    #[arg(long = "queue", value_parser = parse_queue)]
    pub queues: Vec<(String, u32)>,
    /// How long a claimed job is leased before another worker may take it (renewed by heartbeats).
    #[arg(long, value_parser = crate::duration_arg)]
    pub lease: Option<Duration>,
    /// How often an idle worker polls when no wake-up arrives.
    #[arg(long, value_parser = crate::duration_arg)]
    pub poll: Option<Duration>,
    /// On SIGINT/SIGTERM, how long running jobs may take to finish before they are released.
    #[arg(long, value_parser = crate::duration_arg)]
    pub grace: Option<Duration>,
}

impl WorkerFlags {
    fn overrides(&self) -> WorkerOverrides {
        WorkerOverrides {
            queues: self.queues.clone(),
            lease: self.lease,
            poll: self.poll,
            grace: self.grace,
        }
    }
}

fn parse_queue(text: &str) -> Result<(String, u32), String> {
    let (name, concurrency) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=CONCURRENCY, e.g. default=10, not \"{text}\""))?;
    let concurrency: u32 = concurrency
        .trim()
        .parse()
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| format!("concurrency of queue \"{name}\" must be a whole number above 0"))?;
    if name.trim().is_empty() {
        return Err("the queue name is empty".into());
    }
    Ok((name.trim().to_string(), concurrency))
}

/// `spooler serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Address to listen on [default: 127.0.0.1:7700].
    #[arg(long, env = "SPOOLER_LISTEN")]
    pub listen: Option<String>,
    /// Require `Authorization: Bearer TOKEN` on every /v1 call.
    #[arg(long, env = "SPOOLER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A token that may read everything (GET on /v1, the dashboard's pages) and change nothing.
    #[arg(long, env = "SPOOLER_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// Serve the API only; run no worker for the built-in kinds.
    #[arg(long)]
    pub no_worker: bool,
    #[command(flatten)]
    pub listen_flags: ListenFlags,
    #[command(flatten)]
    pub worker: WorkerFlags,
}

/// How the listener treats connections (see `spooler_server::run::ListenOptions`).
#[derive(Debug, Clone, Args)]
pub struct ListenFlags {
    /// How long a client has to send a request's headers; also how long an idle keep-alive connection stays open [default: 10s].
    #[arg(long, env = "SPOOLER_HEADER_READ_TIMEOUT", value_parser = crate::duration_arg)]
    pub header_read_timeout: Option<Duration>,
    /// How long a client has to send a request's body once its headers are in (408 after) [default: 30s].
    #[arg(long, env = "SPOOLER_BODY_READ_TIMEOUT", value_parser = crate::duration_arg)]
    pub body_read_timeout: Option<Duration>,
    /// Connections served at once, at most the descriptor limit less 64; more wait their turn [default: 10000].
    #[arg(long, env = "SPOOLER_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// Longest long poll: a `GET /v1/jobs/{id}?wait=` asking for more waits this long [default: 60s].
    #[arg(long, env = "SPOOLER_MAX_WAIT", value_parser = crate::duration_arg)]
    pub max_wait: Option<Duration>,
}

impl ListenFlags {
    fn options(&self) -> ListenOptions {
        let defaults = ListenOptions::default();
        ListenOptions {
            header_read_timeout: self
                .header_read_timeout
                .unwrap_or(defaults.header_read_timeout),
            body_read_timeout: self.body_read_timeout.unwrap_or(defaults.body_read_timeout),
            max_connections: self
                .max_connections
                .map_or(defaults.max_connections, |n| n as usize),
        }
    }
}

/// Runs the HTTP API (and a worker for the built-in kinds) until SIGINT/SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<i32> {
    let (config, store_url) = args.common.setup()?;
    let listen = args
        .listen
        .clone()
        .or_else(|| config.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let token = args.token.clone().or_else(|| config.token.clone());
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let starting = async {
        let store = spooler::connect(&store_url).await?;
        store_config(store.clone(), &config).await?;
        let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|e| {
            anyhow!("cannot listen on {listen}: {e} (is another server there? choose an address with --listen or SPOOLER_LISTEN)")
        })?;
        anyhow::Ok((store, listener))
    };
    let Some(started) = unless_stopped(&mut stop, starting).await else {
        return Ok(0);
    };
    let (store, listener) = started?;
    let mut reloads = spooler_server::reload::spawn_reload(store.clone(), config.clone());
    let local = listener
        .local_addr()
        .with_context(|| format!("listener on {listen}"))?;
    if token.is_none() && !local.ip().is_loopback() {
        return Err(anyhow!(
            "refusing to serve on {local} without a token: anyone who can reach it could enqueue commands, webhooks and file writes (set --token or SPOOLER_TOKEN, or listen on 127.0.0.1)"
        ));
    }
    let mut options = server_options(&config, token);
    if let Some(read_token) = args.read_token.clone().filter(|t| !t.is_empty()) {
        options.read_token = Some(read_token);
    }
    if options.read_token.is_some() && options.token.is_none() {
        return Err(anyhow!(
            "a read-only token needs a token beside it: without one everything is open anyway (set --token or SPOOLER_TOKEN)"
        ));
    }
    // A loopback listener answers loopback names only (DNS rebinding).
    options.loopback_only = local.ip().is_loopback();
    if let Some(max_wait) = args.listen_flags.max_wait {
        options.max_wait = max_wait;
    }
    let auth = options.token.is_some();
    let state = AppState::new(store.clone(), options);
    let app = router(state.clone());
    // Operations by filter resume after a restart: a worker runs a runner beside its maintenance;
    // without one, the server runs its own.
    let (runner_stop, runner_rx) = tokio::sync::watch::channel(false);
    let runner = args.no_worker.then(|| {
        let runner = spooler::OperationRunner::new(store.clone());
        tokio::spawn(async move { runner.run(runner_rx).await })
    });
    let mut worker = if args.no_worker {
        None
    } else {
        Some(ReloadingWorker::start(
            store.clone(),
            &config,
            &args.worker.overrides(),
        )?)
    };
    tracing::info!(
        listen = %local,
        store = %store.describe(),
        config = %config.name(),
        auth,
        worker = worker.is_some(),
        "server listening on http://{local}"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let listen_options = args.listen_flags.options();
    tracing::debug!(
        connection_cap = listen_options.connection_cap(),
        header_read_timeout = ?listen_options.header_read_timeout,
        body_read_timeout = ?listen_options.body_read_timeout,
        "listener options"
    );
    let mut server = tokio::spawn(async move {
        serve_with(listener, app, &listen_options, async move {
            let mut rx = stop_rx;
            let _ = rx.wait_for(|stop| *stop).await;
        })
        .await
    });
    // The listener is bound and listening: connections are accepted from here on.
    crate::systemd::ready(&format!("serving on http://{local}"));
    let watchdog = crate::systemd::spawn_watchdog();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            result = &mut server => {
                result.context("server task")?.with_context(|| format!("serving on {local}"))?;
                break;
            }
            Ok(()) = reloads.applied.changed() => {
                let new = reloads.applied.borrow_and_update().clone();
                if let Some(worker) = worker.as_mut() {
                    worker.reloaded(&new);
                }
                crate::systemd::status(&format!("serving on http://{local}; config reloaded"));
            }
        }
    }
    crate::systemd::stopping();
    // Stop accepting connections and answer open long polls now; then let the worker finish.
    let _ = stop_tx.send(true);
    state.begin_shutdown();
    let _ = runner_stop.send(true);
    if let Some(runner) = runner {
        let _ = runner.await;
    }
    if let Some(worker) = worker {
        worker.shutdown().await?;
    }
    // Open requests (long polls) get a moment; then we go.
    if tokio::time::timeout(Duration::from_secs(5), &mut server)
        .await
        .is_err()
    {
        tracing::warn!("open requests did not finish within 5s; closing them");
        server.abort();
    }
    reloads.task.abort();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    tracing::info!("server stopped");
    Ok(0)
}

/// `spooler worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub common: Common,
    /// Serve `/healthz` and `/metrics` on this address (e.g. 0.0.0.0:9700), for probes and
    /// scrapes; nothing is served without it.
    #[arg(long, env = "SPOOLER_WORKER_LISTEN")]
    pub listen: Option<String>,
    #[command(flatten)]
    pub worker: WorkerFlags,
}

/// Runs a worker for the built-in kinds until SIGINT/SIGTERM, then stops gracefully.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<i32> {
    let (config, store_url) = args.common.setup()?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let starting = async {
        let store = spooler::connect(&store_url).await?;
        store_config(store.clone(), &config).await?;
        anyhow::Ok(store)
    };
    let Some(store) = unless_stopped(&mut stop, starting).await else {
        return Ok(0);
    };
    let store = store?;
    let mut reloads = spooler_server::reload::spawn_reload(store.clone(), config.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut probe_addr = None;
    let probes = match &args.listen {
        Some(listen) => {
            let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
                anyhow!("cannot listen on {listen}: {e} (choose another address with --listen or SPOOLER_WORKER_LISTEN)")
            })?;
            let local = listener
                .local_addr()
                .with_context(|| format!("listener on {listen}"))?;
            let state = AppState::new(store.clone(), server_options(&config, None));
            let app = spooler_server::worker_router(state);
            tracing::info!(listen = %local, "worker serving /healthz and /metrics on http://{local}");
            probe_addr = Some(local);
            let options = ListenOptions::default();
            Some(tokio::spawn(async move {
                let mut rx = stop_rx;
                serve_with(listener, app, &options, async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await
            }))
        }
        None => None,
    };
    let mut worker = ReloadingWorker::start(store, &config, &args.worker.overrides())?;
    let status = match probe_addr {
        Some(local) => format!("working; /healthz and /metrics on http://{local}"),
        None => "working".to_string(),
    };
    crate::systemd::ready(&status);
    let watchdog = crate::systemd::spawn_watchdog();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Ok(()) = reloads.applied.changed() => {
                let new = reloads.applied.borrow_and_update().clone();
                worker.reloaded(&new);
                crate::systemd::status(&format!("{status}; config reloaded"));
            }
        }
    }
    crate::systemd::stopping();
    worker.shutdown().await?;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    reloads.task.abort();
    let _ = stop_tx.send(true);
    if let Some(probes) = probes {
        let _ = tokio::time::timeout(Duration::from_secs(5), probes).await;
    }
    Ok(0)
}

/// Runs the start of `serve` or `worker` (connecting to the store, writing the config's queues,
/// each of which may wait on the store for a long time) unless `stop` completes first: then it
/// logs that nothing was started and gives `None`, and the process exits cleanly.
async fn unless_stopped<T>(
    stop: &mut (impl std::future::Future<Output = ()> + Unpin),
    starting: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        () = stop => {
            tracing::info!("stopped while starting; nothing was started");
            None
        }
        started = starting => Some(started),
    }
}

/// `spooler migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub common: Common,
    /// Print the SQL instead of applying it (connects to nothing), for running migrations with
    /// your own tool; it records each version as `spooler migrate` would.
    #[arg(long)]
    pub print: bool,
    /// With --print: only the migrations after this version (what `spooler_migrations` already
    /// holds).
    #[arg(long, requires = "print", default_value_t = 0)]
    pub after: i64,
}

/// Writes the config's queue defaults and schedules into the store (see
/// `spooler_server::run::configure_store`), naming the config file and the store when it fails.
pub async fn store_config(store: Arc<dyn spooler::Store>, config: &Config) -> anyhow::Result<()> {
    let describe = store.describe();
    configure_store(store, config).await.with_context(|| {
        format!(
            "{}: storing the queues' defaults and schedules in {describe}",
            config.name()
        )
    })
}

/// Creates or upgrades the store's schema.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<i32> {
    let (_, store_url) = args.common.setup()?;
    if args.print {
        print!("{}", spooler::migration_script(&store_url, args.after)?);
        return Ok(0);
    }
    let store = spooler::connect_with(
        &store_url,
        spooler::ConnectOptions {
            migrate: false,
            ..Default::default()
        },
    )
    .await?;
    store.migrate().await?;
    println!("{}: schema is up to date", store.describe());
    Ok(0)
}
