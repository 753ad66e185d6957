//! `spooler schedules`: list the schedules, or run, pause or resume one.

use crate::ops::print_table;
use crate::target::{Target, TargetArgs};
use clap::{Args, Subcommand};
use serde_json::json;

/// `spooler schedules [run|pause|resume NAME]`.
#[derive(Debug, Args)]
pub struct SchedulesArgs {
    #[command(subcommand)]
    pub action: Option<ScheduleAction>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What to do with one schedule.
#[derive(Debug, Subcommand)]
pub enum ScheduleAction {
    /// Enqueue the schedule's job now; its next run does not move.
    Run {
        /// The schedule.
        name: String,
    },
    /// Stop the schedule's ticks until it is resumed.
    Pause {
        /// The schedule.
        name: String,
    },
    /// Let the schedule tick again, from its next tick after now.
    Resume {
        /// The schedule.
        name: String,
    },
}

/// Lists schedules, or acts on one.
pub async fn schedules(a: SchedulesArgs) -> anyhow::Result<i32> {
    let target = Target::open_existing(&a.target).await?;
    let (verb, name) = match &a.action {
        None => return list(&target, a.json).await,
        Some(ScheduleAction::Run { name }) => ("run", name),
        Some(ScheduleAction::Pause { name }) => ("pause", name),
        Some(ScheduleAction::Resume { name }) => ("resume", name),
    };
    let answer = target.schedule_action(name, verb).await?;
    if a.json {
        println!("{answer}");
    } else if verb == "run" {
        println!("schedule {name} enqueued job {}", answer["id"]);
    } else {
        println!(
            "schedule {name} {}; next run {}",
            if verb == "pause" { "paused" } else { "resumed" },
            answer["next_run_at"].as_str().unwrap_or("-")
        );
    }
    Ok(0)
}

async fn list(target: &Target, as_json: bool) -> anyhow::Result<i32> {
    let schedules = target.schedules().await?;
    if as_json {
        println!("{}", json!({ "schedules": schedules }));
        return Ok(0);
    }
    if schedules.is_empty() {
        println!(
            "no schedules (declare them with [[schedules]] in the config file, or WorkerBuilder::schedule)"
        );
        return Ok(0);
    }
    let header = [
        "SCHEDULE", "CRON", "TZ", "PAUSED", "NEXT RUN", "LAST RUN", "LAST JOB", "JOB",
    ];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|s| {
            vec![
                text(&s["name"]),
                text(&s["cron"]),
                text(&s["tz"]),
                s["paused"].to_string(),
                text(&s["next_run_at"]),
                text(&s["last_run_at"]),
                s["last_job_id"]
                    .as_i64()
                    .map_or_else(|| "-".into(), |id| id.to_string()),
                format!(
                    "{} on {}",
                    text(&s["job"]["kind"]),
                    text(&s["job"]["queue"])
                ),
            ]
        })
        .collect();
    print_table(&header, &rows);
    Ok(0)
}
