//! What the job commands talk to: a running server over HTTP (`--url`, `SPOOLER_URL`) or a store
//! directly (`--store`, `SPOOLER_STORE`). Both answer with the same job JSON.

use anyhow::{Context, anyhow, bail};
use clap::Args;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use spooler::{JobList, JobState, Store};
use spooler_server::config::Config;
use spooler_server::wire::{job_json, parse_enqueue, schedule_json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The server the CLI talks to when neither `--url` nor `--store` is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7700";

/// Where the job commands go.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// A running server, e.g. http://127.0.0.1:7700 [env: SPOOLER_URL] (the default when no --store is given).
    #[arg(long, conflicts_with = "store")]
    pub url: Option<String>,
    /// A store to use directly instead of a server, e.g. sqlite://spooler.db or postgres://… [env: SPOOLER_STORE]
    #[arg(long)]
    pub store: Option<String>,
    /// The server's token (with --url).
    #[arg(long, env = "SPOOLER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Config file: its queue defaults are stored before an enqueue into a store directly.
    #[arg(long, env = "SPOOLER_CONFIG")]
    pub config: Option<PathBuf>,
    /// How long to wait for the server or the store (each request).
    #[arg(long = "request-timeout", default_value = "10s", value_parser = crate::duration_arg)]
    pub request_timeout: Duration,
}

/// Where a command goes, before it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A server's base URL.
    Server(String),
    /// A store URL.
    Store(String),
}

/// Where `--url`/`--store` send a command: the flag given (clap refuses both), else
/// `SPOOLER_URL`, else `SPOOLER_STORE`, else the default server. Flags beat the environment, so a
/// shell that exports `SPOOLER_STORE` for `spooler serve` can still run `spooler check --url …`.
pub fn endpoint(url: Option<&str>, store: Option<&str>) -> Endpoint {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match (url, store) {
        (Some(url), _) => Endpoint::Server(url.to_string()),
        (None, Some(store)) => Endpoint::Store(store.to_string()),
        (None, None) => match (env("SPOOLER_URL"), env("SPOOLER_STORE")) {
            (Some(url), _) => Endpoint::Server(url),
            (None, Some(store)) => Endpoint::Store(store),
            (None, None) => Endpoint::Server(DEFAULT_URL.to_string()),
        },
    }
}

/// Fails when `url` names a SQLite file that does not exist: opening it would create an empty
/// store, so a mistyped path would answer "job not found" (or "healthy") instead of the mistake.
pub fn require_existing(url: &str) -> anyhow::Result<()> {
    if let Ok(spooler::sqlite::SqliteTarget::File(path)) = spooler::sqlite::parse_url(url)
        && !path.exists()
    {
        bail!(
            "store file {} does not exist (is the path right? `spooler migrate --store URL` creates one)",
            path.display()
        );
    }
    Ok(())
}

/// A server or a store.
pub enum Target {
    /// Over HTTP.
    Server(Remote),
    /// Directly.
    Store {
        /// The open store.
        store: Arc<dyn Store>,
        /// The config file given, whose queue defaults an enqueue stores first.
        config: Box<Config>,
    },
}

/// Filters of `spooler jobs`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub queue: Option<String>,
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub limit: u32,
    pub cursor: Option<i64>,
}

impl Target {
    /// Opens what the arguments name for commands on existing jobs: like [`Target::open`], but a
    /// SQLite file that does not exist is an error rather than created.
    pub async fn open_existing(args: &TargetArgs) -> anyhow::Result<Self> {
        if let Endpoint::Store(url) = endpoint(args.url.as_deref(), args.store.as_deref()) {
            require_existing(&url)?;
        }
        Self::open(args).await
    }

