//! `SIGHUP`: read the config file again and apply it while jobs keep running.
//!
//! What lives in the store applies at once to every process sharing it (the others read it
//! within a second): each queue's defaults (`max_attempts`, `timeout`, its own `retention`), its
//! routes, `rate_limit`, `global_concurrency` and `unique`, and the `[[schedules]]` (a changed
//! cadence ticks anew, a removed schedule stops). A config that fails to load is logged with its file,
//! line and key, and the old one stays. What shapes this process itself (the listener, the token,
//! the worker's queues and concurrency, retry policies, timings, `[retention]`, allowed commands)
//! is named in a warning: it takes effect when the process restarts.

use crate::config::Config;
use spooler::Store;
use std::sync::Arc;

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
    differs("commands.allow", old.commands_allow != new.commands_allow);
    differs("retention", old.retention != new.retention);
    differs("worker", old.worker != new.worker);
    let names = |c: &Config| c.queues.keys().cloned().collect::<Vec<_>>();
    differs("queues (the set of queues)", names(old) != names(new));
    for (name, q) in &new.queues {
        if let Some(was) = old.queues.get(name) {
            differs(
                &format!("queues.{name}.concurrency"),
                was.concurrency != q.concurrency,
            );
            differs(&format!("queues.{name}.backoff"), was.backoff != q.backoff);
        }
    }
    let led_to = |c: &Config| {
        let mut q: Vec<String> = c.schedules.iter().map(|s| s.job.queue.clone()).collect();
        q.sort();
        q.dedup();
        q
    };
    differs(
        "schedules (the queues they enqueue into)",
        led_to(old) != led_to(new),
    );
    keys
}

/// Starts reloading the config on every `SIGHUP` until the process ends (abort the handle to
/// stop): store-wide settings apply at once; a config that fails to load or to apply leaves the
/// old one in place. Without a config file there is nothing to read, and a `SIGHUP` says so.
/// The signal is taken over before this returns, so a `SIGHUP` never ends the process.
pub fn spawn_reload(store: Arc<dyn Store>, config: Config) -> tokio::task::JoinHandle<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; config reload is off");
                return tokio::spawn(async {});
            }
        };
        tokio::spawn(async move {
            let mut current = config;
            while hangup.recv().await.is_some() {
                if let Some(new) = reload(&store, &current).await {
                    current = new;
                }
            }
        })
    }
    #[cfg(not(unix))]
    {
        let _ = (store, config);
        tokio::spawn(async {})
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
