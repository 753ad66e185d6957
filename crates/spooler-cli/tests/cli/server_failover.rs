//! The failover chain of `examples/failover.toml` through a real `spooler serve` and three real
//! TCP listeners: every message reaches the first destination that is up, or the file spill when
//! none is, also with the server, or a separate `spooler worker` doing the work, SIGKILLed
//! mid-chain; `spooler replay` sends each spilled message back to the start of its chain once,
//! however often the file is replayed. SQLite, and Postgres when `SPOOLER_TEST_POSTGRES` is set.

use crate::server_support::{ServeOptions, Server, cli, wait_for};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;

const EXAMPLE: &str = include_str!("../../../../examples/failover.toml");
const WAIT: Duration = Duration::from_secs(60);

/// A TCP destination on a fixed port that can be stopped (connections refused) and started again;
/// keeps every line it received.
struct Destination {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Destination {
    fn new() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self {
            port,
            lines: Arc::default(),
            task: None,
        }
    }

    async fn up(&mut self) {
        let listener = wait_for("the port to bind again", WAIT, || async {
            tokio::net::TcpListener::bind(("127.0.0.1", self.port))
                .await
                .ok()
        })
        .await;
        let lines = self.lines.clone();
        self.task = Some(tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let lines = lines.clone();
                tokio::spawn(async move {
                    let mut text = String::new();
                    if conn.read_to_string(&mut text).await.is_ok() {
                        let mut lines = lines.lock().unwrap();
                        lines.extend(text.lines().map(str::to_string));
                    }
                });
            }
        }));
    }

    /// Stops listening: once this returns, connections are refused.
    async fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    fn received(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// Where each payload went: destination index (0–2) or 3 for the spill, with how often.
fn seen(destinations: &[Destination], spill: &[Value]) -> BTreeMap<String, Vec<usize>> {
    let mut at: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, d) in destinations.iter().enumerate() {
        for line in d.received() {
            at.entry(line).or_default().push(i);
        }
    }
    let mut spilled_jobs = std::collections::BTreeSet::new();
    for line in spill {
        // A line written again by a job whose first write was not recorded (the process was
        // killed) carries the same job id: it is the same message, and replays once.
        if spilled_jobs.insert(line["job"].as_i64()) {
            let payload = line["args"]["payload"].as_str().unwrap_or_default();
            at.entry(payload.to_string()).or_default().push(3);
        }
    }
    at
}

