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
            match token {
                Some(t) if token_matches(t.as_bytes(), expected.as_bytes()) => {
                    next.run(request).await
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
    fn equal_only_when_equal() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret", b""));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
