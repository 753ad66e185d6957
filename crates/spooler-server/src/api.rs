//! The HTTP API's routes and handlers: jobs, queues, schedules, workers, health, metrics, docs.

use crate::auth::{log_request, require_token};
use crate::error::ApiError;
use crate::extract::{JobIdPath, JsonBody, NamePath, Params};
use crate::state::AppState;
use crate::wire::{JobWire, parse_enqueue};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use spooler::{JobList, JobState, QueueInfo, StateCounts, parse_duration};
use std::time::Duration;

type Routes = Vec<(Method, &'static str, MethodRouter<AppState>)>;

/// The `/v1` routes: they need the token when one is configured.
fn v1_routes() -> Routes {
    vec![
        (Method::POST, "/v1/jobs", post(enqueue)),
        (Method::GET, "/v1/jobs", get(list_jobs)),
        (Method::POST, "/v1/jobs/batch", post(enqueue_batch)),
        (Method::POST, "/v1/jobs/bulk", post(crate::bulk::bulk_jobs)),
        (Method::GET, "/v1/jobs/{id}", get(get_job)),
        (Method::DELETE, "/v1/jobs/{id}", delete(delete_job)),
        (Method::POST, "/v1/jobs/{id}/cancel", post(cancel_job)),
        (Method::POST, "/v1/jobs/{id}/retry", post(retry_job)),
        (Method::GET, "/v1/queues", get(list_queues)),
        (Method::POST, "/v1/queues/{name}/pause", post(pause_queue)),
        (Method::POST, "/v1/queues/{name}/resume", post(resume_queue)),
        (
            Method::GET,
            "/v1/operations/{id}",
            get(crate::bulk::get_operation),
        ),
        (
            Method::POST,
            "/v1/operations/{id}/cancel",
            post(crate::bulk::cancel_operation),
        ),
        (Method::GET, "/v1/schedules", get(list_schedules)),
        (Method::POST, "/v1/schedules/{name}/run", post(run_schedule)),
        (
            Method::POST,
            "/v1/schedules/{name}/pause",
            post(pause_schedule),
        ),
        (
            Method::POST,
            "/v1/schedules/{name}/resume",
            post(resume_schedule),
        ),
        (Method::GET, "/v1/workers", get(list_workers)),
        (Method::GET, "/v1/stats", get(get_stats)),
        (
            Method::POST,
            "/v1/replay",
            post(crate::replay::replay_request),
        ),
    ]
}

/// Routes open to anyone who can reach the listener: probes, scrapes, docs and the dashboard
/// (whose page asks for the token before calling `/v1`).
fn open_routes() -> Routes {
    vec![
        (Method::GET, "/", get(crate::dashboard::overview)),
        (Method::GET, "/healthz", get(healthz)),
        (Method::GET, "/metrics", get(metrics)),
        (Method::GET, "/openapi.json", get(openapi)),
    ]
}

/// What a worker process serves with `spooler worker --listen`: `/healthz` and `/metrics`, so a
/// scaled-out fleet can be probed and scraped; no API, no dashboard.
pub fn worker_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
}

/// Every (method, path) the router serves, in axum's path syntax (`/v1/jobs/{id}`), which is also
/// OpenAPI's. The router is built from the same table, so this list cannot drift from it.
pub fn route_table() -> Vec<(Method, &'static str)> {
    v1_routes()
        .into_iter()
        .chain(open_routes())
        .map(|(m, p, _)| (m, p))
        .collect()
}

/// The API as an axum router, ready to serve or to nest in another app. Unknown paths and methods
/// are answered with JSON errors; every request is logged; bodies are limited to
/// [`ServerOptions::body_limit`](crate::ServerOptions::body_limit).
pub fn router(state: AppState) -> Router {
    let mut v1 = Router::new();
    for (_, path, route) in v1_routes() {
        v1 = v1.route(path, route);
    }
    let v1 = v1
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .route_layer(axum::middleware::from_fn(crate::auth::refuse_cross_site));
    let mut open = Router::new();
    for (_, path, route) in open_routes() {
        open = open.route(path, route);
    }
    let body_limit = state.inner.options.body_limit;
    open.merge(v1)
        .merge(crate::dashboard::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::refuse_foreign_host,
        ))
        .layer(axum::middleware::from_fn(log_request))
        .layer(axum::middleware::from_fn(
            crate::dashboard::security_headers,
        ))
        .with_state(state)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route for {method} {} (see /openapi.json)",
        uri.path()
    ))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {} (see /openapi.json)",
            uri.path()
        ),
    )
}

fn job_response(status: StatusCode, wire: JobWire<'_>) -> Response {
    (status, Json(wire)).into_response()
}

