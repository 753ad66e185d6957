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

/// Runs `sql` with psql against the test server; its output (tuples only).
async fn psql(sql: &str) -> String {
    let url = std::env::var("SPOOLER_TEST_POSTGRES").expect("SPOOLER_TEST_POSTGRES");
    let out = tokio::process::Command::new("psql")
        .args([
            url.as_str(),
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run psql: {e} (apt-get install postgresql-client)"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "psql -c {sql:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The jobs of queue `sql`, newest first.
async fn sql_jobs(b: &Backend) -> Vec<spooler::JobRow> {
    let list = spooler::JobList {
        queue: Some("sql".into()),
        limit: 100,
        ..Default::default()
    };
    b.client.list(&list).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sql_enqueue_from_psql_is_run_by_a_rust_worker() {
    use spooler::core::QueueSettings;
    let Some(b) = Backend::postgres().await else {
        return;
    };
    let pg = b
        .store
        .as_any()
        .and_then(|s| s.downcast_ref::<spooler::postgres::PgStore>())
        .expect("a Postgres store")
        .clone();
    let schema = format!("\"{}\"", pg.schema());
    // The queue's stored defaults apply to jobs enqueued from SQL, as to any enqueue.
    b.store
        .queue_configure(&[QueueSettings {
            max_attempts: Some(7),
            ..QueueSettings::new("sql")
        }])
        .await
        .unwrap();
    // Woken only by notifications: the poll is an hour.
    let worker = Worker::builder(b.store.clone())
        .register::<Welcome>()
        .queue("sql", 2)
        .poll_interval(Duration::from_secs(3600))
        .build()
        .unwrap()
        .start();
    // Rolled back: no request, no job.
    psql(&format!(
        "BEGIN; SELECT {schema}.enqueue('welcome', '{{\"user\": \"gone\"}}', queue => 'sql'); ROLLBACK;"
    ))
    .await;
    // Committed: the database's time at the statement's end, just before its commit.
    let out = psql(&format!(
        "SELECT {schema}.enqueue('welcome', '{{\"user\": \"psql\"}}', queue => 'sql', tags => ARRAY['from-sql']),
                (extract(epoch FROM clock_timestamp()) * 1000000)::int8"
    ))
    .await;
    let (request, committed_us) = out.split_once('|').expect("two columns");
    assert!(request.parse::<i64>().expect("the request's id") > 0);
    let committed_us: i64 = committed_us.parse().unwrap();
    let job = crate::support::eventually(
        "the job enqueued from psql",
        Duration::from_secs(10),
        || async {
            sql_jobs(&b)
                .await
                .into_iter()
                .find(|j| j.args["user"] == "psql")
        },
    )
    .await;
    let done = wait_state(
        &b.client,
        job.id,
        JobState::Completed,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(done.max_attempts, 7, "the queue's default applies");
    assert_eq!(done.tags, vec!["from-sql".to_string()]);
    let started_us = done.started_at.expect("started").timestamp_micros();
    // Measured, not asserted to the millisecond: on a loaded machine it varies; the notification
    // path is what an hour-long poll and a 5 s sweep leave.
    eprintln!(
        "enqueue() commit to start: {:.1} ms",
        (started_us - committed_us) as f64 / 1000.0
    );
    assert_eq!(
        sql_jobs(&b).await.len(),
        1,
        "the rolled-back enqueue made no job"
    );
    assert_eq!(
        psql(&format!("SELECT count(*) FROM {schema}.job_requests")).await,
        "0"
    );
    // A request that cannot become a job stays, with the reason, and blocks nothing.
    psql(&format!(
        "SELECT {schema}.enqueue('', '{{}}', queue => 'sql')"
    ))
    .await;
    psql(&format!(
        "SELECT {schema}.enqueue('welcome', '{{\"user\": \"after\"}}', queue => 'sql')"
    ))
    .await;
    let refused =
        crate::support::eventually("the refused request", Duration::from_secs(30), || async {
            let out = psql(&format!(
                "SELECT refused FROM {schema}.job_requests WHERE refused IS NOT NULL"
            ))
            .await;
            (!out.is_empty()).then_some(out)
        })
        .await;
    assert!(refused.contains("kind"), "{refused}");
    crate::support::eventually(
        "the job after the refused request",
        Duration::from_secs(10),
        || async {
            sql_jobs(&b)
                .await
                .into_iter()
                .find(|j| j.args["user"] == "after" && j.state == JobState::Completed)
        },
    )
    .await;
    worker.shutdown().await.unwrap();
    b.cleanup().await;
}
