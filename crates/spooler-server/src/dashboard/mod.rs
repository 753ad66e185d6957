//! The dashboard: server-rendered pages, readable with JavaScript off, at `/` (queues), `/jobs`,
//! `/jobs/{id}`, `/queues/{name}`, `/schedules`, `/workers` and `/routes`, with its actions as
//! forms (retry, cancel, delete, pause and resume a queue, run, pause and resume a schedule). It
//! reads and acts through the same `Client` and rules as the API; every action is guarded by a
//! CSRF field and the cross-site check, and written to the audit log. Links are relative to a
//! `<base href>` taken from the request, so the pages work wherever the router is nested.

mod cache;
mod pages;
mod session;

pub(crate) use cache::SnapshotCache;

use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::extract::{FromRequestParts, OriginalUri, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use pages::{Frame, JobsView, QueueLine, RouteLine};
use serde::Deserialize;
use spooler::core::store::{LIVE_WORKER_WITHIN, queues_without_workers};
use spooler::{JobList, JobState};
use std::collections::HashMap;

const STYLESHEET: &str = include_str!("../static/dashboard.css");
const SCRIPT: &str = include_str!("../static/dashboard.js");

/// The dashboard's routes but `/` (which the API's route table holds, documented), merged into
/// the router by [`crate::router`].
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/jobs", get(jobs))
        .route("/jobs/{id}", get(job))
        .route("/jobs/{id}/{action}", post(job_action))
        .route("/queues/{name}", get(queue))
        .route("/queues/{name}/{action}", post(queue_action))
        .route("/schedules", get(schedules))
        .route("/schedules/{name}/{action}", post(schedule_action))
        .route("/failed", get(failed_groups))
        .route("/groups/{action}", post(group_action))
        .route("/operations", post(start_operation))
        .route("/operations/new", get(confirm_operation))
        .route("/operations/{id}", get(operation))
        .route("/operations/{id}/cancel", post(cancel_operation))
        .route("/workers", get(workers))
        .route("/routes", get(routes_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/assets/dashboard.css", get(stylesheet))
        .route("/assets/dashboard.js", get(script))
        .route_layer(axum::middleware::from_fn(crate::auth::refuse_cross_site))
}

/// Headers on every response of the server: no framing, no sniffing, and for pages a content
/// security policy that allows only the dashboard's own script and stylesheet (no inline script).
pub(crate) async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'self'",
        ),
    );
    response
}

/// What each page knows of its request: where the dashboard is mounted, and whether the caller
/// may see it.
pub(crate) struct Page {
    /// Ends in `/`: `/` when served at the root, `/admin/` when nested under `/admin`.
    base: String,
    /// Whether the caller may see the pages.
    allowed: bool,
    /// Whether the caller may act (not the read-only token).
    can_act: bool,
}

impl FromRequestParts<AppState> for Page {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let inner = parts.uri.path().to_string();
        let original = parts
            .extensions
            .get::<OriginalUri>()
            .map(|o| o.0.path().to_string())
            .unwrap_or_else(|| inner.clone());
        // Nested under /admin, the overview is /admin (the nested router's `/`).
        let prefix = match original.strip_suffix(inner.as_str()) {
            Some(prefix) => prefix,
            None if inner == "/" => original.as_str(),
            None => "",
        }
        .trim_end_matches('/');
        let access = session::access(state, &parts.headers);
        Ok(Page {
            base: format!("{prefix}/"),
            allowed: access != session::Access::None,
            can_act: access == session::Access::Full,
        })
    }
}

