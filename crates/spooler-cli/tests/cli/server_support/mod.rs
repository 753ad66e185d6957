//! Shared helpers of the `server_*` tests: a real `spooler serve` process on a fresh SQLite file,
//! CLI runs with timeouts, polling with timeouts, and local HTTP and TCP endpoints that record what
//! they receive.

// Some helpers serve only some of the modules.
#![allow(dead_code)]

use reqwest::{Method, StatusCode};
use serde_json::Value;
use spooler::{JobState, Store};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to start and say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one CLI run may take before the test gives up on it.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// The `spooler` binary with no `SPOOLER_*` settings inherited from the environment.
pub fn spooler() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_spooler"));
    for var in [
        "SPOOLER_STORE",
        "SPOOLER_URL",
        "SPOOLER_TOKEN",
        "SPOOLER_CONFIG",
        "SPOOLER_LISTEN",
        "SPOOLER_LOG_FORMAT",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1").kill_on_drop(true);
    cmd
}

/// Polls `check` every 20 ms until it gives a value; panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a CLI run printed and how it ended.
#[derive(Debug)]
pub struct CliRun {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl CliRun {
    /// The run's output, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "exit {:?} after {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }

    /// Stdout parsed as one JSON value.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.describe()))
    }

    /// Asserts exit code 0 and returns self.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "{}", self.describe());
        self
    }
}

/// Runs `spooler ARGS` to its end (at most 30 s).
pub async fn cli(args: &[&str]) -> CliRun {
    cli_env(args, &[]).await
}

/// Runs `spooler ARGS` with environment variables `env` to its end (at most 30 s).
pub async fn cli_env(args: &[&str], env: &[(&str, &str)]) -> CliRun {
    let started = Instant::now();
    let child = spooler()
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start spooler");
    let out = tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("spooler {args:?} did not finish within {CLI_TIMEOUT:?}"))
        .expect("wait for spooler");
    CliRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// How to start a server.
#[derive(Debug, Default, Clone)]
pub struct ServeOptions {
    /// `--store` (default: a fresh SQLite file in the server's directory).
    pub store: Option<String>,
    /// Text of a config file passed with `--config`.
    pub config: Option<String>,
    /// `--token`.
    pub token: Option<String>,
    /// `--no-worker`.
    pub no_worker: bool,
    /// More flags.
    pub args: Vec<String>,
    /// Environment variables of the process.
    pub env: Vec<(String, String)>,
}

/// A `spooler serve` process on a fresh SQLite file in its own temporary directory; killed
/// (SIGKILL) when dropped if the test did not stop it.
pub struct Server {
    child: Option<tokio::process::Child>,
    /// The temporary directory holding the store, the config and the log.
    pub dir: tempfile::TempDir,
    /// `sqlite://…` of the store.
    pub store_url: String,
    /// Where the server listens.
    pub addr: SocketAddr,
    /// `http://ADDR`.
    pub url: String,
    /// The token given with `--token`.
    pub token: Option<String>,
    log: PathBuf,
    http: reqwest::Client,
    options: ServeOptions,
}

impl Server {
    /// A server with the built-in worker, polling every 100 ms.
    pub async fn start() -> Self {
        Self::start_with(ServeOptions::default()).await
    }

