//! Run with: cargo run -p spooler --example hello
//!
//! Enqueues a typed job into a SQLite file and runs it with a worker in the same process.

use serde::{Deserialize, Serialize};
use spooler::{Client, Job, JobContext, JobError, Worker};
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct Greet {
    name: String,
}

impl Job for Greet {
    const KIND: &'static str = "greet";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        println!(
            "hello, {} (job {}, attempt {})",
            self.name,
            ctx.id(),
            ctx.attempt()
        );
        ctx.set_result(serde_json::json!({ "greeted": self.name }));
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("SPOOLER_STORE").unwrap_or_else(|_| "sqlite://hello.db".into());
    let client = Client::connect(&url).await?;
    let worker = Worker::builder(client.store())
        .register::<Greet>()
        .queue("default", 4)
        .build()?
        .start();

    let id = client
        .enqueue(Greet {
            name: "world".into(),
        })
        .await?;
    let job = client.wait(id, Duration::from_secs(10)).await?;
    println!(
        "job {id} is {} with result {}",
        job.state,
        job.result.unwrap_or_default()
    );

    worker.shutdown().await?;
    Ok(())
}