impl Page {
    /// The frame of a page, or the way to the login form.
    fn frame<'a>(
        &'a self,
        state: &'a AppState,
        csrf: &'a str,
        store: &'a str,
        notice: Option<&'a str>,
    ) -> Frame<'a> {
        Frame {
            base: &self.base,
            home: self.home(),
            csrf,
            can_act: self.can_act,
            logout: state.inner.options.token.is_some(),
            notice,
            store,
        }
    }

    /// The overview's path: `/`, or the prefix itself (`/admin`, which a nested router serves
    /// where it would not serve `/admin/`).
    fn home(&self) -> &str {
        match self.base.trim_end_matches('/') {
            "" => "/",
            prefix => prefix,
        }
    }

    /// The id a path segment names, or why it is none (`what`: "a job", "an operation").
    fn id_of(text: &str, what: &str) -> Result<i64, ApiError> {
        text.parse::<i64>()
            .map_err(|_| ApiError::not_found(format!("\"{text}\" is not {what} id")))
    }

    fn to_login(&self) -> Response {
        Redirect::to(&format!("{}login", self.base)).into_response()
    }

    /// An error as a page: the caller's mistakes keep their 4xx, faults are logged and generic.
    fn error(&self, e: ApiError) -> Response {
        let status = e.status();
        let message = if status.is_server_error() {
            tracing::warn!(error = %e, "dashboard page failed");
            "the store did not answer as expected; the server log says more".to_string()
        } else {
            e.message().to_string()
        };
        (
            status,
            html(pages::error(&self.base, self.home(), &message)),
        )
            .into_response()
    }
}

fn html(markup: Markup) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::response::Html(markup.into_string()),
    )
        .into_response()
}

/// The line an action's `done` parameter names (with the counts of a group action); unknown
/// values show nothing.
fn notice(query: &HashMap<String, String>) -> Option<String> {
    let number = |key: &str| {
        query
            .get(key)
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    };
    Some(match query.get("done")?.as_str() {
        "group" => {
            return Some(format!(
                "Affected {}, skipped {} (no longer in a state the action applies to, or gone).",
                number("affected"),
                number("skipped")
            ));
        }
        "retried" => "Retried: the job is available again.",
        "cancelled" => "Cancelled (a running job stops at its next check).",
        "deleted" => "Deleted.",
        "paused" => "Paused: no job is claimed from this queue until it is resumed.",
        "resumed" => "Resumed.",
        "run" => "Enqueued the schedule's job now; its next run did not move.",
        "schedule-paused" => "Schedule paused.",
        "schedule-resumed" => "Schedule resumed.",
        "cancelled-operation" => "Operation cancelled: what it did so far stays done.",
        _ => return None,
    }
    .to_string())
}

/// Every queue's line: counts, the oldest wait, whether a live worker works it, its routes; from
/// the shared snapshot.
fn queue_lines(snapshot: &cache::Snapshot) -> Vec<QueueLineData> {
    let unworked = queues_without_workers(&snapshot.queues, &snapshot.live);
    snapshot
        .queues
        .iter()
        .map(|q| QueueLineData {
            oldest_age_s: crate::metrics::oldest_age_seconds(q, snapshot.now).map(|s| s as i64),
            unworked: unworked.contains(&q.name),
            routes: snapshot
                .settings
                .iter()
                .find(|s| s.queue == q.name)
                .map(|s| route_targets(&s.routes))
                .unwrap_or_default(),
        })
        .collect()
}

struct QueueLineData {
    oldest_age_s: Option<i64>,
    unworked: bool,
    routes: Vec<String>,
}

fn route_targets(routes: &spooler::core::route::Routes) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(r) = &routes.on_failure {
        out.push(format!("failed → {}", r.queue));
    }
    if let Some(r) = &routes.on_success {
        out.push(format!("completed → {}", r.queue));
    }
    for (kind, k) in &routes.kinds {
        if let Some(r) = &k.on_failure {
            out.push(format!("{kind} failed → {}", r.queue));
        }
        if let Some(r) = &k.on_success {
            out.push(format!("{kind} completed → {}", r.queue));
        }
    }
    out
}

/// `GET /`: the queues.
pub(crate) async fn overview(
    State(state): State<AppState>,
    page: Page,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !page.allowed {
        return page.to_login();
    }
    let snapshot = match cache::snapshot(&state).await {
        Ok(snapshot) => snapshot,
        Err(e) => return page.error(e),
    };
    let live = snapshot.live.len();
    let lines: Vec<QueueLine<'_>> = snapshot
        .queues
        .iter()
        .zip(queue_lines(&snapshot))
        .map(|(info, d)| QueueLine {
            info,
            oldest_age_s: d.oldest_age_s,
            unworked: d.unworked,
            routes: d.routes,
        })
        .collect();
    let (csrf, store) = (session::csrf(&state), state.inner.store.describe());
    html(pages::overview(
        &page.frame(&state, &csrf, &store, notice(&query).as_deref()),
        &lines,
        live,
        (snapshot.seq, snapshot.counted_at, snapshot.counts_cached),
    ))
}

