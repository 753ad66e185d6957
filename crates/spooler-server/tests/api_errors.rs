//! Every 4xx path of the API, in-process (`Router::oneshot`, no socket) on `sqlite::memory:`:
//! the status, the `field` named, a message that says what is wrong, and nothing changed.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use spooler::prelude::*;
use spooler::{JobState, NewJob};
use spooler_server::{AppState, ServerOptions, router};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// One bad request: what it is, its body, the status, the field named, words the message says.
type Case<'a, B> = (&'a str, B, StatusCode, Option<&'a str>, &'a [&'a str]);
/// One bad call: method, path, status, the field named, words the message says.
type Call<'a> = (Method, String, StatusCode, Option<&'a str>, Vec<String>);

struct Api {
    store: Arc<dyn Store>,
    app: axum::Router,
}

impl Api {
    async fn new(options: ServerOptions) -> Self {
        let store = spooler::connect("sqlite::memory:").await.expect("open");
        Self::on(store, options)
    }

    fn on(store: Arc<dyn Store>, options: ServerOptions) -> Self {
        let app = router(AppState::new(
            store.clone(),
            ServerOptions {
                metrics: false,
                ..options
            },
        ));
        Self { store, app }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.app.clone().oneshot(request).await.expect("answer");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 10 << 20)
            .await
            .expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, body)
    }

    async fn call(&self, method: Method, path: &str, body: Option<&[u8]>) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map_or(Body::empty(), |b| Body::from(b.to_vec()));
        self.send(request.body(body).unwrap()).await
    }

    async fn snapshot(&self) -> Vec<spooler::JobRow> {
        self.store
            .job_list(&spooler::JobList {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
    }
}

/// Asserts a 4xx of `want`, a JSON `error`, `field` when one is expected, and `words` in the message.
fn check(
    what: &str,
    got: (StatusCode, Value),
    want: StatusCode,
    field: Option<&str>,
    words: &[&str],
) {
    let (status, body) = got;
    assert_eq!(status, want, "{what}: {body}");
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error in {body}"));
    for w in words {
        assert!(
            message.contains(w),
            "{what}: {message:?} does not say {w:?}"
        );
    }
    if let Some(field) = field {
        assert_eq!(body["field"], json!(field), "{what}: {body}");
    }
}

#[tokio::test]
async fn every_bad_request_is_a_4xx_naming_its_field_and_changes_nothing() {
    let api = Api::new(ServerOptions::default()).await;
    let job = api
        .store
        .job_insert(
            &NewJob::new("noop", json!({}))
                .run_at(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
        )
        .await
        .unwrap()
        .job;
    // A running job (for 409s) and a finished one.
    api.store
        .job_insert(&NewJob::new("busy", json!({})))
        .await
        .unwrap();
    let running = api
        .store
        .job_claim(&spooler::core::JobClaim {
            queues: vec!["default".into()],
            kinds: vec!["busy".into()],
            limit: 1,
            worker_id: "w".into(),
            lease: Duration::from_secs(60),
        })
        .await
        .unwrap()
        .jobs
        .remove(0);
    let before = api.snapshot().await;
    let id = job.id;
    let run = running.id;
    let missing = run + 1000;
    use StatusCode as S;
    let queue_60k = format!(r#"{{"kind": "noop", "queue": "{}"}}"#, "q".repeat(60_000));
    let enqueue: &[Case<&[u8]>] = &[
        (
            "malformed JSON",
            br#"{"kind": "noop","#,
            S::BAD_REQUEST,
            None,
            &["JSON"],
        ),
        (
            "not an object",
            b"[1]",
            S::UNPROCESSABLE_ENTITY,
            Some("request body"),
            &["object"],
        ),
        (
            "missing kind",
            br#"{"args": {}}"#,
            S::UNPROCESSABLE_ENTITY,
            Some("kind"),
            &["kind"],
        ),
        (
            "kind not a string",
            br#"{"kind": 7}"#,
            S::UNPROCESSABLE_ENTITY,
            Some("kind"),
            &["string"],
        ),
        (
            "empty kind",
            br#"{"kind": ""}"#,
            S::UNPROCESSABLE_ENTITY,
            Some("kind"),
            &["empty"],
        ),
        (
            "a kind with a space",
            br#"{"kind": " "}"#,
            S::UNPROCESSABLE_ENTITY,
            Some("kind"),
            &["space"],
        ),
        (
            "a queue with NUL",
            b"{\"kind\": \"noop\", \"queue\": \"a\\u0000b\"}",
            S::UNPROCESSABLE_ENTITY,
            Some("queue"),
            &["NUL"],
        ),
        (
            "a queue of 60,000 bytes",
            queue_60k.as_bytes(),
            S::UNPROCESSABLE_ENTITY,
            Some("queue"),
            &["200 bytes"],
        ),
        (
            "a queue with a slash",
            br#"{"kind": "noop", "queue": "/.."}"#,
            S::UNPROCESSABLE_ENTITY,
            Some("queue"),
            &["/"],
        ),
        (
            "priority of the wrong type",
            br#"{"kind": "k", "priority": "high"}"#,
            S::UNPROCESSABLE_ENTITY,
            Some("priority"),
            &["integer"],
        ),
        (
            "max_attempts 0",
            br#"{"kind": "k", "max_attempts": 0}"#,
            S::UNPROCESSABLE_ENTITY,
            Some("max_attempts"),
            &["max_attempts"],
        ),
        (
            "a bad delay",
            br#"{"kind": "k", "delay": "soon"}"#,
            S::UNPROCESSABLE_ENTITY,
            Some("delay"),
            &["soon"],
        ),
        (
            "a bad timeout",
            br#"{"kind": "k", "timeout": "0s"}"#,
            S::UNPROCESSABLE_ENTITY,
            Some("timeout"),
            &["timeout"],
        ),
        (
            "run_at and delay",
            br#"{"kind": "k", "delay": "1s", "run_at": "2030-01-01T00:00:00Z"}"#,
            S::UNPROCESSABLE_ENTITY,
            None,
            &["run_at", "delay"],
        ),
        (
            "a bad run_at",
            br#"{"kind": "k", "run_at": "tomorrow"}"#,
            S::UNPROCESSABLE_ENTITY,
            Some("run_at"),
            &["run_at"],
        ),
        (
            "tags not strings",
            br#"{"kind": "k", "tags": [1]}"#,
            S::UNPROCESSABLE_ENTITY,
            None,
            &["tags"],
        ),
        (
            "a misspelt field",
            br#"{"kind": "k", "prority": 3}"#,
            S::UNPROCESSABLE_ENTITY,
            Some("prority"),
            &["prority"],
        ),
        (
            "a NUL character",
            br#"{"kind": "k", "args": {"s": "a\u0000b"}}"#,
            S::UNPROCESSABLE_ENTITY,
            Some("args.s"),
            &["NUL"],
        ),
    ];
    for (what, body, want, field, words) in enqueue {
        let got = api.call(Method::POST, "/v1/jobs", Some(body)).await;
        check(what, got, *want, *field, words);
    }
    let batch: &[Case<Value>] = &[
        (
            "a bad item",
            json!({"jobs": [{"kind": "k"}, {"kind": 1}]}),
            S::UNPROCESSABLE_ENTITY,
            Some("jobs[1].kind"),
            &["jobs[1].kind"],
        ),
        (
            "jobs not an array",
            json!({"jobs": {}}),
            S::UNPROCESSABLE_ENTITY,
            None,
            &["jobs", "array"],
        ),
        (
            "no jobs",
            json!({}),
            S::UNPROCESSABLE_ENTITY,
            None,
            &["jobs", "required"],
        ),
        (
            "over the limit",
            json!({"jobs": vec![json!({"kind": "k"}); 1001]}),
            S::PAYLOAD_TOO_LARGE,
            None,
            &["1000"],
        ),
    ];
    for (what, body, want, field, words) in batch {
        let bytes = serde_json::to_vec(body).unwrap();
        let got = api.call(Method::POST, "/v1/jobs/batch", Some(&bytes)).await;
        check(what, got, *want, *field, words);
    }
    let bulk: &[(&str, Value, Option<&str>)] = &[
        ("no action", json!({}), Some("action")),
        (
            "an unknown action",
            json!({"action": "purge"}),
            Some("action"),
        ),
        (
            "an unknown member",
            json!({"action": "retry", "filtr": {}}),
            Some("filtr"),
        ),
        (
            "an unknown filter member",
            json!({"action": "retry", "filter": {"stat": "failed"}}),
            Some("filter.stat"),
        ),
        (
            "a bad state",
            json!({"action": "retry", "filter": {"state": "done"}}),
            Some("filter.state"),
        ),
        (
            "a bad time",
            json!({"action": "retry", "filter": {"before": "yesterday"}}),
            Some("filter.before"),
        ),
        (
            "dry_run not a boolean",
            json!({"action": "retry", "dry_run": "yes"}),
            Some("dry_run"),
        ),
    ];
    for (what, body, field) in bulk {
        let bytes = serde_json::to_vec(body).unwrap();
        let got = api.call(Method::POST, "/v1/jobs/bulk", Some(&bytes)).await;
        check(what, got, S::UNPROCESSABLE_ENTITY, *field, &[]);
    }
    let requests: Vec<Call> = vec![
        (
            Method::GET,
            format!("/v1/jobs/{missing}"),
            S::NOT_FOUND,
            None,
            vec![format!("job {missing} not found")],
        ),
        (
            Method::POST,
            format!("/v1/jobs/{missing}/cancel"),
            S::NOT_FOUND,
            None,
            vec![missing.to_string()],
        ),
        (
            Method::POST,
            format!("/v1/jobs/{missing}/retry"),
            S::NOT_FOUND,
            None,
            vec![missing.to_string()],
        ),
        (
            Method::DELETE,
            format!("/v1/jobs/{missing}"),
            S::NOT_FOUND,
            None,
            vec![missing.to_string()],
        ),
        (
            Method::POST,
            format!("/v1/jobs/{run}/retry"),
            S::CONFLICT,
            None,
            vec!["running".into(), "retry".into()],
        ),
        (
            Method::DELETE,
            format!("/v1/jobs/{run}"),
            S::CONFLICT,
            None,
            vec!["running".into(), "delete".into()],
        ),
        (
            Method::GET,
            "/v1/jobs/abc".into(),
            S::BAD_REQUEST,
            Some("id"),
            vec!["abc".into()],
        ),
        (
            Method::GET,
            "/v1/jobs?state=bogus".into(),
            S::BAD_REQUEST,
            Some("state"),
            vec!["bogus".into()],
        ),
        (
            Method::GET,
            "/v1/jobs?limit=0".into(),
            S::BAD_REQUEST,
            Some("limit"),
            vec![],
        ),
        (
            Method::GET,
            "/v1/jobs?cursor=x".into(),
            S::BAD_REQUEST,
            Some("cursor"),
            vec![],
        ),
        (
            Method::GET,
            "/v1/jobs?sate=failed".into(),
            S::BAD_REQUEST,
            None,
            vec!["sate".into()],
        ),
        (
            Method::GET,
            format!("/v1/jobs/{id}?wait=forever"),
            S::BAD_REQUEST,
            Some("wait"),
            vec![],
        ),
        (
            Method::GET,
            "/v1/operations/77".into(),
            S::NOT_FOUND,
            None,
            vec!["operation 77 not found".into()],
        ),
        (
            Method::POST,
            "/v1/operations/77/cancel".into(),
            S::NOT_FOUND,
            None,
            vec!["operation 77".into()],
        ),
        (
            Method::GET,
            "/v1/operations/x".into(),
            S::BAD_REQUEST,
            Some("id"),
            vec![],
        ),
        (
            Method::GET,
            "/v1/nothing".into(),
            S::NOT_FOUND,
            None,
            vec!["/v1/nothing".into()],
        ),
        (
            Method::PUT,
            "/v1/jobs".into(),
            S::METHOD_NOT_ALLOWED,
            None,
            vec!["PUT".into()],
        ),
        (
            Method::POST,
            "/v1/queues/a%00b/pause".into(),
            S::NOT_FOUND,
            Some("name"),
            vec!["queue name".into()],
        ),
        (
            Method::POST,
            format!("/v1/queues/{}/pause", "q".repeat(60_000)),
            S::NOT_FOUND,
            Some("name"),
            vec!["200 bytes".into()],
        ),
        (
            Method::POST,
            "/v1/queues/%2F../pause".into(),
            S::NOT_FOUND,
            Some("name"),
            vec!["/".into()],
        ),
        (
            Method::POST,
            "/v1/queues/never-seen/pause".into(),
            S::NOT_FOUND,
            Some("name"),
            vec!["never-seen".into()],
        ),
        (
            Method::POST,
            "/v1/queues/never-seen/resume".into(),
            S::NOT_FOUND,
            Some("name"),
            vec!["never-seen".into()],
        ),
        (
            Method::GET,
            "/v1/jobs?queue=a%20b".into(),
            S::BAD_REQUEST,
            Some("queue"),
            vec!["space".into()],
        ),
        (
            Method::GET,
            "/v1/jobs?kind=a%00".into(),
            S::BAD_REQUEST,
            Some("kind"),
            vec![],
        ),
    ];
    for (method, path, want, field, words) in requests {
        let what = format!("{method} {path}");
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let got = api.call(method, &path, None).await;
        check(&what, got, want, field, &words);
    }
    let queues: Vec<String> = api
        .store
        .queue_list()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(queues, ["default"], "no queue stored by a refused call");
    // A body over the limit.
    let huge =
        serde_json::to_vec(&json!({"kind": "k", "args": {"b": "x".repeat(1 << 20)}})).unwrap();
    let got = api.call(Method::POST, "/v1/jobs", Some(&huge)).await;
    check(
        "a body over the limit",
        got,
        S::PAYLOAD_TOO_LARGE,
        None,
        &["limit"],
    );

    assert_eq!(
        api.snapshot().await,
        before,
        "no job added, lost or changed"
    );
    assert_eq!(
        api.store.job_get(run).await.unwrap().unwrap().state,
        JobState::Running
    );
}

#[tokio::test]
async fn with_a_token_every_v1_call_needs_it() {
    let api = Api::new(ServerOptions {
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    for (method, path) in spooler_server::route_table() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let path = path.replace("{id}", "1").replace("{name}", "default");
        for token in [None, Some("wrong"), Some("s3cre")] {
            let mut request = Request::builder().method(method.clone()).uri(&path);
            if let Some(t) = token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let got = api.send(request.body(Body::empty()).unwrap()).await;
            check(
                &format!("{method} {path} with {token:?}"),
                got,
                StatusCode::UNAUTHORIZED,
                None,
                &[],
            );
        }
    }
    let request = Request::builder()
        .uri("/v1/queues")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.send(request).await.0, StatusCode::OK);
}

/// A retry of a cancelled job whose `unique_key` another unfinished job now holds is the caller's
/// conflict: 409 naming `unique_key`, and nothing written.
async fn a_retry_whose_unique_key_is_taken_is_a_409(store: Arc<dyn Store>) {
    let api = Api::on(store, ServerOptions::default());
    let keyed = br#"{"kind": "noop", "unique_key": "k", "delay": "1h"}"#;
    let (status, first) = api.call(Method::POST, "/v1/jobs", Some(keyed)).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let id = first["id"].as_i64().unwrap();
    let (status, body) = api
        .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, second) = api.call(Method::POST, "/v1/jobs", Some(keyed)).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the key is free again: {second}"
    );
    let before = api.snapshot().await;
    let got = api
        .call(Method::POST, &format!("/v1/jobs/{id}/retry"), None)
        .await;
    check(
        "retry of a cancelled job whose unique_key is taken",
        got,
        StatusCode::CONFLICT,
        Some("unique_key"),
        &["unique_key"],
    );
    assert_eq!(api.snapshot().await, before, "nothing half-written");
}

#[tokio::test]
async fn a_retry_whose_unique_key_is_taken_is_a_409_on_sqlite() {
    let store = spooler::connect("sqlite::memory:").await.expect("open");
    a_retry_whose_unique_key_is_taken_is_a_409(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_retry_whose_unique_key_is_taken_is_a_409() {
    let Ok(base) = std::env::var("SPOOLER_TEST_POSTGRES") else {
        eprintln!(
            "skipped: SPOOLER_TEST_POSTGRES is not set (e.g. postgres://postgres@127.0.0.1:5432/test)"
        );
        return;
    };
    let schema = format!("spooler_api_{:016x}", rand_suffix());
    let sep = if base.contains('?') { '&' } else { '?' };
    let store = spooler::connect(&format!("{base}{sep}schema={schema}"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "SPOOLER_TEST_POSTGRES={base} is set but unusable: {e} (start Postgres or unset it)"
            )
        });
    a_retry_whose_unique_key_is_taken_is_a_409(store).await;
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

/// A number no other test run picks: the time and the process id.
fn rand_suffix() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    nanos ^ ((std::process::id() as u64) << 48)
}

/// JSON does not tell 3 from 3.0 (and JSON Schema calls both integers): a whole number written
/// with a fraction is that integer; a real fraction or an out-of-range number is a 422, and so is a
/// delay naming a time past the year 9999 (RFC 3339 could not write it back).
#[tokio::test]
async fn whole_numbers_written_as_floats_are_integers() {
    let api = Api::new(ServerOptions::default()).await;
    let (status, job) = api
        .call(
            Method::POST,
            "/v1/jobs",
            Some(br#"{"kind": "noop", "priority": -3.0, "max_attempts": 2.0, "delay": "1h"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(
        (job["priority"].as_i64(), job["max_attempts"].as_i64()),
        (Some(-3), Some(2))
    );
    for (body, field) in [
        (&br#"{"kind": "noop", "priority": 1.5}"#[..], "priority"),
        (br#"{"kind": "noop", "priority": 1e300}"#, "priority"),
        (
            br#"{"kind": "noop", "max_attempts": 18446744073709551615}"#,
            "max_attempts",
        ),
        (br#"{"kind": "noop", "max_attempts": 0.0}"#, "max_attempts"),
        (
            br#"{"kind": "noop", "delay": "99999999999s99999999999s99999999999s"}"#,
            "delay",
        ),
    ] {
        let got = api.call(Method::POST, "/v1/jobs", Some(body)).await;
        check(
            &String::from_utf8_lossy(body),
            got,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(field),
            &[field],
        );
    }
}

/// A bulk filter's queue and kind follow the name rule of the API; no filter text may hold NUL.
#[tokio::test]
async fn bulk_filter_names_follow_the_name_rule() {
    let api = Api::new(ServerOptions::default()).await;
    for (body, field) in [
        (
            &br#"{"action": "cancel", "filter": {"queue": "a b"}}"#[..],
            "filter.queue",
        ),
        (
            br#"{"action": "cancel", "filter": {"kind": "/.."}}"#,
            "filter.kind",
        ),
        (
            br#"{"action": "cancel", "filter": {"tag": "a\u0000"}}"#,
            "filter.tag",
        ),
    ] {
        let got = api.call(Method::POST, "/v1/jobs/bulk", Some(body)).await;
        check(
            &String::from_utf8_lossy(body),
            got,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(field),
            &[field],
        );
    }
}

/// A page on another site cannot drive the server from the user's browser: a change (here an
/// enqueue sent as `text/plain`, which a form or `fetch` can send without a preflight) with a
/// foreign `Origin`, or that the browser marks cross-site, is a 403 and nothing is written; the
/// same call from the server's own origin, or from a client that sends no `Origin`, goes through.
#[tokio::test]
async fn cross_site_changes_are_refused_and_nothing_changes() {
    let api = Api::new(ServerOptions::default()).await;
    let body = br#"{"kind": "file", "args": {"path": "x.jsonl", "payload": "owned"}}"#;
    let send = |headers: &[(&str, &str)]| {
        // A browser's refused request is text/plain; the allowed ones below are JSON.
        let kind = if headers.iter().any(|(k, v)| {
            (*k == "origin" && *v != "http://127.0.0.1:7700")
                || (*k == "sec-fetch-site" && *v == "cross-site")
        }) {
            "text/plain"
        } else {
            "application/json"
        };
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/v1/jobs")
            .header(header::HOST, "127.0.0.1:7700")
            .header(header::CONTENT_TYPE, kind);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.body(Body::from(body.to_vec())).unwrap()
    };
    for (what, headers) in [
        ("a foreign Origin", vec![("origin", "http://evil.example")]),
        ("a foreign port", vec![("origin", "http://127.0.0.1:8080")]),
        ("an opaque Origin", vec![("origin", "null")]),
        (
            "Sec-Fetch-Site: cross-site",
            vec![("sec-fetch-site", "cross-site")],
        ),
    ] {
        let (status, answer) = api.send(send(&headers)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("cross-site request refused"),
            "{what}: {answer}"
        );
    }
    assert!(api.snapshot().await.is_empty(), "nothing was enqueued");
    let (status, _) = api.send(send(&[("origin", "http://127.0.0.1:7700")])).await;
    assert_eq!(status, StatusCode::CREATED, "the server's own origin");
    let (status, _) = api.send(send(&[("sec-fetch-site", "same-origin")])).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "same origin, as the browser says"
    );
    let (status, _) = api.send(send(&[])).await;
    assert_eq!(status, StatusCode::CREATED, "no Origin: not a browser");
    let read = Request::builder()
        .uri("/v1/jobs")
        .header("origin", "http://evil.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.send(read).await.0, StatusCode::OK, "reads stay open");
}

/// A body that is not declared JSON is a 415 naming the header, and nothing is written (a form or
/// a `fetch` without a preflight can only send text/plain or form encodings); a loopback listener
/// refuses a `Host` that is not a loopback name (DNS rebinding), on the dashboard too.
#[tokio::test]
async fn non_json_bodies_and_foreign_hosts_are_refused_and_nothing_changes() {
    let api = Api::new(ServerOptions {
        loopback_only: true,
        ..ServerOptions::default()
    })
    .await;
    let body = br#"{"kind": "noop", "args": {}}"#;
    let post = |host: &str, kind: Option<&str>| {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/v1/jobs")
            .header(header::HOST, host);
        if let Some(kind) = kind {
            request = request.header(header::CONTENT_TYPE, kind);
        }
        request.body(Body::from(body.to_vec())).unwrap()
    };
    for kind in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (status, answer) = api.send(post("127.0.0.1:7700", Some(kind))).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{kind}: {answer}"
        );
        assert_eq!(answer["field"], "Content-Type", "{answer}");
    }
    for host in [
        "evil.example",
        "evil.example:7700",
        "localhost.evil.example:7700",
    ] {
        let (status, answer) = api.send(post(host, Some("application/json"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{host}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("not a loopback name"),
            "{answer}"
        );
        let page = Request::builder()
            .uri("/")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            api.send(page).await.0,
            StatusCode::FORBIDDEN,
            "{host}: the dashboard"
        );
    }
    assert!(api.snapshot().await.is_empty(), "nothing was enqueued");
    for (host, kind) in [
        ("127.0.0.1:7700", Some("application/json")),
        ("localhost:7700", Some("application/json; charset=utf-8")),
        ("[::1]:7700", None),
    ] {
        let (status, answer) = api.send(post(host, kind)).await;
        assert_eq!(status, StatusCode::CREATED, "{host} {kind:?}: {answer}");
    }
}

/// A built-in kind's arguments are checked when it is enqueued: a mistake is a 422 naming `args`
/// (`jobs[i].args` in a batch) and nothing is written.
#[tokio::test]
async fn built_in_kinds_with_wrong_arguments_are_refused_at_enqueue() {
    let api = Api::new(ServerOptions::default()).await;
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "uri for url",
            json!({"kind": "http", "args": {"uri": "http://127.0.0.1:9/"}}),
            &["unknown argument \"uri\""],
        ),
        (
            "no address",
            json!({"kind": "tcp", "args": {"payload": "x"}}),
            &["\"address\" is required"],
        ),
        (
            "a path out of the working directory",
            json!({"kind": "file", "args": {"path": "../escape.jsonl", "payload": "x"}}),
            &["\"..\""],
        ),
        (
            "an absolute path elsewhere",
            json!({"kind": "file", "args": {"path": "/etc/spooler-owned", "payload": "x"}}),
            &["not under an allowed directory"],
        ),
        (
            "args not an object",
            json!({"kind": "sleep", "args": [1]}),
            &["must be an object"],
        ),
    ];
    for (what, body, words) in cases {
        let bytes = serde_json::to_vec(&body).unwrap();
        check(
            what,
            api.call(Method::POST, "/v1/jobs", Some(&bytes)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("args"),
            words,
        );
    }
    let batch = serde_json::to_vec(&json!({"jobs": [
        {"kind": "noop"},
        {"kind": "http", "args": {"url": "http://127.0.0.1:9/", "verb": "GET"}}
    ]}))
    .unwrap();
    check(
        "a batch",
        api.call(Method::POST, "/v1/jobs/batch", Some(&batch)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("jobs[1].args"),
        &["unknown argument \"verb\""],
    );
    assert!(api.snapshot().await.is_empty(), "nothing was enqueued");
    let fine =
        serde_json::to_vec(&json!({"kind": "file", "args": {"path": "out.jsonl", "payload": "x"}}))
            .unwrap();
    assert_eq!(
        api.call(Method::POST, "/v1/jobs", Some(&fine)).await.0,
        StatusCode::CREATED
    );
}

/// `http` and `tcp` jobs aimed at link-local or cloud metadata addresses are refused at enqueue
/// (loopback stays open: a local sink is what they are for).
#[tokio::test]
async fn network_jobs_may_not_reach_metadata_addresses() {
    let api = Api::new(ServerOptions::default()).await;
    for body in [
        json!({"kind": "http", "args": {"url": "http://169.254.169.254/latest/meta-data/"}}),
        json!({"kind": "tcp", "args": {"address": "[fe80::1]:80", "payload": "x"}}),
        json!({"kind": "tcp", "args": {"address": "[fd00:ec2::254]:80", "payload": "x"}}),
    ] {
        let bytes = serde_json::to_vec(&body).unwrap();
        check(
            &body.to_string(),
            api.call(Method::POST, "/v1/jobs", Some(&bytes)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("args"),
            &["network jobs may not reach it"],
        );
    }
    assert!(api.snapshot().await.is_empty());
    let local = serde_json::to_vec(
        &json!({"kind": "tcp", "args": {"address": "127.0.0.1:9", "payload": "x"}}),
    )
    .unwrap();
    assert_eq!(
        api.call(Method::POST, "/v1/jobs", Some(&local)).await.0,
        StatusCode::CREATED
    );
}

/// `[net] deny` refuses what it names and `[net] allow` may lift the metadata rule, at enqueue.
#[tokio::test]
async fn network_jobs_go_where_the_net_rules_say() {
    let net = spooler_server::kinds::NetPolicy::parse(
        &["169.254.169.254".into(), "127.0.0.0/8".into()],
        &["127.0.0.2".into()],
    )
    .unwrap();
    let api = Api::new(ServerOptions {
        net,
        ..ServerOptions::default()
    })
    .await;
    for (body, status, needle) in [
        (
            json!({"kind": "tcp", "args": {"address": "169.254.169.254:80", "payload": "x"}}),
            StatusCode::CREATED,
            "",
        ),
        (
            json!({"kind": "tcp", "args": {"address": "127.0.0.2:80", "payload": "x"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "denied by [net] deny",
        ),
        (
            json!({"kind": "http", "args": {"url": "http://10.1.1.1/hook"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not in [net] allow",
        ),
        (
            json!({"kind": "tcp", "args": {"address": "169.254.1.1:80", "payload": "x"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "169.254.1.1 is not in [net] allow",
        ),
    ] {
        let bytes = serde_json::to_vec(&body).unwrap();
        let got = api.call(Method::POST, "/v1/jobs", Some(&bytes)).await;
        if status == StatusCode::CREATED {
            assert_eq!(got.0, status, "{body}: {:?}", got.1);
        } else {
            check(&body.to_string(), got, status, Some("args"), &[needle]);
        }
    }
}

/// `POST /v1/replay`: a body it cannot read is a 4xx naming the field and enqueues nothing; a
/// malformed line is reported by its number while the good lines are enqueued, each once.
#[tokio::test]
async fn replay_mistakes_name_their_field_and_bad_lines_are_reported_by_number() {
    let api = Api::new(ServerOptions::default()).await;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    for (body, status, field) in [
        (&br#"{"line": []}"#[..], unprocessable, "line"),
        (br#"{}"#, unprocessable, "lines"),
        (br#"{"lines": "x"}"#, unprocessable, "lines"),
        (br#"{"lines": [1]}"#, unprocessable, "lines[0]"),
        (br#"{"lines": [], "queue": "a b"}"#, unprocessable, "queue"),
        (
            br#"{"lines": [], "first_line": 0}"#,
            unprocessable,
            "first_line",
        ),
    ] {
        let got = api.call(Method::POST, "/v1/replay", Some(body)).await;
        check(
            &String::from_utf8_lossy(body),
            got,
            status,
            Some(field),
            &[field],
        );
    }
    assert!(api.snapshot().await.is_empty(), "nothing enqueued");
    let good = r#"{"kind":"noop","queue":"q","args":{"n":1},"routed_from":1,"job":2}"#;
    // 10.0 is the integer 10, as JSON Schema counts it.
    let body = json!({"lines": [good, "{oops", "", good], "first_line": 10.0}).to_string();
    let (status, report) = api
        .call(Method::POST, "/v1/replay", Some(body.as_bytes()))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (
            &report["enqueued"],
            &report["skipped"],
            &report["malformed"]
        ),
        (&json!(1), &json!(1), &json!(1)),
        "{report}"
    );
    assert_eq!(report["lines"][1]["line"], 11, "{report}");
    assert_eq!(report["lines"][1]["outcome"], "malformed", "{report}");
    assert_eq!(api.snapshot().await.len(), 1);
}
