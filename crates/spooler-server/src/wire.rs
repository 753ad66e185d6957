//! The wire JSON: a job as API responses and `--json` output show it, and the parsing of enqueue
//! requests into [`NewJob`]s with errors that name the field at fault.

use crate::error::ApiError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use spooler::core::AttemptError;
use spooler::{JobRow, NewJob, format_duration, parse_duration};

/// A job as the API shows it. Durations are strings like `"30s"`; times are RFC 3339.
#[derive(Debug, Serialize)]
pub struct JobWire<'a> {
    /// Increasing id.
    pub id: i64,
    /// The queue.
    pub queue: &'a str,
    /// The handler's name.
    pub kind: &'a str,
    /// The handler's arguments.
    pub args: &'a Value,
    /// `scheduled`, `available`, `running`, `completed`, `failed` or `cancelled`.
    pub state: &'static str,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts begun.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// When it may run.
    pub run_at: DateTime<Utc>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When its latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// One entry per failed attempt: `{attempt, at, message}`.
    pub errors: &'a [AttemptError],
    /// What the handler returned.
    pub result: Option<&'a Value>,
    /// Deduplication key.
    pub unique_key: Option<&'a str>,
    /// The job whose route enqueued this one.
    pub routed_from: Option<i64>,
    /// For a routed job: the job its chain began with (`kind`, `queue`, `args`) and the `hops`
    /// taken since; null otherwise.
    pub origin: Option<&'a spooler::core::Origin>,
    /// What travels with the job besides its args: `traceparent`, the W3C trace context its run
    /// continues; `{}` when none.
    pub meta: &'a spooler::core::Meta,
    /// Labels.
    pub tags: &'a [String],
    /// Per-attempt timeout, e.g. `"30s"`.
    pub timeout: Option<String>,
    /// While running: the worker holding it.
    pub worker_id: Option<&'a str>,
    /// While running: when its lease lapses.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Cancellation was asked for while it ran.
    pub cancel_requested: bool,
    /// On enqueue only: true when `unique_key` matched an unfinished job, which is returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
}

impl<'a> JobWire<'a> {
    /// The wire view of a stored job.
    pub fn new(job: &'a JobRow) -> Self {
        Self {
            id: job.id,
            queue: &job.queue,
            kind: &job.kind,
            args: &job.args,
            state: job.state.as_str(),
            priority: job.priority,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            run_at: job.run_at,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            errors: &job.errors,
            result: job.result.as_ref(),
            unique_key: job.unique_key.as_deref(),
            routed_from: job.routed_from,
            origin: job.origin.as_ref(),
            meta: &job.meta,
            tags: &job.tags,
            timeout: job.timeout.map(format_duration),
            worker_id: job.worker_id.as_deref(),
            lease_expires_at: job.lease_expires_at,
            cancel_requested: job.cancel_requested,
            duplicate: None,
        }
    }

    /// The wire view of an enqueue's result, with `duplicate` set.
    pub fn inserted(job: &'a JobRow, duplicate: bool) -> Self {
        Self {
            duplicate: Some(duplicate),
            ..Self::new(job)
        }
    }
}

/// The wire JSON of a job as a value.
pub fn job_json(job: &JobRow) -> Value {
    serde_json::to_value(JobWire::new(job)).unwrap_or(Value::Null)
}

/// Fields an enqueue request may carry.
pub const ENQUEUE_FIELDS: &[&str] = &[
    "kind",
    "args",
    "queue",
    "priority",
    "run_at",
    "delay",
    "max_attempts",
    "timeout",
    "unique_key",
    "tags",
    "meta",
];

/// The most keys a job's `meta` may hold.
pub const META_MAX_KEYS: usize = 32;