/// `GET /jobs?queue=&state=&kind=&cursor=`.
async fn jobs(
    State(state): State<AppState>,
    page: Page,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !page.allowed {
        return page.to_login();
    }
    let get = |k: &str| query.get(k).map(|v| v.trim()).unwrap_or_default();
    let job_state = match get("state") {
        "" => None,
        s => match s.parse::<JobState>() {
            Ok(s) => Some(s),
            Err(e) => return page.error(ApiError::invalid("state", e)),
        },
    };
    let cursor = match get("cursor") {
        "" => None,
        c => match c.parse::<i64>() {
            Ok(c) => Some(c),
            Err(_) => {
                return page.error(ApiError::invalid(
                    "cursor",
                    format!("cursor \"{c}\" is not a job id"),
                ));
            }
        },
    };
    let narrowing = match Narrowing::read(&query) {
        Ok(n) => n,
        Err(e) => return page.error(e),
    };
    let list = JobList {
        queue: Some(get("queue").to_string()).filter(|q| !q.is_empty()),
        state: job_state,
        kind: Some(get("kind").to_string()).filter(|k| !k.is_empty()),
        limit: PAGE,
        before_id: cursor,
    };
    let (found, next, searched) = if narrowing.is_empty() {
        match state.inner.client.list(&list).await {
            Ok((found, next)) => (found, next, None),
            Err(e) => return page.error(e.into()),
        }
    } else {
        match narrowing.search(&state, list.clone()).await {
            Ok(found) => found,
            Err(e) => return page.error(e),
        }
    };
    let (csrf, store) = (session::csrf(&state), state.inner.store.describe());
    let view = JobsView {
        queue: get("queue"),
        state: get("state"),
        kind: get("kind"),
        tag: get("tag"),
        after: narrowing.after.map(|t| t.to_rfc3339()).unwrap_or_default(),
        before: narrowing.before.map(|t| t.to_rfc3339()).unwrap_or_default(),
        args: get("args"),
        jobs: &found,
        next,
        // An action on every matching job is offered unless args narrow the list, which no
        // operation's filter can express.
        bulk: narrowing.args.is_none() && !found.is_empty(),
        searched,
    };
    html(pages::jobs(
        &page.frame(&state, &csrf, &store, notice(&query).as_deref()),
        &view,
    ))
}

/// Jobs shown per page.
const PAGE: u32 = 50;

/// How many of the newest jobs (of the queue, state and kind asked) an args, tag or time search
/// reads per page before it says where it stopped.
const SEARCH_WINDOW: usize = 10_000;

/// The filters of `/jobs` the store's listing does not take: matched in Rust, by the same rules
/// as everywhere ([`spooler::core::json_contains`] for args), over a bounded window of the newest
/// jobs that match the rest.
struct Narrowing {
    tag: Option<String>,
    after: Option<chrono::DateTime<chrono::Utc>>,
    before: Option<chrono::DateTime<chrono::Utc>>,
    args: Option<serde_json::Value>,
}

