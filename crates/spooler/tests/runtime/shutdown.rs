//! Graceful shutdown: running jobs finish within the grace period, or are released and taken at
//! once by another worker; nothing stays `running`.

use crate::support::{Backend, eventually, wait_state};
use serde::{Deserialize, Serialize};
use spooler::{Job, JobContext, JobError, JobState, Worker};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// How many `Nap` runs have begun, per test's tag: `running` in the store also counts jobs a
/// worker claimed but has not handed to a task yet, so a test that must know its jobs are being
/// run counts their starts instead.
static STARTED: LazyLock<Mutex<HashMap<u64, usize>>> = LazyLock::new(Default::default);

fn started(tag: u64) -> usize {
    STARTED.lock().unwrap().get(&tag).copied().unwrap_or(0)
}

crate::on_every_backend!(shutdown:
    running_jobs_finish_within_the_grace_period,
    jobs_past_the_grace_period_are_released_to_another_worker,
    every_job_that_returned_before_the_stop_returned_is_recorded,
    a_retired_worker_claims_nothing_and_lets_its_jobs_run_past_the_grace_period,
);

#[derive(Serialize, Deserialize)]
struct Nap {
    millis: u64,
    only_first_attempt: bool,
    #[serde(default)]
    tag: u64,
}

impl Job for Nap {
    const KIND: &'static str = "nap";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        *STARTED.lock().unwrap().entry(self.tag).or_default() += 1;
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
    let tag = rand::random::<u64>() | 1;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            b.client
                .enqueue(Nap {
                    millis: 400,
                    only_first_attempt: false,
                    tag,
                })
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        wait_state(&b.client, *id, JobState::Running, Duration::from_secs(10)).await;
    }
    eventually(
        "all five jobs to start",
        Duration::from_secs(10),
        || async { (started(tag) == 5).then_some(()) },
    )
    .await;
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
    let tag = rand::random::<u64>() | 1;
    let id = b
        .client
        .enqueue(Nap {
            millis: 3_600_000,
            only_first_attempt: true,
            tag,
        })
        .await
        .unwrap();
    // Its handler started (`running` in the store also covers a claim not yet handed to a task,
    // which a shutdown releases unspent: a loaded machine once stopped the worker in between).
    eventually(
        "the job's handler to start",
        Duration::from_secs(10),
        || async { (started(tag) == 1).then_some(()) },
    )
    .await;
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

