//! Graceful shutdown of `spooler serve` on SIGTERM: it exits 0 within a few seconds, jobs that
//! finish within the grace period complete, longer ones are released (none is left `running`),
//! and an open long poll is answered rather than cut.

use crate::server_support::{RawRequest, ServeOptions, Server, wait_for};
use serde_json::json;
use spooler::JobState;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_serve_gracefully_leaving_no_job_running() {
    let mut server = Server::start_with(ServeOptions {
        args: vec!["--grace".into(), "2s".into()],
        ..Default::default()
    })
    .await;
    let mut short = Vec::new();
    for _ in 0..3 {
        let job = server
            .enqueue(&json!({"kind": "sleep", "args": {"duration": "700ms"}}))
            .await;
        short.push(job["id"].as_i64().unwrap());
    }
    let long = server
        .enqueue(&json!({"kind": "sleep", "args": {"duration": "10m"}}))
        .await["id"]
        .as_i64()
        .unwrap();
    wait_for("all four jobs running", Duration::from_secs(10), || async {
        let counts = server.counts().await;
        (counts[&JobState::Running] == 4).then_some(())
    })
    .await;

    // A long poll on the long job is open when the signal comes.
    let poll = RawRequest::get(server.addr, &format!("/v1/jobs/{long}?wait=60s")).await;
    wait_for(
        "the server to read the long poll",
        Duration::from_secs(10),
        || async { poll.delivered().then_some(()) },
    )
    .await;
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let answer = poll.answer().await;
        (started.elapsed(), answer)
    });

    let started = Instant::now();
    let status = server.terminate(Duration::from_secs(15)).await;
    let took = started.elapsed();
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        server.log_tail()
    );
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} to stop with --grace 2s; log:\n{}",
        server.log_tail()
    );
    let log = server.log_text();
    assert!(log.contains("SIGTERM"), "logs the signal");
    assert!(log.contains("server stopped"), "logs the end");

    let store = server.store().await;
    for id in &short {
        let job = store.job_get(*id).await.unwrap().unwrap();
        assert_eq!(
            job.state,
            JobState::Completed,
            "finished within the grace: {job:?}"
        );
    }
    let job = store.job_get(long).await.unwrap().unwrap();
    assert_eq!(
        job.state,
        JobState::Available,
        "released for another worker: {job:?}"
    );
    assert!(job.errors.is_empty(), "a release is not a failure: {job:?}");
    assert_eq!(server.counts().await[&JobState::Running], 0);

    let (waited, answer) = poll.await.unwrap();
    let (status, body) = answer.unwrap_or_else(|| {
        panic!("the open long poll was cut after {waited:?} instead of answered")
    });
    assert_eq!(status, 200, "{body}");
    let job: serde_json::Value = serde_json::from_str(&body).expect("a job");
    assert_eq!(job["id"], long);
    assert_eq!(
        job["state"], "running",
        "answered as shutdown began, not after the grace"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "answered after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_stops_at_once() {
    let mut server = Server::start().await;
    let job = server.enqueue(&json!({"kind": "noop"})).await;
    server
        .wait_state(
            job["id"].as_i64().unwrap(),
            "completed",
            Duration::from_secs(10),
        )
        .await;
    let started = Instant::now();
    let status = server.terminate(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        server.log_tail()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "an idle server took {:?} to stop",
        started.elapsed()
    );
    // The port is closed and the worker record gone.
    assert!(
        reqwest::get(format!("{}/healthz", server.url))
            .await
            .is_err(),
        "still answering after exit"
    );
    let since = chrono::Utc::now() - chrono::TimeDelta::seconds(60);
    let workers = server.store().await.worker_list(since).await.unwrap();
    assert!(workers.is_empty(), "{workers:?}");
}