impl Narrowing {
    fn read(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let get = |k: &str| query.get(k).map(|v| v.trim()).unwrap_or_default();
        let time = |field: &'static str| -> Result<_, ApiError> {
            match get(field) {
                "" => Ok(None),
                text => parse_time(text).map(Some).ok_or_else(|| {
                    ApiError::invalid(
                        field,
                        format!("{field}: \"{text}\" is not a time like 2026-01-31T12:00 (UTC) or 2026-01-31T12:00:00+01:00"),
                    )
                }),
            }
        };
        let args = match get("args") {
            "" => None,
            text => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(v @ serde_json::Value::Object(_)) => Some(v),
                _ => {
                    return Err(ApiError::invalid(
                        "args",
                        format!(
                            "args: {text:?} is not a JSON object like {{\"to\": \"a@example.com\"}}"
                        ),
                    ));
                }
            },
        };
        Ok(Self {
            tag: Some(get("tag").to_string()).filter(|t| !t.is_empty()),
            after: time("after")?,
            before: time("before")?,
            args,
        })
    }

    fn is_empty(&self) -> bool {
        self.tag.is_none() && self.after.is_none() && self.before.is_none() && self.args.is_none()
    }

    fn matches(&self, j: &spooler::JobRow) -> bool {
        self.tag.as_ref().is_none_or(|t| j.tags.contains(t))
            && self.after.is_none_or(|a| j.created_at >= a)
            && self.before.is_none_or(|b| j.created_at < b)
            && self
                .args
                .as_ref()
                .is_none_or(|want| spooler::core::json_contains(&j.args, want))
    }

    /// Up to a page of matches, reading at most [`SEARCH_WINDOW`] jobs from the cursor on; the
    /// cursor to go on from (the last job read) when more remain, and how many were read.
    async fn search(
        &self,
        state: &AppState,
        mut list: JobList,
    ) -> Result<(Vec<spooler::JobRow>, Option<i64>, Option<usize>), ApiError> {
        let mut found = Vec::new();
        let mut read = 0;
        loop {
            list.limit = 1000;
            let (jobs, next) = state.inner.client.list(&list).await?;
            for j in jobs {
                read += 1;
                list.before_id = Some(j.id);
                if self.matches(&j) {
                    found.push(j);
                    if found.len() == PAGE as usize {
                        return Ok((found, list.before_id, Some(read)));
                    }
                }
            }
            if next.is_none() {
                return Ok((found, None, Some(read)));
            }
            if read >= SEARCH_WINDOW {
                return Ok((found, list.before_id, Some(read)));
            }
        }
    }
}

/// RFC 3339, or a `datetime-local` value (`2026-01-31T12:00`, seconds optional) read as UTC.
fn parse_time(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| t.and_utc())
}

/// `GET /jobs/{id}`.
async fn job(
    State(state): State<AppState>,
    page: Page,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !page.allowed {
        return page.to_login();
    }
    let id = match Page::id_of(&id, "a job") {
        Ok(id) => id,
        Err(e) => return page.error(e),
    };
    let job = match state.inner.client.status(id).await {
        Ok(job) => job,
        Err(e) => return page.error(e.into()),
    };
    // Where its routes sent it next.
    let routed_to = match state.inner.store.job_routed_from(id, 20).await {
        Ok(next) => next,
        Err(e) => return page.error(e.into()),
    };
    let (csrf, store) = (session::csrf(&state), state.inner.store.describe());
    let now = state.inner.store.clock().now();
    html(pages::job(
        &page.frame(&state, &csrf, &store, notice(&query).as_deref()),
        &job,
        now,
        &routed_to,
    ))
}

/// `GET /queues/{name}`.
async fn queue(
    State(state): State<AppState>,
    page: Page,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !page.allowed {
        return page.to_login();
    }
    let snapshot = match cache::snapshot(&state).await {
        Ok(snapshot) => snapshot,
        Err(e) => return page.error(e),
    };
    let lines = queue_lines(&snapshot);
    let Some((info, d)) = snapshot
        .queues
        .iter()
        .zip(lines)
        .find(|(q, _)| q.name == name)
    else {
        return page.error(ApiError::not_found(format!(
            "queue \"{name}\" has no jobs and is not configured"
        )));
    };
    let settings = snapshot
        .settings
        .iter()
        .find(|s| s.queue == name)
        .and_then(|s| serde_json::to_value(s).ok());
    let recent = JobList {
        queue: Some(name.clone()),
        limit: 20,
        ..Default::default()
    };
    let recent = match state.inner.client.list(&recent).await {
        Ok((jobs, _)) => jobs,
        Err(e) => return page.error(e.into()),
    };
    let line = QueueLine {
        info,
        oldest_age_s: d.oldest_age_s,
        unworked: d.unworked,
        routes: d.routes,
    };
    let (csrf, store) = (session::csrf(&state), state.inner.store.describe());
    html(pages::queue(
        &page.frame(&state, &csrf, &store, notice(&query).as_deref()),
        &line,
        settings.as_ref(),
        &recent,
    ))
}

