//! The dashboard's forms: each action checked by `guard` (session, read-only token, CSRF field),
//! done through the `Client`, written to the audit log, and answered with a redirect to the page
//! that shows its effect.

use super::views::GROUP_WINDOW;
use super::*;

/// `POST /jobs/{id}/{retry|cancel|delete}`.
pub(super) async fn job_action(
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
pub(super) async fn queue_action(
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
pub(super) async fn schedule_action(
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

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

/// `POST /login`: the right token sets the session cookie.
pub(super) async fn login(
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
pub(super) async fn logout(
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

#[derive(Deserialize)]
pub(super) struct GroupForm {
    #[serde(default)]
    csrf: String,
    /// Job ids, comma-separated.
    #[serde(default)]
    ids: String,
}

/// `POST /groups/{retry|delete}`: the jobs of one group of failures, each as its own action;
/// answers how many were affected and how many skipped (no longer failed, or gone).
pub(super) async fn group_action(
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
pub(super) struct OperationForm {
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
pub(super) fn operation_request(
    form: &OperationForm,
) -> Result<crate::bulk::BulkRequest, ApiError> {
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

/// `POST /operations`: an operation by filter (retry, cancel or delete every matching job),
/// durable and in chunks, as `POST /v1/jobs/bulk` starts it; then its progress page.
pub(super) async fn start_operation(
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

/// `POST /operations/{id}/cancel`.
pub(super) async fn cancel_operation(
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
