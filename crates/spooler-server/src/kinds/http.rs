//! The `http` kind: one HTTP request (a webhook); the status and a bounded body excerpt are its result.

use super::{Args, head};
use async_trait::async_trait;
use serde_json::{Value, json};
use spooler::{Handler, JobContext, JobError, format_duration};
use std::time::Duration;

pub(crate) const REQUIRED: &[&str] = &["url"];
pub(crate) const ARGS: &[&str] = &[
    "url",
    "method",
    "headers",
    "body",
    "timeout",
    "expect_status",
];
/// Bytes of the response body kept as `body_excerpt`.
const EXCERPT: usize = 1024;
/// Longest a connection may take to open, whatever the job's `timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `method url` with `headers` and `body`; a status outside `expect_status` (any 2xx by
/// default) is a retryable failure naming the URL and status.
#[derive(Debug, Clone)]
pub struct HttpKind {
    client: reqwest::Client,
}

impl HttpKind {
    /// A kind with its own connection pool.
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(Duration::from_secs(3600))
            .user_agent(concat!("spooler/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(std::sync::Arc::new(super::net::GuardedResolver))
            .build()
            .expect("building the HTTP client");
        Self { client }
    }
}

impl Default for HttpKind {
    fn default() -> Self {
        Self::new()
    }
}

enum Expect {
    Any2xx,
    Codes(Vec<u16>),
}

impl Expect {
    fn matches(&self, status: u16) -> bool {
        match self {
            Expect::Any2xx => (200..300).contains(&status),
            Expect::Codes(codes) => codes.contains(&status),
        }
    }

    fn describe(&self) -> String {
        match self {
            Expect::Any2xx => "2xx".into(),
            Expect::Codes(codes) => codes
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }
}

fn host_port(url: &reqwest::Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or("?"),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// The URL for messages, its password (if any) masked: errors are stored with the job and logged.
fn redacted(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[async_trait]
impl Handler for HttpKind {
    async fn run(&self, args: Value, _ctx: JobContext) -> Result<Option<Value>, JobError> {
        let a = Args::new("http", &args, ARGS)?;
        let url_text = a.required_str("url")?;
        let url = reqwest::Url::parse(url_text).map_err(|e| {
            JobError::fail(format!("http job: argument \"url\": \"{url_text}\": {e}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(JobError::fail(format!(
                "http job: argument \"url\": \"{url_text}\" must be http:// or https://"
            )));
        }
        super::net::check_target("http", "url", url_text).map_err(JobError::fail)?;
        let method_text = a.opt_str("method")?.unwrap_or("POST").to_ascii_uppercase();
        let method = reqwest::Method::from_bytes(method_text.as_bytes()).map_err(|_| {
            JobError::fail(format!(
                "http job: argument \"method\": \"{method_text}\" is not an HTTP method"
            ))
        })?;
        let timeout = a.duration("timeout", Duration::from_secs(30))?;
        let expect = match a.get("expect_status") {
            None => Expect::Any2xx,
            Some(Value::Number(n)) => Expect::Codes(vec![
                n.as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| a.wrong("expect_status", "a status code or a list of them"))?,
            ]),
            Some(Value::Array(items)) => Expect::Codes(
                items
                    .iter()
                    .map(|v| v.as_u64().and_then(|n| u16::try_from(n).ok()))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| a.wrong("expect_status", "a status code or a list of them"))?,
            ),
            Some(_) => return Err(a.wrong("expect_status", "a status code or a list of them")),
        };
        let mut request = self
            .client
            .request(method.clone(), url.clone())
            .timeout(timeout);
        for (name, value) in a.string_map("headers")? {
            request = request.header(name, value);
        }
        request = match a.get("body") {
            None => request,
            Some(Value::String(s)) => request.body(s.clone()),
            Some(json) => request.json(json),
        };
        let target = format!("{method} {}", redacted(&url));
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                JobError::retry(format!(
                    "{target}: timed out after {} (timeout)",
                    format_duration(timeout)
                ))
            } else if e.is_connect() {
                JobError::retry(format!(
                    "{target}: cannot connect to {}: {}",
                    host_port(&url),
                    chain(&e)
                ))
            } else if e.is_builder() {
                JobError::fail(format!("{target}: invalid request: {}", chain(&e)))
            } else {
                JobError::retry(format!("{target}: {}", chain(&e)))
            }
        };
        let mut response = request.send().await.map_err(failed)?;
        let status = response.status();
        let mut body = Vec::new();
        while body.len() < EXCERPT {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                // The status is what matters; a body cut short is reported as far as it came.
                Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&body);
        let excerpt = head(&text, EXCERPT);
        if !expect.matches(status.as_u16()) {
            return Err(JobError::retry(format!(
                "{target}: unexpected status {status} (expected {}): {}",
                expect.describe(),
                head(excerpt, 200)
            )));
        }
        Ok(Some(json!({
            "status": status.as_u16(),
            "body_excerpt": excerpt,
        })))
    }
}
