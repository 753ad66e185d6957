//! Wiring for the `spooler` binary: a worker for the built-in kinds from the config, the server's
//! options from the config, the listener (HTTP/1 connections under a header-read timeout that is
//! also the idle timeout, a body-read timeout and a connection cap) with graceful shutdown, and
//! the shutdown signal.

use crate::config::{Config, DEFAULT_CONCURRENCY};
use crate::state::ServerOptions;
use spooler::{Store, Worker, WorkerBuilder};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What the command line says about the worker, over the config file.
#[derive(Debug, Clone, Default)]
pub struct WorkerOverrides {
    /// `--queue NAME=CONCURRENCY` (repeatable); replaces the config's list of queues when given.
    pub queues: Vec<(String, u32)>,
    /// `--lease`.
    pub lease: Option<Duration>,
    /// `--poll`.
    pub poll: Option<Duration>,
    /// `--grace`.
    pub grace: Option<Duration>,
}

/// The queues a worker works, with their concurrency: the `--queue` overrides if any; else the
/// config's queues, every queue a route or a schedule leads to, and `default` (each with 10
/// unless configured), where jobs sent without a queue go.
pub fn worker_queues(config: &Config, overrides: &WorkerOverrides) -> Vec<(String, u32)> {
    if !overrides.queues.is_empty() {
        return overrides.queues.clone();
    }
    let mut queues: Vec<(String, u32)> = config
        .queues
        .iter()
        .map(|(name, q)| (name.clone(), q.concurrency))
        .collect();
    let routed_to = config
        .queues
        .values()
        .flat_map(|q| q.routes.all().map(|r| r.queue.clone()));
    let led_to = config
        .schedules
        .iter()
        .map(|s| s.job.queue.clone())
        .chain(routed_to);
    for name in std::iter::once(spooler::core::DEFAULT_QUEUE.to_string()).chain(led_to) {
        if !queues.iter().any(|(q, _)| *q == name) {
            queues.push((name, DEFAULT_CONCURRENCY));
        }
    }
    queues
}

/// A worker builder running the built-in kinds on the configured queues, with the configured
/// retry policies, retention and timings. Add your own handlers before `build()` if you like.
pub fn worker_builder(
    store: Arc<dyn Store>,
    config: &Config,
    overrides: &WorkerOverrides,
) -> WorkerBuilder {
    let mut builder = Worker::builder(store).retention(config.retention.clone());
    let file_allow = crate::kinds::FileAllow::new(config.file_allow.clone());
    for (kind, handler) in crate::kinds::builtin(
        config.commands_allow.clone(),
        file_allow,
        config.http_signing.clone(),
        config.net.clone(),
    ) {
        builder = builder.handler(kind, handler);
    }
    for (name, concurrency) in worker_queues(config, overrides) {
        builder = builder.queue(&name, concurrency);
    }
    for (name, q) in &config.queues {
        if let Some(policy) = &q.backoff {
            builder = builder.queue_retry_policy(name, policy.clone());
        }
    }
    if let Some(lease) = overrides.lease.or(config.worker.lease) {
        builder = builder.lease(lease);
    }
    if let Some(poll) = overrides.poll.or(config.worker.poll) {
        builder = builder.poll_interval(poll);
    }
    if let Some(grace) = overrides.grace.or(config.worker.grace) {
        builder = builder.grace_period(grace);
    }
    builder
}

/// Writes the config's queue defaults (`max_attempts`, `timeout`) into the store, replacing what
/// an earlier config wrote, so that every enqueue into those queues takes them: the API's, the
/// CLI's, and a Rust `Client`'s in another process; and declares its `[[schedules]]` as owner
/// `config` (a schedule dropped from the file is deleted; an unchanged one keeps its next run).
/// Without a config file nothing is written (a server started without one leaves another's
/// settings alone).
pub async fn configure_store(
    store: Arc<dyn spooler::Store>,
    config: &Config,
) -> Result<(), spooler::Error> {
    if config.path.is_none() {
        return Ok(());
    }
    store.queue_configure(&config.queue_settings()).await?;
    spooler::Client::new(store)
        .declare_schedules(CONFIG_OWNER, &config.schedules, true)
        .await
}

