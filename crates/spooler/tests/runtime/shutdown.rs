//! Graceful shutdown: running jobs finish within the grace period, or are released and taken at
//! once by another worker; nothing stays `running`.

use crate::support::{Backend, wait_state};
use serde::{Deserialize, Serialize};
use spooler::{Job, JobContext, JobError, JobState, Worker};
use std::time::Duration;

crate::on_every_backend!(shutdown:
    running_jobs_finish_within_the_grace_period,
    jobs_past_the_grace_period_are_released_to_another_worker,
);

#[derive(Serialize, Deserialize)]
struct Nap {
    millis: u64,
    only_first_attempt: bool,
}

impl Job for Nap {
    const KIND: &'static str = "nap";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        if !self.only_first_attempt || ctx.attempt() == 1 {
            tokio::time::sleep(Duration::from_millis(self.millis)).await;
        }
        Ok(())
    }
}

async fn running_jobs_finish_within_the_grace_period(b: &Backend) {
    let w = Worker::builder(b.store.clone())
        .register::<Nap>()
        .grace_period(Duration::from_secs(10))
        .build()
        .unwrap()
        .start();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            b.client
                .enqueue(Nap {
                    millis: 400,
                    only_first_attempt: false,
                })
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        wait_state(&b.client, *id, JobState::Running, Duration::from_secs(10)).await;
    }
    w.shutdown().await.unwrap();
    for id in ids {
        let job = b.client.status(id).await.unwrap();
        assert_eq!(
            job.state,
            JobState::Completed,
            "job {id} finished during the grace period"
        );
        assert_eq!(job.attempt, 1);
    }
}

async fn jobs_past_the_grace_period_are_released_to_another_worker(b: &Backend) {
    let first = Worker::builder(b.store.clone())
        .register::<Nap>()
        .grace_period(Duration::from_millis(200))
        .build()
        .unwrap()
        .start();
    let id = b
        .client
        .enqueue(Nap {
            millis: 3_600_000,
            only_first_attempt: true,
        })
        .await
        .unwrap();
    wait_state(&b.client, id, JobState::Running, Duration::from_secs(10)).await;
    first.shutdown().await.unwrap();
    let job = b.client.status(id).await.unwrap();
    assert_eq!(job.state, JobState::Available, "released, not left running");
    assert_eq!(
        job.max_attempts,
        spooler::core::DEFAULT_MAX_ATTEMPTS + 1,
        "no attempt spent"
    );
    assert!(job.errors.is_empty());
    // Another worker takes it at once: no lease has to expire.
    let second = Worker::builder(b.store.clone())
        .register::<Nap>()
        .build()
        .unwrap()
        .start();
    let job = wait_state(&b.client, id, JobState::Completed, Duration::from_secs(5)).await;
    assert_eq!(job.attempt, 2);
    second.shutdown().await.unwrap();
}