    /// Opens what the arguments name: the store (creating and migrating it) or an HTTP client for
    /// the server.
    pub async fn open(args: &TargetArgs) -> anyhow::Result<Self> {
        let url = match endpoint(args.url.as_deref(), args.store.as_deref()) {
            Endpoint::Server(base) => {
                let remote = Remote::new(&base, args.token.clone(), args.request_timeout)?;
                return Ok(Self::Server(remote));
            }
            Endpoint::Store(url) => url,
        };
        let config = match &args.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let store = tokio::time::timeout(args.request_timeout, spooler::connect(&url))
            .await
            .map_err(|_| {
                anyhow!(
                    "store {} did not answer within {}",
                    spooler::core::error::redact_url(&url),
                    spooler::format_duration(args.request_timeout)
                )
            })??;
        Ok(Self::Store {
            store,
            config: Box::new(config),
        })
    }

    /// Enqueues one job described like a `POST /v1/jobs` body; returns the job.
    pub async fn enqueue(&self, body: &Value) -> anyhow::Result<Value> {
        match self {
            Self::Server(remote) => remote.call(Method::POST, "/v1/jobs", Some(body)).await,
            Self::Store { store, config } => {
                // A config file given here is the operator's truth, as for `serve` and `worker`:
                // its queue defaults go into the store, where the insert reads them.
                crate::serve::store_config(store.clone(), config).await?;
                let job = parse_enqueue(body, "", store.clock().now())
                    .map_err(|e| anyhow!("invalid job: {}", e.message()))?;
                let file_allow = spooler_server::kinds::FileAllow::new(config.file_allow.clone());
                spooler_server::kinds::check_args(&job.kind, &job.args, &file_allow, &config.net)
                    .map_err(|e| anyhow!("invalid job: args: {e}"))?;
                let inserted = store.job_insert(&job).await?;
                let mut value = job_json(&inserted.job);
                value["duplicate"] = json!(inserted.duplicate);
                Ok(value)
            }
        }
    }

    /// The job; with `wait`, as soon as it is finished or the wait ends.
    pub async fn get(&self, id: i64, wait: Option<Duration>) -> anyhow::Result<Value> {
        match self {
            Self::Server(remote) => {
                let Some(wait) = wait else {
                    return remote
                        .call(Method::GET, &format!("/v1/jobs/{id}"), None)
                        .await;
                };
                // Long-poll in steps the server accepts, until finished or the wait is over.
                let deadline = tokio::time::Instant::now() + wait;
                loop {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let step = left.min(Duration::from_secs(30));
                    let path = format!("/v1/jobs/{id}?wait={}ms", step.as_millis());
                    let job = remote.call_with(Method::GET, &path, None, step).await?;
                    if is_finished(&job) || left <= step {
                        return Ok(job);
                    }
                }
            }
            Self::Store { store, .. } => {
                let client = spooler::Client::new(store.clone());
                // As over HTTP: when the wait ends first, the job as it is then.
                let job = match wait {
                    Some(wait) => client.wait(id, wait).await?,
                    None => client.status(id).await?,
                };
                Ok(job_json(&job))
            }
        }
    }

    /// A page of jobs, newest first, and the cursor of the next page.
    pub async fn list(&self, filter: &ListFilter) -> anyhow::Result<(Vec<Value>, Option<String>)> {
        match self {
            Self::Server(remote) => {
                let mut query = vec![format!("limit={}", filter.limit)];
                if let Some(q) = &filter.queue {
                    query.push(format!("queue={}", encode(q)));
                }
                if let Some(s) = filter.state {
                    query.push(format!("state={}", s.as_str()));
                }
                if let Some(k) = &filter.kind {
                    query.push(format!("kind={}", encode(k)));
                }
                if let Some(c) = filter.cursor {
                    query.push(format!("cursor={c}"));
                }
                let page = remote
                    .call(Method::GET, &format!("/v1/jobs?{}", query.join("&")), None)
                    .await?;
                let jobs = page["jobs"].as_array().cloned().unwrap_or_default();
                let next = page["next_cursor"].as_str().map(str::to_string);
                Ok((jobs, next))
            }
            Self::Store { store, .. } => {
                let list = JobList {
                    queue: filter.queue.clone(),
                    state: filter.state,
                    kind: filter.kind.clone(),
                    limit: filter.limit,
                    before_id: filter.cursor,
                    after_id: None,
                };
                let (jobs, next) = spooler::Client::new(store.clone()).list(&list).await?;
                Ok((
                    jobs.iter().map(job_json).collect(),
                    next.map(|id| id.to_string()),
                ))
            }
        }
    }

