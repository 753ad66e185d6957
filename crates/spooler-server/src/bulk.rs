//! `POST /v1/jobs/bulk` and `/v1/operations/{id}`: operations by filter over HTTP, thin over
//! the client's; and the one place a bulk request body becomes an action and a filter.

use crate::error::ApiError;
use crate::extract::{JobIdPath, JsonBody};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use spooler::{BulkAction, JobFilter, JobState};

/// The members a bulk request may have.
pub const BULK_FIELDS: &[&str] = &["action", "filter", "dry_run"];
/// The members a filter may have.
pub const FILTER_FIELDS: &[&str] = &["queue", "state", "kind", "tag", "before", "after"];

/// A bulk request: what to do, to which jobs, and whether only to count them.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkRequest {
    /// What to do.
    pub action: BulkAction,
    /// To which jobs.
    pub filter: JobFilter,
    /// Count only.
    pub dry_run: bool,
}

impl BulkRequest {
    /// The answer to a dry run that found `matched` jobs (as `POST /v1/jobs/bulk` gives it).
    pub fn dry_run_json(&self, matched: i64) -> Value {
        json!({
            "action": self.action,
            "filter": self.filter,
            "matched": matched,
            "dry_run": true,
        })
    }
}

/// Reads a bulk request body; errors name the field at fault.
pub fn parse_bulk(body: &Value) -> Result<BulkRequest, ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::invalid(
            "request body",
            "request body must be a JSON object like {\"action\": \"retry\", \"filter\": {\"state\": \"failed\"}}",
        ));
    };
    if let Some(key) = obj.keys().find(|k| !BULK_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            key.clone(),
            format!(
                "unknown field \"{key}\" (accepted: {})",
                BULK_FIELDS.join(", ")
            ),
        ));
    }
    let action = match obj.get("action") {
        Some(Value::String(a)) => a
            .parse::<BulkAction>()
            .map_err(|e| ApiError::invalid("action", format!("action: {e}")))?,
        Some(other) => {
            return Err(ApiError::invalid(
                "action",
                format!("action must be \"retry\", \"cancel\" or \"delete\", not {other}"),
            ));
        }
        None => {
            return Err(ApiError::invalid(
                "action",
                "action is required: \"retry\", \"cancel\" or \"delete\"",
            ));
        }
    };
    let dry_run = match obj.get("dry_run") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::invalid(
                "dry_run",
                format!("dry_run must be true or false, not {other}"),
            ));
        }
    };
    let filter = match obj.get("filter") {
        None | Some(Value::Null) => JobFilter::default(),
        Some(value) => parse_filter(value)?,
    };
    Ok(BulkRequest {
        action,
        filter,
        dry_run,
    })
}

/// Reads a filter object (`{"queue": …, "state": …}`); errors name `filter.FIELD`.
pub(crate) fn parse_filter(value: &Value) -> Result<JobFilter, ApiError> {
    let Some(obj) = value.as_object() else {
        return Err(ApiError::invalid(
            "filter",
            "filter must be an object like {\"queue\": \"mail\", \"state\": \"failed\"}",
        ));
    };
    let mut filter = JobFilter::default();
    for (key, v) in obj {
        let field = format!("filter.{key}");
        let text = |v: &Value| match v {
            Value::String(s) if s.contains('\0') => Err(ApiError::invalid(
                field.clone(),
                format!("{field}: text must not contain the NUL character (\\u0000)"),
            )),
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            other => Err(ApiError::invalid(
                field.clone(),
                format!("{field} must be a non-empty string, not {other}"),
            )),
        };
        // Queue and kind names follow the one rule of the API (`wire::validate_name`).
        let name = |v: &Value| {
            let s = text(v)?;
            crate::wire::validate_name(&s)
                .map_err(|e| ApiError::invalid(field.clone(), format!("{field}: {e}")))?;
            Ok::<_, ApiError>(s)
        };
        let time = |v: &Value| -> Result<DateTime<Utc>, ApiError> {
            let s = text(v)?;
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::invalid(
                        field.clone(),
                        format!("{field}: \"{s}\" is not an RFC 3339 time ({e}), e.g. 2026-01-31T12:00:00Z"),
                    )
                })
        };
        match key.as_str() {
            "queue" => filter.queue = Some(name(v)?),
            "kind" => filter.kind = Some(name(v)?),
            "tag" => filter.tag = Some(text(v)?),
            "state" => {
                filter.state = Some(
                    text(v)?
                        .parse::<JobState>()
                        .map_err(|e| ApiError::invalid(field.clone(), format!("{field}: {e}")))?,
                )
            }
            "before" => filter.before = Some(time(v)?),
            "after" => filter.after = Some(time(v)?),
            _ => {
                return Err(ApiError::invalid(
                    field.clone(),
                    format!(
                        "unknown field \"{field}\" (accepted: {})",
                        FILTER_FIELDS.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(filter)
}

/// `POST /v1/jobs/bulk`: `202` with the operation, which runs in the background (durably, in
/// chunks); with `dry_run`, `200` with the count it would cover.
pub(crate) async fn bulk_jobs(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request = parse_bulk(&body)?;
    let client = &state.inner.client;
    if request.dry_run {
        let matched = client.count(&request.filter).await?;
        return Ok(Json(request.dry_run_json(matched)).into_response());
    }
    let op = client.bulk(request.action, request.filter).await?;
    Ok((StatusCode::ACCEPTED, Json(op)).into_response())
}

/// `GET /v1/operations/{id}`.
pub(crate) async fn get_operation(
    State(state): State<AppState>,
    JobIdPath(id): JobIdPath,
) -> Result<Response, ApiError> {
    let op = state.inner.client.operation(id).await?;
    Ok(Json(op).into_response())
}

/// `POST /v1/operations/{id}/cancel`: the operation, cancelled if it was still running.
pub(crate) async fn cancel_operation(
    State(state): State<AppState>,
    JobIdPath(id): JobIdPath,
) -> Result<Response, ApiError> {
    let op = state.inner.client.operation_cancel(id).await?;
    Ok(Json(op).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: Value) -> String {
        parse_bulk(&body)
            .unwrap_err()
            .field_name()
            .unwrap_or("")
            .to_string()
    }

    #[test]
    fn a_bulk_request_reads_its_action_filter_and_dry_run() {
        let r = parse_bulk(&json!({
            "action": "retry",
            "filter": {"queue": "q", "state": "failed", "after": "2026-01-01T00:00:00Z"},
            "dry_run": true
        }))
        .unwrap();
        assert_eq!(r.action, BulkAction::Retry);
        assert_eq!(r.filter.queue.as_deref(), Some("q"));
        assert_eq!(r.filter.state, Some(JobState::Failed));
        assert!(r.filter.after.is_some());
        assert!(r.dry_run);
    }

    #[test]
    fn mistakes_name_their_field() {
        assert_eq!(field_of(json!({})), "action");
        assert_eq!(field_of(json!({"action": "purge"})), "action");
        assert_eq!(field_of(json!({"action": "retry", "filtr": {}})), "filtr");
        assert_eq!(
            field_of(json!({"action": "retry", "filter": {"stat": "failed"}})),
            "filter.stat"
        );
        assert_eq!(
            field_of(json!({"action": "retry", "filter": {"state": "done"}})),
            "filter.state"
        );
        assert_eq!(
            field_of(json!({"action": "retry", "filter": {"before": "yesterday"}})),
            "filter.before"
        );
        assert_eq!(
            field_of(json!({"action": "retry", "dry_run": "yes"})),
            "dry_run"
        );
        assert_eq!(field_of(json!([1])), "request body");
    }
}
