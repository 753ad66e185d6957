//! Extractors whose rejections are JSON [`ApiError`]s, so axum's plain-text rejections never reach
//! the caller: a JSON body, query parameters and path segments.

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde_json::Value;

/// A JSON body of any shape, read within the body limit. A `Content-Type` other than
/// `application/json` (or `…+json`) is refused with 415, so a browser form or a `fetch` without a
/// preflight (`text/plain`, form encodings) can never be taken as a request; a client that sends
/// no `Content-Type` is not a browser and is served. The body must parse as JSON.
pub(crate) struct JsonBody(pub Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(kind) = req.headers().get(axum::http::header::CONTENT_TYPE) {
            let kind = kind.to_str().unwrap_or("?");
            let essence = kind
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "Content-Type {kind:?} is not JSON: send the body as application/json (curl: --json or -H 'content-type: application/json')"
                    ),
                )
                .field("Content-Type"));
            }
        }
        let limit = state.inner.options.body_limit;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(format!(
                    "request body is larger than the limit of {limit} bytes"
                ))
                .with("limit", limit.into())
            } else if let Some(timeout) = body_read_timeout(&e) {
                ApiError::new(StatusCode::REQUEST_TIMEOUT, timeout.to_string())
            } else {
                ApiError::bad_request(format!("cannot read the request body: {e}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "request body is empty (expected a JSON object)",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
    }
}

/// The listener's body-read timeout, if that is why reading the body failed.
fn body_read_timeout<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a crate::run::BodyReadTimeout> {
    let mut source = Some(e);
    while let Some(e) = source {
        if let Some(timeout) = e.downcast_ref::<crate::run::BodyReadTimeout>() {
            return Some(timeout);
        }
        source = e.source();
    }
    None
}

/// Query parameters in order, as (name, value) pairs; handlers reject names they do not know.
pub(crate) struct Params(pub Vec<(String, String)>);

impl Params {
    /// Rejects a parameter not in `known`, naming it and the ones accepted.
    pub(crate) fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        for (name, _) in &self.0 {
            if !known.contains(&name.as_str()) {
                return Err(ApiError::bad_param(
                    name.clone(),
                    format!(
                        "unknown query parameter \"{name}\" (accepted: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The last value of `name`, if given and not empty.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|Query(pairs)| Params(pairs))
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))
    }
}

/// The `{id}` path segment as a job id.
pub(crate) struct JobIdPath(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for JobIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_param("id", format!("bad path: {e}")))?;
        raw.parse::<i64>().map(JobIdPath).map_err(|_| {
            ApiError::bad_param(
                "id",
                format!("invalid job id \"{raw}\" (expected an integer)"),
            )
        })
    }
}

/// The `{name}` path segment (a queue name). A name that breaks the naming rule names no queue
/// that can exist: 404, with the rule in the message.
pub(crate) struct NamePath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for NamePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_param("name", format!("bad path: {e}")))?;
        crate::wire::validate_name(&name).map_err(|e| {
            ApiError::not_found(format!("no such queue: queue name: {e}")).field("name")
        })?;
        Ok(NamePath(name))
    }
}