    /// A server started as `options` say, on `127.0.0.1:0`; returns once it logged its address.
    pub async fn start_with(options: ServeOptions) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store_url = options
            .store
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("jobs.db").display()));
        let log = dir.path().join("serve.log");
        let mut server = Self {
            child: None,
            dir,
            store_url,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            url: String::new(),
            token: options.token.clone(),
            log,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("HTTP client"),
            options,
        };
        server.spawn().await;
        server
    }

    /// Starts the process again, as first started, on the same store and directory (its log
    /// starts afresh); the previous one must have exited.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let options = &self.options;
        let mut cmd = spooler();
        cmd.args([
            "serve",
            "--store",
            &self.store_url,
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--poll",
            "100ms",
        ]);
        if let Some(text) = &options.config {
            let path = self.dir.path().join("spooler.toml");
            std::fs::write(&path, text).expect("write config");
            cmd.arg("--config").arg(path);
        }
        if let Some(token) = &options.token {
            cmd.args(["--token", token]);
        }
        if options.no_worker {
            cmd.arg("--no-worker");
        }
        cmd.args(&options.args);
        cmd.envs(options.env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).expect("log file"))
            .spawn()
            .expect("start spooler serve");
        self.child = Some(child);
        let started = Instant::now();
        self.addr = loop {
            if let Some(addr) = self.logged_address() {
                break addr;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                panic!(
                    "spooler serve exited with {status} before listening; log:\n{}",
                    self.log_text()
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "spooler serve did not log \"server listening\" within {START_TIMEOUT:?}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.url = format!("http://{}", self.addr);
    }

    /// The `listen` field of the "server listening" log line, once written.
    fn logged_address(&self) -> Option<SocketAddr> {
        self.log_text().lines().find_map(|line| {
            let v: Value = serde_json::from_str(line).ok()?;
            let message = v["message"].as_str()?;
            message
                .starts_with("server listening")
                .then(|| v["listen"].as_str()?.parse().ok())?
        })
    }

    /// Everything the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 log lines other than request lines, for assertion messages.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("\"spooler_server::request\""))
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The SQLite file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("jobs.db")
    }

    /// A path in the server's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .expect("server running")
    }

    /// Sends SIGTERM and waits at most `within` for the exit.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.pid().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let mut child = self.child.take().expect("server running");
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => status.expect("wait for the server"),
            Err(_) => {
                let _ = child.kill().await;
                panic!(
                    "spooler serve did not exit within {within:?} of SIGTERM; log:\n{}",
                    self.log_tail()
                );
            }
        }
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// The store, opened from the test process.
    pub async fn store(&self) -> Arc<dyn Store> {
        spooler::connect(&self.store_url)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.store_url))
    }

    /// Sends a request with the server's token (if any) and returns the status and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.url));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; log:\n{}", self.log_tail()));
        read_json(response, &format!("{method} {path}")).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `POST path` with `bytes` as the body, as JSON, with the token.
    pub async fn post_raw(&self, path: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(bytes);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("POST");
        read_json(response, &format!("POST {path}")).await
    }

    /// A request builder without the token, for auth tests.
    pub fn bare(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    /// `POST /v1/jobs`, asserting 201; returns the job.
    pub async fn enqueue(&self, body: &Value) -> Value {
        let (status, job) = self.post("/v1/jobs", body).await;
        assert_eq!(status, StatusCode::CREATED, "POST /v1/jobs {body}: {job}");
        job
    }

    /// `GET /v1/jobs/{id}`, asserting 200.
    pub async fn job(&self, id: i64) -> Value {
        let (status, job) = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "GET /v1/jobs/{id}: {job}");
        job
    }

    /// Polls `GET /v1/jobs/{id}` until the job is in `state`; returns it.
    pub async fn wait_state(&self, id: i64, state: &str, timeout: Duration) -> Value {
        let mut last = Value::Null;
        let found = tokio::time::timeout(timeout, async {
            loop {
                let job = self.job(id).await;
                if job["state"] == state {
                    return job;
                }
                last = job;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "job {id} did not become {state} within {timeout:?}; last seen: {last}; log:\n{}",
                self.log_tail()
            )
        })
    }

    /// Jobs in the store, per state, summed over queues.
    pub async fn counts(&self) -> HashMap<JobState, i64> {
        let queues = self.store().await.queue_list().await.expect("queue_list");
        let mut counts = HashMap::new();
        for q in queues {
            for state in JobState::ALL {
                *counts.entry(state).or_default() += q.counts.get(state);
            }
        }
        counts
    }

    /// All jobs in the store.
    pub async fn total_jobs(&self) -> i64 {
        self.counts().await.values().sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL; tokio reaps the process in the background (kill_on_drop).
            let _ = child.start_kill();
            let _ = child.try_wait();
        }
    }
}

async fn read_json(response: reqwest::Response, what: &str) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("read body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{what}: answer {status} is not JSON ({e}): {text}"));
    (status, value)
}