/// A worker replaced by another (a reloaded config) stops claiming at once, and its running job
/// runs to its end although that is far past the grace period; told to hurry, it gives the rest
/// the grace period and releases them.
async fn a_retired_worker_claims_nothing_and_lets_its_jobs_run_past_the_grace_period(b: &Backend) {
    let old = Worker::builder(b.store.clone())
        .register::<Nap>()
        .grace_period(Duration::from_millis(50))
        .test_signals()
        .build()
        .unwrap()
        .start();
    let old_signals = old.test_signals().clone();
    let tag = rand::random::<u64>() | 1;
    let nap = |millis| Nap {
        millis,
        only_first_attempt: true,
        tag,
    };
    let long = b.client.enqueue(nap(1_500)).await.unwrap();
    eventually(
        "the long job's handler to start",
        Duration::from_secs(10),
        || async { (started(tag) == 1).then_some(()) },
    )
    .await;
    let (hurry_tx, hurry) = tokio::sync::watch::channel(false);
    let retiring = tokio::spawn(old.retire(hurry.clone()));
    // Retiring is asked for in the background; once its producers stopped it claims nothing more
    // (a job enqueued before that could still be its own).
    old_signals
        .stopped_claiming
        .wait_for(1, Duration::from_secs(10))
        .await;
    let new = Worker::builder(b.store.clone())
        .register::<Nap>()
        .build()
        .unwrap();
    let new_id = new.id().to_string();
    let new = new.start();
    // The job enqueued now is the new worker's: the old one claims nothing more.
    let next = b.client.enqueue(nap(2_000)).await.unwrap();
    let running = wait_state(&b.client, next, JobState::Running, Duration::from_secs(10)).await;
    assert_eq!(running.worker_id.as_deref(), Some(new_id.as_str()));
    tokio::time::timeout(Duration::from_secs(30), retiring)
        .await
        .expect("the retired worker stops once its job ends")
        .unwrap()
        .unwrap();
    let done = b.client.status(long).await.unwrap();
    assert_eq!(
        (done.state, done.attempt),
        (JobState::Completed, 1),
        "the long job ran to its end, 1.5 s past a 50 ms grace period"
    );
    drop(hurry_tx);

    new.shutdown().await.unwrap();
    assert_eq!(
        b.client.status(next).await.unwrap().state,
        JobState::Completed
    );

    // Told to hurry, a retiring worker gives its jobs the grace period, then releases them.
    let stuck = b.client.enqueue(nap(3_600_000)).await.unwrap();
    let other = Worker::builder(b.store.clone())
        .register::<Nap>()
        .grace_period(Duration::from_millis(50))
        .build()
        .unwrap()
        .start();
    eventually(
        "the hour-long job's handler to start",
        Duration::from_secs(10),
        || async { (started(tag) >= 3).then_some(()) },
    )
    .await;
    let (hurry_tx, hurry) = tokio::sync::watch::channel(false);
    let retiring = tokio::spawn(other.retire(hurry));
    hurry_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), retiring)
        .await
        .expect("a hurried retirement ends after the grace period")
        .unwrap()
        .unwrap();
    let job = b.client.status(stuck).await.unwrap();
    assert_eq!(
        job.state,
        JobState::Available,
        "released for another worker"
    );
}

/// Which `Quick` runs returned, per test's tag, by job id.
static RETURNED: LazyLock<Mutex<HashMap<u64, Vec<i64>>>> = LazyLock::new(Default::default);

#[derive(Serialize, Deserialize)]
struct Quick {
    tag: u64,
}

impl Job for Quick {
    const KIND: &'static str = "quick";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        tokio::task::yield_now().await;
        RETURNED
            .lock()
            .unwrap()
            .entry(self.tag)
            .or_default()
            .push(ctx.id());
        Ok(())
    }
}

/// A stop that comes while runs are between their handler's return and the hand-off of their
/// outcome: every run that returned before `shutdown` did has its outcome written by then.
/// (Once, a run left the running set before its outcome reached the completer, so the stop
/// could close the completer first and exit: the job stayed `running` and ran again after its
/// lease.) The worker holds each run in that window for a while, so the stop lands in it.
async fn every_job_that_returned_before_the_stop_returned_is_recorded(b: &Backend) {
    let tag = rand::random::<u64>() | 1;
    let jobs = (0..400)
        .map(|_| spooler::NewJob::new("quick", serde_json::json!({ "tag": tag })))
        .collect();
    b.client.enqueue_many(jobs).await.unwrap();
    let w = Worker::builder(b.store.clone())
        .register::<Quick>()
        .queue("default", 64)
        .grace_period(Duration::from_secs(30))
        .test_outcome_delay(Duration::from_millis(100))
        .test_signals()
        .build()
        .unwrap()
        .start();
    // Stop once the first outcomes are written, with the next runs held in the window.
    w.test_signals()
        .flushed
        .wait_for(1, Duration::from_secs(30))
        .await;
    w.shutdown().await.unwrap();
    let returned = RETURNED.lock().unwrap().remove(&tag).unwrap_or_default();
    assert!(!returned.is_empty(), "some runs returned before the stop");
    let mut unrecorded = Vec::new();
    for id in &returned {
        let job = b.client.status(*id).await.unwrap();
        if job.state != JobState::Completed {
            unrecorded.push((*id, job.state));
        }
    }
    assert!(
        unrecorded.is_empty(),
        "{} of {} runs that returned were not recorded when the worker stopped: {:?}",
        unrecorded.len(),
        returned.len(),
        &unrecorded[..unrecorded.len().min(10)]
    );
}