    /// Cancels the job.
    pub async fn cancel(&self, id: i64) -> anyhow::Result<Value> {
        match self {
            Self::Server(remote) => {
                remote
                    .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
                    .await
            }
            Self::Store { store, .. } => Ok(job_json(&client(store).cancel(id).await?)),
        }
    }

    /// Makes a finished job available again.
    pub async fn retry(&self, id: i64) -> anyhow::Result<Value> {
        match self {
            Self::Server(remote) => {
                remote
                    .call(Method::POST, &format!("/v1/jobs/{id}/retry"), None)
                    .await
            }
            Self::Store { store, .. } => Ok(job_json(&client(store).retry(id).await?)),
        }
    }

    /// Deletes a job that is not running.
    pub async fn delete(&self, id: i64) -> anyhow::Result<Value> {
        match self {
            Self::Server(remote) => {
                remote
                    .call(Method::DELETE, &format!("/v1/jobs/{id}"), None)
                    .await
            }
            Self::Store { store, .. } => Ok(job_json(&client(store).delete(id).await?)),
        }
    }

    /// Pauses (`pause = true`) or resumes a queue.
    pub async fn pause(&self, queue: &str, pause: bool) -> anyhow::Result<()> {
        match self {
            Self::Server(remote) => {
                let verb = if pause { "pause" } else { "resume" };
                let path = format!("/v1/queues/{}/{verb}", encode(queue));
                remote.call(Method::POST, &path, None).await?;
            }
            Self::Store { store, .. } if pause => client(store).pause(queue).await?,
            Self::Store { store, .. } => client(store).resume(queue).await?,
        }
        Ok(())
    }

    /// Runs an operation by filter described like a `POST /v1/jobs/bulk` body to its end and
    /// returns it (or, for a dry run, the count); `progress` sees the operation as it advances.
    /// Against a server the server runs it and this polls; against a store it runs here.
    pub async fn bulk(&self, body: &Value, progress: impl Fn(&Value)) -> anyhow::Result<Value> {
        match self {
            Self::Server(remote) => {
                let mut op = remote
                    .call(Method::POST, "/v1/jobs/bulk", Some(body))
                    .await?;
                while op["state"] == "running" {
                    progress(&op);
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    let path = format!("/v1/operations/{}", op["id"]);
                    op = remote.call(Method::GET, &path, None).await?;
                }
                Ok(op)
            }
            Self::Store { store, .. } => {
                let request = spooler_server::bulk::parse_bulk(body)
                    .map_err(|e| anyhow!("{}", e.message()))?;
                let client = client(store);
                if request.dry_run {
                    let matched = client.count(&request.filter).await?;
                    return Ok(request.dry_run_json(matched));
                }
                let op = client
                    .bulk_create(request.action, request.filter, spooler::core::MAX_CHUNK)
                    .await?;
                let op = client
                    .operation_drive_with(op.id, |op| {
                        progress(&serde_json::to_value(op).unwrap_or_default())
                    })
                    .await?;
                Ok(serde_json::to_value(&op)?)
            }
        }
    }

    /// Replays spill lines numbered from `first_line` (`POST /v1/replay`); answers its report.
    pub async fn replay(
        &self,
        lines: &[String],
        first_line: usize,
        queue: Option<&str>,
    ) -> anyhow::Result<Value> {
        match self {
            Self::Server(remote) => {
                let mut body = json!({ "lines": lines, "first_line": first_line });
                if let Some(queue) = queue {
                    body["queue"] = json!(queue);
                }
                remote.call(Method::POST, "/v1/replay", Some(&body)).await
            }
            Self::Store { store, .. } => {
                Ok(
                    spooler_server::replay::replay_lines(&client(store), lines, first_line, queue)
                        .await?,
                )
            }
        }
    }

