//! `spooler serve` running the built-in kinds for real: 1,000 `http` jobs each delivered exactly
//! once, long polls that answer when the job ends, retries on the queue's policy then `failed`
//! with every attempt's error, a manual retry, and `tcp` jobs to a listener and to closed ports.

use crate::server_support::{
    HookServer, ServeOptions, Server, SilentListener, TcpSink, closed_port, wait_for,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use spooler::JobState;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_http_jobs_are_each_delivered_exactly_once_and_complete() {
    let hooks = HookServer::start().await;
    let server = Server::start().await;
    let n = 1000;
    let job = |i: usize| {
        json!({
            "kind": "http",
            "args": {"url": hooks.url(&format!("job-{i}")), "body": {"n": i}},
        })
    };

    // 900 in three batches, 100 one by one from 4 concurrent callers.
    let mut ids: Vec<(usize, i64)> = Vec::new();
    for batch in 0..3 {
        let jobs: Vec<Value> = (batch * 300..(batch + 1) * 300).map(job).collect();
        let (status, body) = server
            .post("/v1/jobs/batch", &json!({ "jobs": jobs }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let created = body["jobs"].as_array().expect("jobs in the answer");
        assert_eq!(created.len(), 300);
        for (k, j) in created.iter().enumerate() {
            assert_eq!(
                j["args"]["body"]["n"],
                batch * 300 + k,
                "answer in request order"
            );
            assert_eq!(j["duplicate"], false);
            ids.push((batch * 300 + k, j["id"].as_i64().expect("id")));
        }
    }
    let server = std::sync::Arc::new(server);
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..4 {
        let server = server.clone();
        let bodies: Vec<(usize, Value)> = (900 + caller * 25..900 + (caller + 1) * 25)
            .map(|i| (i, job(i)))
            .collect();
        callers.spawn(async move {
            let mut out = Vec::new();
            for (i, body) in bodies {
                let created = server.enqueue(&body).await;
                assert_eq!(created["kind"], "http");
                out.push((i, created["id"].as_i64().expect("id")));
            }
            out
        });
    }
    while let Some(out) = callers.join_next().await {
        ids.extend(out.expect("enqueue task"));
    }
    assert_eq!(ids.len(), n);

    wait_for(
        "1,000 http jobs to complete",
        Duration::from_secs(60),
        || async {
            let counts = server.counts().await;
            (counts[&JobState::Completed] == n as i64).then_some(())
        },
    )
    .await;
    let counts = server.counts().await;
    assert_eq!(server.total_jobs().await, n as i64, "{counts:?}");

    let deliveries = hooks.deliveries();
    assert_eq!(deliveries.len(), n, "every job delivered");
    let not_once: Vec<_> = deliveries.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        not_once.is_empty(),
        "delivered more than once: {not_once:?}"
    );
    let mut bodies: Vec<i64> = hooks
        .bodies()
        .iter()
        .map(|b| {
            serde_json::from_str::<Value>(b).expect("JSON body")["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    bodies.sort_unstable();
    assert_eq!(
        bodies,
        (0..n as i64).collect::<Vec<_>>(),
        "each body sent once"
    );

    for (i, id) in ids {
        let job = server.job(id).await;
        assert_eq!(job["state"], "completed", "{job}");
        assert_eq!(job["attempt"], 1, "{job}");
        assert_eq!(job["result"]["status"], 200, "{job}");
        assert_eq!(
            job["result"]["body_excerpt"],
            format!("hook job-{i} answered 200"),
            "{job}"
        );
        assert!(job["finished_at"].is_string(), "{job}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_as_soon_as_the_job_finishes() {
    let server = Server::start().await;
    let job = server
        .enqueue(&json!({"kind": "sleep", "args": {"duration": "300ms"}}))
        .await;
    let id = job["id"].as_i64().unwrap();
    let started = Instant::now();
    let (status, done) = server.get(&format!("/v1/jobs/{id}?wait=10s")).await;
    let waited = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["state"], "completed", "{done}");
    assert!(
        waited < Duration::from_secs(5),
        "the long poll answered after {waited:?}, not when the 300ms job finished"
    );

    // An unfinished job is answered as it is when the wait ends.
    let later = server
        .enqueue(&json!({"kind": "noop", "delay": "1h"}))
        .await;
    let (status, same) = server
        .get(&format!("/v1/jobs/{}?wait=200ms", later["id"]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(same["state"], "scheduled", "{same}");
    let (status, body) = server.get(&format!("/v1/jobs/{id}?wait=soon")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "wait", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_retried_on_the_queue_policy_then_failed_then_retried_by_hand() {
    let hooks = HookServer::start().await;
    hooks.answer(500);
    let server = Server::start_with(ServeOptions {
        config: Some(
            "[queues.hooks]\nconcurrency = 2\nmax_attempts = 3\nbackoff = \"1s\"\n".into(),
        ),
        // A running job learns of its cancellation at the next heartbeat (a third of the lease).
        args: vec!["--lease".into(), "3s".into()],
        ..Default::default()
    })
    .await;
    let url = hooks.url("flaky");
    let job = server
        .enqueue(&json!({"kind": "http", "queue": "hooks", "args": {"url": url}}))
        .await;
    assert_eq!(
        job["max_attempts"], 3,
        "the queue's max_attempts applies: {job}"
    );
    let id = job["id"].as_i64().unwrap();
    // The queue's defaults live in the store: a Rust client with no config file, enqueueing into
    // the same queue, gets them too; its own value still wins.
    let client = spooler::Client::new(server.store().await);
    let from_rust = client
        .enqueue_new(spooler::NewJob::new("noop", json!({})).queue("hooks"))
        .await
        .unwrap()
        .job;
    assert_eq!(from_rust.max_attempts, 3, "{from_rust:?}");
    let own = client
        .enqueue_new(
            spooler::NewJob::new("noop", json!({}))
                .queue("hooks")
                .max_attempts(7),
        )
        .await
        .unwrap()
        .job;
    assert_eq!(own.max_attempts, 7, "{own:?}");

    let failed = server
        .wait_state(id, "failed", Duration::from_secs(20))
        .await;
    assert_eq!(
        hooks.count("flaky"),
        3,
        "three attempts reached the endpoint"
    );
    assert_eq!(failed["attempt"], 3, "{failed}");
    let errors = failed["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 3, "one error per attempt: {failed}");
    for (k, e) in errors.iter().enumerate() {
        assert_eq!(e["attempt"], k + 1, "{e}");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(message.contains(&url), "names the URL: {message}");
        assert!(message.contains("500"), "names the status: {message}");
    }
    // The fixed 1s backoff applied (the default exponential policy waits 16s and more).
    let at =
        |k: usize| chrono::DateTime::parse_from_rfc3339(errors[k]["at"].as_str().unwrap()).unwrap();
    for k in 1..3 {
        let gap = (at(k) - at(k - 1)).num_milliseconds();
        assert!(
            (900..10_000).contains(&gap),
            "attempts {k} and {} were {gap}ms apart, not about 1s",
            k + 1
        );
    }

    hooks.answer(200);
    let (status, again) = server
        .post(&format!("/v1/jobs/{id}/retry"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert!(
        matches!(
            again["state"].as_str(),
            Some("available" | "running" | "completed")
        ),
        "{again}"
    );
    let done = server
        .wait_state(id, "completed", Duration::from_secs(20))
        .await;
    assert_eq!(hooks.count("flaky"), 4, "one more delivery");
    assert_eq!(done["result"]["status"], 200, "{done}");
    assert_eq!(
        done["errors"].as_array().map(Vec::len),
        Some(3),
        "earlier errors kept: {done}"
    );

    // A running job cannot be retried.
    let running = server
        .enqueue(&json!({"kind": "sleep", "queue": "hooks", "args": {"duration": "1m"}}))
        .await;
    let running_id = running["id"].as_i64().unwrap();
    server
        .wait_state(running_id, "running", Duration::from_secs(10))
        .await;
    let (status, body) = server
        .post(&format!("/v1/jobs/{running_id}/retry"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("running"),
        "{body}"
    );
    let (status, body) = server
        .post(&format!("/v1/jobs/{running_id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server
        .wait_state(running_id, "cancelled", Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_jobs_reach_a_listener_and_closed_ports_fail_naming_host_and_port() {
    let sink = TcpSink::start().await;
    let server = Server::start().await;
    let address = sink.addr.to_string();
    let mut ids = Vec::new();
    for i in 0..5 {
        let job = server
            .enqueue(&json!({
                "kind": "tcp",
                "args": {"address": address, "payload": format!("hello {i}")},
            }))
            .await;
        ids.push(job["id"].as_i64().unwrap());
    }
    let raw = server
        .enqueue(&json!({
            "kind": "tcp",
            "args": {"address": address, "payload": "no newline", "newline": false},
        }))
        .await;
    ids.push(raw["id"].as_i64().unwrap());
    for id in &ids {
        let job = server
            .wait_state(*id, "completed", Duration::from_secs(20))
            .await;
        assert!(job["result"]["bytes"].as_u64().unwrap() > 0, "{job}");
    }
    let received = wait_for("six TCP payloads", Duration::from_secs(10), || async {
        let r = sink.received();
        (r.len() == 6).then_some(r)
    })
    .await;
    let mut texts: Vec<String> = received
        .iter()
        .map(|b| String::from_utf8(b.clone()).expect("UTF-8 payload"))
        .collect();
    texts.sort();
    let mut expected: Vec<String> = (0..5).map(|i| format!("hello {i}\n")).collect();
    expected.push("no newline".into());
    expected.sort();
    assert_eq!(texts, expected);

    // A closed port is refused at once; the error names host:port.
    let port = closed_port();
    let started = Instant::now();
    let job = server
        .enqueue(&json!({
            "kind": "tcp",
            "max_attempts": 1,
            "args": {"address": format!("127.0.0.1:{port}"), "payload": "x", "connect_timeout": "2s"},
        }))
        .await;
    let failed = server
        .wait_state(
            job["id"].as_i64().unwrap(),
            "failed",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a refused connection took {:?} to fail (connect_timeout 2s)",
        started.elapsed()
    );
    let message = failed["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("127.0.0.1:{port}")),
        "names host:port: {message}"
    );

    // An address that never answers fails within connect_timeout, naming host:port.
    let silent = SilentListener::start().await;
    let started = Instant::now();
    let job = server
        .enqueue(&json!({
            "kind": "tcp",
            "max_attempts": 1,
            "args": {"address": silent.addr.to_string(), "payload": "x", "connect_timeout": "1s"},
        }))
        .await;
    let failed = server
        .wait_state(
            job["id"].as_i64().unwrap(),
            "failed",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a silent address took {:?} to fail (connect_timeout 1s)",
        started.elapsed()
    );
    let message = failed["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&silent.addr.to_string()) && message.contains("connect_timeout"),
        "names host:port and the timeout: {message}"
    );
}