/// A well-formed W3C `traceparent` header becomes the job's `meta.traceparent` unless the body
/// gave one, so the run continues the caller's trace (a malformed one is ignored, as W3C asks).
fn carry_traceparent(headers: &axum::http::HeaderMap, job: &mut spooler::NewJob) {
    use spooler::core::{TRACEPARENT, is_traceparent};
    if job.meta.contains_key(TRACEPARENT) {
        return;
    }
    if let Some(tp) = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .filter(|t| is_traceparent(t))
    {
        job.meta.insert(TRACEPARENT.into(), tp.into());
    }
}

/// `POST /v1/jobs`: 201 with the new job; 200 with the existing one (and `"duplicate": true`)
/// when `unique_key` matched an unfinished job.
async fn enqueue(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let now = state.inner.store.clock().now();
    let mut job = parse_enqueue(&body, "", now)?;
    carry_traceparent(&headers, &mut job);
    check_builtin(&state, &job, "")?;
    let inserted = state.inner.client.enqueue_new(job).await?;
    let status = if inserted.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(job_response(
        status,
        JobWire::inserted(&inserted.job, inserted.duplicate),
    ))
}

/// `POST /v1/jobs/batch` with `{"jobs": [...]}`: all inserted in one transaction, or none.
async fn enqueue_batch(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let limit = state.inner.options.batch_limit;
    let Some(obj) = body.as_object() else {
        return Err(ApiError::invalid(
            "jobs",
            "request body must be an object like {\"jobs\": [{\"kind\": \"noop\"}]}",
        ));
    };
    if let Some(key) = obj.keys().find(|k| k.as_str() != "jobs") {
        return Err(ApiError::invalid(
            key.clone(),
            format!("unknown field \"{key}\" (accepted: jobs)"),
        ));
    }
    let items = match obj.get("jobs") {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ApiError::invalid(
                "jobs",
                format!(
                    "jobs must be an array, not {}",
                    crate::wire::type_name(other)
                ),
            ));
        }
        None => return Err(ApiError::invalid("jobs", "jobs is required")),
    };
    if items.len() > limit {
        return Err(ApiError::too_large(format!(
            "a batch holds at most {limit} jobs; this one has {} (split it)",
            items.len()
        ))
        .field("jobs")
        .with("limit", limit.into()));
    }
    let now = state.inner.store.clock().now();
    let jobs = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let prefix = format!("jobs[{i}].");
            let mut job = parse_enqueue(item, &prefix, now)?;
            carry_traceparent(&headers, &mut job);
            check_builtin(&state, &job, &prefix)?;
            Ok(job)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let inserted = state.inner.client.enqueue_many(jobs).await?;
    let wires: Vec<JobWire<'_>> = inserted
        .iter()
        .map(|i| JobWire::inserted(&i.job, i.duplicate))
        .collect();
    Ok((StatusCode::CREATED, Json(json!({ "jobs": wires }))).into_response())
}

/// A built-in kind's arguments checked before anything is written (see
/// [`crate::kinds::check_args`]): a mistake is a 422 naming `args`.
fn check_builtin(state: &AppState, job: &spooler::NewJob, prefix: &str) -> Result<(), ApiError> {
    let options = &state.inner.options;
    if !options.check_builtin_args {
        return Ok(());
    }
    crate::kinds::check_args(&job.kind, &job.args, &options.file_allow, &options.net)
        .map_err(|message| ApiError::invalid(format!("{prefix}args"), message))
}

/// `GET /v1/jobs/{id}[?wait=30s]`: with `wait`, answers as soon as the job is finished, or with
/// the job as it is when the wait (capped at `max_wait`) ends or the server begins to shut down.
async fn get_job(
    State(state): State<AppState>,
    JobIdPath(id): JobIdPath,
    params: Params,
) -> Result<Response, ApiError> {
    params.only(&["wait"])?;
    let wait = match params.get("wait") {
        Some(text) => parse_duration(text)
            .map_err(|e| ApiError::bad_param("wait", format!("wait: {e}")))?
            .min(state.inner.options.max_wait),
        None => Duration::ZERO,
    };
    // A shutting-down server answers open long polls at once rather than hold up its exit.
    let mut stopping = state.inner.stopping.subscribe();
    let stop = async move {
        while !*stopping.borrow_and_update() {
            if stopping.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let job = state.inner.client.wait_or(id, wait, stop).await?;
    Ok(job_response(StatusCode::OK, JobWire::new(&job)))
}

/// `GET /v1/jobs?queue=&state=&kind=&limit=&cursor=`: newest first; `next_cursor` fetches the
/// next page, `null` on the last.
async fn list_jobs(State(state): State<AppState>, params: Params) -> Result<Response, ApiError> {
    params.only(&["queue", "state", "kind", "limit", "cursor"])?;
    let job_state = params
        .get("state")
        .map(|s| {
            s.parse::<JobState>().map_err(|e| {
                ApiError::bad_param("state", e).with(
                    "valid",
                    json!(JobState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
                )
            })
        })
        .transpose()?;
    let limit = match params.get("limit") {
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_param(
                    "limit",
                    format!("limit must be an integer from 1 to 1000, not \"{text}\""),
                ));
            }
        },
        None => 100,
    };
    let before_id = params
        .get("cursor")
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                ApiError::bad_param(
                    "cursor",
                    format!("invalid cursor \"{c}\" (use the next_cursor of the previous page)"),
                )
            })
        })
        .transpose()?;
    for name in ["queue", "kind"] {
        name_param(name, params.get(name))?;
    }
    let list = JobList {
        queue: params.get("queue").map(str::to_string),
        state: job_state,
        kind: params.get("kind").map(str::to_string),
        limit,
        before_id,
        after_id: None,
    };
    let (jobs, next) = state.inner.client.list(&list).await?;
    let next_cursor = next.map(|id| id.to_string());
    let wires: Vec<JobWire<'_>> = jobs.iter().map(JobWire::new).collect();
    Ok(Json(json!({ "jobs": wires, "next_cursor": next_cursor })).into_response())
}