/// The owner the config file's schedules are declared as.
pub const CONFIG_OWNER: &str = "config";

/// The API's options from the config and the resolved token.
pub fn server_options(config: &Config, token: Option<String>) -> ServerOptions {
    let defaults = ServerOptions::default();
    ServerOptions {
        token: token.filter(|t| !t.is_empty()),
        read_token: config.read_token.clone(),
        body_limit: config.body_limit.unwrap_or(defaults.body_limit),
        batch_limit: config.batch_limit.unwrap_or(defaults.batch_limit),
        queues: config.queues.keys().cloned().collect(),
        file_allow: crate::kinds::FileAllow::new(config.file_allow.clone()),
        net: config.net.clone(),
        ..defaults
    }
}

/// How the listener treats connections, so that clients which never finish a request cannot hold
/// descriptors: before any authentication, a half-open connection costs one descriptor until a
/// timeout closes it, and the cap keeps the total below the process's descriptor limit.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// How long a client has to send a request's headers, from the moment the server starts
    /// waiting for them. The same clock runs between the requests of a keep-alive connection,
    /// so it is also the idle timeout: an idle connection is closed after it. Default 10 s.
    pub header_read_timeout: Duration,
    /// How long a client has to send a request's whole body, once its headers are in. A body
    /// not read in time answers 408. Default 30 s.
    pub body_read_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog until one closes. The
    /// cap used is at most the descriptor limit less [`RESERVED_DESCRIPTORS`]. Default 10,000.
    pub max_connections: usize,
}

/// Descriptors the connection cap leaves for the store, logs, the listener and job kinds.
pub const RESERVED_DESCRIPTORS: usize = 64;

impl Default for ListenOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

impl ListenOptions {
    /// The cap in force: `max_connections`, lowered to fit the descriptor limit.
    pub fn connection_cap(&self) -> usize {
        let fit = descriptor_limit()
            .map(|limit| limit.saturating_sub(RESERVED_DESCRIPTORS).max(1))
            .unwrap_or(usize::MAX);
        self.max_connections.clamp(1, fit)
    }
}

/// The soft limit on open descriptors (RLIMIT_NOFILE), where the platform has one.
fn descriptor_limit() -> Option<usize> {
    #[cfg(unix)]
    {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        limit
            .current
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Serves `router` on `listener` with the default [`ListenOptions`] until `shutdown` completes,
/// then lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, &ListenOptions::default(), shutdown).await
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and lets open
/// requests finish. Each connection is HTTP/1 with the timeouts of `options`; at most
/// [`ListenOptions::connection_cap`] are served at once.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    options: &ListenOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cap = options.connection_cap();
    tracing::debug!(
        cap,
        header_read_timeout = ?options.header_read_timeout,
        body_read_timeout = ?options.body_read_timeout,
        "accepting connections"
    );
    let permits = Arc::new(tokio::sync::Semaphore::new(cap));
    // Connections watch `stop` to shut down gracefully and hold `done_rx` until they end.
    let (stop, _) = tokio::sync::watch::channel(false);
    let (done_tx, done_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    if !is_connection_error(&e) {
                        // Out of descriptors (EMFILE) or memory: wait for connections to close.
                        tracing::warn!(error = %e, "accepting a connection failed; retrying shortly");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            router: router.clone(),
            options: options.clone(),
            stop: stop.subscribe(),
            _done: done_rx.clone(),
            _permit: permit,
        };
        tokio::spawn(connection.serve(stream));
    }
    drop(listener);
    stop.send_replace(true);
    drop(done_rx);
    done_tx.closed().await;
    Ok(())
}

/// Errors of one connection (the peer reset it before it was accepted): not worth a pause.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

struct Connection {
    router: axum::Router,
    options: ListenOptions,
    stop: tokio::sync::watch::Receiver<bool>,
    _done: tokio::sync::watch::Receiver<()>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(mut self, stream: tokio::net::TcpStream) {
        let body_timeout = self.options.body_read_timeout;
        let router = self.router.clone();
        let service =
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let mut router = router.clone();
                let request = request.map(|body| TimedBody::new(body, body_timeout));
                tower_service::Service::call(&mut router, request)
            });
        let io = hyper_util::rt::TokioIo::new(JsonParseErrors::new(stream));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.options.header_read_timeout)
            .keep_alive(true);
        let connection = builder.serve_connection(io, service);
        let mut connection = std::pin::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = async { self.stop.wait_for(|stop| *stop).await.map(|_| ()) } => {
                // Asked to stop (or the server is gone): finish the request in flight, then close.
                connection.as_mut().graceful_shutdown();
                connection.as_mut().await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// The error a request body reports when it did not arrive within the body-read timeout; the
/// body extractor answers it with a 408.
#[derive(Debug)]
pub struct BodyReadTimeout(pub Duration);

impl std::fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {}",
            spooler::format_duration(self.0)
        )
    }
}

