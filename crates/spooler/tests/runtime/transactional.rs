//! Typed enqueue inside the caller's own Postgres transaction (`client.enqueue(job).tx(&mut tx)`):
//! the job exists exactly when the transaction commits, a worker waiting on the queue runs it once
//! it does, and a client on another store says why it cannot.

use crate::support::{Backend, wait_state};
use serde::{Deserialize, Serialize};
use spooler::{Job, JobContext, JobError, JobState, Worker};
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct Welcome {
    user: String,
}

impl Job for Welcome {
    const KIND: &'static str = "welcome";
    async fn run(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_job_enqueued_in_a_transaction_exists_when_it_commits() {
    let Some(b) = Backend::postgres().await else {
        return;
    };
    let pg = b
        .store
        .as_any()
        .and_then(|s| s.downcast_ref::<spooler::postgres::PgStore>())
        .expect("a Postgres store")
        .clone();
    let pool = pg.pool().clone();
    // Rolled back: no job.
    let mut tx = pool.begin().await.unwrap();
    let gone = b
        .client
        .enqueue(Welcome { user: "a".into() })
        .tx(&mut tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(b.client.status(gone.job.id).await.ok().map(|j| j.id), None);
    // A worker waits on the queue; the job committed with a write of the caller's is run.
    let worker = Worker::builder(b.store.clone())
        .register::<Welcome>()
        .poll_interval(Duration::from_secs(3600))
        .build()
        .unwrap()
        .start();
    let mut tx = pool.begin().await.unwrap();
    spooler::sqlx::query("SELECT 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    let kept = b
        .client
        .enqueue(Welcome { user: "b".into() })
        .queue("default")
        .priority(3)
        .tx(&mut tx)
        .await
        .unwrap();
    assert!(!kept.duplicate);
    assert_eq!(kept.job.priority, 3);
    tx.commit().await.unwrap();
    // Woken by the commit's notification, not the hour-long poll.
    let done = wait_state(
        &b.client,
        kept.job.id,
        JobState::Completed,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(done.args["user"], "b");
    worker.shutdown().await.unwrap();
    b.cleanup().await;
}

#[tokio::test]
async fn a_transaction_needs_a_postgres_store() {
    let b = Backend::sqlite().await;
    let Some(url) = std::env::var("SPOOLER_TEST_POSTGRES").ok() else {
        eprintln!("skipped: SPOOLER_TEST_POSTGRES is not set");
        return;
    };
    let pool = spooler::sqlx::PgPool::connect(&url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let err = b
        .client
        .enqueue(Welcome { user: "a".into() })
        .tx(&mut tx)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("needs a Postgres store"), "{text}");
    assert!(text.contains("sqlite://"), "{text}");
    b.cleanup().await;
}
