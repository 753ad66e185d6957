//! `SIGHUP`: read the config file again and apply it while jobs keep running.
//!
//! What lives in the store applies at once to every process sharing it (the others read it
//! within a second): each queue's defaults (`max_attempts`, `timeout`, its own `retention`), its
//! routes, `rate_limit`, `global_concurrency` and `unique`, and the `[[schedules]]` (a changed
//! cadence ticks anew, a removed schedule stops). What shapes this process's worker (the queues it
//! works and their concurrency, retry policies, timings, `[retention]`, allowed commands and
//! directories) is in [`worker_changes`]: the process starts a worker from the new config and the
//! old one retires, claiming nothing more while its running jobs run to their end. A config that
//! fails to load is logged with its file, line and key, and the old one stays. What shapes the
//! process itself (the listener, the token, the store, logs) is named in a warning: it takes
//! effect when the process restarts.

use crate::config::Config;
use crate::run::{WorkerOverrides, worker_queues};
use spooler::Store;
use std::sync::Arc;
use tokio::sync::watch;

/// The top-level settings that differ between `old` and `new` and that a running process cannot
/// take on without a restart, by config key.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    let mut differs = |key: &str, changed: bool| {
        if changed {
            keys.push(key.to_string());
        }
    };
    differs("store", old.store != new.store);
    differs("listen", old.listen != new.listen);
    differs("token", old.token != new.token);
    differs("log_format", old.log_format != new.log_format);
    differs("log_level", old.log_level != new.log_level);
    differs("body_limit", old.body_limit != new.body_limit);
    differs("batch_limit", old.batch_limit != new.batch_limit);
    keys
}

/// The settings that shape a worker built from the config (with the command line's `overrides`)
/// and differ between `old` and `new`, by config key: a reload that changes any of them gives
/// the process a new worker.
pub fn worker_changes(old: &Config, new: &Config, overrides: &WorkerOverrides) -> Vec<String> {
    let mut keys = Vec::new();
    let mut differs = |key: &str, changed: bool| {
        if changed {
            keys.push(key.to_string());
        }
    };
    differs("commands.allow", old.commands_allow != new.commands_allow);
    differs("file.allow", old.file_allow != new.file_allow);
    differs("http.signing_secret", old.http_signing != new.http_signing);
    differs("net", old.net != new.net);
    differs("retention", old.retention != new.retention);
    differs("worker", old.worker != new.worker);
    differs(
        "queues (the queues worked and their concurrency)",
        worker_queues(old, overrides) != worker_queues(new, overrides),
    );
    for (name, q) in &new.queues {
        let was = old.queues.get(name).and_then(|q| q.backoff.as_ref());
        differs(&format!("queues.{name}.backoff"), was != q.backoff.as_ref());
    }
    for name in old.queues.keys().filter(|n| !new.queues.contains_key(*n)) {
        differs(
            &format!("queues.{name}.backoff"),
            old.queues[name].backoff.is_some(),
        );
    }
    keys
}

/// A running reload: abort `task` to stop it; `applied` sees each config once it was applied.
pub struct Reloads {
    /// The task that waits for `SIGHUP`.
    pub task: tokio::task::JoinHandle<()>,
    /// The config in force: the first, then each one a reload applied.
    pub applied: watch::Receiver<Config>,
}

/// Starts reloading the config on every `SIGHUP` until the process ends (abort the task to
/// stop): store-wide settings apply at once, and each applied config is sent on
/// [`Reloads::applied`] for the process to take on what is its own (a new worker); a config that
/// fails to load or to apply leaves the old one in place. Without a config file there is nothing
/// to read, and a `SIGHUP` says so. The signal is taken over before this returns, so a `SIGHUP`
/// never ends the process.
pub fn spawn_reload(store: Arc<dyn Store>, config: Config) -> Reloads {
    let (tx, applied) = watch::channel(config.clone());
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; config reload is off");
                return Reloads {
                    task: tokio::spawn(async {}),
                    applied,
                };
            }
        };
        let task = tokio::spawn(async move {
            let mut current = config;
            while hangup.recv().await.is_some() {
                if let Some(new) = reload(&store, &current).await {
                    current = new.clone();
                    let _ = tx.send(new);
                }
            }
        });
        Reloads { task, applied }
    }
    #[cfg(not(unix))]
    {
        let _ = (store, config, tx);
        Reloads {
            task: tokio::spawn(async {}),
            applied,
        }
    }
}

