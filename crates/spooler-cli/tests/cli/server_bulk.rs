//! Operations by filter through the real server: a bulk retry of 100,000 failed jobs survives a
//! SIGKILL of the server half-way (the restarted server resumes it where the last chunk
//! committed, and every job is retried exactly once), on SQLite and on PostgreSQL; and the CLI's
//! `spooler retry --state failed --queue Q` replays a dead-letter queue.

use crate::server_support::{ServeOptions, Server, cli, wait_for};
use reqwest::StatusCode;
use serde_json::{Value, json};
use spooler::core::{JobClaim, JobFinish, Outcome};
use spooler::{JobFilter, JobState, NewJob, Store};
use std::sync::Arc;
use std::time::Duration;

/// Takes `n` new jobs of queue `queue` to `failed`, a thousand at a time, through the store.
async fn make_failed(store: &Arc<dyn Store>, queue: &str, n: usize) {
    let mut left = n;
    while left > 0 {
        let take = left.min(1000);
        let jobs: Vec<NewJob> = (0..take)
            .map(|i| {
                NewJob::new("bulk", json!({ "i": i }))
                    .queue(queue)
                    .max_attempts(1)
            })
            .collect();
        store.job_insert_many(jobs).await.expect("insert");
        let claimed = store
            .job_claim(&JobClaim {
                queues: vec![queue.to_string()],
                kinds: vec!["bulk".into()],
                limit: take as u32,
                worker_id: "test".into(),
                lease: Duration::from_secs(600),
            })
            .await
            .expect("claim")
            .jobs;
        assert_eq!(claimed.len(), take);
        let finishes: Vec<JobFinish> = claimed
            .iter()
            .map(|j| JobFinish {
                lease: j.lease(),
                outcome: Outcome::Failed {
                    error: "endpoint down".into(),
                },
            })
            .collect();
        let acks = store.job_finish_many(&finishes).await.expect("fail them");
        assert!(acks.iter().all(|a| *a));
        left -= take;
    }
}

async fn count(store: &Arc<dyn Store>, queue: &str, state: JobState) -> i64 {
    store
        .job_count(&JobFilter {
            queue: Some(queue.into()),
            state: Some(state),
            ..JobFilter::default()
        })
        .await
        .expect("count")
}

