//! `spooler check` against real servers and stores: exit 0 healthy, 1 when `--max-backlog` or
//! `--max-age` is crossed or jobs wait in a queue no live worker works, 2 (within `--timeout` plus a second) when the server is silent, stopped
//! or refuses the token, or the store cannot be read.

use crate::server_support::{
    CliRun, ServeOptions, Server, SilentListener, cli, closed_port, wait_for,
};
use serde_json::json;
use std::time::Duration;

fn assert_exit(run: &CliRun, code: i32, label: &str) {
    assert_eq!(run.code, Some(code), "{}", run.describe());
    assert!(
        run.stdout.starts_with(&format!("{label}: ")),
        "one line starting {label}: {}",
        run.describe()
    );
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.describe());
}

/// `spooler serve` without a config works `default` only: jobs sent to `mail-out` would wait for
/// ever, and the check says so, naming the queue, over HTTP and on the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_waiting_in_a_queue_no_live_worker_works_warn_naming_it() {
    let server = Server::start().await;
    server
        .enqueue(&json!({"kind": "noop", "queue": "mail-out"}))
        .await;
    for target in [
        ["--url", server.url.as_str()],
        ["--store", &server.store_url],
    ] {
        let run = cli(&["check", target[0], target[1]]).await;
        assert_exit(&run, 1, "WARNING");
        assert!(
            run.stdout
                .contains("jobs wait in mail-out with no live worker"),
            "{}",
            run.describe()
        );
    }
    // Paused, the queue is waiting on purpose: no warning.
    let (status, _) = server.post("/v1/queues/mail-out/pause", &json!({})).await;
    assert_eq!(status, 200);
    assert_exit(&cli(&["check", "--url", &server.url]).await, 0, "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_server_passes_and_a_backlog_over_the_limit_warns() {
    let server = Server::start().await;
    let url = server.url.as_str();
    let store = server.store_url.as_str();
    let run = cli(&["check", "--url", url]).await;
    assert_exit(&run, 0, "OK");
    assert!(
        run.stdout.contains(url),
        "names what it checked: {}",
        run.stdout
    );
    let run = cli(&[
        "check",
        "--url",
        url,
        "--max-backlog",
        "0",
        "--max-age",
        "1m",
    ])
    .await;
    assert_exit(&run, 0, "OK");
    assert_exit(&cli(&["check", "--store", store]).await, 0, "OK");

    // Jobs of a kind no worker handles wait for ever.
    for i in 0..5 {
        server
            .enqueue(&json!({"kind": "nobody-handles-this", "args": {"i": i}}))
            .await;
    }
    // A job the worker handles still completes: the backlog is only the stuck ones.
    let done = server.enqueue(&json!({"kind": "noop"})).await;
    server
        .wait_state(
            done["id"].as_i64().unwrap(),
            "completed",
            Duration::from_secs(10),
        )
        .await;
    let run = cli(&["check", "--url", url, "--max-backlog", "3"]).await;
    assert_exit(&run, 1, "WARNING");
    assert!(
        run.stdout.contains("backlog 5 is over --max-backlog 3"),
        "{}",
        run.describe()
    );
    let run = cli(&["check", "--store", store, "--max-backlog", "3"]).await;
    assert_exit(&run, 1, "WARNING");
    assert!(run.stdout.contains("backlog 5"), "{}", run.describe());
    assert_exit(
        &cli(&["check", "--url", url, "--max-backlog", "5"]).await,
        0,
        "OK",
    );

    // The oldest waiting job grows older than --max-age.
    let run = wait_for(
        "check --max-age 1s to warn",
        Duration::from_secs(15),
        || async {
            let run = cli(&["check", "--url", url, "--max-age", "1s"]).await;
            (run.code != Some(0)).then_some(run)
        },
    )
    .await;
    assert_exit(&run, 1, "WARNING");
    assert!(run.stdout.contains("--max-age 1s"), "{}", run.describe());
    let run = cli(&["check", "--store", store, "--max-age", "1s"]).await;
    assert_exit(&run, 1, "WARNING");

    // A paused queue's jobs are not a backlog: nobody is meant to run them.
    let (status, body) = server.post("/v1/queues/default/pause", &json!({})).await;
    assert!(status.is_success(), "{body}");
    assert_exit(
        &cli(&["check", "--url", url, "--max-backlog", "3"]).await,
        0,
        "OK",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_stopped_server_is_critical_within_the_timeout() {
    // Accepts connections in the kernel but never answers.
    let silent = SilentListener::start().await;
    let url = format!("http://{}", silent.addr);
    let run = cli(&["check", "--url", &url, "--timeout", "1s"]).await;
    assert_exit(&run, 2, "CRITICAL");
    assert!(
        run.elapsed < Duration::from_secs(2),
        "took {:?} with --timeout 1s",
        run.elapsed
    );
    assert!(run.stdout.contains(&url), "{}", run.describe());

    // A listener whose connections complete but whose HTTP never comes.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", mute.local_addr().unwrap());
    let run = cli(&["check", "--url", &url, "--timeout", "1s"]).await;
    assert_exit(&run, 2, "CRITICAL");
    assert!(
        run.elapsed < Duration::from_secs(2),
        "took {:?}",
        run.elapsed
    );
    assert!(
        run.stdout.contains("no answer within 1s"),
        "{}",
        run.describe()
    );

    // Nothing listens.
    let url = format!("http://127.0.0.1:{}", closed_port());
    let run = cli(&["check", "--url", &url, "--timeout", "3s"]).await;
    assert_exit(&run, 2, "CRITICAL");
    assert!(
        run.elapsed < Duration::from_secs(2),
        "took {:?}",
        run.elapsed
    );

    // A server that was healthy, then stopped.
    let mut server = Server::start().await;
    let url = server.url.clone();
    assert_exit(&cli(&["check", "--url", &url]).await, 0, "OK");
    let status = server.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
    let run = cli(&["check", "--url", &url, "--timeout", "2s"]).await;
    assert_exit(&run, 2, "CRITICAL");
    assert!(
        run.elapsed < Duration::from_secs(3),
        "took {:?}",
        run.elapsed
    );
    assert!(run.stdout.contains("cannot reach"), "{}", run.describe());
    // Its store is still fine.
    assert_exit(
        &cli(&["check", "--store", &server.store_url]).await,
        0,
        "OK",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_or_a_bad_store_is_critical() {
    let server = Server::start_with(ServeOptions {
        token: Some("t0ken".into()),
        no_worker: true,
        ..Default::default()
    })
    .await;
    let url = server.url.as_str();
    let run = cli(&["check", "--url", url]).await;
    assert_exit(&run, 2, "CRITICAL");
    assert!(
        run.stdout.contains("--token"),
        "says the fix: {}",
        run.describe()
    );
    assert_exit(
        &cli(&["check", "--url", url, "--token", "t0ken"]).await,
        0,
        "OK",
    );

    let dir = tempfile::tempdir().unwrap();
    let missing_dir = dir.path().join("no/such/dir/jobs.db");
    let url = format!("sqlite://{}", missing_dir.display());
    let run = cli(&["check", "--store", &url]).await;
    assert_exit(&run, 2, "CRITICAL");
    assert!(run.stdout.contains(&url), "{}", run.describe());

    // A store file that does not exist is reported, and not created by the probe.
    let missing = dir.path().join("jobs.db");
    let url = format!("sqlite://{}", missing.display());
    let run = cli(&["check", "--store", &url]).await;
    assert_exit(&run, 2, "CRITICAL");
    assert!(run.stdout.contains("does not exist"), "{}", run.describe());
    assert!(!missing.exists(), "check created {}", missing.display());

    let run = cli(&["check", "--store", "mysql://db/jobs"]).await;
    assert_exit(&run, 2, "CRITICAL");
}
