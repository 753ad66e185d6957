//! A test kit for an application's own tests, as Oban.Testing and rivertest are for theirs: run
//! one job inline, run a worker until its queues are idle, and assert that a job was enqueued.
//!
//! Everything here works on a real store: `sqlite::memory:` is a fresh one per test.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use serde_json::json;
//! use spooler::testing::{Inline, assert_enqueued, drain};
//! use spooler::{Client, Job, JobContext, JobError, Worker};
//! use std::time::Duration;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Welcome { user: u64 }
//!
//! impl Job for Welcome {
//!     const KIND: &'static str = "welcome";
//!     async fn run(self, ctx: JobContext) -> Result<(), JobError> {
//!         let greeting = ctx.state::<String>()?;
//!         ctx.set_result(json!({ "said": format!("{greeting}, user {}", self.user) }));
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One job, inline: its handler as a worker runs it, with the state a worker would give it.
//! let result = Inline::new()
//!     .state("hello".to_string())
//!     .run(Welcome { user: 7 })
//!     .await
//!     .expect("the job succeeds");
//! assert_eq!(result, Some(json!({ "said": "hello, user 7" })));
//!
//! // The application enqueues; the test asserts what, then runs everything queued.
//! let client = Client::connect("sqlite::memory:").await?;
//! client.enqueue(Welcome { user: 7 }).await?;
//! let job = assert_enqueued(&client, "welcome", &json!({ "user": 7 })).await;
//! let worker = Worker::builder(client.store())
//!     .register::<Welcome>()
//!     .state("hello".to_string())
//!     .build()?;
//! let drained = drain(worker, Duration::from_secs(10)).await?;
//! assert_eq!((drained.completed, drained.failed), (1, 0));
//! assert_eq!(client.status(job.id).await?.result, Some(json!({ "said": "hello, user 7" })));
//! # Ok(()) }
//! ```

use crate::job::{AppState, Handler, Job, JobContext, JobError, TypedHandler};
use crate::{Client, Error, Worker};
use serde_json::Value;
use spooler_core::json_contains as contains;
use spooler_core::{JobList, JobRow, JobState, NewJob};
use std::sync::Arc;
use std::time::Duration;

/// Runs one job inline, without a store: its arguments go through JSON as they would through the
/// queue (so a job that does not round-trip fails here too), and its handler runs with a context
/// of its own (attempt 1), the state given, and a panic caught as a worker catches it.
#[derive(Debug, Default)]
pub struct Inline {
    state: AppState,
    attempt: i32,
}

impl Inline {
    /// An inline run at attempt 1 with no state.
    pub fn new() -> Self {
        Self {
            state: AppState::default(),
            attempt: 1,
        }
    }

    /// Gives the job `value`, read with [`JobContext::state`], as
    /// [`WorkerBuilder::state`](crate::WorkerBuilder::state) does.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state = self.state.with(value);
        self
    }

    /// Runs as the `attempt`th attempt (what [`JobContext::attempt`] says).
    pub fn attempt(mut self, attempt: i32) -> Self {
        self.attempt = attempt.max(1);
        self
    }

    /// Runs `job`; answers what it set with [`JobContext::set_result`], or the error it returned
    /// (a panic is an error to retry, as in a worker).
    pub async fn run<J: Job>(self, job: J) -> Result<Option<Value>, JobError> {
        let args = serde_json::to_value(&job)
            .map_err(|e| JobError::fail(format!("{} job: args do not serialize: {e}", J::KIND)))?;
        let mut row = NewJob::new(J::KIND, args.clone()).into_row(0, chrono::Utc::now());
        row.state = JobState::Running;
        row.attempt = self.attempt;
        let ctx = JobContext::new(Arc::new(row), Arc::from("inline"), self.state);
        let handler = TypedHandler::<J>::new();
        let run = std::panic::AssertUnwindSafe(handler.run(args, ctx));
        match futures::FutureExt::catch_unwind(run).await {
            Ok(result) => result,
            Err(payload) => Err(JobError::retry(format!(
                "panicked: {}",
                crate::worker::executor::panic_message(payload)
            ))),
        }
    }
}

/// What [`drain`] saw finish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Jobs that completed while the worker ran.
    pub completed: i64,
    /// Jobs that failed for good.
    pub failed: i64,
    /// Jobs that were cancelled.
    pub cancelled: i64,
}