/// Parses one enqueue request. `prefix` is prepended to field names in errors (`"jobs[3]."` in a
/// batch); `now` is the store's clock, for `delay`. What the body leaves out of `max_attempts` and
/// `timeout` the store fills from the queue's stored defaults.
pub fn parse_enqueue(body: &Value, prefix: &str, now: DateTime<Utc>) -> Result<NewJob, ApiError> {
    let name = |field: &str| format!("{prefix}{field}");
    let Some(obj) = body.as_object() else {
        let what = if prefix.is_empty() {
            "request body".to_string()
        } else {
            prefix.trim_end_matches('.').to_string()
        };
        return Err(ApiError::invalid(
            what.clone(),
            format!(
                "{what} must be a JSON object like {{\"kind\": \"noop\", \"args\": {{}}}}, not {}",
                type_name(body)
            ),
        ));
    };
    for key in obj.keys() {
        if !ENQUEUE_FIELDS.contains(&key.as_str()) {
            return Err(ApiError::invalid(
                name(key),
                format!(
                    "unknown field \"{}\" (accepted: {})",
                    name(key),
                    ENQUEUE_FIELDS.join(", ")
                ),
            ));
        }
    }
    // PostgreSQL stores neither text nor JSON holding U+0000: refuse it here, on every backend,
    // rather than answer 500 when the store rejects it.
    if let Some(at) = obj
        .iter()
        .find_map(|(key, value)| nul_at(value).map(|rest| format!("{}{rest}", name(key))))
    {
        return Err(ApiError::invalid(
            at.clone(),
            format!("{at}: text must not contain the NUL character (\\u0000)"),
        ));
    }
    let field = FieldReader { obj, name: &name };
    let kind = field
        .string("kind")?
        .ok_or_else(|| ApiError::invalid(name("kind"), format!("{} is required", name("kind"))))?;
    validate_name(&kind)
        .map_err(|e| ApiError::invalid(name("kind"), format!("{}: {e}", name("kind"))))?;
    let args = obj
        .get("args")
        .filter(|v| !v.is_null())
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    let queue = field
        .string("queue")?
        .unwrap_or_else(|| spooler::core::DEFAULT_QUEUE.to_string());
    validate_name(&queue)
        .map_err(|e| ApiError::invalid(name("queue"), format!("{}: {e}", name("queue"))))?;
    let mut job = NewJob::new(kind, args).queue(queue);
    if let Some(p) = field.int("priority", i32::MIN as i64, i32::MAX as i64)? {
        job.priority = p as i32;
    }
    job.max_attempts = field
        .int("max_attempts", 1, i32::MAX as i64)?
        .map(|n| n as i32);
    job.timeout = match field.duration("timeout")? {
        Some(t) if t.is_zero() => {
            return Err(ApiError::invalid(
                name("timeout"),
                format!("{} must be greater than zero", name("timeout")),
            ));
        }
        other => other,
    };
    let run_at = match field.string("run_at")? {
        Some(text) => Some(
            DateTime::parse_from_rfc3339(&text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::invalid(
                        name("run_at"),
                        format!(
                            "{}: \"{text}\" is not an RFC 3339 time like \"2030-01-02T03:04:05Z\": {e}",
                            name("run_at")
                        ),
                    )
                })?,
        ),
        None => None,
    };
    let delay = field.duration("delay")?;
    job.run_at = match (run_at, delay) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                name("delay"),
                format!("give {} or {}, not both", name("run_at"), name("delay")),
            ));
        }
        (Some(at), None) => Some(at),
        (None, Some(d)) => Some(spooler::core::clock::add(now, d)),
        (None, None) => None,
    };
    // RFC 3339 has four-digit years: a delay reaching past 9999 could not be written back.
    if let Some(at) = job.run_at
        && chrono::Datelike::year(&at) > 9999
    {
        return Err(ApiError::invalid(
            name("delay"),
            format!("{}: the time it names is past the year 9999", name("delay")),
        ));
    }
    job.unique_key = field.string("unique_key")?;
    if let Some(tags) = obj.get("tags").filter(|v| !v.is_null()) {
        let wrong = || {
            ApiError::invalid(
                name("tags"),
                format!("{} must be an array of strings", name("tags")),
            )
        };
        let list = tags.as_array().ok_or_else(wrong)?;
        job.tags = list
            .iter()
            .map(|t| t.as_str().map(str::to_string).ok_or_else(wrong))
            .collect::<Result<_, _>>()?;
    }
    match obj.get("meta").filter(|v| !v.is_null()) {
        None => {}
        Some(Value::Object(meta)) if meta.len() <= META_MAX_KEYS => job.meta = meta.clone(),
        Some(Value::Object(_)) => {
            return Err(ApiError::invalid(
                name("meta"),
                format!("{} holds at most {META_MAX_KEYS} keys", name("meta")),
            ));
        }
        Some(other) => {
            return Err(ApiError::invalid(
                name("meta"),
                format!(
                    "{} must be an object like {{\"traceparent\": \"00-…-…-01\"}}, not {}",
                    name("meta"),
                    type_name(other)
                ),
            ));
        }
    }
    job.validate().map_err(|e| match e {
        spooler::StoreError::InvalidInput { field, message } => {
            ApiError::invalid(name(field), format!("{}: {message}", name(field)))
        }
        other => ApiError::internal(other),
    })?;
    Ok(job)
}

