//! Run with: cargo run -p spooler --example graceful_shutdown
//!
//! Starts slow jobs, then stops the worker: jobs that finish within the grace period complete;
//! the rest are released (available again, no attempt spent) for the next worker.

use serde::{Deserialize, Serialize};
use spooler::{Client, Job, JobContext, JobError, JobState, Worker};
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct Slow {
    millis: u64,
}

impl Job for Slow {
    const KIND: &'static str = "slow";

    async fn run(self, _ctx: JobContext) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("SPOOLER_STORE").unwrap_or_else(|_| "sqlite://shutdown.db".into());
    let client = Client::connect(&url).await?;
    let quick = client.enqueue(Slow { millis: 200 }).await?;
    let long = client.enqueue(Slow { millis: 60_000 }).await?;

    let worker = Worker::builder(client.store())
        .register::<Slow>()
        .grace_period(Duration::from_secs(1))
        .build()?;
    // Stop as soon as both jobs are running (Ctrl-C would do the same in a real service).
    let watcher = client.clone();
    worker
        .run_until(async move {
            loop {
                let a = watcher.status(quick).await.map(|j| j.state);
                let b = watcher.status(long).await.map(|j| j.state);
                if matches!(
                    (a, b),
                    (
                        Ok(JobState::Running | JobState::Completed),
                        Ok(JobState::Running)
                    )
                ) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            println!("shutting down with jobs running");
        })
        .await?;

    for id in [quick, long] {
        let job = client.status(id).await?;
        println!("job {id}: {}", job.state);
    }
    Ok(())
}
