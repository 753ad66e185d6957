//! The HTTP API of a real `spooler serve` against bad input: every mistake gets a 4xx and a JSON
//! error naming it, and no job is lost or half-written; the token guards `/v1`; a config file with
//! a typo or a taken address stops `serve` with an error naming it; the open routes answer.

use crate::server_support::{ServeOptions, Server, cli, write_file};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// Every job in the store, oldest first, as `GET /v1/jobs` shows them.
async fn all_jobs(server: &Server) -> Vec<Value> {
    let (status, page) = server.get("/v1/jobs?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut jobs = page["jobs"].as_array().cloned().unwrap_or_default();
    jobs.reverse();
    jobs
}

fn assert_error(what: &str, status: StatusCode, body: &Value, want: StatusCode, names: &[&str]) {
    assert_eq!(status, want, "{what}: {body}");
    let message = body["error"].as_str().unwrap_or_else(|| {
        panic!("{what}: the answer has no \"error\" string: {body}");
    });
    for name in names {
        assert!(
            message.contains(name) || body["field"] == *name,
            "{what}: the error should name {name:?}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_4xx_naming_the_problem_and_change_nothing() {
    let server = Server::start_with(ServeOptions {
        no_worker: true,
        ..Default::default()
    })
    .await;
    let first = server
        .enqueue(&json!({"kind": "noop", "args": {"keep": true}}))
        .await;
    let before = all_jobs(&server).await;
    assert_eq!(before.len(), 1);

    let huge = json!({"kind": "noop", "args": {"blob": "x".repeat(1024 * 1024 + 1)}});
    let bodies: Vec<(&str, Vec<u8>, StatusCode, Vec<&str>)> = vec![
        (
            "malformed JSON",
            br#"{"kind": "noop","#.to_vec(),
            StatusCode::BAD_REQUEST,
            vec!["malformed JSON"],
        ),
        (
            "empty body",
            b"  ".to_vec(),
            StatusCode::BAD_REQUEST,
            vec!["empty"],
        ),
        (
            "not an object",
            b"[1, 2]".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["object"],
        ),
        (
            "missing kind",
            br#"{"args": {}}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["kind", "required"],
        ),
        (
            "priority of the wrong type",
            br#"{"kind": "noop", "priority": "high"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["priority", "integer"],
        ),
        (
            "kind of the wrong type",
            br#"{"kind": 7}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["kind", "string"],
        ),
        (
            "max_attempts out of range",
            br#"{"kind": "noop", "max_attempts": 0}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["max_attempts"],
        ),
        (
            "a bad duration",
            br#"{"kind": "noop", "delay": "soon"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["delay", "soon"],
        ),
        (
            "run_at and delay",
            br#"{"kind": "noop", "delay": "1s", "run_at": "2030-01-01T00:00:00Z"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["run_at", "delay"],
        ),
        (
            "tags that are not strings",
            br#"{"kind": "noop", "tags": [1]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["tags"],
        ),
        (
            "a misspelt field",
            br#"{"kind": "noop", "prority": 3}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["prority"],
        ),
        (
            "a NUL character, which PostgreSQL cannot store",
            br#"{"kind": "noop", "args": {"s": "a\u0000b"}}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["args.s", "NUL"],
        ),
        (
            "a body over the 1 MiB limit",
            serde_json::to_vec(&huge).unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            vec!["limit", "1048576"],
        ),
    ];
    for (what, body, want, names) in bodies {
        let (status, answer) = server.post_raw("/v1/jobs", body).await;
        assert_error(what, status, &answer, want, &names);
    }

    // A batch with one bad item inserts none of them.
    let mut jobs: Vec<Value> = (0..10)
        .map(|i| json!({"kind": "noop", "args": {"i": i}}))
        .collect();
    jobs[3] = json!({"kind": "noop", "priority": "high"});
    let (status, body) = server
        .post("/v1/jobs/batch", &json!({ "jobs": jobs }))
        .await;
    assert_error(
        "a batch with a bad item",
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        &["jobs[3].priority"],
    );
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"kind": "noop"})).collect();
    let (status, body) = server
        .post("/v1/jobs/batch", &json!({ "jobs": too_many }))
        .await;
    assert_error(
        "a batch over the limit",
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        &["1000"],
    );
    for (what, batch, names) in [
        (
            "jobs not an array",
            json!({"jobs": {}}),
            vec!["jobs", "array"],
        ),
        ("no jobs", json!({}), vec!["jobs", "required"]),
        (
            "an unknown member",
            json!({"jobs": [], "job": []}),
            vec!["job"],
        ),
    ] {
        let (status, body) = server.post("/v1/jobs/batch", &batch).await;
        assert_error(
            what,
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            &names,
        );
    }

    let id = first["id"].as_i64().unwrap();
    let missing = id + 1000;
    let requests: Vec<(Method, String, StatusCode, Vec<String>)> = vec![
        (
            Method::GET,
            format!("/v1/jobs/{missing}"),
            StatusCode::NOT_FOUND,
            vec![format!("job {missing} not found")],
        ),
        (
            Method::POST,
            format!("/v1/jobs/{missing}/cancel"),
            StatusCode::NOT_FOUND,
            vec![format!("{missing}")],
        ),
        (
            Method::POST,
            format!("/v1/jobs/{missing}/retry"),
            StatusCode::NOT_FOUND,
            vec![format!("{missing}")],
        ),
        (
            Method::DELETE,
            format!("/v1/jobs/{missing}"),
            StatusCode::NOT_FOUND,
            vec![format!("{missing}")],
        ),
        (
            Method::GET,
            "/v1/jobs/abc".into(),
            StatusCode::BAD_REQUEST,
            vec!["id".into(), "abc".into()],
        ),
        (
            Method::GET,
            "/v1/jobs?state=bogus".into(),
            StatusCode::BAD_REQUEST,
            vec!["state".into(), "bogus".into()],
        ),
        (
            Method::GET,
            "/v1/jobs?limit=0".into(),
            StatusCode::BAD_REQUEST,
            vec!["limit".into()],
        ),
        (
            Method::GET,
            "/v1/jobs?cursor=x".into(),
            StatusCode::BAD_REQUEST,
            vec!["cursor".into()],
        ),
        (
            Method::GET,
            "/v1/jobs?sate=failed".into(),
            StatusCode::BAD_REQUEST,
            vec!["sate".into()],
        ),
        (
            Method::GET,
            format!("/v1/jobs/{id}?wait=forever"),
            StatusCode::BAD_REQUEST,
            vec!["wait".into()],
        ),
        (
            Method::GET,
            "/v1/nothing".into(),
            StatusCode::NOT_FOUND,
            vec!["/v1/nothing".into()],
        ),
        (
            Method::PUT,
            "/v1/jobs".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            vec!["PUT".into()],
        ),
    ];
    for (method, path, want, names) in requests {
        let what = format!("{method} {path}");
        let (status, body) = server.call(method, &path, None).await;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_error(&what, status, &body, want, &names);
    }
    let (status, body) = server.get("/v1/jobs?state=bogus").await;
    assert_eq!(body["field"], "state", "{status} {body}");

    assert_eq!(
        all_jobs(&server).await,
        before,
        "no job added, lost or changed"
    );
    assert_eq!(server.total_jobs().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_guards_every_v1_call_and_only_v1() {
    let mut server = Server::start_with(ServeOptions {
        token: Some("s3cret".into()),
        no_worker: true,
        ..Default::default()
    })
    .await;
    let body = json!({"kind": "noop"});
    for (what, auth) in [
        ("no token", None),
        ("a wrong token", Some("Bearer s3creT")),
        ("another scheme", Some("Basic czNjcmV0")),
        ("a longer token", Some("Bearer s3cret2")),
    ] {
        for (method, path) in [
            (Method::POST, "/v1/jobs"),
            (Method::GET, "/v1/jobs"),
            (Method::GET, "/v1/queues"),
            (Method::POST, "/v1/queues/default/pause"),
        ] {
            let mut request = server.bare(method.clone(), path).json(&body);
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let response = request.send().await.expect("send");
            let status = response.status();
            let challenge = response.headers().get("www-authenticate").cloned();
            let answer: Value = response.json().await.expect("JSON error");
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{what}, {method} {path}: {answer}"
            );
            assert!(
                answer["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("token")),
                "{answer}"
            );
            assert_eq!(
                challenge.as_ref().map(|v| v.as_bytes()),
                Some(&b"Bearer"[..])
            );
        }
    }
    for path in ["/healthz", "/openapi.json", "/metrics", "/"] {
        let response = server.bare(Method::GET, path).send().await.expect("send");
        assert_eq!(response.status(), StatusCode::OK, "{path} is open");
    }
    assert_eq!(
        server.total_jobs().await,
        0,
        "nothing enqueued without the token"
    );
    let queues = server.store().await.queue_list().await.unwrap();
    assert!(
        queues.iter().all(|q| !q.paused),
        "nothing paused without the token"
    );

    let job = server.enqueue(&body).await;
    assert_eq!(job["kind"], "noop");
    // The scheme is case-insensitive.
    let response = server
        .bare(Method::GET, "/v1/queues")
        .header("authorization", "BEARER s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.total_jobs().await, 1);

    // The CLI: without the token it says how to give it; with it, it works.
    let url = server.url.clone();
    let id = job["id"].to_string();
    let run = cli(&["status", &id, "--url", &url]).await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(run.stderr.contains("--token"), "{}", run.describe());
    let run = cli(&["status", &id, "--url", &url, "--token", "s3cret", "--json"])
        .await
        .ok();
    assert_eq!(run.json()["id"], job["id"]);
    let status = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_routes_answer_and_the_served_document_is_the_crate_s() {
    let server = Server::start_with(ServeOptions {
        config: Some("[queues.mail]\nconcurrency = 1\n".into()),
        ..Default::default()
    })
    .await;
    let (status, health) = server.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health, json!({"status": "ok", "store": "sqlite"}));

    let response = server
        .bare(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), spooler_server::OPENAPI_JSON);

    let job = server
        .enqueue(&json!({"kind": "noop", "queue": "mail"}))
        .await;
    server
        .wait_state(
            job["id"].as_i64().unwrap(),
            "completed",
            Duration::from_secs(10),
        )
        .await;
    let metrics = server
        .bare(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("spooler_queue_jobs{queue=\"mail\",state=\"completed\"} 1"),
        "{metrics}"
    );
    let (status, queues) = server.get("/v1/queues").await;
    assert_eq!(status, StatusCode::OK);
    let mail = &queues["queues"][0];
    assert_eq!(mail["name"], "mail", "{queues}");
    assert_eq!(mail["counts"]["completed"], 1, "{queues}");
    let (status, workers) = server.get("/v1/workers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        workers["workers"].as_array().map(Vec::len),
        Some(1),
        "{workers}"
    );
    let page = server
        .bare(Method::GET, "/")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"<tr data-queue="mail">"#)
            && page.contains(
                r#"data-state="completed"><a href="jobs?queue=mail&amp;state=completed">1</a>"#
            ),
        "the dashboard shows the queue and its count:\n{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_config_with_a_typo_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let cases = [
        (
            "typo.toml",
            "listen = \"127.0.0.1:0\"\n\n[queues.x]\nconcurency = 4\n",
            "line 4",
            "queues.x.concurency",
        ),
        (
            "value.toml",
            "[queues.x]\nconcurrency = 2\nbackoff = \"fast\"\n",
            "line 3",
            "queues.x.backoff",
        ),
        (
            "type.toml",
            "[worker]\ngrace = 10\n",
            "line 2",
            "worker.grace",
        ),
        (
            "level.toml",
            "store = \"sqlite://x.db\"\nlog_level = \"verbose\"\n",
            "line 2",
            "log_level",
        ),
        (
            "section.toml",
            "[queues.x]\nconcurrency = 1\n[queues.x.retry]\nmax = 1\n",
            "line 3",
            "queues.x.retry",
        ),
    ];
    for (name, text, line, key) in cases {
        let path = write_file(dir.path(), name, text);
        let path = path.display().to_string();
        let run = cli(&[
            "serve",
            "--store",
            &store,
            "--listen",
            "127.0.0.1:0",
            "--config",
            &path,
        ])
        .await;
        assert_eq!(run.code, Some(1), "{name}: {}", run.describe());
        for part in [path.as_str(), line, key] {
            assert!(
                run.stderr.contains(part),
                "{name}: stderr should name {part:?}:\n{}",
                run.stderr
            );
        }
        assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    }
    let missing = dir.path().join("missing.toml").display().to_string();
    let run = cli(&[
        "serve",
        "--store",
        &store,
        "--listen",
        "127.0.0.1:0",
        "--config",
        &missing,
    ])
    .await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(run.stderr.contains(&missing), "{}", run.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_taken_address_names_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let run = cli(&["serve", "--store", &store, "--listen", &addr]).await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(run.stderr.contains(&addr), "{}", run.describe());
    assert!(
        run.stderr.contains("--listen"),
        "says the fix: {}",
        run.describe()
    );
}