async fn cancel_job(
    State(state): State<AppState>,
    JobIdPath(id): JobIdPath,
) -> Result<Response, ApiError> {
    let job = state.inner.client.cancel(id).await?;
    Ok(job_response(StatusCode::OK, JobWire::new(&job)))
}

async fn retry_job(
    State(state): State<AppState>,
    JobIdPath(id): JobIdPath,
) -> Result<Response, ApiError> {
    let job = state.inner.client.retry(id).await?;
    Ok(job_response(StatusCode::OK, JobWire::new(&job)))
}

async fn delete_job(
    State(state): State<AppState>,
    JobIdPath(id): JobIdPath,
) -> Result<Response, ApiError> {
    let job = state.inner.client.delete(id).await?;
    Ok(job_response(StatusCode::OK, JobWire::new(&job)))
}

/// The queues the store knows, plus configured queues that hold no jobs yet.
/// Their counts are exact, or on a store where counting is expensive the last exact count
/// ([`crate::counts`]), as `counted` says.
pub(crate) async fn queues_with_configured(
    state: &AppState,
) -> Result<(Vec<QueueInfo>, crate::counts::Counted), ApiError> {
    let counted = crate::counts::queues(state).await?;
    let mut queues = counted.queues.as_ref().clone();
    for name in &state.inner.options.queues {
        if !queues.iter().any(|q| &q.name == name) {
            queues.push(QueueInfo {
                name: name.clone(),
                paused: false,
                counts: StateCounts::default(),
                oldest_available_at: None,
            });
        }
    }
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((queues, counted))
}

/// `GET /v1/queues`.
async fn list_queues(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (queues, counted) = queues_with_configured(&state).await?;
    let settings = state.inner.store.queue_settings().await?;
    let now = state.inner.store.clock().now();
    let list: Vec<Value> = queues
        .iter()
        .map(|q| {
            let configured = state.inner.options.queues.contains(&q.name);
            let own = settings.iter().find(|s| s.queue == q.name);
            crate::wire::queue_json(q, own, now, Some(configured))
        })
        .collect();
    Ok(Json(json!({
        "queues": list,
        "counted_at": counted.at,
        "counts": if counted.cached { "cached" } else { "exact" },
    }))
    .into_response())
}

/// A queue the server knows: configured, or holding jobs or a pause flag in the store. Pausing
/// or resuming any other name is a 404, so that a client cannot grow the store's queue table (and
/// `/metrics`) with names of its choosing.
pub(crate) async fn known_queue(state: &AppState, name: &str) -> Result<(), ApiError> {
    if state.inner.options.queues.contains(name)
        || state
            .inner
            .client
            .queues()
            .await?
            .iter()
            .any(|q| q.name == name)
    {
        return Ok(());
    }
    Err(ApiError::not_found(format!(
        "queue \"{name}\" has no jobs and is not configured (see GET /v1/queues)"
    ))
    .field("name"))
}

async fn pause_queue(
    State(state): State<AppState>,
    NamePath(name): NamePath,
) -> Result<Response, ApiError> {
    known_queue(&state, &name).await?;
    state.inner.client.pause(&name).await?;
    crate::counts::forget(&state);
    Ok(Json(json!({ "name": name, "paused": true })).into_response())
}

async fn resume_queue(
    State(state): State<AppState>,
    NamePath(name): NamePath,
) -> Result<Response, ApiError> {
    known_queue(&state, &name).await?;
    state.inner.client.resume(&name).await?;
    crate::counts::forget(&state);
    Ok(Json(json!({ "name": name, "paused": false })).into_response())
}