/// Runs `worker` until its queues are idle: no job it can run is available or running (a retry
/// scheduled for later does not count), then stops it. Fails after `timeout` with what is still
/// waiting.
pub async fn drain(worker: Worker, timeout: Duration) -> Result<Drained, Error> {
    let store = worker.store();
    let client = Client::new(store.clone());
    let queues: Vec<String> = worker.queues();
    let kinds: Vec<String> = worker.kinds().to_vec();
    let before = finished(&client, &queues).await?;
    let handle = worker.start();
    let deadline = tokio::time::Instant::now() + timeout;
    let waiting = loop {
        let mut waiting = Vec::new();
        for queue in &queues {
            for state in [JobState::Available, JobState::Running] {
                let (jobs, _) = client
                    .list(&JobList {
                        queue: Some(queue.clone()),
                        state: Some(state),
                        limit: 100,
                        ..Default::default()
                    })
                    .await?;
                waiting.extend(jobs.into_iter().filter(|j| kinds.contains(&j.kind)));
            }
        }
        if waiting.is_empty() || tokio::time::Instant::now() >= deadline {
            break waiting;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    handle.shutdown().await?;
    if let Some(first) = waiting.first() {
        return Err(Error::Timeout {
            what: format!(
                "the worker's queues to be idle ({} jobs still waiting or running, the first job {} of kind {} in queue {}, {})",
                waiting.len(),
                first.id,
                first.kind,
                first.queue,
                first.state.as_str()
            ),
            after: timeout,
        });
    }
    let after = finished(&client, &queues).await?;
    Ok(Drained {
        completed: after.completed - before.completed,
        failed: after.failed - before.failed,
        cancelled: after.cancelled - before.cancelled,
    })
}

/// The finished jobs of `queues`, per state.
async fn finished(client: &Client, queues: &[String]) -> Result<Drained, Error> {
    let mut total = Drained::default();
    for q in client.queues().await? {
        if queues.contains(&q.name) {
            total.completed += q.counts.completed;
            total.failed += q.counts.failed;
            total.cancelled += q.counts.cancelled;
        }
    }
    Ok(total)
}

/// The newest job of `kind` whose args contain `args` (every key of an object, recursively; a
/// value anywhere else must be equal), among the newest thousand of that kind; panics naming what
/// was enqueued instead when there is none, so a test reads as `assert_enqueued(…).await`.
pub async fn assert_enqueued(client: &Client, kind: &str, args: &Value) -> JobRow {
    let (jobs, _) = client
        .list(&JobList {
            kind: Some(kind.to_string()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("assert_enqueued: listing {kind} jobs failed: {e}"));
    if let Some(job) = jobs.iter().find(|j| contains(&j.args, args)) {
        return job.clone();
    }
    let seen: Vec<&Value> = jobs.iter().take(5).map(|j| &j.args).collect();
    panic!(
        "no {kind} job with args containing {args} was enqueued; {} {kind} jobs were{}",
        jobs.len(),
        if seen.is_empty() {
            String::new()
        } else {
            format!(", the newest with args {seen:?}")
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    #[derive(Serialize, Deserialize)]
    struct Boom {
        fail: bool,
    }

    impl Job for Boom {
        const KIND: &'static str = "boom";
        async fn run(self, ctx: JobContext) -> Result<(), JobError> {
            if self.fail {
                return Err(JobError::fail(format!("attempt {}", ctx.attempt())));
            }
            panic!("boom");
        }
    }

    #[tokio::test]
    async fn an_inline_run_answers_the_error_or_the_panic() {
        let err = Inline::new()
            .attempt(3)
            .run(Boom { fail: true })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("attempt 3"), "{err}");
        let err = Inline::new().run(Boom { fail: false }).await.unwrap_err();
        assert!(err.to_string().contains("panicked: boom"), "{err}");
    }

    #[test]
    fn containment_is_by_keys_recursively() {
        let have = json!({"a": 1, "b": {"c": [1, 2], "d": "x"}});
        assert!(contains(&have, &json!({})));
        assert!(contains(&have, &json!({"b": {"d": "x"}})));
        assert!(!contains(&have, &json!({"b": {"c": [1]}})));
        assert!(!contains(&have, &json!({"a": 2})));
        assert!(!contains(&have, &json!({"z": null})));
    }

    #[tokio::test]
    async fn a_job_not_enqueued_panics_naming_what_was() {
        let client = Client::connect("sqlite::memory:").await.unwrap();
        client
            .enqueue_new(NewJob::new("mail", json!({"to": "a"})))
            .await
            .unwrap();
        let missing = tokio::spawn(async move {
            assert_enqueued(&client, "mail", &json!({"to": "b"})).await;
        })
        .await
        .unwrap_err();
        let message = missing
            .into_panic()
            .downcast::<String>()
            .map(|s| *s)
            .unwrap_or_default();
        assert!(message.contains("{\"to\":\"b\"}"), "{message}");
        assert!(message.contains("\"to\": String(\"a\")"), "{message}");
    }

    #[tokio::test]
    async fn drain_waits_only_for_what_the_worker_can_run_now() {
        let client = Client::connect("sqlite::memory:").await.unwrap();
        // It panics: a retry, an hour later.
        let id = client
            .enqueue_new(NewJob::new("boom", json!({"fail": false})).queue("other"))
            .await
            .unwrap()
            .job
            .id;
        // The worker works `default` only: the job in `other` is not its to wait for.
        let worker = Worker::builder(client.store())
            .register::<Boom>()
            .build()
            .unwrap();
        assert_eq!(
            drain(worker, Duration::from_secs(5)).await.unwrap(),
            Drained::default()
        );
        let worker = Worker::builder(client.store())
            .register::<Boom>()
            .queue("other", 1)
            .retry_policy(crate::RetryPolicy::fixed(Duration::from_secs(3600)))
            .build()
            .unwrap();
        // It fails and waits an hour for its retry: idle, with nothing finished.
        let drained = drain(worker, Duration::from_secs(10)).await.unwrap();
        assert_eq!(drained, Drained::default());
        let job = client.status(id).await.unwrap();
        assert_eq!(job.state, JobState::Scheduled);
    }

    #[derive(Serialize, Deserialize)]
    struct Slow;

    impl Job for Slow {
        const KIND: &'static str = "slow";
        async fn run(self, _ctx: JobContext) -> Result<(), JobError> {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn drain_times_out_naming_what_still_runs() {
        let client = Client::connect("sqlite::memory:").await.unwrap();
        let id = client.enqueue(Slow).await.unwrap();
        let worker = Worker::builder(client.store())
            .register::<Slow>()
            .grace_period(Duration::from_millis(50))
            .build()
            .unwrap();
        let err = drain(worker, Duration::from_millis(300)).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("the first job {id} of kind slow")),
            "{text}"
        );
        assert!(text.contains("300ms"), "{text}");
    }
}