fn spill_lines(server: &Server) -> Vec<Value> {
    std::fs::read_to_string(server.path("spill.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("spill line {l}: {e}")))
        .collect()
}

async fn send(server: &Server, payloads: &[String], port: u16) {
    for p in payloads {
        server
            .enqueue(&json!({
                "kind": "tcp",
                "queue": "deliver",
                "args": {"address": format!("127.0.0.1:{port}"), "payload": p},
            }))
            .await;
    }
}

/// Waits until each of `payloads` was seen at `place`.
async fn arrived(
    destinations: &[Destination],
    server: &Server,
    payloads: &[String],
    place: usize,
    what: &str,
) {
    wait_for(what, WAIT, || async {
        let at = seen(destinations, &spill_lines(server));
        payloads
            .iter()
            .all(|p| at.get(p).is_some_and(|places| places.contains(&place)))
            .then_some(())
    })
    .await;
}

/// Which process does the work, and is SIGKILLed mid-chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Killed {
    /// `spooler serve` with its built-in worker.
    Server,
    /// A `spooler worker` with the same config, beside a `spooler serve --no-worker`.
    Worker,
}

async fn failover_chain(store: Option<String>, killed: Killed) {
    let mut d = [Destination::new(), Destination::new(), Destination::new()];
    let config = EXAMPLE
        .replace("10001", &d[0].port.to_string())
        .replace("10002", &d[1].port.to_string())
        .replace("10003", &d[2].port.to_string())
        + "\n[worker]\nlease = \"2s\"\n";
    let mut server = Server::start_with(ServeOptions {
        store,
        config: Some(config),
        no_worker: killed == Killed::Worker,
        ..Default::default()
    })
    .await;
    let config_path = server.path("spooler.toml");
    let start_worker = |name: &str| {
        crate::processes::WorkerProcess::start(
            &server.store_url,
            server.dir.path(),
            name,
            &["--config", config_path.to_str().unwrap(), "--poll", "100ms"],
        )
    };
    let mut worker = (killed == Killed::Worker).then(|| start_worker("worker-1"));
    // The example's generator sends "hello" every second; the test sends its own messages.
    let (status, _) = server
        .post("/v1/schedules/generator/pause", &json!({}))
        .await;
    assert_eq!(status, 200, "{}", server.log_tail());
    let batch = |phase: &str| -> Vec<String> { (0..5).map(|i| format!("{phase}-{i}")).collect() };
    for x in d.iter_mut() {
        x.up().await;
    }

    let all_up = batch("all-up");
    send(&server, &all_up, d[0].port).await;
    arrived(
        &d,
        &server,
        &all_up,
        0,
        "every message at the first destination",
    )
    .await;

    d[0].down().await;
    let first_down = batch("first-down");
    send(&server, &first_down, d[0].port).await;
    arrived(
        &d,
        &server,
        &first_down,
        1,
        "messages failing over to the second",
    )
    .await;

    d[1].down().await;
    let two_down = batch("two-down");
    send(&server, &two_down, d[0].port).await;
    arrived(
        &d,
        &server,
        &two_down,
        2,
        "messages failing over to the third",
    )
    .await;

    d[2].down().await;
    let all_down = batch("all-down");
    send(&server, &all_down, d[0].port).await;
    // Killed while messages are on their way along the chain; restarted, they go on.
    let store = server.store().await;
    wait_for("a message routed past the first queue", WAIT, || async {
        let queues = store.queue_list().await.ok()?;
        queues
            .iter()
            .any(|q| {
                q.name.starts_with("deliver-")
                    && q.counts.scheduled + q.counts.available + q.counts.running > 0
            })
            .then_some(())
    })
    .await;
    drop(store);
    match killed {
        Killed::Server => {
            server.kill().await;
            server.restart().await;
        }
        Killed::Worker => {
            worker.as_mut().expect("a worker").kill9();
            worker = Some(start_worker("worker-2"));
        }
    }
    arrived(&d, &server, &all_down, 3, "messages spilled into the file").await;

    // Across the run every message went to exactly one place.
    let at = seen(&d, &spill_lines(&server));
    for (phase, place) in [
        (&all_up, 0),
        (&first_down, 1),
        (&two_down, 2),
        (&all_down, 3),
    ] {
        for p in phase.iter() {
            assert_eq!(at.get(p), Some(&vec![place]), "message {p}: {at:?}");
        }
    }
    let spill = spill_lines(&server);
    for line in &spill {
        assert_eq!(line["kind"], "tcp", "{line}");
        assert_eq!(line["queue"], "deliver", "the chain's start: {line}");
        assert_eq!(
            line["args"]["address"],
            format!("127.0.0.1:{}", d[0].port),
            "the first job's args: {line}"
        );
        assert!(line["routed_from"].as_i64().is_some() && line["job"].as_i64().is_some());
    }

    // One destination back: the spill is replayed into the start of the chain, each once.
    d[0].up().await;
    let spill_path = server.path("spill.jsonl");
    let spill_file = spill_path.to_str().unwrap();
    let run = cli(&["replay", spill_file, "--url", &server.url])
        .await
        .ok();
    assert!(
        run.stdout.contains("enqueued 5, skipped 0"),
        "{}",
        run.describe()
    );
    arrived(
        &d,
        &server,
        &all_down,
        0,
        "replayed messages at the first destination",
    )
    .await;
    // Replayed again, with a malformed line added: nothing twice, the bad line named.
    let lines = spill.len();
    std::fs::write(
        &spill_path,
        std::fs::read_to_string(&spill_path).unwrap() + "not a spill line\n",
    )
    .unwrap();
    let jobs_before = server.total_jobs().await;
    let again = cli(&["replay", spill_file, "--url", &server.url, "--json"]).await;
    assert_eq!(
        again.code,
        Some(1),
        "a malformed line: {}",
        again.describe()
    );
    let report = again.json();
    assert_eq!(report["enqueued"], 0, "{report}");
    assert_eq!(report["skipped"], lines, "{report}");
    assert_eq!(report["malformed"], 1, "{report}");
    let bad = report["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["outcome"] == "malformed")
        .cloned()
        .unwrap();
    assert_eq!(bad["line"], lines + 1, "{bad}");
    assert_eq!(server.total_jobs().await, jobs_before, "nothing enqueued");
    let text = cli(&["replay", spill_file, "--url", &server.url]).await;
    assert!(
        text.stderr
            .contains(&format!("spill.jsonl:{}: skipped, malformed", lines + 1)),
        "{}",
        text.describe()
    );
    for p in &all_down {
        let at_first = d[0].received().iter().filter(|l| *l == p).count();
        assert_eq!(at_first, 1, "replayed message {p} delivered once");
    }

    // The example's own generator works too.
    let (status, _) = server
        .post("/v1/schedules/generator/resume", &json!({}))
        .await;
    assert_eq!(status, 200);
    wait_for(
        "the generator's hello at the first destination",
        WAIT,
        || async { d[0].received().iter().any(|l| l == "hello").then_some(()) },
    )
    .await;
    if let Some(mut worker) = worker {
        worker.terminate(Duration::from_secs(30));
    }
    server.terminate(Duration::from_secs(30)).await;
    for x in d.iter_mut() {
        x.down().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_failover_chain_delivers_each_message_once_and_replays_the_spill_once() {
    failover_chain(None, Killed::Server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_failover_chain_delivers_each_message_once_and_replays_the_spill_once() {
    let Some(schema) = crate::postgres_processes::Schema::new() else {
        return;
    };
    failover_chain(Some(schema.url()), Killed::Server).await;
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_failover_chain_with_its_worker_killed_delivers_each_message_once() {
    failover_chain(None, Killed::Worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_failover_chain_with_its_worker_killed_delivers_each_message_once() {
    let Some(schema) = crate::postgres_processes::Schema::new() else {
        return;
    };
    failover_chain(Some(schema.url()), Killed::Worker).await;
    schema.drop_schema().await;
}

/// The routed job, as the store holds it, without what differs between two runs.
fn routed_shape(job: &spooler::JobRow) -> Value {
    json!({
        "queue": job.queue,
        "kind": job.kind,
        "args": job.args,
        "state": job.state.as_str(),
        "origin": job.origin.as_ref().map(|o| json!({
            "kind": o.kind, "queue": o.queue, "args": o.args, "hops": o.hops
        })),
    })
}

/// Routes live in the store: a worker process started without any config file routes a job it
/// finishes exactly as `spooler serve`, whose config declared the route, routes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_a_config_file_routes_as_the_server_does() {
    let refused = crate::server_support::closed_port();
    let config = "[queues.deliver]\nmax_attempts = 1\n\
         on_failure = { queue = \"dead\", args = { note = \"parked\" }, delay = \"1h\" }\n"
        .to_string();
    let mut server = Server::start_with(ServeOptions {
        config: Some(config.clone()),
        no_worker: true,
        ..Default::default()
    })
    .await;
    let message = |payload: &str| {
        json!({
            "kind": "tcp",
            "queue": "deliver",
            "args": {"address": format!("127.0.0.1:{refused}"), "payload": payload},
        })
    };
    let store = server.store().await;
    let client = spooler::Client::new(store.clone());
    let routed_from = |id: i64| {
        let client = client.clone();
        async move {
            let (jobs, _) = client
                .list(&spooler::JobList {
                    queue: Some("dead".into()),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .ok()?;
            jobs.into_iter().find(|j| j.routed_from == Some(id))
        }
    };
    // A worker process with no config file finishes the first job.
    let by_worker = server.enqueue(&message("one")).await["id"]
        .as_i64()
        .unwrap();
    let mut worker = crate::processes::WorkerProcess::start(
        &server.store_url,
        server.dir.path(),
        "worker",
        &["--queue", "deliver=2", "--poll", "100ms"],
    );
    let from_worker = wait_for("the worker's failure routed", WAIT, || {
        routed_from(by_worker)
    })
    .await;
    worker.terminate(Duration::from_secs(30));
    // The server, with the config, finishes the second.
    server.terminate(Duration::from_secs(30)).await;
    let mut with_worker = Server::start_with(ServeOptions {
        store: Some(server.store_url.clone()),
        config: Some(config),
        ..Default::default()
    })
    .await;
    let by_server = with_worker.enqueue(&message("one")).await["id"]
        .as_i64()
        .unwrap();
    let from_server = wait_for("the server's failure routed", WAIT, || {
        routed_from(by_server)
    })
    .await;
    assert_eq!(routed_shape(&from_worker), routed_shape(&from_server));
    assert_eq!(
        from_worker.state,
        spooler::JobState::Scheduled,
        "the route's delay"
    );
    assert_eq!(from_worker.args["note"], "parked");
    with_worker.terminate(Duration::from_secs(30)).await;
}
