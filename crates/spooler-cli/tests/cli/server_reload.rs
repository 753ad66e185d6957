//! `SIGHUP` against a real `spooler serve` and `spooler worker`: a changed schedule, route, rate
//! limit and queue defaults apply without a restart, a new queue is worked (a new worker takes
//! over while the old one's running jobs go on past its grace period), and a broken config is
//! logged with file, line and key while the old one stays.

use crate::server_support::{ServeOptions, Server, wait_for};
use serde_json::{Value, json};
use std::time::Duration;

fn hangup(server: &Server) {
    hangup_pid(server.pid());
}

fn hangup_pid(pid: u32) {
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("run kill -HUP");
    assert!(sent.success());
}

/// Waits until the server's log has `n` lines whose message starts with `prefix`.
async fn logged(server: &Server, prefix: &str, n: usize) -> Vec<Value> {
    wait_for(
        &format!("{n} log lines \"{prefix}…\""),
        Duration::from_secs(30),
        || async {
            let lines: Vec<Value> = server
                .log_text()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
                .collect();
            (lines.len() >= n).then_some(lines)
        },
    )
    .await
}

async fn jobs_of(server: &Server, kind_tag: &str) -> Vec<Value> {
    let (status, body) = server.get("/v1/jobs?limit=1000").await;
    assert_eq!(status, 200, "{body}");
    body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["tags"].as_array().unwrap().iter().any(|t| t == kind_tag))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_schedules_and_queue_defaults_and_keeps_the_old_config_when_broken() {
    let first = r#"
[queues.slow]

[worker]
grace = "1s"

[[schedules]]
name = "old"
cron = "@every 1s"
job = { kind = "noop" }
"#;
    let server = Server::start_with(ServeOptions {
        config: Some(first.into()),
        ..Default::default()
    })
    .await;
    // A long job is running across every reload: none interrupts it.
    let long = server
        .enqueue(&json!({"kind": "sleep", "args": {"duration": "6s"}}))
        .await;
    server
        .wait_state(
            long["id"].as_i64().unwrap(),
            "running",
            Duration::from_secs(10),
        )
        .await;
    wait_for(
        "the old schedule's first job",
        Duration::from_secs(30),
        || async { (!jobs_of(&server, "schedule:old").await.is_empty()).then_some(()) },
    )
    .await;

    let second = r#"
[queues.default]
max_attempts = 2
on_failure = { queue = "parked", delay = "1h" }

[queues.slow]
rate_limit = "2/h"

[queues.fresh]
concurrency = 2

[worker]
grace = "1s"

[[schedules]]
name = "new"
cron = "@every 1s"
job = { kind = "noop", args = { v = 2 } }
"#;
    std::fs::write(server.path("spooler.toml"), second).unwrap();
    hangup(&server);
    logged(&server, "SIGHUP: config reloaded", 1).await;
    let took_over = logged(&server, "SIGHUP: a new worker took over", 1).await;
    assert!(
        took_over[0]["keys"].as_str().unwrap().contains("queues"),
        "{}",
        took_over[0]
    );
    // The queue the new config adds is worked without a restart.
    let fresh = server
        .enqueue(&json!({"kind": "noop", "queue": "fresh"}))
        .await;
    server
        .wait_state(
            fresh["id"].as_i64().unwrap(),
            "completed",
            Duration::from_secs(10),
        )
        .await;
    let old_count = jobs_of(&server, "schedule:old").await.len();
    wait_for(
        "the new schedule's first job",
        Duration::from_secs(10),
        || async { (!jobs_of(&server, "schedule:new").await.is_empty()).then_some(()) },
    )
    .await;
    let (_, schedules) = server.get("/v1/schedules").await;
    let names: Vec<&str> = schedules["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["new"], "the schedule dropped from the file is gone");
    let queued = server.enqueue(&json!({"kind": "noop"})).await;
    assert_eq!(
        queued["max_attempts"], 2,
        "the queue's new default applies at once"
    );
    // The new route applies at once: a job that fails now is routed.
    let refused = crate::server_support::closed_port();
    let failing = server
        .enqueue(&json!({
            "kind": "tcp",
            "max_attempts": 1,
            "args": {"address": format!("127.0.0.1:{refused}"), "payload": "x"},
        }))
        .await;
    let routed = wait_for("the failure routed", Duration::from_secs(10), || async {
        let (_, body) = server.get("/v1/jobs?queue=parked").await;
        body["jobs"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(routed["routed_from"], failing["id"], "{routed}");
    assert_eq!(routed["state"], "scheduled", "the route's delay: {routed}");
    assert_eq!(routed["origin"]["hops"], 1, "{routed}");
    assert_eq!(routed["origin"]["queue"], "default", "{routed}");

    // The new rate limit applies at once: of three jobs, one starts; the next may in 30 minutes.
    let slow: Vec<i64> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            let job = server
                .enqueue(&json!({"kind": "noop", "queue": "slow"}))
                .await;
            ids.push(job["id"].as_i64().unwrap());
        }
        ids
    };
    server
        .wait_state(slow[0], "completed", Duration::from_secs(10))
        .await;

    // A broken config: logged with file, line and key; the old one keeps working.
    std::fs::write(
        server.path("spooler.toml"),
        "[[schedules]]\nname = \"new\"\ncron = \"@every 1s\"\njob = { kind = \"noop\" }\n[queues.default]\nconcurency = 3\n",
    )
    .unwrap();
    hangup(&server);
    let failed = logged(&server, "SIGHUP: the config did not load", 1).await;
    let error = failed[0]["error"].as_str().unwrap();
    assert!(
        error.contains("spooler.toml, line 6, key queues.default.concurency"),
        "{error}"
    );
    let before = jobs_of(&server, "schedule:new").await.len();
    wait_for(
        "the new schedule to keep ticking",
        Duration::from_secs(10),
        || async { (jobs_of(&server, "schedule:new").await.len() > before).then_some(()) },
    )
    .await;
    let (_, schedules) = server.get("/v1/schedules").await;
    assert_eq!(schedules["schedules"].as_array().unwrap().len(), 1);
    // Ticks later, the rate-limited queue still holds its other two jobs.
    for id in &slow[1..] {
        assert_eq!(server.job(*id).await["state"], "available", "job {id}");
    }
    // The old schedule enqueued nothing after the reload but the tick in flight.
    let old_now = jobs_of(&server, "schedule:old").await.len();
    assert!(old_now <= old_count + 1, "old: {old_count} then {old_now}");
    // The long job ran to its end.
    let done = server
        .wait_state(
            long["id"].as_i64().unwrap(),
            "completed",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        done["attempt"], 1,
        "never interrupted, though it ran 5 s past its worker's 1 s grace period"
    );
}

/// `spooler worker` takes on a reloaded config too: a queue the new file adds is worked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_makes_a_spooler_worker_work_the_queues_its_new_config_names() {
    let server = Server::start_with(ServeOptions {
        no_worker: true,
        ..Default::default()
    })
    .await;
    let config = server.path("worker.toml");
    std::fs::write(&config, "[queues.a]\n").unwrap();
    let mut worker = crate::processes::WorkerProcess::start(
        &server.store_url,
        server.dir.path(),
        "worker",
        &["--config", config.to_str().unwrap(), "--poll", "100ms"],
    );
    let b = server.enqueue(&json!({"kind": "noop", "queue": "b"})).await;
    let a = server.enqueue(&json!({"kind": "noop", "queue": "a"})).await;
    server
        .wait_state(
            a["id"].as_i64().unwrap(),
            "completed",
            Duration::from_secs(30),
        )
        .await;
    let b_id = b["id"].as_i64().unwrap();
    assert_eq!(
        server.job(b_id).await["state"],
        "available",
        "queue b is not the worker's yet"
    );
    std::fs::write(&config, "[queues.a]\n[queues.b]\n").unwrap();
    hangup_pid(worker.pid());
    server
        .wait_state(b_id, "completed", Duration::from_secs(30))
        .await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status:?}: {}", worker.log_text());
    assert!(
        worker
            .log_text()
            .contains("SIGHUP: a new worker took over with these settings"),
        "{}",
        worker.log_text()
    );
}