/// `GET /schedules`.
async fn schedules(
    State(state): State<AppState>,
    page: Page,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !page.allowed {
        return page.to_login();
    }
    let list = match state.inner.client.schedules().await {
        Ok(list) => list,
        Err(e) => return page.error(e.into()),
    };
    let (csrf, store) = (session::csrf(&state), state.inner.store.describe());
    html(pages::schedules(
        &page.frame(&state, &csrf, &store, notice(&query).as_deref()),
        &list,
    ))
}

/// `GET /workers`: every worker seen in the last ten minutes; those past the live window are
/// highlighted as stale.
async fn workers(State(state): State<AppState>, page: Page) -> Response {
    if !page.allowed {
        return page.to_login();
    }
    let now = state.inner.store.clock().now();
    let since = now - chrono::TimeDelta::minutes(10);
    let list = match state.inner.store.worker_list(since).await {
        Ok(list) => list,
        Err(e) => return page.error(e.into()),
    };
    // What each runs now: the running jobs (a partial index), at most a page of them.
    let running = JobList {
        state: Some(JobState::Running),
        limit: 1000,
        ..Default::default()
    };
    let running = match state.inner.client.list(&running).await {
        Ok((jobs, _)) => jobs,
        Err(e) => return page.error(e.into()),
    };
    let (csrf, store) = (session::csrf(&state), state.inner.store.describe());
    html(pages::workers(
        &page.frame(&state, &csrf, &store, None),
        &list,
        &running,
        now,
        LIVE_WORKER_WITHIN.as_secs() as i64,
    ))
}

/// `GET /routes`: every stored route, by queue and kind.
async fn routes_page(State(state): State<AppState>, page: Page) -> Response {
    if !page.allowed {
        return page.to_login();
    }
    let settings = match state.inner.store.queue_settings().await {
        Ok(settings) => settings,
        Err(e) => return page.error(e.into()),
    };
    let mut lines = Vec::new();
    let to = |r: &spooler::core::route::Route| serde_json::to_value(r).unwrap_or_default();
    for s in &settings {
        let r = &s.routes;
        for (when, route) in [("failed", &r.on_failure), ("completed", &r.on_success)] {
            if let Some(route) = route {
                lines.push(RouteLine {
                    queue: s.queue.clone(),
                    kind: None,
                    when,
                    to: to(route),
                });
            }
        }
        for (kind, k) in &r.kinds {
            for (when, route) in [("failed", &k.on_failure), ("completed", &k.on_success)] {
                if let Some(route) = route {
                    lines.push(RouteLine {
                        queue: s.queue.clone(),
                        kind: Some(kind.clone()),
                        when,
                        to: to(route),
                    });
                }
            }
        }
    }
    let (csrf, store) = (session::csrf(&state), state.inner.store.describe());
    html(pages::routes(
        &page.frame(&state, &csrf, &store, None),
        &lines,
    ))
}

/// The fields of an action's form.
#[derive(Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
}

/// Checks an action's caller and CSRF field; the refusal as a page.
fn guard(state: &AppState, page: &Page, form: &ActionForm) -> Option<Response> {
    if !page.allowed {
        return Some(page.error(ApiError::unauthorized(
            "log in to act on jobs (the dashboard's session has ended)",
        )));
    }
    if !page.can_act {
        return Some(page.error(ApiError::new(
            StatusCode::FORBIDDEN,
            "the read-only token can see everything and change nothing: log in with the token to act",
        )));
    }
    if !session::csrf_ok(state, &form.csrf) {
        return Some(page.error(ApiError::new(
            StatusCode::FORBIDDEN,
            "the form's CSRF field is missing or stale: reload the page and try again",
        )));
    }
    None
}

/// Who acted, for the audit log.
fn actor(state: &AppState) -> &'static str {
    if state.inner.options.token.is_some() {
        "token"
    } else {
        "open dashboard"
    }
}

