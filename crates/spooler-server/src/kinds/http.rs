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
/// default) is a retryable failure naming the URL and status. With a signing secret, each
/// delivery carries the Standard Webhooks headers.
#[derive(Debug, Clone)]
pub struct HttpKind {
    client: reqwest::Client,
    signing: Option<SigningSecret>,
    net: super::NetPolicy,
}

/// The key of `[http] signing_secret`: `whsec_` and the base64 of the key, as Standard Webhooks
/// write it. Its `Debug` shows nothing of the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

impl SigningSecret {
    /// Reads `whsec_BASE64` (at least 24 bytes of key, as the specification asks).
    pub fn parse(text: &str) -> Result<Self, String> {
        use base64::Engine;
        let encoded = text.strip_prefix("whsec_").ok_or(
            "must be \"whsec_\" followed by the base64 of the key (e.g. whsec_ and 32 random bytes in base64)",
        )?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| format!("the part after \"whsec_\" is not base64: {e}"))?;
        if key.len() < 24 {
            return Err(format!(
                "the key is {} bytes; use at least 24 (32 random bytes is usual)",
                key.len()
            ));
        }
        Ok(Self(key))
    }

    /// The Standard Webhooks headers of the message `id` sent at `timestamp` (Unix seconds) with
    /// `body`: `webhook-id`, `webhook-timestamp` and `webhook-signature` (`v1,` and the base64 of
    /// HMAC-SHA256 over `id.timestamp.body`).
    pub fn headers(&self, id: &str, timestamp: i64, body: &[u8]) -> [(&'static str, String); 3] {
        use base64::Engine;
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        [
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", format!("v1,{signature}")),
        ]
    }
}

impl HttpKind {
    /// A kind with its own connection pool, going where the default `[net]` rules let it.
    pub fn new() -> Self {
        Self::with_net(super::NetPolicy::default())
    }

    /// A kind going only where `net` lets it (checked on each resolved address).
    pub fn with_net(net: super::NetPolicy) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(Duration::from_secs(3600))
            .user_agent(concat!("spooler/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(std::sync::Arc::new(super::net::GuardedResolver(
                net.clone(),
            )))
            .build()
            .expect("building the HTTP client");
        Self {
            client,
            signing: None,
            net,
        }
    }

    /// Signs every delivery with `secret` (none: unsigned).
    pub fn signing(mut self, secret: Option<SigningSecret>) -> Self {
        self.signing = secret;
        self
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
    async fn run(&self, args: Value, ctx: JobContext) -> Result<Option<Value>, JobError> {
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
        super::net::check_target(&self.net, "http", "url", url_text).map_err(JobError::fail)?;
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
        let headers = a.string_map("headers")?;
        let has_content_type = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        // The body as the bytes sent, so a signature covers exactly them.
        let body: Vec<u8> = match a.get("body") {
            None => Vec::new(),
            Some(Value::String(s)) => s.clone().into_bytes(),
            Some(json) => {
                if !has_content_type {
                    request = request.header("content-type", "application/json");
                }
                serde_json::to_vec(json).expect("a JSON value serializes")
            }
        };
        if let Some(secret) = &self.signing {
            // One id per job, the same on every attempt: a receiver deduplicates by it.
            let id = format!("job_{}", ctx.id());
            for (name, value) in secret.headers(&id, chrono::Utc::now().timestamp(), &body) {
                request = request.header(name, value);
            }
        }
        if a.get("body").is_some() {
            request = request.body(body);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let [id, timestamp, signature] = secret.headers(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(id, ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek".into()));
        assert_eq!(timestamp, ("webhook-timestamp", "1614265330".into()));
        assert_eq!(
            signature,
            (
                "webhook-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into()
            )
        );
        assert_eq!(format!("{secret:?}"), "SigningSecret(***)");
    }

    #[test]
    fn a_secret_must_be_whsec_and_base64_of_enough_bytes() {
        assert!(
            SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap_err()
                .contains("whsec_")
        );
        assert!(
            SigningSecret::parse("whsec_!!!")
                .unwrap_err()
                .contains("base64")
        );
        assert!(
            SigningSecret::parse("whsec_c2hvcnQ=")
                .unwrap_err()
                .contains("at least 24")
        );
    }
}
