//! `spooler retry|cancel|delete` by ID or by filter (a durable operation), `spooler queues`,
//! `spooler pause Q` and `spooler resume Q`: against a server or a store, through `Target`.

use crate::ops::print_table;
use crate::target::{Target, TargetArgs};
use anyhow::bail;
use clap::Args;
use serde_json::{Value, json};
use spooler::{BulkAction, JobState};
use std::io::IsTerminal;

/// `spooler retry|cancel|delete [ID | --state S --queue Q --kind K --tag T]`.
#[derive(Debug, Args)]
pub struct ActArgs {
    /// One job's id; or leave it out and name jobs by filter (run as a durable operation).
    pub id: Option<i64>,
    /// Every job in this state (scheduled, available, running, completed, failed, cancelled).
    #[arg(long, conflicts_with = "id")]
    pub state: Option<JobState>,
    /// Every job in this queue.
    #[arg(long, conflicts_with = "id")]
    pub queue: Option<String>,
    /// Every job of this kind.
    #[arg(long, conflicts_with = "id")]
    pub kind: Option<String>,
    /// Every job carrying this tag.
    #[arg(long, conflicts_with = "id")]
    pub tag: Option<String>,
    /// Only count the jobs the filter names; change nothing.
    #[arg(long, conflicts_with = "id")]
    pub dry_run: bool,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `action` on one job or on every job the filter names.
pub async fn act(action: BulkAction, a: ActArgs) -> anyhow::Result<i32> {
    let target = Target::open_existing(&a.target).await?;
    if let Some(id) = a.id {
        let job = match action {
            BulkAction::Retry => target.retry(id).await?,
            BulkAction::Cancel => target.cancel(id).await?,
            BulkAction::Delete => target.delete(id).await?,
        };
        if a.json {
            println!("{job}");
        } else if action == BulkAction::Delete {
            println!("{} deleted", job["id"]);
        } else {
            println!(
                "{} {}",
                job["id"],
                job["state"].as_str().unwrap_or_default()
            );
        }
        return Ok(0);
    }
    let mut filter = serde_json::Map::new();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            filter.insert(key.into(), Value::String(v));
        }
    };
    put("state", a.state.map(|s| s.as_str().to_string()));
    put("queue", a.queue);
    put("kind", a.kind);
    put("tag", a.tag);
    if filter.is_empty() {
        bail!(
            "spooler {action} needs a job id or a filter: e.g. `spooler {action} 42` or \
             `spooler {action} --state failed --queue mail` (add --dry-run to count first)"
        );
    }
    let body = json!({ "action": action, "filter": filter, "dry_run": a.dry_run });
    let terminal = std::io::stderr().is_terminal() && !a.json;
    let bar = indicatif::ProgressBar::hidden();
    if terminal {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} jobs {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
    }
    let op = target
        .bulk(&body, |op| {
            bar.set_length(op["matched"].as_u64().unwrap_or(0));
            bar.set_position(
                op["affected"].as_u64().unwrap_or(0) + op["skipped"].as_u64().unwrap_or(0),
            );
        })
        .await?;
    bar.finish_and_clear();
    if a.json {
        println!("{op}");
    } else if op["dry_run"] == true {
        println!("{} jobs match; {action} would cover them", op["matched"]);
    } else {
        println!(
            "operation {} {}: {} matched, {} changed, {} skipped",
            op["id"],
            op["state"].as_str().unwrap_or_default(),
            op["matched"],
            op["affected"],
            op["skipped"]
        );
    }
    Ok(0)
}

/// `spooler queues`.
#[derive(Debug, Args)]
pub struct QueuesArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Lists queues with their counts per state.
pub async fn queues(a: QueuesArgs) -> anyhow::Result<i32> {
    let target = Target::open_existing(&a.target).await?;
    let queues = target.queues().await?;
    if a.json {
        println!("{}", json!({ "queues": queues }));
        return Ok(0);
    }
    let header = [
        "QUEUE",
        "PAUSED",
        "SCHEDULED",
        "AVAILABLE",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "OLDEST WAIT (s)",
    ];
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            let count = |s: &str| q["counts"][s].to_string();
            vec![
                q["name"].as_str().unwrap_or_default().to_string(),
                q["paused"].to_string(),
                count("scheduled"),
                count("available"),
                count("running"),
                count("completed"),
                count("failed"),
                count("cancelled"),
                q["oldest_available_age_s"]
                    .as_f64()
                    .map(|s| format!("{s:.1}"))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(&header, &rows);
    Ok(0)
}

/// `spooler pause Q` and `spooler resume Q`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// The queue.
    pub queue: String,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Pauses (`pause`) or resumes a queue: claims from it stop or resume; running jobs go on.
pub async fn pause(a: QueueArgs, pause: bool) -> anyhow::Result<i32> {
    let target = Target::open_existing(&a.target).await?;
    target.pause(&a.queue, pause).await?;
    println!(
        "queue {} {}",
        a.queue,
        if pause { "paused" } else { "resumed" }
    );
    Ok(0)
}
