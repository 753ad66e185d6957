//! The built-in kinds' arguments, run by a real `spooler serve`: `http` (method, headers, body,
//! expect_status, timeout), `command` (only allowed programs, exit codes, timeouts, no server
//! secrets in the environment) and `file` (one line per job).

use crate::server_support::{HookServer, ServeOptions, Server, closed_port};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Enqueues `body` and waits until the job is `state`; returns it.
async fn run_to(server: &Server, body: Value, state: &str) -> Value {
    let job = server.enqueue(&body).await;
    server
        .wait_state(job["id"].as_i64().unwrap(), state, Duration::from_secs(20))
        .await
}

fn first_error(job: &Value) -> String {
    job["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// With `[http] signing_secret`, a delivery carries the Standard Webhooks headers: the job's id as
/// the message id, the time sent, and an HMAC-SHA256 of both and the exact body sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_deliveries_are_signed_with_the_standard_webhooks_headers() {
    use base64::Engine;
    use hmac::Mac;
    const KEY: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let hooks = HookServer::start().await;
    let server = Server::start_with(ServeOptions {
        config: Some(format!("[http]\nsigning_secret = \"whsec_{KEY}\"\n")),
        ..Default::default()
    })
    .await;
    let job = json!({"kind": "http", "args": {"url": hooks.url("signed"), "body": {"n": [1, 2]}}});
    let done = run_to(&server, job, "completed").await;
    let got = hooks
        .received()
        .into_iter()
        .find(|r| r.id == "signed")
        .expect("delivered");
    let header = |name: &str| got.headers.get(name).cloned().unwrap_or_default();
    assert_eq!(header("webhook-id"), format!("job_{}", done["id"]));
    let sent: i64 = header("webhook-timestamp").parse().expect("a Unix time");
    assert!(
        (chrono::Utc::now().timestamp() - sent).abs() < 120,
        "{sent}"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{sent}.{}", header("webhook-id"), got.body).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(header("webhook-signature"), format!("v1,{expected}"));
    assert_eq!(got.body, r#"{"n":[1,2]}"#);
}

/// `[net] deny` holds where the job runs too: a host name is checked on the addresses it resolves
/// to, so `localhost` cannot reach a denied 127.0.0.1 by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_network_is_refused_on_the_resolved_address() {
    let sink = crate::server_support::TcpSink::start().await;
    let server = Server::start_with(ServeOptions {
        config: Some("[net]\ndeny = [\"127.0.0.0/8\", \"::1\"]\n".into()),
        ..Default::default()
    })
    .await;
    let by_name = json!({"kind": "tcp", "max_attempts": 1, "args": {
        "address": format!("localhost:{}", sink.addr.port()), "payload": "x",
    }});
    let failed = run_to(&server, by_name, "failed").await;
    let message = first_error(&failed);
    assert!(
        message.contains("localhost resolves to") && message.contains("denied by [net] deny"),
        "{message}"
    );
    assert!(sink.received().is_empty(), "nothing reached the sink");
    let (status, body) = server
        .post(
            "/v1/jobs",
            &json!({"kind": "http", "args": {"url": format!("http://127.0.0.1:{}/", sink.addr.port())}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "args");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_jobs_honour_their_arguments() {
    let hooks = HookServer::start().await;
    let server = Server::start().await;

    let job = json!({"kind": "http", "args": {
        "url": hooks.url("get"), "method": "get", "headers": {"x-trace": "abc"},
    }});
    let done = run_to(&server, job, "completed").await;
    assert_eq!(done["result"]["status"], 200, "{done}");
    let json_body = json!({"kind": "http", "args": {"url": hooks.url("json"), "body": {"a": [1]}}});
    run_to(&server, json_body, "completed").await;
    let text_body = json!({"kind": "http", "args": {
        "url": hooks.url("text"), "method": "PUT", "body": "plain words",
        "headers": {"content-type": "text/plain"},
    }});
    run_to(&server, text_body, "completed").await;
    let received = hooks.received();
    let get = received
        .iter()
        .find(|r| r.id == "get")
        .expect("GET delivered");
    assert_eq!(get.method, "GET");
    assert_eq!(get.headers.get("x-trace").map(String::as_str), Some("abc"));
    let posted = received
        .iter()
        .find(|r| r.id == "json")
        .expect("JSON delivered");
    assert_eq!(posted.method, "POST", "the default method");
    assert_eq!(posted.body, r#"{"a":[1]}"#);
    assert_eq!(
        posted.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let put = received
        .iter()
        .find(|r| r.id == "text")
        .expect("PUT delivered");
    assert_eq!(
        (put.method.as_str(), put.body.as_str()),
        ("PUT", "plain words")
    );
    assert_eq!(
        put.headers.get("content-type").map(String::as_str),
        Some("text/plain")
    );

    // expect_status: a 404 can be the success; otherwise it is a failure naming URL and status.
    hooks.answer(404);
    let expected =
        json!({"kind": "http", "args": {"url": hooks.url("gone"), "expect_status": [404, 410]}});
    let done = run_to(&server, expected, "completed").await;
    assert_eq!(done["result"]["status"], 404);
    let url = hooks.url("missing");
    let unexpected = json!({"kind": "http", "max_attempts": 1, "args": {"url": url}});
    let failed = run_to(&server, unexpected, "failed").await;
    let message = first_error(&failed);
    assert!(
        message.contains(&url) && message.contains("404") && message.contains("2xx"),
        "{message}"
    );
    hooks.answer(200);

    // timeout: a slow endpoint fails the attempt, naming the URL and the limit.
    let slow = format!("http://{}/slow", hooks.addr);
    let started = Instant::now();
    let timed_out =
        json!({"kind": "http", "max_attempts": 1, "args": {"url": slow, "timeout": "500ms"}});
    let failed = run_to(&server, timed_out, "failed").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let message = first_error(&failed);
    assert!(
        message.contains(&slow) && message.contains("500ms"),
        "{message}"
    );

    // Nothing listening: the error names host:port.
    let port = closed_port();
    let refused = json!({"kind": "http", "max_attempts": 1, "args": {"url": format!("http://127.0.0.1:{port}/x")}});
    let failed = run_to(&server, refused, "failed").await;
    let message = first_error(&failed);
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");

    // A password in the URL is not written into the job's errors.
    let secret = format!("http://hook:s3cr3t@127.0.0.1:{port}/x");
    let refused = json!({"kind": "http", "max_attempts": 1, "args": {"url": secret}});
    let failed = run_to(&server, refused, "failed").await;
    let message = first_error(&failed);
    assert!(
        !message.contains("s3cr3t") && message.contains("hook:***@"),
        "{message}"
    );

    // Bad arguments: a wrong name or type is refused at enqueue (422 naming args); a bad value
    // the enqueue check does not read fails the job at once, without the retries allowed. Both
    // name the argument.
    for (args, names, at_enqueue) in [
        (json!({"url": 5}), "\"url\"", true),
        (json!({"url": "ftp://x/y"}), "http://", false),
        (
            json!({"url": hooks.url("x"), "methd": "GET"}),
            "\"methd\"",
            true,
        ),
        (
            json!({"url": hooks.url("x"), "timeout": "soon"}),
            "\"timeout\"",
            false,
        ),
    ] {
        let bad = json!({"kind": "http", "max_attempts": 5, "args": args});
        if at_enqueue {
            let (status, body) = server.post("/v1/jobs", &bad).await;
            assert_eq!(status, 422, "{args}: {body}");
            assert_eq!(body["field"], "args");
            assert!(
                body["error"].as_str().unwrap().contains(names),
                "{args}: {body}"
            );
            continue;
        }
        let failed = run_to(&server, bad, "failed").await;
        assert_eq!(failed["attempt"], 1, "no retry: {failed}");
        let message = first_error(&failed);
        assert!(message.contains(names), "{args}: {message}");
    }
    assert_eq!(hooks.count("x"), 0, "bad jobs sent nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_jobs_run_only_allowed_programs_without_the_servers_secrets() {
    let server = Server::start_with(ServeOptions {
        config: Some("[commands]\nallow = [\"/bin/sh\"]\n".into()),
        token: Some("tok3n-in-env".into()),
        env: vec![
            ("SPOOLER_TOKEN".into(), "tok3n-in-env".into()),
            ("OTHER_SETTING".into(), "kept".into()),
        ],
        ..Default::default()
    })
    .await;
    let sh = |script: &str| json!({"program": "/bin/sh", "args": ["-c", script]});

    let mut args = sh("echo hello $GREETING; echo note >&2");
    args["env"] = json!({"GREETING": "world"});
    let done = run_to(
        &server,
        json!({"kind": "command", "args": args}),
        "completed",
    )
    .await;
    assert_eq!(done["result"]["exit_code"], 0, "{done}");
    assert_eq!(done["result"]["stdout_tail"], "hello world\n", "{done}");
    assert_eq!(done["result"]["stderr_tail"], "note\n", "{done}");

    let script = "echo \"token=[$SPOOLER_TOKEN]\"; env | grep -c '^SPOOLER_'; echo $OTHER_SETTING";
    let env = run_to(
        &server,
        json!({"kind": "command", "args": sh(script)}),
        "completed",
    )
    .await;
    assert_eq!(
        env["result"]["stdout_tail"], "token=[]\n0\nkept\n",
        "the environment is passed on, without the server's settings and secrets: {env}"
    );

    let failing =
        json!({"kind": "command", "max_attempts": 1, "args": sh("echo broken >&2; exit 3")});
    let failed = run_to(&server, failing, "failed").await;
    let message = first_error(&failed);
    assert!(
        message.contains("/bin/sh") && message.contains("status 3") && message.contains("broken"),
        "{message}"
    );

    let started = Instant::now();
    let mut args = sh("sleep 30");
    args["timeout"] = json!("300ms");
    let slow = json!({"kind": "command", "max_attempts": 1, "args": args});
    let failed = run_to(&server, slow, "failed").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let message = first_error(&failed);
    assert!(message.contains("timed out after 300ms"), "{message}");

    let forbidden = json!({"kind": "command", "max_attempts": 5, "args": {"program": "/bin/ls"}});
    let failed = run_to(&server, forbidden, "failed").await;
    assert_eq!(failed["attempt"], 1, "not retried: {failed}");
    let message = first_error(&failed);
    assert!(
        message.contains("/bin/ls") && message.contains("[commands] allow"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_jobs_append_one_line_each() {
    let server = Server::start().await;
    let sink = server.path("sink.jsonl");
    let path = sink.display().to_string();
    let mut ids = Vec::new();
    let mut bodies: Vec<Value> = (0..20)
        .map(|i| json!({"kind": "file", "args": {"path": path, "payload": format!("line {i}")}}))
        .collect();
    bodies.push(json!({"kind": "file", "args": {"path": path, "payload": {"n": 1}}}));
    bodies.push(json!({"kind": "file", "args": {"path": path}}));
    bodies.push(json!({"kind": "file", "args": {"path": path, "payload": "two\nlines"}}));
    let (status, answer) = server
        .post("/v1/jobs/batch", &json!({ "jobs": bodies }))
        .await;
    assert!(status.is_success(), "{answer}");
    for job in answer["jobs"].as_array().unwrap() {
        ids.push(job["id"].as_i64().unwrap());
    }
    for id in ids {
        server
            .wait_state(id, "completed", Duration::from_secs(20))
            .await;
    }
    let text = std::fs::read_to_string(&sink).expect("the sink file");
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 23, "{text}");
    lines.sort_unstable();
    let mut expected: Vec<String> = (0..20).map(|i| format!("line {i}")).collect();
    expected.push(r#"{"n":1}"#.into());
    expected.push(json!({ "path": path }).to_string());
    expected.push(r#""two\nlines""#.into());
    expected.sort_unstable();
    assert_eq!(lines, expected);
}
