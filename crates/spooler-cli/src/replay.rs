//! `spooler replay FILE [--queue Q]`: send each message a `file` spill wrote back to the start
//! of its chain, once however often the file is replayed.

use crate::target::{Target, TargetArgs};
use anyhow::Context;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

/// Lines sent per request.
const CHUNK: usize = 500;

/// `spooler replay FILE [--queue Q]`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The spill file (JSON lines written by a `file` job at the end of a route).
    pub file: PathBuf,
    /// Enqueue into this queue instead of the queue each message's chain began in.
    #[arg(long)]
    pub queue: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Replays the file; exit 0 when every line was read, 1 when some were malformed (each named).
pub async fn replay(a: ReplayArgs) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read spill file {}", a.file.display()))?;
    let target = Target::open(&a.target).await?;
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let (mut enqueued, mut skipped, mut malformed) = (0u64, 0u64, 0u64);
    let mut report = Vec::new();
    for (i, chunk) in lines.chunks(CHUNK).enumerate() {
        let first_line = i * CHUNK + 1;
        let answer = target
            .replay(chunk, first_line, a.queue.as_deref())
            .await
            .with_context(|| {
                format!(
                    "replaying {} from line {first_line} (lines before it are replayed; run \
                     again to go on: nothing is enqueued twice)",
                    a.file.display()
                )
            })?;
        enqueued += answer["enqueued"].as_u64().unwrap_or(0);
        skipped += answer["skipped"].as_u64().unwrap_or(0);
        malformed += answer["malformed"].as_u64().unwrap_or(0);
        for line in answer["lines"].as_array().into_iter().flatten() {
            if line["outcome"] == "malformed" && !a.json {
                eprintln!(
                    "{}:{}: skipped, malformed: {}",
                    a.file.display(),
                    line["line"],
                    line["error"].as_str().unwrap_or("?")
                );
            }
            report.push(line.clone());
        }
    }
    if a.json {
        println!(
            "{}",
            json!({"enqueued": enqueued, "skipped": skipped, "malformed": malformed, "lines": report})
        );
    } else {
        println!(
            "{}: enqueued {enqueued}, skipped {} ({skipped} replayed before, {malformed} malformed)",
            a.file.display(),
            skipped + malformed
        );
    }
    Ok(if malformed > 0 { 1 } else { 0 })
}
