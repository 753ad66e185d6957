//! The job commands: `enqueue`, `status`, `jobs`, `retry`, `cancel`, `prune`. Tables for people,
//! `--json` for scripts.

use crate::target::{ListFilter, Target, TargetArgs, is_finished};
use anyhow::Context;
use clap::Args;
use serde_json::{Map, Value, json};
use spooler::{JobState, Retention};
use spooler_server::config::Config;
use std::path::PathBuf;
use std::time::Duration;

/// `spooler enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The job's kind, e.g. http, tcp, command, file, or one of your own.
    pub kind: String,
    /// The job's arguments as JSON, e.g. '{"url": "http://127.0.0.1:8080/hook"}'.
    #[arg(long, default_value = "{}")]
    pub args: String,
    /// Queue (default: `default`).
    #[arg(long)]
    pub queue: Option<String>,
    /// Run no earlier than this from now, e.g. 10s, 5m.
    #[arg(long, conflicts_with = "run_at")]
    pub delay: Option<String>,
    /// Run no earlier than this time (RFC 3339).
    #[arg(long)]
    pub run_at: Option<String>,
    /// Higher runs first.
    #[arg(long)]
    pub priority: Option<i32>,
    /// Attempts before the job fails for good.
    #[arg(long)]
    pub max_attempts: Option<i32>,
    /// Per-attempt time limit, e.g. 30s.
    #[arg(long)]
    pub timeout: Option<String>,
    /// At most one unfinished job with this key.
    #[arg(long)]
    pub unique_key: Option<String>,
    /// A tag (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Wait until the job finishes (at most this long; default 5m) and print it; exit 1 unless it completed.
    #[arg(long, num_args = 0..=1, default_missing_value = "5m", value_parser = crate::duration_arg)]
    pub wait: Option<Duration>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `spooler enqueue`: prints the new job's id (or the job as JSON).
pub async fn enqueue(a: EnqueueArgs) -> anyhow::Result<i32> {
    let args: Value = serde_json::from_str(&a.args)
        .with_context(|| format!("--args is not valid JSON: {}", a.args))?;
    let mut body = Map::new();
    body.insert("kind".into(), json!(a.kind));
    body.insert("args".into(), args);
    let optional = [
        ("queue", a.queue.map(Value::from)),
        ("delay", a.delay.map(Value::from)),
        ("run_at", a.run_at.map(Value::from)),
        ("priority", a.priority.map(Value::from)),
        ("max_attempts", a.max_attempts.map(Value::from)),
        ("timeout", a.timeout.map(Value::from)),
        ("unique_key", a.unique_key.map(Value::from)),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            body.insert(key.into(), v);
        }
    }
    if !a.tags.is_empty() {
        body.insert("tags".into(), json!(a.tags));
    }
    let target = Target::open(&a.target).await?;
    let job = target.enqueue(&Value::Object(body)).await?;
    let id = job["id"]
        .as_i64()
        .context("the server's answer has no job id")?;
    let Some(wait) = a.wait else {
        if a.json {
            println!("{job}");
        } else if job["duplicate"] == json!(true) {
            println!("{id} (already enqueued with this unique key)");
        } else {
            println!("{id}");
        }
        return Ok(0);
    };
    let job = target.get(id, Some(wait)).await?;
    print_job(&job, a.json);
    Ok(finished_code(&job))
}

/// 0 when completed, 1 otherwise (failed, cancelled, or still unfinished after the wait).
fn finished_code(job: &Value) -> i32 {
    if job["state"] == "completed" { 0 } else { 1 }
}

/// `spooler status` and its friends that name one job.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The job id.
    pub id: i64,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `spooler status ID`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub job: IdArgs,
    /// Wait until the job finishes, at most this long (e.g. 30s).
    #[arg(long, value_parser = crate::duration_arg)]
    pub wait: Option<Duration>,
}

/// `spooler status ID`.
pub async fn status(a: StatusArgs) -> anyhow::Result<i32> {
    let target = Target::open_existing(&a.job.target).await?;
    let job = target.get(a.job.id, a.wait).await?;
    print_job(&job, a.job.json);
    Ok(0)
}