/// Every job `list` matches, page after page (its `before_id` is where to start; `None`: newest).
pub async fn list_all(
    client: &spooler::Client,
    mut list: spooler::JobList,
) -> Vec<spooler::JobRow> {
    let mut all = Vec::new();
    loop {
        let (page, next) = client.list(&list).await.expect("list jobs");
        all.extend(page);
        match next {
            Some(id) => list.before_id = Some(id),
            None => return all,
        }
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// One request a [`HookServer`] received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The `{id}` of `/hook/{id}`.
    pub id: String,
    pub method: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// A local HTTP endpoint: `ANY /hook/{id}` records the request and answers with the status
/// currently set (200 at first); `ANY /slow` answers after a minute.
pub struct HookServer {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl HookServer {
    pub async fn start() -> Self {
        use axum::extract::{Path as UrlPath, State};
        use axum::http::{HeaderMap, Method};
        use axum::routing::any;

        #[derive(Clone)]
        struct Shared {
            received: Arc<Mutex<Vec<Received>>>,
            status: Arc<AtomicU16>,
        }
        async fn hook(
            State(s): State<Shared>,
            UrlPath(id): UrlPath<String>,
            method: Method,
            headers: HeaderMap,
            body: String,
        ) -> (axum::http::StatusCode, String) {
            let headers = headers
                .iter()
                .map(|(k, v)| {
                    let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (k.as_str().to_string(), value)
                })
                .collect();
            s.received.lock().unwrap().push(Received {
                id: id.clone(),
                method: method.to_string(),
                headers,
                body,
            });
            let code = s.status.load(Ordering::SeqCst);
            (
                axum::http::StatusCode::from_u16(code).expect("status"),
                format!("hook {id} answered {code}"),
            )
        }
        async fn slow() -> &'static str {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "late"
        }
        let shared = Shared {
            received: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
        };
        let app = axum::Router::new()
            .route("/hook/{id}", any(hook))
            .route("/slow", any(slow))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind hook server");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("hook server");
        });
        Self {
            addr,
            received: shared.received,
            status: shared.status,
            task,
        }
    }

    /// The URL of the hook for `id`.
    pub fn url(&self, id: &str) -> String {
        format!("http://{}/hook/{id}", self.addr)
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Deliveries per id so far.
    pub fn deliveries(&self) -> HashMap<String, u32> {
        let mut counts = HashMap::new();
        for r in self.received.lock().unwrap().iter() {
            *counts.entry(r.id.clone()).or_default() += 1;
        }
        counts
    }

    /// Deliveries to `id` so far.
    pub fn count(&self, id: &str) -> u32 {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.id == id)
            .count() as u32
    }

    /// Bodies received so far.
    pub fn bodies(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.body.clone())
            .collect()
    }

    /// Answer every later request with `code`.
    pub fn answer(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A local TCP listener that reads each connection to its end and keeps what it received.
pub struct TcpSink {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpSink {
    pub async fn start() -> Self {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind TCP sink");
        let addr = listener.local_addr().expect("address");
        let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let store = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let mut bytes = Vec::new();
                    if conn.read_to_end(&mut bytes).await.is_ok() {
                        store.lock().unwrap().push(bytes);
                    }
                });
            }
        });
        Self {
            addr,
            received,
            task,
        }
    }

    /// What each closed connection carried, in the order they closed.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for TcpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

/// A listener that never accepts, its accept queue filled so that further connection attempts
/// get no answer at all (the kernel drops their SYNs): a host that is there but silent.
pub struct SilentListener {
    pub addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _held: Vec<tokio::net::TcpStream>,
}

impl SilentListener {
    pub async fn start() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("address");
        let mut held = Vec::new();
        for _ in 0..64 {
            match tokio::time::timeout(
                Duration::from_millis(300),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                Ok(Ok(stream)) => held.push(stream),
                Ok(Err(e)) => panic!("filling the accept queue of {addr}: {e}"),
                // The queue is full: connection attempts now go unanswered.
                Err(_) => {
                    return Self {
                        addr,
                        _listener: listener,
                        _held: held,
                    };
                }
            }
        }
        panic!("the accept queue of {addr} did not fill after 64 connections");
    }
}

/// An HTTP/1.1 request written on its own connection, whose answer is read later; once
/// [`RawRequest::delivered`] says so, the server has read it (the kernel holds none of its bytes).
pub struct RawRequest {
    stream: tokio::net::TcpStream,
    server: SocketAddr,
}

impl RawRequest {
    /// Connects to `server` and writes `GET path`.
    pub async fn get(server: SocketAddr, path: &str) -> Self {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(server)
            .await
            .expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        Self { stream, server }
    }

    /// True once the server's socket of this connection has no unread bytes (Linux: the
    /// `rx_queue` column of `/proc/net/tcp`).
    pub fn delivered(&self) -> bool {
        let client = self.stream.local_addr().expect("address");
        let hex = |a: SocketAddr| match a {
            SocketAddr::V4(v4) => format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(v4.ip().octets()),
                v4.port()
            ),
            SocketAddr::V6(_) => panic!("IPv4 only"),
        };
        let (local, remote) = (hex(self.server), hex(client));
        let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
        table.lines().skip(1).any(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 4
                && cols[1] == local
                && cols[2] == remote
                && cols[4].split(':').nth(1) == Some("00000000")
        })
    }

    /// Reads the answer to its end: the status code and the body (`None` if the connection
    /// closed without an answer).
    pub async fn answer(mut self) -> Option<(u16, String)> {
        use tokio::io::AsyncReadExt;
        let mut bytes = Vec::new();
        self.stream.read_to_end(&mut bytes).await.ok()?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    }
}
