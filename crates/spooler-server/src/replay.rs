//! The `file` spill's line ([`spill_line`]) and its replay: each line the spill wrote (`{"kind", "queue", "args",
//! "routed_from", "job"}`) is enqueued at the start of its chain once, keyed by the job that
//! wrote it, however often the file is replayed. `POST /v1/replay` and `spooler replay --store`
//! both go through [`replay_lines`].

use serde_json::{Value, json};
use spooler::Client;
use spooler::core::NewJob;
use spooler::core::store::Replay;

/// The line a routed `file` job writes: `{"kind", "queue", "args", "routed_from", "job"}`, the
/// kind, queue and args of the job its chain began with; `None` for a job enqueued directly.
/// [`parse_spill_line`] reads it back.
pub fn spill_line(job: &spooler::core::JobRow) -> Option<Value> {
    let origin = job.origin.as_ref()?;
    Some(json!({
        "kind": origin.kind,
        "queue": origin.queue,
        "args": origin.args,
        "routed_from": job.routed_from,
        "job": job.id,
    }))
}

/// A spill line read back: the key it is replayed under and the job it enqueues.
pub fn parse_spill_line(text: &str, queue: Option<&str>) -> Result<Replay, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = value
        .as_object()
        .ok_or("not a spill line (expected an object with kind, queue, args and job)")?;
    let text_field = |name: &str| -> Result<String, String> {
        let s = obj
            .get(name)
            .and_then(Value::as_str)
            .ok_or(format!("\"{name}\" must be a string"))?;
        crate::wire::validate_name(s).map_err(|e| format!("\"{name}\": {e}"))?;
        Ok(s.to_string())
    };
    let job = obj
        .get("job")
        .and_then(Value::as_i64)
        .ok_or("\"job\" must be the id of the job that wrote the line")?;
    let kind = text_field("kind")?;
    let queue = match queue {
        Some(q) => q.to_string(),
        None => text_field("queue")?,
    };
    let args = obj.get("args").cloned().ok_or("\"args\" is missing")?;
    Ok(Replay {
        key: format!("spill:{job}"),
        job: NewJob::new(kind, args).queue(queue),
    })
}

/// Replays `lines` (numbered from `first_line`), sending each to `queue` when given instead of
/// the queue its chain began in. Answers the counts and, per line, what happened:
/// `{"enqueued", "skipped", "malformed", "lines": [{"line", "outcome", "job"?, "error"?}]}`.
pub async fn replay_lines(
    client: &Client,
    lines: &[String],
    first_line: usize,
    queue: Option<&str>,
) -> Result<Value, spooler::Error> {
    let mut report: Vec<Value> = Vec::with_capacity(lines.len());
    let mut replays = Vec::new();
    let mut at = Vec::new();
    for (i, text) in lines.iter().enumerate() {
        let line = first_line + i;
        if text.trim().is_empty() {
            continue;
        }
        match parse_spill_line(text, queue) {
            Ok(r) => {
                at.push(report.len());
                report.push(json!({ "line": line }));
                replays.push(r);
            }
            Err(error) => {
                report.push(json!({ "line": line, "outcome": "malformed", "error": error }));
            }
        }
    }
    let done = client.replay(&replays).await?;
    for (i, r) in at.into_iter().zip(done) {
        report[i]["outcome"] = json!(if r.enqueued { "enqueued" } else { "skipped" });
        report[i]["job"] = json!(r.id);
    }
    let count = |o: &str| report.iter().filter(|r| r["outcome"] == o).count();
    Ok(json!({
        "enqueued": count("enqueued"),
        "skipped": count("skipped"),
        "malformed": count("malformed"),
        "lines": report,
    }))
}

