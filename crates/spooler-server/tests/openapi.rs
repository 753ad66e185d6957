//! The OpenAPI document kept true: every route is documented and every documented operation is
//! routed, answered over a real socket with a status the document lists, and the schemas name
//! exactly the members the API sends.

use serde_json::{Value, json};
use spooler::Store;
use spooler_server::bulk::{BULK_FIELDS, FILTER_FIELDS};
use spooler_server::config::Config;
use spooler_server::run::{WorkerOverrides, worker_builder};
use spooler_server::wire::{ENQUEUE_FIELDS, JobWire};
use spooler_server::{AppState, OPENAPI_JSON, ServerOptions, route_table, router};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

fn document() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
}

/// Every (method, path) the document describes, methods in lower case.
fn documented() -> BTreeSet<(String, String)> {
    let doc = document();
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .filter(|m| METHODS.contains(&m.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect()
}

fn routed() -> BTreeSet<(String, String)> {
    route_table()
        .into_iter()
        .map(|(m, p)| (m.as_str().to_ascii_lowercase(), p.to_string()))
        .collect()
}

/// The member names of a schema in `components/schemas`.
fn schema_members(name: &str) -> BTreeSet<String> {
    document()["components"]["schemas"][name]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {name} has no properties"))
        .keys()
        .cloned()
        .collect()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn every_route_is_documented_and_every_documented_operation_is_routed() {
    let routed = routed();
    let documented = documented();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "openapi.json describes operations the router does not serve: {unrouted:?}"
    );
}

#[test]
fn only_v1_operations_need_the_token() {
    let doc = document();
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    for (method, path) in documented() {
        let security = &doc["paths"][&path][&method]["security"];
        if path.starts_with("/v1/") {
            assert!(
                security.is_null(),
                "{method} {path} needs the token: {security}"
            );
        } else {
            assert_eq!(security, &json!([]), "{method} {path} is open");
        }
    }
}

#[test]
fn the_enqueue_schema_names_the_accepted_fields() {
    let accepted: BTreeSet<String> = ENQUEUE_FIELDS.iter().map(|f| f.to_string()).collect();
    assert_eq!(schema_members("EnqueueRequest"), accepted);
}

#[test]
fn the_bulk_schemas_name_the_accepted_fields() {
    let set =
        |fields: &[&str]| -> BTreeSet<String> { fields.iter().map(|f| f.to_string()).collect() };
    assert_eq!(schema_members("BulkRequest"), set(BULK_FIELDS));
    assert_eq!(schema_members("JobFilter"), set(FILTER_FIELDS));
}

/// A store in a temporary directory and the API served on a real socket.
struct Served {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    base: String,
    http: reqwest::Client,
}

impl Served {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let store = spooler::connect(&url).await.expect("open store");
        let options = ServerOptions {
            metrics: false,
            ..Default::default()
        };
        let app = router(AppState::new(store.clone(), options));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            _dir: dir,
            store,
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    async fn json(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, text) = self.send(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {text}"
        );
        serde_json::from_str(&text).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_answered_with_a_documented_status() {
    let served = Served::start().await;
    let doc = document();
    let job = served
        .json(
            "post",
            "/v1/jobs",
            Some(json!({"kind": "noop", "delay": "1h"})),
        )
        .await;
    let doomed = served
        .json(
            "post",
            "/v1/jobs",
            Some(json!({"kind": "noop", "delay": "1h"})),
        )
        .await;
    for (method, path) in documented() {
        // DELETE gets a job of its own, so that the others still find theirs.
        let target = if method == "delete" {
            &doomed["id"]
        } else {
            &job["id"]
        };
        let concrete = path
            .replace("{id}", &target.to_string())
            .replace("{name}", "default");
        let body = match (method.as_str(), path.as_str()) {
            ("post", "/v1/jobs") => Some(json!({"kind": "noop"})),
            ("post", "/v1/jobs/batch") => Some(json!({"jobs": [{"kind": "noop"}]})),
            ("post", "/v1/jobs/bulk") => {
                Some(json!({"action": "retry", "filter": {"state": "failed"}}))
            }
            _ => None,
        };
        let (status, text) = served.send(&method, &concrete, body).await;
        assert!(
            status != 405 && !text.contains("no route"),
            "{method} {path} is documented but not served: {status} {text}"
        );
        let operation = &doc["paths"][&path][&method];
        assert!(
            operation["responses"].get(status.to_string()).is_some(),
            "{method} {concrete} answered {status}, which openapi.json does not list: {text}"
        );
        // Query parameters the document names are accepted.
        let names: Vec<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str())
            .collect();
        if !names.is_empty() && method == "get" {
            let values = |name: &str| match name {
                "state" => "available",
                "limit" => "10",
                "cursor" => "1000",
                "wait" => "10ms",
                "granularity" => "hour",
                _ => "default",
            };
            let query: Vec<String> = names.iter().map(|n| format!("{n}={}", values(n))).collect();
            let with = format!("{concrete}?{}", query.join("&"));
            let (status, text) = served.send(&method, &with, None).await;
            assert_eq!(status, 200, "GET {with}: {text}");
        }
    }
    // A duplicate enqueue answers 200 with the existing job.
    let keyed = json!({"kind": "noop", "unique_key": "k", "delay": "1h"});
    let (first, _) = served.send("post", "/v1/jobs", Some(keyed.clone())).await;
    let (second, text) = served.send("post", "/v1/jobs", Some(keyed)).await;
    assert_eq!((first, second), (201, 200), "{text}");
    assert!(
        doc["paths"]["/v1/jobs"]["post"]["responses"]
            .get("200")
            .is_some(),
        "POST /v1/jobs answers 200 for a duplicate; openapi.json does not list it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schemas_name_what_the_api_sends() {
    let served = Served::start().await;
    let worker = worker_builder(
        served.store.clone(),
        &Config::default(),
        &WorkerOverrides::default(),
    )
    .build()
    .unwrap()
    .start();

    let job = served
        .json(
            "post",
            "/v1/jobs",
            Some(json!({"kind": "sleep", "args": {"duration": "1ms"}})),
        )
        .await;
    let members = schema_members("Job");
    assert_eq!(keys(&job), members, "a job as POST /v1/jobs answers it");
    let row = served
        .store
        .job_get(job["id"].as_i64().unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut plain = keys(&serde_json::to_value(JobWire::new(&row)).unwrap());
    plain.insert("duplicate".into());
    assert_eq!(plain, members, "a job as GET /v1/jobs/{{id}} answers it");
    let required: BTreeSet<String> = document()["components"]["schemas"]["Job"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        required.is_subset(&plain),
        "required members are always sent"
    );

    let queues = served.json("get", "/v1/queues", None).await;
    assert_eq!(
        keys(&queues["queues"][0]),
        schema_members("Queue"),
        "{queues}"
    );
    let op = served
        .json(
            "post",
            "/v1/jobs/bulk",
            Some(json!({"action": "cancel", "filter": {"state": "scheduled"}})),
        )
        .await;
    assert_eq!(keys(&op), schema_members("Operation"), "{op}");
    let read = served
        .json("get", &format!("/v1/operations/{}", op["id"]), None)
        .await;
    assert_eq!(keys(&read), schema_members("Operation"), "{read}");
    let dry = served
        .json(
            "post",
            "/v1/jobs/bulk",
            Some(json!({"action": "retry", "dry_run": true})),
        )
        .await;
    assert_eq!(keys(&dry), schema_members("BulkDryRun"), "{dry}");
    let paused = served.json("post", "/v1/queues/default/pause", None).await;
    assert_eq!(keys(&paused), schema_members("QueuePause"));
    let workers = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let w = served.json("get", "/v1/workers", None).await;
            if w["workers"].as_array().is_some_and(|l| !l.is_empty()) {
                return w;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the worker did not show in GET /v1/workers within 10s");
    assert_eq!(
        keys(&workers["workers"][0]),
        schema_members("Worker"),
        "{workers}"
    );
    let health = served.json("get", "/healthz", None).await;
    assert!(
        keys(&health).is_subset(&schema_members("Health")),
        "{health}"
    );
    let (_, text) = served.send("get", "/v1/jobs/0", None).await;
    let error: Value = serde_json::from_str(&text).unwrap();
    assert!(keys(&error).contains("error"), "{error}");
    worker.shutdown().await.unwrap();
}

/// The document says what the server enforces, so that a client (or a fuzzer) reading it sends
/// nothing the server refuses and expects no refusal the server does not make.
#[test]
fn the_document_states_the_rules_the_server_enforces() {
    let doc = document();
    let enqueue = &doc["components"]["schemas"]["EnqueueRequest"];
    let props = &enqueue["properties"];
    let name_pattern = format!("^[!-.0-~]{{1,{}}}$", spooler_server::wire::NAME_MAX_LEN);
    for field in ["kind", "queue"] {
        assert_eq!(props[field]["pattern"], json!(name_pattern), "{field}");
        assert_eq!(props[field]["minLength"], json!(1), "{field}");
        assert_eq!(
            props[field]["maxLength"],
            json!(spooler_server::wire::NAME_MAX_LEN),
            "{field}"
        );
    }
    assert_eq!(props["priority"]["minimum"], json!(i32::MIN));
    assert_eq!(props["priority"]["maximum"], json!(i32::MAX));
    assert_eq!(props["max_attempts"]["minimum"], json!(1));
    assert_eq!(props["max_attempts"]["maximum"], json!(i32::MAX));
    let duration = &doc["components"]["schemas"]["Duration"]["pattern"];
    assert!(duration.is_string());
    assert_eq!(&props["timeout"]["pattern"], duration);
    assert!(
        props["delay"]["pattern"].is_string(),
        "delay: a duration of at most two parts"
    );
    assert!(
        props["timeout"]["not"]["pattern"].is_string(),
        "zero is refused"
    );
    assert_eq!(
        enqueue["not"]["required"],
        json!(["run_at", "delay"]),
        "run_at and delay exclude each other"
    );
    assert_eq!(props["unique_key"]["pattern"], json!("^[^\\u0000]*$"));
    assert_eq!(props["tags"]["items"]["pattern"], json!("^[^\\u0000]*$"));
    for action in ["pause", "resume"] {
        let op = &doc["paths"][format!("/v1/queues/{{name}}/{action}")]["post"];
        assert_eq!(
            op["parameters"][0]["schema"]["pattern"],
            json!(name_pattern)
        );
        assert!(
            op["responses"].get("404").is_some(),
            "{action}: unknown queue"
        );
    }
}
