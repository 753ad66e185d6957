//! Faults of the store under a running worker: a worker cut off from its database (its writes get
//! no answer) stops its runs before their leases lapse, never after, and the job runs again once
//! the store answers; a blocking job past its timeout keeps its slot until its thread returns.

use crate::support::{eventually, fast_maintenance, wait_state};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use spooler::{Client, Job, JobContext, JobError, JobState, RetryPolicy, Worker};
use std::sync::Mutex;
use std::time::Duration;

/// When attempt 1 of [`HangsOnFirst`] was stopped from outside (its future dropped).
static FIRST_STOPPED_AT: Mutex<Option<DateTime<Utc>>> = Mutex::new(None);

struct MarksStop;

impl Drop for MarksStop {
    fn drop(&mut self) {
        *FIRST_STOPPED_AT.lock().unwrap() = Some(Utc::now());
    }
}

#[derive(Serialize, Deserialize)]
struct HangsOnFirst;

impl Job for HangsOnFirst {
    const KIND: &'static str = "hangs_on_first";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        if ctx.attempt() == 1 {
            let _mark = MarksStop;
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_worker_cut_off_from_its_store_stops_its_runs_before_their_leases_lapse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let store = spooler::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let client = Client::new(store.clone());
    let w = Worker::builder(store.clone())
        .register::<HangsOnFirst>()
        .lease(Duration::from_millis(1500))
        .heartbeat(Duration::from_millis(300))
        .retry_policy(RetryPolicy::fixed(Duration::ZERO))
        .maintenance_config(fast_maintenance())
        .build()
        .unwrap()
        .start();
    let id = client.enqueue(HangsOnFirst).await.unwrap();
    wait_state(&client, id, JobState::Running, Duration::from_secs(10)).await;

    // Another connection takes the write lock, as a database that stops answering would: no
    // renewal can land from now on. Readers still read the lease as last renewed.
    let lock = rusqlite::Connection::open(&path).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let lease_lapses_at = client
        .status(id)
        .await
        .unwrap()
        .lease_expires_at
        .expect("a running job has a lease");
    let stopped_at = eventually(
        "the worker to stop the run it can no longer renew",
        Duration::from_secs(10),
        || async { *FIRST_STOPPED_AT.lock().unwrap() },
    )
    .await;
    lock.execute_batch("COMMIT").unwrap();
    assert!(
        stopped_at < lease_lapses_at,
        "stopped at {stopped_at}, after its lease lapsed at {lease_lapses_at}"
    );

    // Once the store answers, the lapsed lease is rescued and the job runs again.
    let job = wait_state(&client, id, JobState::Completed, Duration::from_secs(20)).await;
    assert_eq!(job.attempt, 2, "{job:?}");
    assert!(
        job.errors[0].message.contains("lease expired"),
        "{:?}",
        job.errors
    );
    w.shutdown().await.unwrap();
}

/// How many [`Grinds`] threads run at this moment, and the most that ever ran at once.
static GRINDING: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static MOST_GRINDING: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A blocking job that ignores its cancellation: it grinds for 600 ms whatever its timeout says.
#[derive(Serialize, Deserialize)]
struct Grinds;

impl spooler::BlockingJob for Grinds {
    const KIND: &'static str = "grinds";
    const MAX_ATTEMPTS: Option<i32> = Some(1);

    fn run(self, _ctx: JobContext) -> Result<(), JobError> {
        use std::sync::atomic::Ordering;
        let now = GRINDING.fetch_add(1, Ordering::SeqCst) + 1;
        MOST_GRINDING.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(600));
        GRINDING.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_blocking_job_past_its_timeout_keeps_its_slot_until_its_thread_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = spooler::connect(&format!(
        "sqlite://{}",
        dir.path().join("jobs.db").display()
    ))
    .await
    .unwrap();
    let client = Client::new(store.clone());
    let w = Worker::builder(store.clone())
        .register_blocking::<Grinds>()
        .queue("default", 1)
        .maintenance_config(fast_maintenance())
        .build()
        .unwrap()
        .start();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            client
                .enqueue_blocking(Grinds)
                .timeout(Duration::from_millis(100))
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        let job = wait_state(&client, *id, JobState::Failed, Duration::from_secs(20)).await;
        assert!(
            job.errors[0].message.contains("timed out after 100ms")
                && job.errors[0].message.contains("holding its slot"),
            "{:?}",
            job.errors
        );
    }
    // Each timed out at 100 ms, but the next started only once the thread before it returned.
    eventually(
        "the last thread to return",
        Duration::from_secs(10),
        || async { (GRINDING.load(std::sync::atomic::Ordering::SeqCst) == 0).then_some(()) },
    )
    .await;
    assert_eq!(
        MOST_GRINDING.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a queue of concurrency 1 never ran two threads at once"
    );
    w.shutdown().await.unwrap();
}
