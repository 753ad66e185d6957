//! Wiring for the `spooler` binary: a worker for the built-in kinds from the config, the server's
//! options from the config, serving with graceful shutdown, and the shutdown signal.

use crate::config::{Config, DEFAULT_CONCURRENCY};
use crate::state::ServerOptions;
use spooler::{Store, Worker, WorkerBuilder};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What the command line says about the worker, over the config file.
#[derive(Debug, Clone, Default)]
pub struct WorkerOverrides {
    /// `--queue NAME=CONCURRENCY` (repeatable); replaces the config's list of queues when given.
    pub queues: Vec<(String, u32)>,
    /// `--lease`.
    pub lease: Option<Duration>,
    /// `--poll`.
    pub poll: Option<Duration>,
    /// `--grace`.
    pub grace: Option<Duration>,
}

/// The queues a worker works, with their concurrency: the `--queue` overrides if any; else the
/// config's queues plus `default` (with 10, unless configured), where jobs sent without a queue go.
pub fn worker_queues(config: &Config, overrides: &WorkerOverrides) -> Vec<(String, u32)> {
    if !overrides.queues.is_empty() {
        return overrides.queues.clone();
    }
    let mut queues: Vec<(String, u32)> = config
        .queues
        .iter()
        .map(|(name, q)| (name.clone(), q.concurrency))
        .collect();
    if !config.queues.contains_key(spooler::core::DEFAULT_QUEUE) {
        queues.push((
            spooler::core::DEFAULT_QUEUE.to_string(),
            DEFAULT_CONCURRENCY,
        ));
    }
    queues
}

/// A worker builder running the built-in kinds on the configured queues, with the configured
/// retry policies, retention and timings. Add your own handlers before `build()` if you like.
pub fn worker_builder(
    store: Arc<dyn Store>,
    config: &Config,
    overrides: &WorkerOverrides,
) -> WorkerBuilder {
    let mut builder = Worker::builder(store).retention(config.retention.clone());
    for (kind, handler) in crate::kinds::builtin(config.commands_allow.clone()) {
        builder = builder.handler(kind, handler);
    }
    for (name, concurrency) in worker_queues(config, overrides) {
        builder = builder.queue(&name, concurrency);
    }
    for (name, q) in &config.queues {
        if let Some(policy) = &q.backoff {
            builder = builder.queue_retry_policy(name, policy.clone());
        }
    }
    if let Some(lease) = overrides.lease.or(config.worker.lease) {
        builder = builder.lease(lease);
    }
    if let Some(poll) = overrides.poll.or(config.worker.poll) {
        builder = builder.poll_interval(poll);
    }
    if let Some(grace) = overrides.grace.or(config.worker.grace) {
        builder = builder.grace_period(grace);
    }
    builder
}

/// The API's options from the config and the resolved token.
pub fn server_options(config: &Config, token: Option<String>) -> ServerOptions {
    let defaults = ServerOptions::default();
    ServerOptions {
        token: token.filter(|t| !t.is_empty()),
        body_limit: config.body_limit.unwrap_or(defaults.body_limit),
        batch_limit: config.batch_limit.unwrap_or(defaults.batch_limit),
        queues: config.queue_defaults(),
        ..defaults
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes on SIGINT or SIGTERM (on non-Unix systems: Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        let mut int = match signal(SignalKind::interrupt()) {
            Ok(s) => s,
            Err(_) => {
                term.recv().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C: shutting down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_queue_is_worked_beside_configured_ones() {
        let config = Config::parse("[queues.mail]\nconcurrency = 2\n", "t.toml").unwrap();
        let queues = worker_queues(&config, &WorkerOverrides::default());
        assert_eq!(
            queues,
            vec![("mail".to_string(), 2), ("default".to_string(), 10)]
        );
        let only = WorkerOverrides {
            queues: vec![("mail".into(), 1)],
            ..Default::default()
        };
        assert_eq!(worker_queues(&config, &only), vec![("mail".to_string(), 1)]);
    }
}
