//! Spans over OTLP: `spooler serve` with `OTEL_EXPORTER_OTLP_ENDPOINT` exports its request and job
//! spans to a receiver this test runs, and a job enqueued with a `traceparent` header runs in a
//! span of the caller's trace; its log lines carry the trace id.

use crate::server_support::{ServeOptions, Server, wait_for};
use axum::body::Bytes;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An OTLP/HTTP receiver (JSON encoding) that keeps every span it is sent.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Value>>> = Arc::default();
        let keep = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let keep = keep.clone();
                async move {
                    let export: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let mut spans = keep.lock().unwrap();
                    for rs in export["resourceSpans"].as_array().into_iter().flatten() {
                        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                            for span in ss["spans"].as_array().into_iter().flatten() {
                                spans.push(span.clone());
                            }
                        }
                    }
                    ([("content-type", "application/json")], "{}")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, spans }
    }

    /// The spans received so far named `name` in trace `trace_id`.
    fn find(&self, name: &str, trace_id: &str) -> Vec<Value> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s["name"] == name && s["traceId"].as_str() == Some(trace_id))
            .cloned()
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_with_a_traceparent_runs_in_the_callers_trace_over_otlp() {
    let receiver = Receiver::start().await;
    let server = Server::start_with(ServeOptions {
        env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.url.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/json".into()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
            ("OTEL_SERVICE_NAME".into(), "spooler-test".into()),
        ],
        ..Default::default()
    })
    .await;
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let caller_span = format!("{:016x}", rand::random::<u64>() | 1);
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let response = server
        .bare(reqwest::Method::POST, "/v1/jobs")
        .header("traceparent", &traceparent)
        .json(&json!({"kind": "noop", "args": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let job: Value = response.json().await.unwrap();
    assert_eq!(job["meta"]["traceparent"], traceparent.as_str());
    let id = job["id"].as_i64().unwrap();
    server
        .wait_state(id, "completed", Duration::from_secs(30))
        .await;
    let run = wait_for(
        "the job's span at the receiver",
        Duration::from_secs(30),
        || async { receiver.find("job", &trace_id).into_iter().next() },
    )
    .await;
    // The run is a child of the caller's span, whatever process ran it.
    assert_eq!(run["parentSpanId"], caller_span.as_str(), "{run}");
    let attributes = run["attributes"].to_string();
    assert!(attributes.contains(&format!("{id}")), "{attributes}");
    let request = wait_for(
        "the request's span at the receiver",
        Duration::from_secs(30),
        || async { receiver.find("request", &trace_id).into_iter().next() },
    )
    .await;
    assert_eq!(request["parentSpanId"], caller_span.as_str(), "{request}");
    // Whatever a run logs carries the trace id beside the job: a failing one logs its failure.
    let failing = server
        .bare(reqwest::Method::POST, "/v1/jobs")
        .header("traceparent", &traceparent)
        .json(&json!({
            "kind": "tcp",
            "args": {"address": format!("127.0.0.1:{}", crate::server_support::closed_port()), "payload": "x"},
            "max_attempts": 1
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(failing.status(), 201);
    let failing: Value = failing.json().await.unwrap();
    let failing = failing["id"].as_i64().unwrap();
    server
        .wait_state(failing, "failed", Duration::from_secs(30))
        .await;
    let line = wait_for(
        "the failed run's log line",
        Duration::from_secs(10),
        || async {
            server
                .log_text()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["span"]["job"] == failing && l["level"] == "WARN")
        },
    )
    .await;
    assert_eq!(line["span"]["trace_id"], trace_id.as_str(), "{line}");
    assert_eq!(line["span"]["kind"], "tcp", "{line}");
}
