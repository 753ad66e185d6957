//! Faults of the store under a running worker: a worker cut off from its database (its writes get
//! no answer) stops its runs before their leases lapse, never after, and the job runs again once
//! the store answers.

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
