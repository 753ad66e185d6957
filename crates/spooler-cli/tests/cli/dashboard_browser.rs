//! The dashboard in a real headless Chromium (`tests/browser/dashboard.mjs`, playwright-core
//! driving Debian's `chromium`) against the real binary: a token login, queue counts equal to
//! `GET /v1/queues`, a failed job with every attempt, a hidden tab that makes no requests, the
//! no-live-worker badge once the only worker stops, failures grouped, a retry, a bulk retry by
//! filter with its progress, the charts of what finished (jobs that finished before the server
//! started, rolled up by its leader), a pause and a resume, a logout. Screenshots of the
//! overview, the failed jobs, a job page, the failure groups, an operation and the charts go to
//! `target/dashboard-screenshots`. `.ci/run` installs Chromium and the npm package.

use crate::server_support::{ServeOptions, Server, closed_port, spooler};
use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const CONFIG: &str = r#"
[queues.mail]
max_attempts = 2
backoff = "200ms"
"#;

/// Jobs that completed before the server started: one every 30 s, from half an hour to ten
/// minutes ago.
const SEEDED_COMPLETED: u32 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_headless_chromium() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = repo.join("tests/browser/dashboard.mjs");
    assert!(
        repo.join("tests/browser/node_modules/playwright-core")
            .exists(),
        "playwright-core is not installed: run `npm ci --prefix tests/browser` (.ci/run does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: apt-get install chromium (.ci/run does), or set CHROMIUM"
    );
    let token = "dashboard-test-token";
    // History for the charts: jobs that finished over the last half hour, written before the
    // server starts, so that the first roll-up of the leader it elects counts them.
    let history = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", history.path().join("jobs.db").display());
    let migrated = spooler()
        .args(["migrate", "--store", &store])
        .output()
        .await
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    let now_us = chrono::Utc::now().timestamp_micros();
    let seed = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {SEEDED_COMPLETED})
         INSERT INTO spooler_jobs (queue, kind, args, state, attempt, max_attempts, run_at,
                                   created_at, started_at, finished_at)
         SELECT 'history', 'noop', '{{}}', 'completed', 1, 1, t, t, t + 5000, t + 25000
           FROM (SELECT {now_us} - 1800000000 + i * 30000000 AS t FROM n);"
    );
    let seeded = tokio::process::Command::new("sqlite3")
        .arg(history.path().join("jobs.db"))
        .arg(&seed)
        .output()
        .await
        .expect("the sqlite3 shell (.ci/run installs it)");
    assert!(seeded.status.success(), "{seeded:?}");
    let server = Server::start_with(ServeOptions {
        store: Some(store),
        config: Some(CONFIG.into()),
        token: Some(token.into()),
        no_worker: true,
        ..Default::default()
    })
    .await;
    // The only worker, in a process of its own, so that the test can stop it.
    let config = server.path("spooler.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut worker = spooler()
        .args(["worker", "--store", &server.store_url, "--config"])
        .arg(&config)
        .current_dir(server.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a worker");
    // Three jobs fail alike (one group), one otherwise (another).
    let port = closed_port();
    let mut failing = Vec::new();
    for n in 0..3 {
        let job = server
            .enqueue(&json!({
                "kind": "tcp",
                "queue": "mail",
                "args": {"address": format!("127.0.0.1:{port}"), "payload": format!("x{n}")}
            }))
            .await;
        failing.push(job["id"].as_i64().unwrap());
    }
    let other = server
        .enqueue(&json!({"kind": "http", "queue": "mail", "args": {"url": format!("http://127.0.0.1:{port}/")}}))
        .await;
    failing.push(other["id"].as_i64().unwrap());
    for _ in 0..3 {
        server.enqueue(&json!({"kind": "noop"})).await;
    }
    for &id in &failing {
        let failed = server
            .wait_state(id, "failed", Duration::from_secs(30))
            .await;
        assert_eq!(
            failed["errors"].as_array().map(Vec::len),
            Some(2),
            "{failed}"
        );
    }
    let failing = failing[0];
    let shots = repo.join("target/dashboard-screenshots");
    let run = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("node")
            .arg(&script)
            .env("SPOOLER_URL", &server.url)
            .env("SPOOLER_TOKEN", token)
            .env("FAILED_JOB", failing.to_string())
            .env("ATTEMPTS", "2")
            .env("GROUPS", "2")
            .env("BIGGEST_GROUP", "3")
            .env("WORKER_PID", worker.id().expect("pid").to_string())
            .env("SEEDED_COMPLETED", SEEDED_COMPLETED.to_string())
            .env("SPOOLER_SHOTS", &shots)
            .env("CHROMIUM", &chromium)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser run ends within 3 minutes")
    .unwrap_or_else(|e| panic!("cannot run node: {e}"));
    let _ = worker.kill().await;
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the browser run failed: {stderr}\n{stdout}\nserver log:\n{}",
        server.log_tail()
    );
    eprintln!("{stdout}screenshots in {}", shots.display());
    for shot in [
        "overview.png",
        "failed.png",
        "job.png",
        "failed-groups.png",
        "operation.png",
        "charts.png",
    ] {
        assert!(shots.join(shot).exists(), "no {shot}");
    }
    // The actions the browser took are in the audit log.
    let log = server.log_text();
    for action in ["\"retry\"", "\"pause\"", "\"resume\""] {
        assert!(
            log.lines()
                .any(|l| l.contains("spooler_server::audit") && l.contains(action)),
            "no audit line for {action}:\n{log}"
        );
    }
}