/// `POST /jobs/{id}/{retry|cancel|delete}`.
async fn job_action(
    State(state): State<AppState>,
    page: Page,
    Path((id, action)): Path<(String, String)>,
    axum::Form(form): axum::Form<ActionForm>,
) -> Response {
    if let Some(refused) = guard(&state, &page, &form) {
        return refused;
    }
    let id = match Page::id_of(&id, "a job") {
        Ok(id) => id,
        Err(e) => return page.error(e),
    };
    let client = &state.inner.client;
    let (result, done) = match action.as_str() {
        "retry" => (client.retry(id).await, "retried"),
        "cancel" => (client.cancel(id).await, "cancelled"),
        "delete" => (client.delete(id).await, "deleted"),
        other => {
            return page.error(ApiError::not_found(format!(
                "no action \"{other}\" on jobs (retry, cancel, delete)"
            )));
        }
    };
    match result {
        Ok(job) => {
            state.inner.dashboard_cache.invalidate();
            tracing::info!(target: "spooler_server::audit", who = actor(&state), action = %action, job = id, state = job.state.as_str(), affected = 1, "dashboard action");
            let to = if action == "delete" {
                format!("{}jobs?done=deleted", page.base)
            } else {
                format!("{}jobs/{id}?done={done}", page.base)
            };
            Redirect::to(&to).into_response()
        }
        Err(e) => {
            tracing::info!(target: "spooler_server::audit", who = actor(&state), action = %action, job = id, affected = 0, error = %e, "dashboard action refused");
            page.error(e.into())
        }
    }
}

/// `POST /queues/{name}/{pause|resume}`.
async fn queue_action(
    State(state): State<AppState>,
    page: Page,
    Path((name, action)): Path<(String, String)>,
    axum::Form(form): axum::Form<ActionForm>,
) -> Response {
    if let Some(refused) = guard(&state, &page, &form) {
        return refused;
    }
    if let Err(e) = crate::api::known_queue(&state, &name).await {
        return page.error(e);
    }
    let client = &state.inner.client;
    let (result, done) = match action.as_str() {
        "pause" => (client.pause(&name).await, "paused"),
        "resume" => (client.resume(&name).await, "resumed"),
        other => {
            return page.error(ApiError::not_found(format!(
                "no action \"{other}\" on queues (pause, resume)"
            )));
        }
    };
    if let Err(e) = result {
        return page.error(e.into());
    }
    crate::counts::forget(&state);
    state.inner.dashboard_cache.invalidate();
    tracing::info!(target: "spooler_server::audit", who = actor(&state), action = %action, queue = %name, affected = 1, "dashboard action");
    Redirect::to(&format!(
        "{}queues/{}?done={done}",
        page.base,
        pages::encode(&name)
    ))
    .into_response()
}

/// `POST /schedules/{name}/{run|pause|resume}`.
async fn schedule_action(
    State(state): State<AppState>,
    page: Page,
    Path((name, action)): Path<(String, String)>,
    axum::Form(form): axum::Form<ActionForm>,
) -> Response {
    if let Some(refused) = guard(&state, &page, &form) {
        return refused;
    }
    let client = &state.inner.client;
    let (result, done) = match action.as_str() {
        "run" => (client.run_schedule(&name).await.map(|_| ()), "run"),
        "pause" => (
            client.pause_schedule(&name).await.map(|_| ()),
            "schedule-paused",
        ),
        "resume" => (
            client.resume_schedule(&name).await.map(|_| ()),
            "schedule-resumed",
        ),
        other => {
            return page.error(ApiError::not_found(format!(
                "no action \"{other}\" on schedules (run, pause, resume)"
            )));
        }
    };
    if let Err(e) = result {
        return page.error(e.into());
    }
    state.inner.dashboard_cache.invalidate();
    tracing::info!(target: "spooler_server::audit", who = actor(&state), action = %action, schedule = %name, affected = 1, "dashboard action");
    Redirect::to(&format!("{}schedules?done={done}", page.base)).into_response()
}