/// `spooler jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs in this state (scheduled, available, running, completed, failed, cancelled).
    #[arg(long)]
    pub state: Option<JobState>,
    /// Only this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// At most this many (1 to 1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Jobs older than this id: the cursor printed under the previous page.
    #[arg(long)]
    pub cursor: Option<i64>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON: one object with `jobs` and `next_cursor`.
    #[arg(long)]
    pub json: bool,
}

/// `spooler jobs`: newest first.
pub async fn jobs(a: JobsArgs) -> anyhow::Result<i32> {
    let target = Target::open_existing(&a.target).await?;
    let filter = ListFilter {
        queue: a.queue,
        state: a.state,
        kind: a.kind,
        limit: a.limit,
        cursor: a.cursor,
    };
    let (jobs, next) = target.list(&filter).await?;
    if a.json {
        println!("{}", json!({ "jobs": jobs, "next_cursor": next }));
        return Ok(0);
    }
    let header = [
        "ID",
        "STATE",
        "QUEUE",
        "KIND",
        "ATTEMPT",
        "RUN AT",
        "LAST ERROR",
    ];
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j["id"].to_string(),
                text(&j["state"]),
                text(&j["queue"]),
                text(&j["kind"]),
                format!("{}/{}", j["attempt"], j["max_attempts"]),
                text(&j["run_at"]),
                j["errors"]
                    .as_array()
                    .and_then(|e| e.last())
                    .map(|e| shorten(&text(&e["message"]), 60))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&header, &rows);
    if let Some(next) = next {
        println!("more: --cursor {next}");
    }
    Ok(0)
}

/// `spooler prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The store, e.g. sqlite://spooler.db (prune works on the store directly).
    #[arg(long, env = "SPOOLER_STORE", default_value = "sqlite://spooler.db")]
    pub store: String,
    /// Config file whose [retention] gives the defaults.
    #[arg(long, env = "SPOOLER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Delete completed jobs finished longer ago than this (default 24h).
    #[arg(long, value_parser = crate::duration_arg)]
    pub completed: Option<Duration>,
    /// Delete failed jobs finished longer ago than this (default 7d).
    #[arg(long, value_parser = crate::duration_arg)]
    pub failed: Option<Duration>,
    /// Delete cancelled jobs finished longer ago than this (default 7d).
    #[arg(long, value_parser = crate::duration_arg)]
    pub cancelled: Option<Duration>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `spooler prune`: deletes finished jobs past their retention, in batches.
pub async fn prune(a: PruneArgs) -> anyhow::Result<i32> {
    let retention = match &a.config {
        Some(path) => Config::load(path)?.retention,
        None => Retention::default(),
    };
    let store = spooler::connect(&a.store).await?;
    let retention = Retention {
        completed: a.completed.or(retention.completed),
        failed: a.failed.or(retention.failed),
        cancelled: a.cancelled.or(retention.cancelled),
    };
    let deleted = spooler::Client::new(store.clone())
        .prune(&retention, 10_000)
        .await?;
    if a.json {
        println!(
            "{}",
            json!({ "deleted": deleted, "store": store.describe() })
        );
    } else {
        println!("deleted {deleted} finished jobs from {}", store.describe());
    }
    Ok(0)
}

/// Prints one job: JSON, or its fields one per line with every attempt's error.
pub fn print_job(job: &Value, json: bool) {
    if json {
        println!("{job}");
        return;
    }
    let fields = [
        "id",
        "state",
        "queue",
        "kind",
        "args",
        "priority",
        "attempt",
        "max_attempts",
        "run_at",
        "created_at",
        "started_at",
        "finished_at",
        "result",
        "unique_key",
        "routed_from",
        "origin",
    ];
    for key in fields {
        let value = &job[key];
        if !value.is_null() {
            println!("{key:<13} {}", text(value));
        }
    }
    if let Some(errors) = job["errors"].as_array().filter(|e| !e.is_empty()) {
        println!("errors");
        for e in errors {
            println!(
                "  #{} {} {}",
                e["attempt"],
                text(&e["at"]),
                text(&e["message"])
            );
        }
    }
    if !is_finished(job) && job["state"] == "running" {
        println!("worker        {}", text(&job["worker_id"]));
    }
}

/// A JSON value as text: strings bare, the rest as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn shorten(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() <= max {
        return line.to_string();
    }
    let cut: String = line.chars().take(max - 1).collect();
    format!("{cut}…")
}

/// Prints rows under a header, columns padded to their widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