/// `POST /v1/replay` `{"lines": [...], "queue"?, "first_line"?}`: replays spill lines (at most
/// `batch_limit` per request), answering [`replay_lines`]'s report.
pub(crate) async fn replay_request(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    crate::extract::JsonBody(body): crate::extract::JsonBody,
) -> Result<axum::response::Response, crate::error::ApiError> {
    use crate::error::ApiError;
    use axum::response::IntoResponse;
    let Some(obj) = body.as_object() else {
        return Err(ApiError::invalid(
            "lines",
            "request body must be an object like {\"lines\": [\"{...}\"]}",
        ));
    };
    if let Some(key) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "lines" | "queue" | "first_line"))
    {
        return Err(ApiError::invalid(
            key.clone(),
            format!("unknown field \"{key}\" (accepted: lines, queue, first_line)"),
        ));
    }
    let lines: Vec<String> = match obj.get("lines") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::invalid(
                        format!("lines[{i}]"),
                        format!("lines[{i}] must be a string"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ApiError::invalid(
                "lines",
                format!(
                    "lines must be an array of strings, not {}",
                    crate::wire::type_name(other)
                ),
            ));
        }
        None => return Err(ApiError::invalid("lines", "lines is required")),
    };
    let limit = state.inner.options.batch_limit;
    if lines.len() > limit {
        return Err(ApiError::too_large(format!(
            "a replay holds at most {limit} lines; this one has {} (split it)",
            lines.len()
        ))
        .field("lines")
        .with("limit", limit.into()));
    }
    let queue = match obj.get("queue") {
        None => None,
        Some(Value::String(q)) => {
            crate::wire::validate_name(q)
                .map_err(|e| ApiError::invalid("queue", format!("queue {e}")))?;
            Some(q.as_str())
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "queue",
                format!(
                    "queue must be a string, not {}",
                    crate::wire::type_name(other)
                ),
            ));
        }
    };
    let first_line = match obj.get("first_line") {
        None => 1,
        // 3.0 is the integer 3, as everywhere in the API (JSON Schema counts both as integers).
        Some(v) => v
            .as_f64()
            .filter(|f| f.fract() == 0.0 && (1.0..=u32::MAX as f64).contains(f))
            .ok_or_else(|| {
                ApiError::invalid(
                    "first_line",
                    format!(
                        "first_line must be an integer from 1 to {}, not {v}",
                        u32::MAX
                    ),
                )
            })? as usize,
    };
    let report = replay_lines(&state.inner.client, &lines, first_line, queue).await?;
    Ok(axum::Json(report).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_spill_writes_reads_back() {
        let mut job = NewJob::new("file", json!({"path": "spill.jsonl", "address": "b:2"}))
            .queue("spill")
            .into_row(9, chrono::Utc::now());
        assert_eq!(spill_line(&job), None, "a file job enqueued directly");
        job.routed_from = Some(4);
        job.origin = Some(spooler::core::Origin {
            kind: "tcp".into(),
            queue: "deliver".into(),
            args: json!({"address": "a:1"}),
            hops: 3,
        });
        let line = spill_line(&job).unwrap().to_string();
        let r = parse_spill_line(&line, None).unwrap();
        assert_eq!(r.key, "spill:9");
        assert_eq!(
            (r.job.kind.as_str(), r.job.queue.as_str()),
            ("tcp", "deliver")
        );
        assert_eq!(r.job.args, json!({"address": "a:1"}));
    }

    #[test]
    fn a_spill_line_reads_back_as_its_chains_first_job() {
        let r = parse_spill_line(
            r#"{"kind":"tcp","queue":"deliver","args":{"address":"a:1"},"routed_from":4,"job":9}"#,
            None,
        )
        .unwrap();
        assert_eq!(r.key, "spill:9");
        assert_eq!(
            (r.job.kind.as_str(), r.job.queue.as_str()),
            ("tcp", "deliver")
        );
        assert_eq!(r.job.args, json!({"address": "a:1"}));
        let moved = parse_spill_line(
            r#"{"kind":"tcp","queue":"deliver","args":{},"job":9}"#,
            Some("other"),
        )
        .unwrap();
        assert_eq!(moved.job.queue, "other");
        for bad in [
            "hello",
            "[1]",
            r#"{"kind":"tcp","queue":"q","args":{}}"#,
            r#"{"kind":"","queue":"q","args":{},"job":1}"#,
            r#"{"kind":"tcp","queue":"q","job":1}"#,
        ] {
            assert!(parse_spill_line(bad, None).is_err(), "{bad}");
        }
    }
}
