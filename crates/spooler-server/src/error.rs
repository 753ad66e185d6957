//! The one place errors become HTTP responses: caller mistakes get a 4xx and a message naming the
//! problem; internal faults get a generic message and the real error is logged.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use spooler::StoreError;

/// Seconds a client is asked to wait after a 503 (the store was unavailable).
const RETRY_AFTER_SECS: &str = "1";

/// An error answered as `{"error": "...", "field": "...", ...}` with its status code.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
    extra: Vec<(&'static str, Value)>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
            extra: Vec::new(),
        }
    }

    /// 400: the request cannot be read (malformed JSON, bad query parameter).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400 naming the query parameter or path segment at fault.
    pub fn bad_param(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::bad_request(message).field(field)
    }

    /// 422: the JSON is well formed but a field is missing or wrong; names the field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message).field(field)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 401 (with `WWW-Authenticate: Bearer`).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 413.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// 500 with a generic message; `error` is logged, never sent.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error answering a request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error (the server log has the details)",
        )
    }

    /// Names the field at fault.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds a member to the error object.
    pub fn with(mut self, key: &'static str, value: Value) -> Self {
        self.extra.push((key, value));
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The field at fault, if the error names one.
    pub fn field_name(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::JobNotFound { id } => {
                ApiError::not_found(format!("job {id} not found")).with("id", json!(id))
            }
            StoreError::OperationNotFound { id } => {
                ApiError::not_found(format!("operation {id} not found")).with("id", json!(id))
            }
            StoreError::ScheduleNotFound { name } => ApiError::not_found(format!(
                "schedule \"{name}\" not found (see GET /v1/schedules)"
            ))
            .field("name"),
            StoreError::InvalidState { id, state, action } => ApiError::new(
                StatusCode::CONFLICT,
                format!("job {id} is {state}: cannot {action} it"),
            )
            .with("id", json!(id))
            .with("state", json!(state.as_str())),
            StoreError::InvalidInput { field, message } => {
                ApiError::invalid(field, format!("{field}: {message}"))
            }
            // The one unique constraint on jobs is `unique_key` among unfinished jobs: a retry (or
            // any change that makes a job unfinished again) whose key another job now holds.
            StoreError::UniqueViolation { message } => {
                tracing::info!(constraint = %message, "unique_key conflict answering a request");
                ApiError::new(
                    StatusCode::CONFLICT,
                    "unique_key: another unfinished job holds this unique_key (finish, cancel or delete that job first)",
                )
                .field("unique_key")
            }
            // Down, unreachable, timed out or full: nothing was written, and the caller may try
            // again (`Retry-After`). Store messages never carry a URL, so no password.
            StoreError::Unavailable { message } => {
                tracing::error!(error = %message, "store unavailable answering a request");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the store is unavailable, nothing was written; try again: {message}"),
                )
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<spooler::Error> for ApiError {
    fn from(e: spooler::Error) -> Self {
        match e {
            spooler::Error::Store(e) => e.into(),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), Value::String(self.message));
        if let Some(field) = self.field {
            body.insert("field".into(), Value::String(field));
        }
        for (k, v) in self.extra {
            body.insert(k.into(), v);
        }
        let mut response = (self.status, axum::Json(Value::Object(body))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
