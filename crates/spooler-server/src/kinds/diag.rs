//! Diagnostic kinds: `noop` (does nothing: smoke tests, benchmarks) and `sleep` (waits, honouring
//! cancellation: tests of timeouts and shutdown).

use super::Args;

/// The `sleep` kind's one argument.
pub(crate) const SLEEP_ARGS: &[&str] = &["duration"];
use async_trait::async_trait;
use serde_json::Value;
use spooler::{Handler, JobContext, JobError};
use std::time::Duration;

/// Does nothing and returns no result; accepts any args.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopKind;

#[async_trait]
impl Handler for NoopKind {
    async fn run(&self, _args: Value, _ctx: JobContext) -> Result<Option<Value>, JobError> {
        Ok(None)
    }
}

/// Sleeps for `duration` (e.g. `{"duration": "2s"}`); stops early, cancelled, when the job is.
#[derive(Debug, Clone, Copy, Default)]
pub struct SleepKind;

#[async_trait]
impl Handler for SleepKind {
    async fn run(&self, args: Value, ctx: JobContext) -> Result<Option<Value>, JobError> {
        let a = Args::new("sleep", &args, SLEEP_ARGS)?;
        if a.get("duration").is_none() {
            return Err(JobError::fail(
                "sleep job: argument \"duration\" is required",
            ));
        }
        let duration = a.duration("duration", Duration::ZERO)?;
        let deadline = tokio::time::Instant::now() + duration;
        loop {
            if ctx.is_cancelled() {
                return Err(JobError::cancel("sleep job stopped early"));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(50))).await;
        }
    }
}