/// The whole scenario on the server `options` start.
async fn bulk_retry_survives_a_killed_server(options: ServeOptions) {
    const N: i64 = 100_000;
    let mut server = Server::start_with(ServeOptions {
        no_worker: true,
        ..options
    })
    .await;
    let store = server.store().await;
    make_failed(&store, "dead", N as usize).await;
    // A failed job elsewhere is not covered.
    make_failed(&store, "other", 3).await;

    let (status, dry) = server
        .post(
            "/v1/jobs/bulk",
            &json!({"action": "retry", "filter": {"queue": "dead", "state": "failed"}, "dry_run": true}),
        )
        .await;
    assert_eq!(
        (status, dry["matched"].as_i64()),
        (StatusCode::OK, Some(N)),
        "{dry}"
    );
    let (status, op) = server
        .post(
            "/v1/jobs/bulk",
            &json!({"action": "retry", "filter": {"queue": "dead", "state": "failed"}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{op}");
    assert_eq!(op["matched"], json!(N));
    let id = op["id"].as_i64().expect("operation id");

    // SIGKILL as soon as the first chunks have committed.
    wait_for(
        "the operation's first chunk",
        Duration::from_secs(60),
        || async {
            let op = store.operation_get(id).await.ok()??;
            (op.affected > 0).then_some(())
        },
    )
    .await;
    server.kill().await;
    let halfway = store.operation_get(id).await.unwrap().unwrap();
    assert!(
        halfway.is_running() && halfway.affected > 0 && halfway.affected < N,
        "the server was to be killed mid-operation, but it had got to {halfway:?}"
    );
    eprintln!(
        "server killed with {} of {N} jobs retried (through job {})",
        halfway.affected, halfway.done_through
    );
    // What the cursor says is done is exactly what was done: the chunk and the cursor commit together.
    assert_eq!(
        count(&store, "dead", JobState::Available).await,
        halfway.affected
    );
    assert_eq!(
        count(&store, "dead", JobState::Failed).await,
        N - halfway.affected
    );

    server.restart().await;
    let done = wait_for(
        "the resumed operation to complete",
        Duration::from_secs(300),
        || async {
            let op = store.operation_get(id).await.ok()??;
            (!op.is_running()).then_some(op)
        },
    )
    .await;
    assert_eq!(done.state, spooler::OperationState::Completed, "{done:?}");
    assert_eq!(
        (done.matched, done.affected, done.skipped),
        (N, N, 0),
        "{done:?}"
    );
    assert!(
        server.log_text().contains("resuming operation"),
        "the restarted server resumed it; log:\n{}",
        server.log_tail()
    );
    assert_eq!(count(&store, "dead", JobState::Failed).await, 0);
    assert_eq!(count(&store, "dead", JobState::Available).await, N);
    assert_eq!(count(&store, "other", JobState::Failed).await, 3);
    // Retried once each: one more attempt allowed, the first attempt's error kept.
    let (status, page) = server.get("/v1/jobs?queue=dead&limit=1000").await;
    assert_eq!(status, StatusCode::OK);
    for job in page["jobs"].as_array().expect("jobs") {
        assert_eq!(job["max_attempts"], json!(2), "{job}");
        assert_eq!(job["errors"].as_array().map(Vec::len), Some(1), "{job}");
    }
    let (status, read) = server.get(&format!("/v1/operations/{id}")).await;
    assert_eq!(
        (status, read["state"].as_str()),
        (StatusCode::OK, Some("completed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_retry_of_100000_jobs_survives_a_killed_server_on_sqlite() {
    bulk_retry_survives_a_killed_server(ServeOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_bulk_retry_of_100000_jobs_survives_a_killed_server() {
    let Ok(base) = std::env::var("SPOOLER_TEST_POSTGRES") else {
        eprintln!(
            "skipped: SPOOLER_TEST_POSTGRES is not set (e.g. postgres://postgres@127.0.0.1:5432/test)"
        );
        return;
    };
    let schema = format!("spooler_bulk_{:016x}", rand::random::<u64>());
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}schema={schema}");
    bulk_retry_survives_a_killed_server(ServeOptions {
        store: Some(url),
        ..ServeOptions::default()
    })
    .await;
    let pool = sqlx::PgPool::connect(&base)
        .await
        .expect("connect to drop the schema");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await
    .expect("drop schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_replays_a_dead_letter_queue_by_filter() {
    let server = Server::start_with(ServeOptions {
        no_worker: true,
        ..ServeOptions::default()
    })
    .await;
    let store = server.store().await;
    make_failed(&store, "mail", 5).await;
    make_failed(&store, "other", 2).await;
    let url = server.url.clone();
    let dry = cli(&[
        "retry",
        "--state",
        "failed",
        "--queue",
        "mail",
        "--dry-run",
        "--url",
        &url,
    ])
    .await
    .ok();
    assert!(dry.stdout.contains("5 jobs match"), "{}", dry.describe());
    let run = cli(&[
        "retry", "--state", "failed", "--queue", "mail", "--url", &url, "--json",
    ])
    .await
    .ok();
    let op: Value = run.json();
    assert_eq!(op["state"], json!("completed"), "{}", run.describe());
    assert_eq!(
        (op["affected"].as_i64(), op["skipped"].as_i64()),
        (Some(5), Some(0))
    );
    assert_eq!(count(&store, "mail", JobState::Available).await, 5);
    assert_eq!(count(&store, "other", JobState::Failed).await, 2);
    // The same directly on the store, and a missing filter is an error naming the fix.
    let on_store = cli(&["delete", "--queue", "other", "--store", &server.store_url])
        .await
        .ok();
    assert!(
        on_store.stdout.contains("2 changed"),
        "{}",
        on_store.describe()
    );
    let bare = cli(&["retry", "--url", &url]).await;
    assert_ne!(bare.code, Some(0), "{}", bare.describe());
    assert!(
        bare.stderr.contains("--state failed"),
        "{}",
        bare.describe()
    );
    // Queues, pause and resume.
    let queues = cli(&["queues", "--url", &url, "--json"]).await.ok();
    let names: Vec<String> = queues.json()["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"mail".to_string()), "{}", queues.describe());
    cli(&["pause", "mail", "--url", &url]).await.ok();
    assert!(
        store
            .queue_list()
            .await
            .unwrap()
            .iter()
            .any(|q| q.name == "mail" && q.paused)
    );
    cli(&["resume", "mail", "--url", &url]).await.ok();
    assert!(store.queue_list().await.unwrap().iter().all(|q| !q.paused));
}
