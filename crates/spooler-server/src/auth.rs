//! Bearer-token auth for `/v1` (compared in constant time) and the request log line.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;

/// True when the given token is the expected one, compared in constant time (`subtle`): how
/// long it takes does not tell where the two differ.
fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    given.ct_eq(expected).into()
}

/// Refuses a `/v1` call that changes something (any method but GET, HEAD and OPTIONS) when a
/// browser says another site made it: `Sec-Fetch-Site: cross-site` or `same-site`, or an
/// `Origin` whose host and port are not the `Host` the request was sent to (or, behind a proxy,
/// its `X-Forwarded-Host`). A page open in the
/// user's browser can then not drive the server (enqueue, cancel, delete), token or not; the
/// dashboard (same origin) and clients that are not browsers (curl, the CLI, SDKs send no
/// `Origin`) are unaffected. Reads stay open: another site cannot read the answers (no CORS).
pub(crate) async fn refuse_cross_site(request: Request, next: Next) -> Response {
    use axum::http::Method;
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && matches!(site, "cross-site" | "same-site")
    {
        return cross_site(&format!(
            "the browser says another site made it (Sec-Fetch-Site: {site})"
        ));
    }
    if let Some(origin) = text("origin") {
        let host = text("host").unwrap_or_default();
        let origin_host = origin
            .split_once("://")
            .map_or(origin, |(_, rest)| rest)
            .trim_end_matches('/');
        // Behind a proxy that rewrites Host, the host the browser saw is X-Forwarded-Host.
        let forwarded = text("x-forwarded-host").unwrap_or_default();
        let ours = |h: &str| !h.is_empty() && origin_host.eq_ignore_ascii_case(h.trim());
        if origin == "null" || !(ours(host) || ours(forwarded)) {
            return cross_site(&format!(
                "it comes from the page {origin}, which is not this server ({host})"
            ));
        }
    }
    next.run(request).await
}

/// On a loopback-only listener ([`ServerOptions::loopback_only`](crate::ServerOptions)), refuses
/// a request whose `Host` names anything but a loopback name (DNS rebinding: a page at
/// `evil.example` whose name now resolves to 127.0.0.1); every route, the dashboard too.
pub(crate) async fn refuse_foreign_host(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if state.inner.options.loopback_only
        && let Some(host) = request
            .headers()
            .get(header::HOST)
            .map(|v| v.to_str().unwrap_or("?"))
        && !is_loopback_host(host)
    {
        return ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            format!(
                "Host {host:?} is not a loopback name: this server listens on loopback only and answers requests for localhost, 127.0.0.1 and [::1] (a page whose name resolves here is refused)"
            ),
        )
        .field("Host")
        .into_response();
    }
    next.run(request).await
}

/// `localhost`, `*.localhost`, an address in 127.0.0.0/8 or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn cross_site(why: &str) -> Response {
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        format!(
            "cross-site request refused: {why}; the API takes changes from its own dashboard and from clients that are not browsers"
        ),
    )
    .into_response()
}

/// Rejects `/v1` calls without the configured bearer token.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.inner.options.token.as_deref() else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    match given {
        None => ApiError::unauthorized(
            "missing token: this server needs \"Authorization: Bearer <token>\" on /v1 calls",
        )
        .into_response(),
        Some(value) => {
            // The scheme is case-insensitive (RFC 9110, section 11.1).
            let token = value
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim());
            let reader = state.inner.options.read_token.as_deref();
            match token {
                Some(t) if token_matches(t.as_bytes(), expected.as_bytes()) => {
                    next.run(request).await
                }
                Some(t) if reader.is_some_and(|r| token_matches(t.as_bytes(), r.as_bytes())) => {
                    use axum::http::Method;
                    if matches!(*request.method(), Method::GET | Method::HEAD) {
                        next.run(request).await
                    } else {
                        ApiError::new(
                            axum::http::StatusCode::FORBIDDEN,
                            "the read-only token can read but not change anything (use the token for this call)",
                        )
                        .into_response()
                    }
                }
                Some(_) => ApiError::unauthorized("wrong token").into_response(),
                None => {
                    ApiError::unauthorized("the Authorization header must be \"Bearer <token>\"")
                        .into_response()
                }
            }
        }
    }
}

/// Runs each request in a span (method and path), so whatever its handler logs carries them, and
/// logs one line per request: method, path, status and duration.
pub(crate) async fn log_request(request: Request, next: Next) -> Response {
    use tracing::Instrument;
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let started = Instant::now();
    let span = tracing::info_span!("request", %method, %path);
    // A caller's W3C trace context makes the request part of its trace (with the `otel` feature).
    spooler::trace::continue_trace(
        &span,
        request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    let response = next.run(request).instrument(span).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(target: "spooler_server::request", %method, %path, status, ms, "request");
    } else {
        tracing::info!(target: "spooler_server::request", %method, %path, status, ms, "request");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::token_matches as constant_time_eq;

    #[test]
    fn loopback_hosts_are_told_apart_from_others() {
        use super::is_loopback_host;
        for ok in [
            "localhost",
            "localhost:7700",
            "127.0.0.1:7700",
            "127.1.2.3",
            "[::1]:7700",
            "[::1]",
            "app.localhost:80",
            "LOCALHOST.",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7700",
            "localhost.evil.example",
            "10.0.0.1:7700",
            "[::2]",
            "",
            "127.0.0.1.evil.example",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn equal_only_when_equal() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret", b""));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