    /// Every schedule, as `GET /v1/schedules` shows them.
    pub async fn schedules(&self) -> anyhow::Result<Vec<Value>> {
        match self {
            Self::Server(remote) => {
                let body = remote.call(Method::GET, "/v1/schedules", None).await?;
                Ok(body["schedules"].as_array().cloned().unwrap_or_default())
            }
            Self::Store { store, .. } => Ok(client(store)
                .schedules()
                .await?
                .iter()
                .map(schedule_json)
                .collect()),
        }
    }

    /// Runs (`run`: its job now, its next run unmoved), pauses or resumes a schedule; answers the
    /// job enqueued, or the schedule.
    pub async fn schedule_action(&self, name: &str, action: &str) -> anyhow::Result<Value> {
        match self {
            Self::Server(remote) => {
                let path = format!("/v1/schedules/{}/{action}", encode(name));
                remote.call(Method::POST, &path, None).await
            }
            Self::Store { store, .. } => {
                let client = client(store);
                match action {
                    "run" => Ok(job_json(&client.run_schedule(name).await?.job)),
                    "pause" => Ok(schedule_json(&client.pause_schedule(name).await?)),
                    "resume" => Ok(schedule_json(&client.resume_schedule(name).await?)),
                    other => bail!("unknown schedule action {other}"),
                }
            }
        }
    }

    /// Queues with their counts and the age of their oldest available job, in seconds.
    pub async fn queues(&self) -> anyhow::Result<Vec<Value>> {
        match self {
            Self::Server(remote) => {
                let body = remote.call(Method::GET, "/v1/queues", None).await?;
                Ok(body["queues"].as_array().cloned().unwrap_or_default())
            }
            Self::Store { store, .. } => {
                let now = store.clock().now();
                let settings = store.queue_settings().await?;
                Ok(client(store)
                    .queues()
                    .await?
                    .iter()
                    .map(|q| {
                        let own = settings.iter().find(|s| s.queue == q.name);
                        spooler_server::wire::queue_json(q, own, now, None)
                    })
                    .collect())
            }
        }
    }
}

/// Whether a job JSON is in a final state.
pub fn is_finished(job: &Value) -> bool {
    job["state"]
        .as_str()
        .and_then(|s| s.parse::<JobState>().ok())
        .is_some_and(|s| s.is_finished())
}

/// An HTTP client for one server.
pub struct Remote {
    base: String,
    token: Option<String>,
    timeout: Duration,
    http: reqwest::Client,
}

impl Remote {
    /// A client for the server at `base` (`http://host:port`).
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!(
                "--url {base}: expected a server address like {DEFAULT_URL} (for a store, use --store)"
            );
        }
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            base,
            token: token.filter(|t| !t.is_empty()),
            timeout,
            http,
        })
    }

    /// Sends a request and returns its JSON; a 4xx/5xx becomes an error carrying the server's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        self.call_with(method, path, body, Duration::ZERO).await
    }

    /// Like [`call`](Self::call), allowing `extra` time beyond the request timeout (long polls).
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        extra: Duration,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .timeout(self.timeout + extra);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            let why = if e.is_timeout() {
                format!("no answer within {}", spooler::format_duration(self.timeout + extra))
            } else {
                root_cause(&e)
            };
            anyhow!(
                "cannot reach the spooler server at {}: {why} (is `spooler serve` running there? set --url, or use --store URL to work on a store directly)",
                self.base
            )
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("{method} {url}: reading the response"))?;
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "error": text }));
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"].as_str().unwrap_or("no message").to_string();
        if status == StatusCode::UNAUTHORIZED {
            bail!(
                "{method} {url}: {status}: {message} (pass the server's token with --token or SPOOLER_TOKEN)"
            );
        }
        bail!("{method} {url}: {status}: {message}")
    }
}

/// The innermost error message (reqwest wraps hyper wraps io).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The client over a store opened directly: every `--store` path goes through it, as the API does.
fn client(store: &Arc<dyn Store>) -> spooler::Client {
    spooler::Client::new(store.clone())
}