impl std::error::Error for BodyReadTimeout {}

/// A request body that fails with [`BodyReadTimeout`] unless it ends within its timeout.
struct TimedBody<B> {
    inner: B,
    timeout: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<B> TimedBody<B> {
    fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl<B> http_body::Body for TimedBody<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyReadTimeout(this.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The stream of one connection, which turns hyper's own answers to requests it cannot parse
/// (400 bad request, 414 URI too long, 431 headers too large: sent before any routing, with an
/// empty body) into the API's JSON errors. hyper has no hook for those responses; they are the
/// only 4xx responses with `content-length: 0` this server sends (every API error has a JSON
/// body), which is how they are told apart. hyper closes the connection after them.
struct JsonParseErrors<S> {
    inner: S,
    /// A replacement response still to be written, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> JsonParseErrors<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

/// The JSON response that replaces hyper's empty answer in `head`, if `head` is one.
fn json_parse_error(head: &[u8]) -> Option<Vec<u8>> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if end != head.len() {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let status: u16 = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let empty = text
        .split("\r\n")
        .any(|line| line.eq_ignore_ascii_case("content-length: 0"));
    let message = match status {
        400 => "the request cannot be parsed as HTTP/1.1 (malformed request line or header)",
        414 => "the request URI is too long",
        431 => "the request headers are too large or too many",
        _ => return None,
    };
    if !empty {
        return None;
    }
    let body = serde_json::json!({ "error": message }).to_string();
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Bad Request");
    Some(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: tokio::io::AsyncWrite + Unpin> JsonParseErrors<S> {
    /// Writes what is left of a replacement response; ready when nothing is left.
    fn poll_pending(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            match std::pin::Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for JsonParseErrors<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for JsonParseErrors<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let this = self.get_mut();
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        if buf.starts_with(b"HTTP/1.1 4")
            && let Some(replacement) = json_parse_error(buf)
        {
            this.pending = Some((replacement, 0));
            // The original is taken as written; the replacement goes out before anything else.
            return match this.poll_pending(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Ready(Ok(buf.len())),
            };
        }
        std::pin::Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_pending(cx))?;
        std::pin::Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_pending(cx))?;
        std::pin::Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then writes a response head in one buffer, which `poll_write` reads.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// Completes on SIGINT or SIGTERM (on non-Unix systems: Ctrl-C).
///
/// The handlers are installed when this is called, not when the future is first polled: from then
/// on a signal no longer kills the process, it completes this future. Call it before a slow start
/// (connecting to the store, waiting for a lock) and watch it meanwhile, so a SIGTERM then ends the
/// process cleanly instead of killing it. (Elsewhere than Unix, Ctrl-C is watched from the first
/// poll.)
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            let mut term = match term {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
            let Ok(mut int) = int else {
                term.recv().await;
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C: shutting down");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_queue_is_worked_beside_configured_ones() {
        let config = Config::parse("[queues.mail]\nconcurrency = 2\n", "t.toml").unwrap();
        let queues = worker_queues(&config, &WorkerOverrides::default());
        assert_eq!(
            queues,
            vec![("mail".to_string(), 2), ("default".to_string(), 10)]
        );
        let only = WorkerOverrides {
            queues: vec![("mail".into(), 1)],
            ..Default::default()
        };
        assert_eq!(worker_queues(&config, &only), vec![("mail".to_string(), 1)]);
    }
}
