//! The job commands (`enqueue`, `status`, `jobs`, `cancel`, `retry`) against a real server with
//! `--url` and against its SQLite file with `--store`, giving the same job JSON; and the errors
//! of an unreachable or wrong `--url`.

use crate::server_support::{Server, SilentListener, cli, cli_env, closed_port};
use serde_json::Value;
use std::time::Duration;

/// `--url URL` or `--store URL`.
fn target(server: &Server, over_http: bool) -> [String; 2] {
    if over_http {
        ["--url".into(), server.url.clone()]
    } else {
        ["--store".into(), server.store_url.clone()]
    }
}

async fn spooler(args: &[&str], target: &[String; 2]) -> crate::server_support::CliRun {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(target.iter().map(String::as_str));
    cli(&all).await
}

/// The job commands, one way or the other; returns the ids of the jobs it made.
async fn job_commands(server: &Server, over_http: bool) -> Vec<i64> {
    let t = target(server, over_http);
    let how = if over_http { "--url" } else { "--store" };

    // enqueue --wait prints the finished job and exits 0.
    let run = spooler(&["enqueue", "noop", "--args", "{}", "--wait"], &t)
        .await
        .ok();
    assert!(
        run.stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["state", "completed"])),
        "{how}: prints the job: {}",
        run.describe()
    );
    let done = spooler(
        &[
            "enqueue",
            "noop",
            "--args",
            r#"{"n": 1}"#,
            "--wait",
            "30s",
            "--json",
        ],
        &t,
    )
    .await
    .ok()
    .json();
    assert_eq!(done["state"], "completed", "{how}: {done}");
    assert_eq!(done["args"]["n"], 1, "{how}: {done}");
    let done_id = done["id"].as_i64().unwrap();

    // status
    let status = spooler(&["status", &done_id.to_string(), "--json"], &t)
        .await
        .ok()
        .json();
    assert_eq!(status["id"], done_id);
    assert_eq!(status["state"], "completed", "{how}: {status}");
    let run = spooler(&["status", &done_id.to_string()], &t).await.ok();
    assert!(run.stdout.contains("completed"), "{}", run.describe());

    // enqueue without --wait prints the id; cancel a job not yet due.
    let run = spooler(
        &[
            "enqueue", "noop", "--args", "{}", "--delay", "1h", "--queue", "default",
        ],
        &t,
    )
    .await
    .ok();
    let later: i64 = run.stdout.trim().parse().unwrap_or_else(|_| {
        panic!("{how}: enqueue prints the id: {}", run.describe());
    });
    let status = spooler(&["status", &later.to_string(), "--json"], &t)
        .await
        .ok()
        .json();
    assert_eq!(status["state"], "scheduled", "{how}: {status}");
    let run = spooler(&["cancel", &later.to_string()], &t).await.ok();
    assert_eq!(run.stdout.trim(), format!("{later} cancelled"), "{how}");
    let run = spooler(&["cancel", &later.to_string()], &t).await;
    assert_eq!(run.code, Some(1), "{how}: cancel twice: {}", run.describe());
    assert!(run.stderr.contains("cancelled"), "{}", run.describe());

    // retry runs it now, and it completes.
    let retried = spooler(&["retry", &later.to_string(), "--json"], &t)
        .await
        .ok()
        .json();
    assert!(
        matches!(
            retried["state"].as_str(),
            Some("available" | "running" | "completed")
        ),
        "{how}: {retried}"
    );
    let status = spooler(
        &["status", &later.to_string(), "--wait", "20s", "--json"],
        &t,
    )
    .await
    .ok()
    .json();
    assert_eq!(status["state"], "completed", "{how}: {status}");

    // jobs --state completed lists them, newest first.
    let page = spooler(&["jobs", "--state", "completed", "--json"], &t)
        .await
        .ok()
        .json();
    let listed: Vec<i64> = page["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| {
            assert_eq!(j["state"], "completed", "{how}: {j}");
            j["id"].as_i64().unwrap()
        })
        .collect();
    for id in [done_id, later] {
        assert!(listed.contains(&id), "{how}: {id} not in {listed:?}");
    }
    assert!(
        listed.windows(2).all(|w| w[0] > w[1]),
        "newest first: {listed:?}"
    );
    let run = spooler(&["jobs", "--state", "completed"], &t).await.ok();
    assert!(run.stdout.starts_with("ID"), "a table: {}", run.describe());
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with(&format!("{later} "))),
        "{}",
        run.describe()
    );

    // A job that fails: --wait exits 1 and shows the error.
    let port = closed_port();
    let args = format!(r#"{{"address": "127.0.0.1:{port}", "payload": "x"}}"#);
    let run = spooler(
        &[
            "enqueue",
            "tcp",
            "--args",
            &args,
            "--max-attempts",
            "1",
            "--wait",
            "30s",
        ],
        &t,
    )
    .await;
    assert_eq!(run.code, Some(1), "{how}: {}", run.describe());
    assert!(run.stdout.contains("failed"), "{}", run.describe());
    assert!(
        run.stdout.contains(&format!("127.0.0.1:{port}")),
        "shows the error: {}",
        run.describe()
    );

    // Mistakes name what is wrong.
    let run = spooler(&["enqueue", "noop", "--args", "{not json"], &t).await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(run.stderr.contains("--args"), "{}", run.describe());
    let run = spooler(&["enqueue", "noop", "--delay", "soon"], &t).await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(run.stderr.contains("delay"), "{}", run.describe());
    if !over_http {
        assert!(
            !run.stderr.contains("422"),
            "no HTTP status without HTTP: {}",
            run.stderr
        );
    }
    let run = spooler(&["status", "999999"], &t).await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stderr.contains("job 999999 not found"),
        "{}",
        run.describe()
    );
    vec![done_id, later]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_commands_work_over_http_and_on_the_store_alike() {
    let server = Server::start().await;
    let over_http = job_commands(&server, true).await;
    let on_store = job_commands(&server, false).await;

    // Both ways show a job with the same JSON.
    for id in over_http.iter().chain(&on_store) {
        let id = id.to_string();
        let a = cli(&["status", &id, "--json", "--url", &server.url])
            .await
            .ok()
            .json();
        let b = cli(&["status", &id, "--json", "--store", &server.store_url])
            .await
            .ok()
            .json();
        assert_eq!(a, b, "job {id} over HTTP and from the store");
    }
    let a = cli(&["jobs", "--json", "--limit", "3", "--url", &server.url])
        .await
        .ok()
        .json();
    let b = cli(&[
        "jobs",
        "--json",
        "--limit",
        "3",
        "--store",
        &server.store_url,
    ])
    .await
    .ok()
    .json();
    assert_eq!(a, b);
    assert!(a["next_cursor"].is_string(), "{a}");
    let next = a["next_cursor"].as_str().unwrap();
    let page = cli(&["jobs", "--json", "--cursor", next, "--url", &server.url])
        .await
        .ok()
        .json();
    let first_of_next = page["jobs"][0]["id"].as_i64().unwrap();
    assert!(first_of_next < next.parse::<i64>().unwrap(), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_url_is_named_with_the_fix_promptly() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    for args in [
        vec!["status", "1"],
        vec!["jobs"],
        vec!["enqueue", "noop", "--wait"],
        vec!["cancel", "1"],
        vec!["retry", "1"],
    ] {
        let mut all = args.clone();
        all.extend(["--url", &url]);
        let run = cli(&all).await;
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.describe());
        assert!(
            run.elapsed < Duration::from_secs(3),
            "{args:?} took {:?}",
            run.elapsed
        );
        for part in [url.as_str(), "spooler serve", "--url", "--store"] {
            assert!(
                run.stderr.contains(part),
                "{args:?}: the error should mention {part:?}: {}",
                run.describe()
            );
        }
        assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    }

    let silent = SilentListener::start().await;
    let url = format!("http://{}", silent.addr);
    let run = cli(&["status", "1", "--url", &url, "--request-timeout", "1s"]).await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.elapsed < Duration::from_secs(3),
        "took {:?}",
        run.elapsed
    );
    assert!(run.stderr.contains(&url), "{}", run.describe());
    assert!(
        run.stderr.contains("1s"),
        "says how long it waited: {}",
        run.describe()
    );

    let run = cli(&["status", "1", "--url", "127.0.0.1:7700"]).await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stderr.contains("http://"),
        "says the form: {}",
        run.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_ends_before_the_job_shows_the_job_as_it_is() {
    let server = Server::start().await;
    for over_http in [true, false] {
        let t = target(&server, over_http);
        let how = &t[0];
        let run = spooler(
            &[
                "enqueue",
                "sleep",
                "--args",
                r#"{"duration": "1m"}"#,
                "--wait",
                "500ms",
                "--json",
            ],
            &t,
        )
        .await;
        assert_eq!(
            run.code,
            Some(1),
            "{how}: not completed: {}",
            run.describe()
        );
        assert!(
            run.elapsed < Duration::from_secs(5),
            "took {:?}",
            run.elapsed
        );
        let job: Value = run.json();
        assert!(
            matches!(job["state"].as_str(), Some("available" | "running")),
            "{how}: {job}"
        );
        let run = spooler(
            &[
                "status",
                &job["id"].to_string(),
                "--wait",
                "300ms",
                "--json",
            ],
            &t,
        )
        .await
        .ok();
        assert_eq!(run.json()["id"], job["id"], "{how}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_jobs_end_with_no_cursor() {
    let server = Server::start_with(crate::server_support::ServeOptions {
        no_worker: true,
        ..Default::default()
    })
    .await;
    for i in 0..4 {
        server
            .enqueue(&serde_json::json!({"kind": "noop", "args": {"i": i}}))
            .await;
    }
    let (_, page) = server.get("/v1/jobs?limit=4").await;
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(4));
    assert!(page["next_cursor"].is_null(), "a full last page: {page}");
    for over_http in [true, false] {
        let t = target(&server, over_http);
        let first = spooler(&["jobs", "--json", "--limit", "3"], &t)
            .await
            .ok()
            .json();
        let ids: Vec<i64> = first["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, [4, 3, 2], "{}: {first}", t[0]);
        let cursor = first["next_cursor"].as_str().expect("a cursor").to_string();
        let last = spooler(&["jobs", "--json", "--limit", "1", "--cursor", &cursor], &t)
            .await
            .ok()
            .json();
        assert_eq!(last["jobs"][0]["id"], 1, "{}: {last}", t[0]);
        assert!(last["next_cursor"].is_null(), "{}: {last}", t[0]);
        let table = spooler(&["jobs", "--limit", "4"], &t).await.ok();
        assert!(!table.stdout.contains("more:"), "{}", table.describe());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_beat_the_environment_and_the_environment_beats_the_default() {
    let server = Server::start().await;
    let job = server.enqueue(&serde_json::json!({"kind": "noop"})).await;
    let id = job["id"].to_string();
    let elsewhere = tempfile::tempdir().unwrap();
    let other_store = format!("sqlite://{}", elsewhere.path().join("other.db").display());
    let nowhere = format!("http://127.0.0.1:{}", closed_port());
    let url = server.url.as_str();
    let store = server.store_url.as_str();
    for (args, env) in [
        // A shell set up for `spooler serve` elsewhere still reaches this server with --url.
        (
            vec!["--url", url],
            vec![("SPOOLER_STORE", other_store.as_str())],
        ),
        (
            vec!["--store", store],
            vec![("SPOOLER_URL", nowhere.as_str())],
        ),
        (vec![], vec![("SPOOLER_URL", url)]),
        (vec![], vec![("SPOOLER_STORE", store)]),
        (
            vec![],
            vec![
                ("SPOOLER_URL", url),
                ("SPOOLER_STORE", other_store.as_str()),
            ],
        ),
    ] {
        let mut all = vec!["status", id.as_str(), "--json"];
        all.extend(&args);
        let run = cli_env(&all, &env).await;
        assert_eq!(run.code, Some(0), "{args:?} {env:?}: {}", run.describe());
        assert_eq!(run.json()["id"], job["id"], "{args:?} {env:?}");
        let mut check = vec!["check"];
        check.extend(&args);
        let run = cli_env(&check, &env).await;
        assert_eq!(
            run.code,
            Some(0),
            "check {args:?} {env:?}: {}",
            run.describe()
        );
    }
    let run = cli(&["status", &id, "--url", url, "--store", store]).await;
    assert_ne!(
        run.code,
        Some(0),
        "both flags are refused: {}",
        run.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_store_file_is_named_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo.db");
    let url = format!("sqlite://{}", missing.display());
    for args in [
        vec!["status", "1"],
        vec!["jobs"],
        vec!["cancel", "1"],
        vec!["retry", "1"],
    ] {
        let mut all = args.clone();
        all.extend(["--store", &url]);
        let run = cli(&all).await;
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.describe());
        assert!(
            run.stderr.contains(&missing.display().to_string())
                && run.stderr.contains("does not exist"),
            "{args:?}: {}",
            run.describe()
        );
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
    // enqueue may start a store.
    let run = cli(&["enqueue", "noop", "--store", &url]).await.ok();
    assert_eq!(run.stdout.trim(), "1");
    cli(&["status", "1", "--store", &url]).await.ok();
}
