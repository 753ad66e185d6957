//! Claims under way at once: a backlog is claimed ahead by several claims, a slow queue is not
//! hoarded whatever the setting, and a shutdown hands back what claims under way took.

use crate::support::{Backend, eventually};
use serde::{Deserialize, Serialize};
use spooler::core::JobList;
use spooler::{Job, JobContext, JobError, JobState, Worker};
use std::time::Duration;

crate::on_every_backend!(claims:
    a_busy_worker_holds_no_more_of_a_slow_backlog_than_its_slots,
    shutdown_with_claims_under_way_leaves_nothing_running,
    claims_in_flight_out_of_range_is_refused_by_name,
);

#[derive(Serialize, Deserialize)]
struct Sleepy {
    millis: u64,
}

impl Job for Sleepy {
    const KIND: &'static str = "sleepy";

    async fn run(self, _ctx: JobContext) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Tick;

impl Job for Tick {
    const KIND: &'static str = "tick";

    async fn run(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

async fn listed(b: &Backend, state: JobState) -> usize {
    b.store
        .job_list(&JobList {
            state: Some(state),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

async fn a_busy_worker_holds_no_more_of_a_slow_backlog_than_its_slots(b: &Backend) {
    let jobs = (0..20)
        .map(|_| {
            b.client
                .enqueue(Sleepy { millis: 1000 })
                .into_new_job()
                .unwrap()
        })
        .collect();
    b.client.enqueue_many(jobs).await.unwrap();
    let worker = Worker::builder(b.store.clone())
        .register::<Sleepy>()
        .queue("default", 2)
        .claims_in_flight(4)
        .test_signals()
        .build()
        .unwrap()
        .start();
    eventually("two jobs running", Duration::from_secs(10), || async {
        (listed(b, JobState::Running).await == 2).then_some(())
    })
    .await;
    // Wait until the producer has no claim under way: any further claim it sent has landed by
    // then. None may, as both slots are busy for a while (a worker that just started once
    // claimed three times its slots here).
    let signals = worker.test_signals();
    signals.idle.wait_for(1, Duration::from_secs(10)).await;
    assert!(signals.claimed.count() >= 1, "idle before its first claim");
    let queues = b.store.queue_list().await.unwrap();
    let counts = &queues.iter().find(|q| q.name == "default").unwrap().counts;
    assert_eq!(counts.running, 2, "claimed beyond its slots: {counts:?}");
    // Claimed jobs are `running` in the store, buffered or not: the other 18 are untouched (or,
    // on a slow machine, two of them already ran after the first pair).
    assert_eq!(counts.available + counts.completed, 18, "{counts:?}");
    worker.shutdown().await.unwrap();
    assert_eq!(listed(b, JobState::Running).await, 0);
}

async fn shutdown_with_claims_under_way_leaves_nothing_running(b: &Backend) {
    let n = 5000;
    let jobs = (0..n)
        .map(|_| b.client.enqueue(Tick).into_new_job().unwrap())
        .collect();
    b.client.enqueue_many(jobs).await.unwrap();
    let worker = Worker::builder(b.store.clone())
        .register::<Tick>()
        .queue("default", 20)
        .claims_in_flight(4)
        .build()
        .unwrap()
        .start();
    eventually(
        "a backlog being worked",
        Duration::from_secs(10),
        || async {
            let queues = b.store.queue_list().await.unwrap();
            let q = queues.iter().find(|q| q.name == "default")?;
            (q.counts.completed >= 200).then_some(())
        },
    )
    .await;
    worker.shutdown().await.unwrap();
    let queues = b.store.queue_list().await.unwrap();
    let q = queues.iter().find(|q| q.name == "default").unwrap();
    assert_eq!(q.counts.running, 0, "a claimed job was left running");
    assert_eq!(q.counts.completed + q.counts.available, n as i64);
}

async fn claims_in_flight_out_of_range_is_refused_by_name(b: &Backend) {
    for n in [0, 17] {
        let built = Worker::builder(b.store.clone())
            .register::<Tick>()
            .claims_in_flight(n)
            .build();
        let Err(e) = built else {
            panic!("claims_in_flight({n}) was accepted");
        };
        assert!(e.to_string().contains("claims_in_flight"), "{e}");
    }
}
