//! `spooler check`: a health probe for schedulers (Nomad, Consul, Kubernetes). One line out; exit
//! 0 healthy, 1 warning (a threshold crossed, or jobs waiting in a queue no live worker works), 2
//! unhealthy (unreachable, timed out, store error), always within `--timeout` plus a small margin.

use crate::target::{Endpoint, Remote, Target, endpoint};
use clap::Args;
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

/// `spooler check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The server to check [env: SPOOLER_URL] (default http://127.0.0.1:7700 when no --store is given).
    #[arg(long, conflicts_with = "store")]
    pub url: Option<String>,
    /// A store to check directly [env: SPOOLER_STORE].
    #[arg(long)]
    pub store: Option<String>,
    /// The server's token.
    #[arg(long, env = "SPOOLER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Give up (exit 2) after this long.
    #[arg(long, default_value = "5s", value_parser = crate::duration_arg)]
    pub timeout: Duration,
    /// Warn (exit 1) when more jobs than this are waiting (available) across queues.
    #[arg(long)]
    pub max_backlog: Option<u64>,
    /// Warn (exit 1) when the oldest waiting job has waited longer than this, e.g. 5m.
    #[arg(long, value_parser = crate::duration_arg)]
    pub max_age: Option<Duration>,
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Ok = 0,
    Warning = 1,
    Critical = 2,
}

/// Runs the check and prints its line; returns the exit code.
pub async fn run(args: CheckArgs) -> i32 {
    let endpoint = endpoint(args.url.as_deref(), args.store.as_deref());
    let what = match &endpoint {
        Endpoint::Store(store) => spooler::core::error::redact_url(store),
        Endpoint::Server(url) => url.clone(),
    };
    let (health, line) = match tokio::time::timeout(args.timeout, probe(&args, &endpoint)).await {
        Ok(Ok(found)) => judge(&args, &found),
        Ok(Err(e)) => (Health::Critical, format!("{e:#}")),
        Err(_) => (
            Health::Critical,
            format!(
                "no answer within {} (raise --timeout if it is just slow)",
                spooler::format_duration(args.timeout)
            ),
        ),
    };
    let label = match health {
        Health::Ok => "OK",
        Health::Warning => "WARNING",
        Health::Critical => "CRITICAL",
    };
    println!("{label}: {what}: {line}");
    health as i32
}

/// What the probe saw.
#[derive(Debug, Default)]
struct Found {
    queues: usize,
    backlog: u64,
    running: u64,
    oldest_age_s: f64,
    /// Queues whose jobs wait with no live worker working them.
    unworked: Vec<String>,
}

async fn probe(args: &CheckArgs, endpoint: &Endpoint) -> anyhow::Result<Found> {
    let queues = match endpoint {
        Endpoint::Store(store) => {
            // Opening a SQLite file creates it: a probe must not leave an empty store behind.
            crate::target::require_existing(store)?;
            let store = spooler::connect_with(
                store,
                spooler::ConnectOptions {
                    migrate: false,
                    ..Default::default()
                },
            )
            .await?;
            let window = chrono::TimeDelta::from_std(spooler::core::store::LIVE_WORKER_WITHIN)?;
            let live = store.worker_list(store.clock().now() - window).await?;
            let queues = Target::Store {
                store,
                config: Default::default(),
            }
            .queues()
            .await?;
            (queues, live)
        }
        Endpoint::Server(base) => {
            let remote = Remote::new(base, args.token.clone(), args.timeout)?;
            let body = remote.call(Method::GET, "/v1/queues", None).await?;
            let queues = body["queues"].as_array().cloned().unwrap_or_default();
            // The server lists the workers it saw within the live window.
            let body = remote.call(Method::GET, "/v1/workers", None).await?;
            let live = serde_json::from_value(body["workers"].clone())
                .map_err(|e| anyhow::anyhow!("GET /v1/workers: unexpected answer: {e}"))?;
            (queues, live)
        }
    };
    let (queues, live): (Vec<Value>, Vec<spooler::WorkerInfo>) = queues;
    let mut found = Found {
        queues: queues.len(),
        ..Found::default()
    };
    for q in &queues {
        let count = |state: &str| q["counts"][state].as_u64().unwrap_or(0);
        if q["paused"] != Value::Bool(true) {
            found.backlog += count("available");
            found.oldest_age_s = found
                .oldest_age_s
                .max(q["oldest_available_age_s"].as_f64().unwrap_or(0.0));
        }
        found.running += count("running");
    }
    let infos: Vec<spooler::QueueInfo> = queues
        .iter()
        .map(|q| spooler::QueueInfo {
            name: q["name"].as_str().unwrap_or_default().to_string(),
            paused: q["paused"] == Value::Bool(true),
            counts: spooler::StateCounts {
                available: q["counts"]["available"].as_i64().unwrap_or(0),
                ..Default::default()
            },
            oldest_available_at: None,
        })
        .collect();
    found.unworked = spooler::core::store::queues_without_workers(&infos, &live);
    Ok(found)
}

fn judge(args: &CheckArgs, found: &Found) -> (Health, String) {
    let mut problems = Vec::new();
    if let Some(max) = args.max_backlog.filter(|max| found.backlog > *max) {
        problems.push(format!(
            "backlog {} is over --max-backlog {max}",
            found.backlog
        ));
    }
    if let Some(max) = args
        .max_age
        .filter(|max| found.oldest_age_s > max.as_secs_f64())
    {
        problems.push(format!(
            "oldest waiting job is {:.0}s old, over --max-age {}",
            found.oldest_age_s,
            spooler::format_duration(max)
        ));
    }
    if !found.unworked.is_empty() {
        problems.push(format!(
            "jobs wait in {} with no live worker working {} (start a worker with --queue NAME, or name the queue in its config)",
            found.unworked.join(", "),
            if found.unworked.len() == 1 { "it" } else { "them" }
        ));
    }
    let summary = format!(
        "{} waiting, {} running in {} queues, oldest waiting {:.0}s",
        found.backlog, found.running, found.queues, found.oldest_age_s
    );
    if problems.is_empty() {
        (Health::Ok, summary)
    } else {
        (
            Health::Warning,
            format!("{}; {summary}", problems.join("; ")),
        )
    }
}