/// The longest queue or job kind name, in bytes (the store's own limit).
pub const NAME_MAX_LEN: usize = 200;

/// The one rule for queue and job kind names wherever a client gives one (a request body, a path,
/// a query): 1 to [`NAME_MAX_LEN`] printable ASCII characters other than space and `/`. A name is
/// a label in metrics and a segment in `/v1/queues/{name}`; control characters, NUL, `/` and
/// unbounded lengths are refused before they reach the store. `openapi.json` states the same
/// rule as the pattern `^[!-.0-~]{1,200}$`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > NAME_MAX_LEN {
        return Err(format!(
            "must be at most {NAME_MAX_LEN} bytes, not {}",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| !matches!(c, '!'..='.' | '0'..='~')) {
        return Err(format!(
            "{} is not allowed (use printable ASCII characters other than space and /)",
            match c {
                ' ' => "a space".to_string(),
                '/' => "\"/\"".to_string(),
                c => format!("the character {}", c.escape_unicode()),
            }
        ));
    }
    Ok(())
}

struct FieldReader<'a, F: Fn(&str) -> String> {
    obj: &'a Map<String, Value>,
    name: &'a F,
}

impl<F: Fn(&str) -> String> FieldReader<'_, F> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, expected: &str, got: &Value) -> ApiError {
        let field = (self.name)(key);
        ApiError::invalid(
            field.clone(),
            format!("{field} must be {expected}, not {}", type_name(got)),
        )
    }

    fn string(&self, key: &str) -> Result<Option<String>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    fn int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                // JSON does not tell 3 from 3.0 and JSON Schema counts both as integers: a number
                // with no fractional part is taken as the integer it is.
                let whole = v.as_f64().filter(|f| f.fract() == 0.0);
                let n = match v.as_i64() {
                    Some(n) => Some(n),
                    None => whole.filter(|f| f.abs() < 9.0e18).map(|f| f as i64),
                };
                let out_of_range = match n {
                    Some(n) => n < min || n > max,
                    None if whole.is_some() => true,
                    None => return Err(self.wrong(key, "an integer", v)),
                };
                if out_of_range {
                    let field = (self.name)(key);
                    return Err(ApiError::invalid(
                        field.clone(),
                        format!("{field} must be between {min} and {max}, not {v}"),
                    ));
                }
                Ok(n)
            }
        }
    }

    fn duration(&self, key: &str) -> Result<Option<std::time::Duration>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => parse_duration(s).map(Some).map_err(|e| {
                let field = (self.name)(key);
                ApiError::invalid(field.clone(), format!("{field}: {e}"))
            }),
            Some(other) => Err(self.wrong(key, "a duration string like \"30s\"", other)),
        }
    }
}

/// Where below `value` a string or an object key holds U+0000, if anywhere: `.a[2]`, or `""` for
/// `value` itself. The path is built only when one is found.
fn nul_at(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => s.contains('\0').then(String::new),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_at(v).map(|rest| format!("[{i}]{rest}"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(format!(".{}", k.replace('\0', "\\u0000")))
            } else {
                nul_at(v).map(|rest| format!(".{k}{rest}"))
            }
        }),
        _ => None,
    }
}

/// The JSON type of a value, for messages: "a number", "an array".
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One queue as the API (`GET /v1/queues`) and the CLI show it: name, paused, counts per state,
/// when the oldest available job became runnable and how long ago, in seconds, its stored
/// `rate_limit` and `global_concurrency` (null when none); with `configured`, whether the
/// server's config names the queue.
pub fn queue_json(
    q: &spooler::QueueInfo,
    settings: Option<&spooler::core::QueueSettings>,
    now: chrono::DateTime<chrono::Utc>,
    configured: Option<bool>,
) -> serde_json::Value {
    let limits = settings.map(|s| s.limits).unwrap_or_default();
    let mut v = serde_json::json!({
        "name": q.name,
        "paused": q.paused,
        "counts": q.counts,
        "oldest_available_at": q.oldest_available_at,
        "oldest_available_age_s": crate::metrics::oldest_age_seconds(q, now),
        "rate_limit": limits.rate.map(|r| r.to_string()),
        "global_concurrency": limits.concurrency,
    });
    if let Some(configured) = configured {
        v["configured"] = serde_json::Value::Bool(configured);
    }
    v
}