/// `GET /v1/schedules`: every schedule with its cadence in words, next runs and last run.
async fn list_schedules(State(state): State<AppState>) -> Result<Response, ApiError> {
    let schedules = state.inner.client.schedules().await?;
    let list: Vec<Value> = schedules.iter().map(crate::wire::schedule_json).collect();
    Ok(Json(json!({ "schedules": list })).into_response())
}

/// `POST /v1/schedules/{name}/run`: enqueues the schedule's job now; its next run stays.
async fn run_schedule(
    State(state): State<AppState>,
    NamePath(name): NamePath,
) -> Result<Response, ApiError> {
    let inserted = state.inner.client.run_schedule(&name).await?;
    let body = crate::wire::JobWire::inserted(&inserted.job, inserted.duplicate);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `POST /v1/schedules/{name}/pause`.
async fn pause_schedule(
    State(state): State<AppState>,
    NamePath(name): NamePath,
) -> Result<Response, ApiError> {
    let view = state.inner.client.pause_schedule(&name).await?;
    Ok(Json(crate::wire::schedule_json(&view)).into_response())
}

/// `POST /v1/schedules/{name}/resume`: ticks again from its next tick after now.
async fn resume_schedule(
    State(state): State<AppState>,
    NamePath(name): NamePath,
) -> Result<Response, ApiError> {
    let view = state.inner.client.resume_schedule(&name).await?;
    Ok(Json(crate::wire::schedule_json(&view)).into_response())
}

/// `GET /v1/workers`: workers that sent a heartbeat in the last minute (the live ones).
async fn list_workers(State(state): State<AppState>) -> Result<Response, ApiError> {
    let window = chrono::TimeDelta::from_std(spooler::core::store::LIVE_WORKER_WITHIN)
        .unwrap_or(chrono::TimeDelta::MAX);
    let since = state.inner.store.clock().now() - window;
    let workers = state.inner.store.worker_list(since).await?;
    Ok(Json(json!({ "workers": workers })).into_response())
}

/// `GET /v1/stats?granularity=minute|hour|day&queue=&kind=`: what finished per bucket over the
/// span the granularity shows, and run and wait percentiles per queue and kind.
async fn get_stats(State(state): State<AppState>, params: Params) -> Result<Response, ApiError> {
    params.only(&["granularity", "queue", "kind"])?;
    let granularity = read_granularity(params.get("granularity"))?;
    for name in ["queue", "kind"] {
        name_param(name, params.get(name))?;
    }
    let stats = state
        .inner
        .client
        .stats(granularity, params.get("queue"), params.get("kind"))
        .await?;
    Ok(Json(crate::wire::stats_json(&stats)).into_response())
}

/// A queue or kind query parameter, checked by the one rule for names (`wire::validate_name`):
/// a 400 naming the parameter when it breaks it.
pub(crate) fn name_param<'a>(
    name: &'static str,
    value: Option<&'a str>,
) -> Result<Option<&'a str>, ApiError> {
    if let Some(v) = value {
        crate::wire::validate_name(v)
            .map_err(|e| ApiError::bad_param(name, format!("{name}: {e}")))?;
    }
    Ok(value)
}

/// A `granularity` parameter (`minute` when left out), or a 400 naming the valid ones.
pub(crate) fn read_granularity(
    text: Option<&str>,
) -> Result<spooler::core::stats::Granularity, ApiError> {
    use spooler::core::stats::Granularity;
    let text = text.unwrap_or("minute");
    Granularity::parse(text).ok_or_else(|| {
        ApiError::bad_param(
            "granularity",
            format!("granularity must be minute, hour or day, not \"{text}\""),
        )
        .with("valid", json!(Granularity::ALL.map(|g| g.as_str())))
    })
}

/// `GET /healthz`: 200 when the store answers within 2 s, else 503.
async fn healthz(State(state): State<AppState>) -> Response {
    let store = &state.inner.store;
    let probe = tokio::time::timeout(Duration::from_secs(2), store.job_get(0)).await;
    let (status, body) = match probe {
        Ok(Ok(_)) => (
            StatusCode::OK,
            json!({"status": "ok", "store": store.backend()}),
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "health check: store error");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "unavailable", "store": store.backend(), "error": format!("store error: {e}")}),
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable", "store": store.backend(), "error": "store did not answer within 2s"}),
        ),
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus exposition text.
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (queues, _) = queues_with_configured(&state).await?;
    let now = state.inner.store.clock().now();
    let since = now - chrono::TimeDelta::seconds(60);
    let live = state.inner.store.worker_list(since).await?.len();
    let text = crate::metrics::render(state.inner.metrics.as_ref(), &queues, live, now);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::OPENAPI_JSON,
    )
        .into_response()
}
