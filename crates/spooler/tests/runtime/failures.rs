//! Failures: panics and timeouts are recorded attempts retried on the policy's schedule; outcomes
//! fail, cancel and snooze; cancelling a running job; a lost lease drops the run's result.

use crate::support::{Backend, eventually, fast_maintenance, wait_state};
use serde::{Deserialize, Serialize};
use spooler::core::{JobFinish, Outcome};
use spooler::{Job, JobContext, JobError, JobState, RetryPolicy, Worker};
use std::time::Duration;

crate::on_every_backend!(failures:
    a_panic_is_a_failed_attempt_retried_on_schedule_then_failed,
    a_timeout_is_a_failed_attempt_with_its_message,
    outcomes_fail_cancel_and_snooze,
    cancelling_a_running_job_stops_it,
    a_run_whose_lease_was_lost_is_stopped_and_its_result_rejected,
);

const BACKOFF: Duration = Duration::from_millis(300);

fn worker(b: &Backend) -> spooler::WorkerBuilder {
    Worker::builder(b.store.clone())
        .retry_policy(RetryPolicy::fixed(BACKOFF))
        .maintenance_config(fast_maintenance())
        .heartbeat(Duration::from_millis(100))
        .lease(Duration::from_secs(2))
}

#[derive(Serialize, Deserialize)]
struct Panics;

impl Job for Panics {
    const KIND: &'static str = "panics";
    const MAX_ATTEMPTS: Option<i32> = Some(3);

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        panic!("boom on attempt {}", ctx.attempt());
    }
}

async fn a_panic_is_a_failed_attempt_retried_on_schedule_then_failed(b: &Backend) {
    let w = worker(b).register::<Panics>().build().unwrap().start();
    let id = b.client.enqueue(Panics).await.unwrap();
    let job = wait_state(&b.client, id, JobState::Failed, Duration::from_secs(20)).await;
    assert_eq!(job.attempt, 3);
    let messages: Vec<&str> = job.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        vec![
            "panicked: boom on attempt 1",
            "panicked: boom on attempt 2",
            "panicked: boom on attempt 3"
        ]
    );
    for pair in job.errors.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= chrono::TimeDelta::from_std(BACKOFF).unwrap(),
            "retried after {gap}, before its backoff"
        );
    }
    w.shutdown().await.unwrap();
}

#[derive(Serialize, Deserialize)]
struct Hangs;

impl Job for Hangs {
    const KIND: &'static str = "hangs";
    const MAX_ATTEMPTS: Option<i32> = Some(2);

    async fn run(self, _ctx: JobContext) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
}

async fn a_timeout_is_a_failed_attempt_with_its_message(b: &Backend) {
    let w = worker(b).register::<Hangs>().build().unwrap().start();
    let id = b
        .client
        .enqueue(Hangs)
        .timeout(Duration::from_millis(200))
        .await
        .unwrap();
    let job = wait_state(&b.client, id, JobState::Failed, Duration::from_secs(20)).await;
    assert_eq!(job.errors.len(), 2);
    assert!(
        job.errors
            .iter()
            .all(|e| e.message == "timed out after 200ms"),
        "{:?}",
        job.errors
    );
    w.shutdown().await.unwrap();
}

#[derive(Serialize, Deserialize)]
struct Chooses {
    what: String,
}

impl Job for Chooses {
    const KIND: &'static str = "chooses";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        match self.what.as_str() {
            "fail" => Err(JobError::fail("bad input: no such account")),
            "cancel" => Err(JobError::cancel("account closed")),
            "snooze" if ctx.attempt() == 1 => Err(JobError::snooze(Duration::from_millis(300))),
            _ => Ok(()),
        }
    }
}

async fn outcomes_fail_cancel_and_snooze(b: &Backend) {
    let w = worker(b).register::<Chooses>().build().unwrap().start();
    let fail = b
        .client
        .enqueue(Chooses {
            what: "fail".into(),
        })
        .await
        .unwrap();
    let cancel = b
        .client
        .enqueue(Chooses {
            what: "cancel".into(),
        })
        .await
        .unwrap();
    let snooze = b
        .client
        .enqueue(Chooses {
            what: "snooze".into(),
        })
        .await
        .unwrap();
    let job = wait_state(&b.client, fail, JobState::Failed, Duration::from_secs(10)).await;
    assert_eq!(job.attempt, 1, "not retried");
    assert_eq!(job.errors[0].message, "bad input: no such account");
    let job = wait_state(
        &b.client,
        cancel,
        JobState::Cancelled,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(job.attempt, 1);
    let job = wait_state(
        &b.client,
        snooze,
        JobState::Completed,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(job.attempt, 2);
    assert_eq!(
        job.max_attempts,
        spooler::core::DEFAULT_MAX_ATTEMPTS + 1,
        "the snooze spent no attempt"
    );
    assert!(job.errors.is_empty());
    w.shutdown().await.unwrap();
}

async fn cancelling_a_running_job_stops_it(b: &Backend) {
    let w = worker(b).register::<Hangs>().build().unwrap().start();
    let id = b.client.enqueue(Hangs).await.unwrap();
    wait_state(&b.client, id, JobState::Running, Duration::from_secs(10)).await;
    let asked = b.store.job_cancel(id).await.unwrap();
    assert!(asked.cancel_requested);
    let job = wait_state(&b.client, id, JobState::Cancelled, Duration::from_secs(10)).await;
    assert!(job.finished_at.is_some());
    w.shutdown().await.unwrap();
}

#[derive(Serialize, Deserialize)]
struct SlowOnFirst;

impl Job for SlowOnFirst {
    const KIND: &'static str = "slow_on_first";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        if ctx.attempt() == 1 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        ctx.set_result(serde_json::json!({ "finished_by_attempt": ctx.attempt() }));
        Ok(())
    }
}

async fn a_run_whose_lease_was_lost_is_stopped_and_its_result_rejected(b: &Backend) {
    let w = worker(b).register::<SlowOnFirst>().build().unwrap().start();
    let id = b.client.enqueue(SlowOnFirst).await.unwrap();
    let running = wait_state(&b.client, id, JobState::Running, Duration::from_secs(10)).await;
    // Take the job away from the worker, as a rescue would: its claim (attempt 1) is now dead.
    let acks = b
        .store
        .job_finish_many(&[JobFinish {
            lease: running.lease(),
            outcome: Outcome::LeaseExpired {
                at: chrono::Utc::now(),
            },
        }])
        .await
        .unwrap();
    assert_eq!(acks, vec![true]);
    // The same worker claims it again as attempt 2 and completes it; attempt 1 is stopped at its
    // next heartbeat and writes nothing.
    let job = wait_state(&b.client, id, JobState::Completed, Duration::from_secs(10)).await;
    assert_eq!(
        job.result,
        Some(serde_json::json!({ "finished_by_attempt": 2 }))
    );
    // A late result for attempt 1 is rejected.
    let late = b
        .store
        .job_finish_many(&[JobFinish {
            lease: running.lease(),
            outcome: Outcome::Failed {
                error: "late".into(),
            },
        }])
        .await
        .unwrap();
    assert_eq!(late, vec![false]);
    eventually("attempt 1 to stop", Duration::from_secs(5), || async {
        let workers = b
            .store
            .worker_list(chrono::Utc::now() - chrono::TimeDelta::minutes(1))
            .await
            .unwrap();
        workers.iter().all(|w| w.running == 0).then_some(())
    })
    .await;
    assert_eq!(
        b.client.status(id).await.unwrap().state,
        JobState::Completed
    );
    w.shutdown().await.unwrap();
}
