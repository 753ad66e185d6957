//! Run with: cargo run -p spooler --example retries
//!
//! A flaky job fails twice and then succeeds; a hopeless one exhausts its attempts and ends
//! `failed` with every attempt's error kept; a panicking one is recorded as a failure.

use serde::{Deserialize, Serialize};
use spooler::{Client, Job, JobContext, JobError, RetryPolicy, Worker};
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct Flaky;

impl Job for Flaky {
    const KIND: &'static str = "flaky";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        if ctx.attempt() < 3 {
            return Err(JobError::retry(format!(
                "not yet (attempt {})",
                ctx.attempt()
            )));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Hopeless;

impl Job for Hopeless {
    const KIND: &'static str = "hopeless";
    const MAX_ATTEMPTS: Option<i32> = Some(3);

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        if ctx.attempt() == 2 {
            panic!("something impossible happened");
        }
        // `?` turns any error into a retryable failure carrying its message.
        std::fs::read("/definitely/not/here")?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("SPOOLER_STORE").unwrap_or_else(|_| "sqlite://retries.db".into());
    let client = Client::connect(&url).await?;
    let worker = Worker::builder(client.store())
        .register::<Flaky>()
        .register::<Hopeless>()
        // Short fixed backoff so the example finishes quickly; the default is attempt^4 + 15s.
        .retry_policy(RetryPolicy::fixed(Duration::from_millis(300)))
        .maintenance_config(spooler::maintenance::MaintenanceConfig {
            interval: Duration::from_millis(100),
            ..Default::default()
        })
        .build()?
        .start();

    let flaky = client.enqueue(Flaky).await?;
    let hopeless = client.enqueue(Hopeless).await?;
    for id in [flaky, hopeless] {
        let job = client.wait(id, Duration::from_secs(30)).await?;
        println!(
            "job {id} ({}) is {} after {} attempts",
            job.kind, job.state, job.attempt
        );
        for e in &job.errors {
            println!("  attempt {}: {}", e.attempt, e.message);
        }
    }
    worker.shutdown().await?;
    Ok(())
}