/// `GET /login`.
async fn login_page(
    State(state): State<AppState>,
    page: Page,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if state.inner.options.token.is_none() {
        return Redirect::to(page.home()).into_response();
    }
    html(pages::login(
        &page.base,
        &session::csrf(&state),
        query.contains_key("failed"),
    ))
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

/// `POST /login`: the right token sets the session cookie.
async fn login(
    State(state): State<AppState>,
    page: Page,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let access = session::login_access(&state, form.token.trim());
    if !session::csrf_ok(&state, &form.csrf) || access == session::Access::None {
        tracing::info!(target: "spooler_server::audit", action = "login", ok = false, "dashboard login refused");
        return Redirect::to(&format!("{}login?failed", page.base)).into_response();
    }
    let read_only = access == session::Access::Read;
    tracing::info!(target: "spooler_server::audit", action = "login", ok = true, read_only, "dashboard login");
    let cookie = format!(
        "{}={}; Path={}; HttpOnly; SameSite=Strict; Max-Age={}",
        session::COOKIE,
        session::session_value(&state, access),
        page.base,
        session::SESSION_SECONDS
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to(page.home())).into_response()
}

/// `POST /logout`: the cookie is cleared.
async fn logout(
    State(state): State<AppState>,
    page: Page,
    axum::Form(form): axum::Form<ActionForm>,
) -> Response {
    if !session::csrf_ok(&state, &form.csrf) {
        return page.error(ApiError::new(
            StatusCode::FORBIDDEN,
            "the form's CSRF field is missing or stale",
        ));
    }
    let cookie = format!(
        "{}=; Path={}; HttpOnly; SameSite=Strict; Max-Age=0",
        session::COOKIE,
        page.base
    );
    (
        [(header::SET_COOKIE, cookie)],
        Redirect::to(&format!("{}login", page.base)),
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        STYLESHEET,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// How many of the newest failed jobs `/failed` groups.
const GROUP_WINDOW: u32 = 1000;

/// `GET /failed?queue=`: the newest failed jobs grouped by kind and first error line.
async fn failed_groups(
    State(state): State<AppState>,
    page: Page,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !page.allowed {
        return page.to_login();
    }
    let queue = query
        .get("queue")
        .map(|q| q.trim())
        .filter(|q| !q.is_empty());
    let mut jobs = Vec::new();
    let mut before_id = None;
    // Pages of at most 1,000 (the store's cap) until the window is full.
    while jobs.len() < GROUP_WINDOW as usize {
        let list = JobList {
            queue: queue.map(str::to_string),
            state: Some(JobState::Failed),
            limit: GROUP_WINDOW - jobs.len() as u32,
            before_id,
            ..Default::default()
        };
        let (found, next) = match state.inner.client.list(&list).await {
            Ok(found) => found,
            Err(e) => return page.error(e.into()),
        };
        jobs.extend(found);
        match next {
            Some(next) => before_id = Some(next),
            None => break,
        }
    }
    let windowed = jobs.len() == GROUP_WINDOW as usize;
    let groups = pages::group_failures(&jobs);
    let (csrf, store) = (session::csrf(&state), state.inner.store.describe());
    html(pages::failed_groups(
        &page.frame(&state, &csrf, &store, notice(&query).as_deref()),
        queue.unwrap_or_default(),
        &groups,
        jobs.len(),
        windowed,
    ))
}

#[derive(Deserialize)]
struct GroupForm {
    #[serde(default)]
    csrf: String,
    /// Job ids, comma-separated.
    #[serde(default)]
    ids: String,
}

/// `POST /groups/{retry|delete}`: the jobs of one group of failures, each as its own action;
/// answers how many were affected and how many skipped (no longer failed, or gone).
async fn group_action(
    State(state): State<AppState>,
    page: Page,
    Path(action): Path<String>,
    axum::Form(form): axum::Form<GroupForm>,
) -> Response {
    if let Some(refused) = guard(
        &state,
        &page,
        &ActionForm {
            csrf: form.csrf.clone(),
        },
    ) {
        return refused;
    }
    let ids: Vec<i64> = form
        .ids
        .split(',')
        .filter_map(|id| id.trim().parse().ok())
        .take(GROUP_WINDOW as usize)
        .collect();
    let client = &state.inner.client;
    let (mut affected, mut skipped) = (0u32, 0u32);
    for &id in &ids {
        let done = match action.as_str() {
            "retry" => client.retry(id).await.map(|_| ()),
            "delete" => client.delete(id).await.map(|_| ()),
            other => {
                return page.error(ApiError::not_found(format!(
                    "no action \"{other}\" on a group (retry, delete)"
                )));
            }
        };
        match done {
            Ok(()) => affected += 1,
            Err(_) => skipped += 1,
        }
    }
    state.inner.dashboard_cache.invalidate();
    tracing::info!(target: "spooler_server::audit", who = actor(&state), action = %action, jobs = ids.len(), affected, skipped, "dashboard group action");
    Redirect::to(&format!(
        "{}failed?affected={affected}&skipped={skipped}&done=group",
        page.base
    ))
    .into_response()
}

#[derive(Deserialize)]
struct OperationForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    before: String,
}

/// The operation a form's fields describe, read by the same rules as `POST /v1/jobs/bulk`.
fn operation_request(form: &OperationForm) -> Result<crate::bulk::BulkRequest, ApiError> {
    let mut filter = serde_json::Map::new();
    for (key, value) in [
        ("queue", &form.queue),
        ("state", &form.state),
        ("kind", &form.kind),
        ("tag", &form.tag),
        ("after", &form.after),
        ("before", &form.before),
    ] {
        if !value.trim().is_empty() {
            filter.insert(key.into(), value.trim().into());
        }
    }
    crate::bulk::parse_bulk(&serde_json::json!({"action": form.action, "filter": filter}))
}

/// `GET /operations/new?action=&queue=&state=…`: how many jobs the operation would cover now (a
/// dry run), and the form that starts it.
async fn confirm_operation(
    State(state): State<AppState>,
    page: Page,
    Query(form): Query<OperationForm>,
) -> Response {
    if !page.allowed {
        return page.to_login();
    }
    let request = match operation_request(&form) {
        Ok(request) => request,
        Err(e) => return page.error(e),
    };
    let matched = match state.inner.client.count(&request.filter).await {
        Ok(n) => n,
        Err(e) => return page.error(e.into()),
    };
    let (csrf, store) = (session::csrf(&state), state.inner.store.describe());
    html(pages::confirm_operation(
        &page.frame(&state, &csrf, &store, None),
        &request,
        matched,
    ))
}

/// `POST /operations`: an operation by filter (retry, cancel or delete every matching job),
/// durable and in chunks, as `POST /v1/jobs/bulk` starts it; then its progress page.
async fn start_operation(
    State(state): State<AppState>,
    page: Page,
    axum::Form(form): axum::Form<OperationForm>,
) -> Response {
    if let Some(refused) = guard(
        &state,
        &page,
        &ActionForm {
            csrf: form.csrf.clone(),
        },
    ) {
        return refused;
    }
    let request = match operation_request(&form) {
        Ok(request) => request,
        Err(e) => return page.error(e),
    };
    match state
        .inner
        .client
        .bulk(request.action, request.filter)
        .await
    {
        Ok(op) => {
            state.inner.dashboard_cache.invalidate();
            tracing::info!(target: "spooler_server::audit", who = actor(&state), action = %op.action, operation = op.id, filter = %serde_json::to_string(&op.filter).unwrap_or_default(), matched = op.matched, "dashboard operation started");
            Redirect::to(&format!("{}operations/{}", page.base, op.id)).into_response()
        }
        Err(e) => page.error(e.into()),
    }
}

/// `GET /operations/{id}`: its progress.
async fn operation(
    State(state): State<AppState>,
    page: Page,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !page.allowed {
        return page.to_login();
    }
    let id = match Page::id_of(&id, "an operation") {
        Ok(id) => id,
        Err(e) => return page.error(e),
    };
    let op = match state.inner.client.operation(id).await {
        Ok(op) => op,
        Err(e) => return page.error(e.into()),
    };
    let (csrf, store) = (session::csrf(&state), state.inner.store.describe());
    html(pages::operation(
        &page.frame(&state, &csrf, &store, notice(&query).as_deref()),
        &op,
    ))
}

/// `POST /operations/{id}/cancel`.
async fn cancel_operation(
    State(state): State<AppState>,
    page: Page,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<ActionForm>,
) -> Response {
    if let Some(refused) = guard(&state, &page, &form) {
        return refused;
    }
    let id = match Page::id_of(&id, "an operation") {
        Ok(id) => id,
        Err(e) => return page.error(e),
    };
    match state.inner.client.operation_cancel(id).await {
        Ok(op) => {
            tracing::info!(target: "spooler_server::audit", who = actor(&state), action = "cancel", operation = id, affected = op.affected, "dashboard operation cancelled");
            Redirect::to(&format!(
                "{}operations/{id}?done=cancelled-operation",
                page.base
            ))
            .into_response()
        }
        Err(e) => page.error(e.into()),
    }
}