/// One reload: the new config once read and applied, or `None` (logged) when it was not.
async fn reload(store: &Arc<dyn Store>, current: &Config) -> Option<Config> {
    let Some(path) = current.path.clone() else {
        tracing::warn!("SIGHUP: no config file to reload (start with --config FILE)");
        return None;
    };
    let new = match Config::load(&path) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: the config did not load; the old one stays");
            return None;
        }
    };
    if let Err(e) = crate::run::configure_store(store.clone(), &new).await {
        tracing::error!(config = %path.display(), store = %store.describe(), error = %e, "SIGHUP: the config could not be applied; the old one stays");
        return None;
    }
    let later = restart_needed(current, &new);
    tracing::info!(
        config = %path.display(),
        schedules = new.schedules.len(),
        queues = new.queues.len(),
        "SIGHUP: config reloaded; queue defaults, routes, limits, retention and schedules apply now"
    );
    if !later.is_empty() {
        tracing::warn!(
            config = %path.display(),
            keys = %later.join(", "),
            "SIGHUP: these settings changed and take effect when the process restarts"
        );
    }
    Some(new)
}

/// The process's worker across reloads: when a reloaded config changes what shapes it
/// ([`worker_changes`]), a worker built from the new config takes over and the one it replaces
/// retires (claims nothing more; its running jobs run to their end).
pub struct ReloadingWorker {
    store: Arc<dyn Store>,
    overrides: WorkerOverrides,
    config: Config,
    current: spooler::WorkerHandle,
    retiring: tokio::task::JoinSet<Result<(), spooler::Error>>,
    hurry: watch::Sender<bool>,
}

impl ReloadingWorker {
    /// Builds and starts the worker of `config` (with the command line's `overrides`).
    pub fn start(
        store: Arc<dyn Store>,
        config: &Config,
        overrides: &WorkerOverrides,
    ) -> Result<Self, spooler::Error> {
        let current = crate::run::worker_builder(store.clone(), config, overrides)
            .build()?
            .start();
        Ok(Self {
            store,
            overrides: overrides.clone(),
            config: config.clone(),
            current,
            retiring: tokio::task::JoinSet::new(),
            hurry: watch::channel(false).0,
        })
    }

    /// Takes on `new`, a config a reload applied: a new worker if it changes the worker's shape.
    /// A worker that cannot be built is logged, and the old one goes on.
    pub fn reloaded(&mut self, new: &Config) {
        let changes = worker_changes(&self.config, new, &self.overrides);
        if changes.is_empty() {
            self.config = new.clone();
            return;
        }
        let built = crate::run::worker_builder(self.store.clone(), new, &self.overrides).build();
        let next = match built {
            Ok(worker) => worker.start(),
            Err(e) => {
                tracing::error!(error = %e, keys = %changes.join(", "), "SIGHUP: no worker could be built from the new config; the old one goes on");
                return;
            }
        };
        let old = std::mem::replace(&mut self.current, next);
        tracing::info!(
            keys = %changes.join(", "),
            worker = %self.current.id(),
            retiring = %old.id(),
            "SIGHUP: a new worker took over with these settings; the old one finishes its running jobs"
        );
        // Retired workers that are done are forgotten.
        while let Some(done) = self.retiring.try_join_next() {
            log_retired(done);
        }
        self.retiring.spawn(old.retire(self.hurry.subscribe()));
        self.config = new.clone();
    }

    /// Stops the worker and every retiring one gracefully (their running jobs get the grace
    /// period).
    pub async fn shutdown(mut self) -> Result<(), spooler::Error> {
        let _ = self.hurry.send(true);
        let stopped = self.current.shutdown().await;
        while let Some(done) = self.retiring.join_next().await {
            log_retired(done);
        }
        stopped
    }
}

fn log_retired(done: Result<Result<(), spooler::Error>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "a retired worker stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "a retired worker's task failed"),
    }
}