/// What `GET /v1/stats` answers: every bucket's counts and, per queue and kind, the job count
/// and the run and wait percentiles in milliseconds (null where no job started).
pub fn stats_json(stats: &spooler::Stats) -> serde_json::Value {
    let ms = |d: &[Option<std::time::Duration>; 3]| {
        let p = |i: usize| d[i].map(|d| (d.as_secs_f64() * 1e6).round() / 1e3);
        serde_json::json!({ "p50": p(0), "p95": p(1), "p99": p(2) })
    };
    let latencies: Vec<_> = stats
        .latencies
        .iter()
        .map(|l| {
            serde_json::json!({
                "queue": l.queue,
                "kind": l.kind,
                "finished": l.finished,
                "failed": l.failed,
                "started": l.started,
                "run_ms": ms(&l.run),
                "wait_ms": ms(&l.wait),
            })
        })
        .collect();
    serde_json::json!({
        "granularity": stats.granularity,
        "since": stats.since,
        "until": stats.until,
        "rolled_until": stats.rolled_until,
        "points": stats.points,
        "latencies": latencies,
    })
}

/// One schedule as the API (`GET /v1/schedules`) and the CLI show it: its name, cadence (as
/// written and in words), time zone, catch-up, pause, the job a tick enqueues (kind, queue, args
/// and the options it sets), its next runs and its last run.
pub fn schedule_json(view: &spooler::ScheduleView) -> serde_json::Value {
    let row = &view.row;
    let def = &row.def;
    let job = &def.job;
    let mut template = serde_json::json!({
        "kind": job.kind,
        "queue": job.queue,
        "args": job.args,
        "priority": job.priority,
    });
    if let Some(n) = job.max_attempts {
        template["max_attempts"] = n.into();
    }
    if let Some(t) = job.timeout {
        template["timeout"] = spooler::format_duration(t).into();
    }
    if let Some(k) = &job.unique_key {
        template["unique_key"] = k.clone().into();
    }
    if !job.tags.is_empty() {
        template["tags"] = serde_json::json!(job.tags);
    }
    serde_json::json!({
        "name": def.name,
        "cron": def.cron,
        "description": view.description,
        "tz": def.tz.as_deref().unwrap_or("UTC"),
        "catch_up": def.catch_up.as_str(),
        "paused": row.paused,
        "job": template,
        "next_run_at": row.next_run_at,
        "upcoming": view.upcoming,
        "last_run_at": row.last_run_at,
        "last_job_id": row.last_job_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NewJob, ApiError> {
        parse_enqueue(&v, "", Utc::now())
    }

    #[test]
    fn a_minimal_request_gets_the_defaults() {
        let job = parse(json!({"kind": "noop"})).unwrap();
        assert_eq!(job.queue, "default");
        assert_eq!(job.max_attempts, None, "the store fills it from the queue");
        assert_eq!(job.args, json!({}));
    }

    #[test]
    fn errors_name_the_field() {
        for (body, field) in [
            (json!({"args": {}}), "kind"),
            (json!({"kind": 5}), "kind"),
            (json!({"kind": "x", "priority": "high"}), "priority"),
            (json!({"kind": "x", "max_attempts": 0}), "max_attempts"),
            (json!({"kind": "x", "delay": "soon"}), "delay"),
            (json!({"kind": "x", "tags": [1]}), "tags"),
            (json!({"kind": "x", "kindd": 1}), "kindd"),
            (json!({"kind": "x", "run_at": "tomorrow"}), "run_at"),
            (json!({"kind": ""}), "kind"),
            (json!({"kind": "a\u{0}b"}), "kind"),
            (
                json!({"kind": "x", "args": {"a": ["ok", "\u{0}"]}}),
                "args.a[1]",
            ),
            (json!({"kind": "x", "tags": ["\u{0}"]}), "tags[0]"),
            (json!({"kind": "x".repeat(201)}), "kind"),
            (json!({"kind": "a b"}), "kind"),
            (json!({"kind": "x", "queue": "/.."}), "queue"),
            (json!({"kind": "x", "queue": "q\u{7}"}), "queue"),
            (json!({"kind": "x", "queue": "é"}), "queue"),
            (json!({"kind": "x", "queue": ""}), "queue"),
        ] {
            let e = parse(body.clone()).unwrap_err();
            assert_eq!(e.status(), 422, "{body}");
            assert!(e.message().contains(field), "{body}: {}", e.message());
        }
    }

    #[test]
    fn given_attempts_and_timeout_are_kept() {
        let job = parse(json!({"kind": "x", "max_attempts": 9, "timeout": "2s"})).unwrap();
        assert_eq!(job.max_attempts, Some(9));
        assert_eq!(job.timeout, Some(std::time::Duration::from_secs(2)));
    }
}
