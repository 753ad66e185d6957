//! Real `spooler worker` processes sharing one store: many workers drain a backlog exactly once,
//! a worker killed with SIGKILL loses nothing, SIGTERM shuts down gracefully, and bad store URLs
//! give errors that name them.

use crate::processes::{WorkerProcess, spooler_sync as spooler};
use crate::server_support::wait_for;
use serde_json::json;

use spooler::{Client, JobList, JobState, NewJob, Store};
use std::sync::Arc;
use std::time::Duration;

async fn open(url: &str) -> Arc<dyn Store> {
    spooler::connect(url).await.expect("open store")
}

/// Every job in the store, a page at a time.
pub async fn all_jobs(store: &dyn Store) -> Vec<spooler::JobRow> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .job_list(&JobList {
                limit: 1000,
                before_id: cursor,
                ..Default::default()
            })
            .await
            .expect("list");
        if page.is_empty() {
            return out;
        }
        cursor = page.last().map(|j| j.id);
        out.extend(page);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_worker_processes_drain_20000_jobs_exactly_once_on_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let store = open(&url).await;
    let client = Client::new(store.clone());
    let n = 20_000;
    let mut workers: Vec<WorkerProcess> = (0..4)
        .map(|i| {
            WorkerProcess::start(
                &url,
                dir.path(),
                &format!("w{i}"),
                &["--queue", "default=10", "--poll", "200ms"],
            )
        })
        .collect();
    // Every worker takes part: each is running before the backlog is written. Started beside a
    // backlog, a late one could wait out the whole drain for the file's write lock (which the
    // others take back to back) before it got as far as starting its worker.
    for w in &workers {
        wait_for("the worker to start", Duration::from_secs(120), || async {
            w.log_text().contains("worker started").then_some(())
        })
        .await;
    }
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let jobs = chunk
            .iter()
            .map(|i| NewJob::new("noop", json!({ "i": i })))
            .collect();
        client.enqueue_many(jobs).await.unwrap();
    }
    wait_for(
        "20,000 completed jobs",
        Duration::from_secs(300),
        || async {
            let queues = store.queue_list().await.ok()?;
            let completed: i64 = queues.iter().map(|q| q.counts.completed).sum();
            (completed == n as i64).then_some(())
        },
    )
    .await;
    for w in &mut workers {
        let status = w.terminate(Duration::from_secs(30));
        assert!(
            status.success(),
            "worker exited with {status}; log:\n{}",
            w.log_text()
        );
    }
    let jobs = all_jobs(&*store).await;
    assert_eq!(jobs.len(), n);
    let not_completed: Vec<_> = jobs
        .iter()
        .filter(|j| j.state != JobState::Completed)
        .map(|j| (j.id, j.state))
        .collect();
    assert!(
        not_completed.is_empty(),
        "jobs not completed: {:?}",
        &not_completed[..not_completed.len().min(10)]
    );
    // Each claim adds one to `attempt`: attempt 1 everywhere means no job was claimed (run) twice.
    let twice: Vec<_> = jobs
        .iter()
        .filter(|j| j.attempt != 1)
        .map(|j| (j.id, j.attempt))
        .collect();
    assert!(
        twice.is_empty(),
        "jobs run more than once: {:?}",
        &twice[..twice.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_loses_nothing_and_its_late_result_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    crate::processes::a_killed_workers_job_is_rescued(
        &url,
        dir.path(),
        &["--lease", "2s", "--poll", "100ms"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_short_jobs_and_releases_long_ones() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let store = open(&url).await;
    let client = Client::new(store.clone());
    let short = client
        .enqueue_new(NewJob::new("sleep", json!({ "duration": "1s" })))
        .await
        .unwrap()
        .job
        .id;
    let long = client
        .enqueue_new(NewJob::new("sleep", json!({ "duration": "10m" })))
        .await
        .unwrap()
        .job
        .id;
    let mut worker =
        WorkerProcess::start(&url, dir.path(), "w", &["--grace", "3s", "--poll", "100ms"]);
    wait_for("both jobs running", Duration::from_secs(30), || async {
        let a = store.job_get(short).await.ok()??;
        let b = store.job_get(long).await.ok()??;
        (a.state == JobState::Running && b.state == JobState::Running).then_some(())
    })
    .await;
    let status = worker.terminate(Duration::from_secs(15));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        worker.log_text()
    );
    let a = store.job_get(short).await.unwrap().unwrap();
    assert_eq!(
        a.state,
        JobState::Completed,
        "finished within the grace period"
    );
    let b = store.job_get(long).await.unwrap().unwrap();
    assert_eq!(
        b.state,
        JobState::Available,
        "released for another worker, not left running"
    );
    assert!(b.errors.is_empty());
}

fn run_fail(args: &[&str]) -> String {
    let out = spooler().args(args).output().expect("run spooler");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "{args:?} should fail; stderr:\n{stderr}"
    );
    assert_ne!(out.status.code(), Some(101), "{args:?} panicked:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    stderr
}

#[test]
fn bad_store_urls_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/jobs.db");
    let stderr = run_fail(&[
        "migrate",
        "--store",
        &format!("sqlite://{}", missing.display()),
    ]);
    assert!(
        stderr.contains(&missing.parent().unwrap().display().to_string()),
        "names the directory:\n{stderr}"
    );

    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(&corrupt, vec![0x5au8; 64 * 1024]).unwrap();
    let stderr = run_fail(&[
        "migrate",
        "--store",
        &format!("sqlite://{}", corrupt.display()),
    ]);
    assert!(
        stderr.contains(&corrupt.display().to_string()),
        "names the file:\n{stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("not a database"),
        "says what is wrong:\n{stderr}"
    );

    let stderr = run_fail(&["migrate", "--store", "mysql://root@127.0.0.1/jobs"]);
    assert!(
        stderr.contains("mysql://root@127.0.0.1/jobs"),
        "names the URL:\n{stderr}"
    );
    assert!(
        stderr.contains("sqlite://"),
        "says what is expected:\n{stderr}"
    );
}

/// `spooler worker --listen` serves `/healthz` and `/metrics`: every metric with its HELP text,
/// the wait-time histogram, the running gauge and the live workers; nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_listen_serves_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let store = open(&url).await;
    let mut worker = WorkerProcess::start(&url, dir.path(), "w", &["--listen", "127.0.0.1:0"]);
    let addr: String = wait_for(
        "the worker's listen line",
        Duration::from_secs(30),
        || async {
            worker.log_text().lines().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                v["message"]
                    .as_str()?
                    .starts_with("worker serving")
                    .then(|| v["listen"].as_str().map(str::to_string))?
            })
        },
    )
    .await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let health = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let client = Client::new(store.clone());
    let id = client
        .enqueue_new(NewJob::new("noop", json!({})))
        .await
        .unwrap()
        .job
        .id;
    wait_for("the job to complete", Duration::from_secs(30), || async {
        (client.status(id).await.ok()?.state == JobState::Completed).then_some(())
    })
    .await;
    let text = wait_for(
        "the finished job in /metrics",
        Duration::from_secs(30),
        || async {
            let text = http
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.contains("spooler_jobs_finished_total{")
                .then_some(text)
        },
    )
    .await;
    for help in [
        "# HELP spooler_jobs_claimed_total ",
        "# HELP spooler_jobs_finished_total ",
        "# HELP spooler_job_run_seconds ",
        "# HELP spooler_job_wait_seconds ",
        "# HELP spooler_jobs_running ",
        "# HELP spooler_queue_jobs ",
        "# HELP spooler_workers_live ",
    ] {
        assert!(text.contains(help), "{help} missing from:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("spooler_job_wait_seconds_bucket{")
                && l.contains("kind=\"noop\"")
                && l.contains("queue=\"default\"")),
        "{text}"
    );
    assert!(text.contains("spooler_workers_live 1"), "{text}");
    let api = http
        .get(format!("http://{addr}/v1/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404, "a worker serves no API");
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", worker.log_text());
}

/// A SIGTERM while `spooler worker` or `spooler serve` is still starting (here: waiting on a
/// store that accepted the connection and never answers) ends it cleanly, exit 0 with the stop
/// logged, instead of killing it by the signal's default action or waiting out the connect.
#[test]
fn sigterm_while_starting_exits_cleanly() {
    use std::sync::mpsc;
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let (accepted_tx, accepted) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            let Ok(stream) = stream else { return };
            held.push(stream);
            if accepted_tx.send(()).is_err() {
                return;
            }
        }
    });
    let url = format!("postgres://postgres@127.0.0.1:{port}/test?connect_timeout=120");
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [
        ("worker", vec![]),
        ("serve", vec!["--listen", "127.0.0.1:0"]),
    ] {
        let mut process =
            WorkerProcess::start_subcommand(name, &url, dir.path(), name, &extra, &[]);
        accepted
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "spooler {name} never connected to 127.0.0.1:{port}; log:\n{}",
                    process.log_text()
                )
            });
        let status = process.terminate(Duration::from_secs(10));
        let log = process.log_text();
        assert!(
            status.success(),
            "spooler {name} exited with {status}; log:\n{log}"
        );
        assert!(
            log.contains("SIGTERM") && log.contains("stopped while starting"),
            "spooler {name} logs the signal and the stop; log:\n{log}"
        );
    }
}
