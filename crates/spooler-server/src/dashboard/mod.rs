//! The dashboard: server-rendered pages, readable with JavaScript off, at `/` (queues), `/jobs`,
//! `/jobs/{id}`, `/queues/{name}`, `/schedules`, `/workers`, `/routes` and `/stats` (charts), with its actions as
//! forms (retry, cancel, delete, pause and resume a queue, run, pause and resume a schedule). It
//! reads and acts through the same `Client` and rules as the API; every action is guarded by a
//! CSRF field and the cross-site check, and written to the audit log. Links are relative to a
//! `<base href>` taken from the request, so the pages work wherever the router is nested.

mod actions;
mod cache;
mod charts;
mod pages;
mod session;
mod views;

pub(crate) use cache::SnapshotCache;
pub(crate) use views::overview;

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
        .route("/jobs", get(views::jobs))
        .route("/jobs/{id}", get(views::job))
        .route("/jobs/{id}/{action}", post(actions::job_action))
        .route("/queues/{name}", get(views::queue))
        .route("/queues/{name}/{action}", post(actions::queue_action))
        .route("/schedules", get(views::schedules))
        .route("/schedules/{name}/{action}", post(actions::schedule_action))
        .route("/failed", get(views::failed_groups))
        .route("/groups/{action}", post(actions::group_action))
        .route("/operations", post(actions::start_operation))
        .route("/operations/new", get(views::confirm_operation))
        .route("/operations/{id}", get(views::operation))
        .route("/operations/{id}/cancel", post(actions::cancel_operation))
        .route("/workers", get(views::workers))
        .route("/stats", get(views::stats))
        .route("/routes", get(views::routes_page))
        .route("/login", get(views::login_page).post(actions::login))
        .route("/logout", post(actions::logout))
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
