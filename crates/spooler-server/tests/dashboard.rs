//! The dashboard in-process (`Router::oneshot` on `sqlite::memory:`): every view renders without
//! JavaScript and shows what the API shows, hostile text is escaped, actions need the CSRF field
//! and refuse other sites, a token makes the pages ask for a login (HttpOnly, SameSite=Strict
//! cookie), and the pages work nested under a prefix.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use spooler::prelude::*;
use spooler::{JobState, NewJob};
use spooler_server::{AppState, ServerOptions, router};
use std::sync::Arc;
use tower::ServiceExt;

struct Dash {
    store: Arc<dyn Store>,
    app: axum::Router,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The CSRF field of the page's forms.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find(r#"name="csrf" value=""#)
            .expect("a form with a CSRF field");
        let rest = &self.body[at + r#"name="csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl Dash {
    async fn new(options: ServerOptions) -> Self {
        let store = spooler::connect("sqlite::memory:").await.expect("open");
        let app = router(AppState::new(
            store.clone(),
            ServerOptions {
                metrics: false,
                ..options
            },
        ));
        Self { store, app }
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.expect("answer");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 10 << 20)
            .await
            .unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut request = Request::builder()
            .uri(path)
            .header(header::HOST, "127.0.0.1:7700");
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    async fn post_form(&self, path: &str, form: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, "127.0.0.1:7700")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.send(request.body(Body::from(form.to_string())).unwrap())
            .await
    }
}

/// A failed job, by hand: claimed and failed for good.
async fn failed_job(store: &Arc<dyn Store>, kind: &str, args: Value, error: &str) -> i64 {
    let mut job = NewJob::new(kind, args).queue("mail");
    job.max_attempts = Some(1);
    let id = store.job_insert(&job).await.unwrap().job.id;
    let claimed = store
        .job_claim(&spooler::core::store::JobClaim {
            queues: vec!["mail".into()],
            kinds: vec![kind.into()],
            limit: 1,
            worker_id: "w".into(),
            lease: std::time::Duration::from_secs(60),
        })
        .await
        .unwrap();
    let lease = claimed.jobs[0].lease();
    store
        .job_finish_many(&[spooler::core::store::JobFinish {
            lease,
            outcome: spooler::core::store::Outcome::Failed {
                error: error.into(),
            },
        }])
        .await
        .unwrap();
    assert_eq!(
        store.job_get(id).await.unwrap().unwrap().state,
        JobState::Failed
    );
    id
}

#[tokio::test]
async fn every_view_renders_without_javascript_with_safe_headers() {
    let dash = Dash::new(ServerOptions::default()).await;
    let id = dash
        .store
        .job_insert(&NewJob::new("noop", json!({"n": 1})).queue("mail"))
        .await
        .unwrap()
        .job
        .id;
    for path in [
        "/",
        "/jobs",
        "/jobs?state=available&queue=mail",
        &format!("/jobs/{id}"),
        "/queues/mail",
        "/schedules",
        "/workers",
        "/routes",
        "/stats",
    ] {
        let page = dash.get(path, None).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(page.body.starts_with("<!DOCTYPE html>"), "{path}");
        assert!(!page.body.contains("<script>"), "{path}: no inline script");
        let csp = page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(page.headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(page.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
    // The overview's counts are the API's.
    let page = dash.get("/", None).await;
    assert!(
        page.body.contains(r#"<tr data-queue="mail">"#),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(
            r#"data-state="available"><a href="jobs?queue=mail&amp;state=available">1</a>"#
        ),
        "{}",
        page.body
    );
    // No worker runs: the queue's jobs wait with nobody to work them, and the page says so.
    assert!(page.body.contains("no live worker"), "{}", page.body);
    let assets = dash.get("/assets/dashboard.js", None).await;
    assert_eq!(assets.status, StatusCode::OK);
    assert!(
        assets.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
}

#[tokio::test]
async fn hostile_text_is_escaped() {
    let dash = Dash::new(ServerOptions::default()).await;
    let id = failed_job(
        &dash.store,
        "<img/src=x/onerror=alert(1)>",
        json!({"html": "</pre><script>alert(2)</script>"}),
        "<script>alert(3)</script>\nsecond line",
    )
    .await;
    for path in [
        format!("/jobs/{id}"),
        "/jobs?state=failed".into(),
        "/queues/mail".into(),
    ] {
        let page = dash.get(&path, None).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(
            !page.body.contains("<script>alert") && !page.body.contains("<img/src"),
            "{path}: {}",
            page.body
        );
        assert!(
            page.body.contains("&lt;script&gt;alert(3)") || path.starts_with("/queues"),
            "{path}"
        );
    }
    let page = dash.get(&format!("/jobs/{id}"), None).await;
    assert!(
        page.body.contains("second line"),
        "the rest of the error is behind details"
    );
}

#[tokio::test]
async fn actions_need_the_csrf_field_and_refuse_other_sites() {
    let dash = Dash::new(ServerOptions::default()).await;
    let id = failed_job(&dash.store, "noop", json!({}), "boom").await;
    let page = dash.get(&format!("/jobs/{id}"), None).await;
    assert!(
        page.body.contains(&format!(r#"action="jobs/{id}/retry""#)),
        "{}",
        page.body
    );
    let csrf = page.csrf();
    let state =
        |store: Arc<dyn Store>| async move { store.job_get(id).await.unwrap().unwrap().state };
    // No field, a wrong one, or another site's page: refused, nothing changes.
    let refused = dash.post_form(&format!("/jobs/{id}/retry"), "", &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(refused.body.contains("CSRF"), "{}", refused.body);
    let refused = dash
        .post_form(&format!("/jobs/{id}/retry"), "csrf=nope", &[])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let refused = dash
        .post_form(
            &format!("/jobs/{id}/retry"),
            &format!("csrf={csrf}"),
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(state(dash.store.clone()).await, JobState::Failed);
    // The page's own form: done, and the job page says so.
    let done = dash
        .post_form(
            &format!("/jobs/{id}/retry"),
            &format!("csrf={csrf}"),
            &[("origin", "http://127.0.0.1:7700")],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), format!("/jobs/{id}?done=retried"));
    assert_eq!(state(dash.store.clone()).await, JobState::Available);
    let page = dash.get(done.location(), None).await;
    assert!(page.body.contains("Retried"), "{}", page.body);
    // A stale page's action (on a job gone meanwhile) is a 404 page naming it, never a 5xx.
    let gone = id + 1000;
    let stale = dash
        .post_form(
            &format!("/jobs/{gone}/cancel"),
            &format!("csrf={csrf}"),
            &[],
        )
        .await;
    assert_eq!(stale.status, StatusCode::NOT_FOUND, "{}", stale.body);
    assert!(stale.body.contains(&gone.to_string()), "{}", stale.body);
    // Pause and resume a queue.
    let paused = dash
        .post_form("/queues/mail/pause", &format!("csrf={csrf}"), &[])
        .await;
    assert_eq!(paused.status, StatusCode::SEE_OTHER);
    assert!(dash.get("/", None).await.body.contains("paused"));
    let queues = dash.store.queue_list().await.unwrap();
    assert!(queues.iter().any(|q| q.name == "mail" && q.paused));
    dash.post_form("/queues/mail/resume", &format!("csrf={csrf}"), &[])
        .await;
    assert!(
        !dash
            .store
            .queue_list()
            .await
            .unwrap()
            .iter()
            .any(|q| q.paused)
    );
}

#[tokio::test]
async fn a_token_makes_the_pages_ask_for_a_login() {
    let dash = Dash::new(ServerOptions {
        token: Some("s3cret".into()),
        ..ServerOptions::default()
    })
    .await;
    let id = failed_job(&dash.store, "noop", json!({}), "boom").await;
    for path in ["/", "/jobs", &format!("/jobs/{id}"), "/workers"] {
        let page = dash.get(path, None).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(page.location(), "/login", "{path}");
    }
    let refused = dash
        .post_form(&format!("/jobs/{id}/retry"), "csrf=x", &[])
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let login = dash.get("/login", None).await;
    assert_eq!(login.status, StatusCode::OK);
    let csrf = login.csrf();
    let wrong = dash
        .post_form("/login", &format!("csrf={csrf}&token=guess"), &[])
        .await;
    assert_eq!(wrong.location(), "/login?failed");
    assert!(wrong.headers.get(header::SET_COOKIE).is_none());
    let ok = dash
        .post_form("/login", &format!("csrf={csrf}&token=s3cret"), &[])
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    let cookie = ok.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("s3cret"), "the cookie is not the token");
    let session = cookie.split(';').next().unwrap().to_string();
    let page = dash.get(&format!("/jobs/{id}"), Some(&session)).await;
    assert_eq!(page.status, StatusCode::OK);
    let done = dash
        .post_form(
            &format!("/jobs/{id}/retry"),
            &format!("csrf={}", page.csrf()),
            &[("cookie", &session)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(
        dash.store.job_get(id).await.unwrap().unwrap().state,
        JobState::Available
    );
    // A forged cookie is no session.
    let page = dash.get("/", Some("spooler_session=forged")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_pages_work_nested_under_a_prefix() {
    let store = spooler::connect("sqlite::memory:").await.unwrap();
    let id = failed_job(&store, "noop", json!({}), "boom").await;
    let state = AppState::new(
        store.clone(),
        ServerOptions {
            metrics: false,
            ..ServerOptions::default()
        },
    );
    let app = axum::Router::new().nest("/admin/jobs-ui", router(state));
    let dash = Dash { store, app };
    let page = dash.get(&format!("/admin/jobs-ui/jobs/{id}"), None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains(r#"<base href="/admin/jobs-ui/">"#),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(r#"<a href="/admin/jobs-ui">Queues</a>"#),
        "{}",
        page.body
    );
    let overview = dash.get("/admin/jobs-ui", None).await;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(
        overview.body.contains(r#"<base href="/admin/jobs-ui/">"#),
        "{}",
        overview.body
    );
    let done = dash
        .post_form(
            &format!("/admin/jobs-ui/jobs/{id}/retry"),
            &format!("csrf={}", page.csrf()),
            &[],
        )
        .await;
    assert_eq!(
        done.location(),
        format!("/admin/jobs-ui/jobs/{id}?done=retried")
    );
    let css = dash.get("/admin/jobs-ui/assets/dashboard.css", None).await;
    assert_eq!(css.status, StatusCode::OK);
}

#[tokio::test]
async fn failures_are_grouped_and_a_group_is_retried() {
    let dash = Dash::new(ServerOptions::default()).await;
    let a = failed_job(
        &dash.store,
        "noop",
        json!({"n": 1}),
        "timeout after 5s\ndetails",
    )
    .await;
    let b = failed_job(
        &dash.store,
        "noop",
        json!({"n": 2}),
        "timeout after 5s\nother details",
    )
    .await;
    let c = failed_job(&dash.store, "noop", json!({"n": 3}), "refused").await;
    let page = dash.get("/failed", None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let groups = page.body.matches("<tr><td class=\"num\">").count();
    assert_eq!(groups, 2, "{}", page.body);
    assert!(
        page.body.contains(&format!(r#"value="{b},{a}""#)),
        "the group of two, newest first: {}",
        page.body
    );
    let done = dash
        .post_form(
            "/groups/retry",
            &format!("csrf={}&ids={b},{a}", page.csrf()),
            &[],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let after = dash.get(done.location(), None).await;
    assert!(
        after.body.contains("Affected 2, skipped 0"),
        "{}",
        after.body
    );
    for (id, state) in [
        (a, JobState::Available),
        (b, JobState::Available),
        (c, JobState::Failed),
    ] {
        assert_eq!(
            dash.store.job_get(id).await.unwrap().unwrap().state,
            state,
            "job {id}"
        );
    }
    // Again: both are no longer failed, so retrying them is skipped, never a 5xx.
    let again = dash
        .post_form(
            "/groups/retry",
            &format!("csrf={}&ids={b},{a}", page.csrf()),
            &[],
        )
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn every_matching_job_is_retried_by_a_durable_operation_with_progress() {
    let dash = Dash::new(ServerOptions::default()).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(failed_job(&dash.store, "noop", json!({"n": n}), "boom").await);
    }
    let list = dash.get("/jobs?state=failed&queue=mail", None).await;
    assert!(
        list.body.contains(r#"action="operations/new""#),
        "{}",
        list.body
    );
    // The confirmation counts what the operation would cover now.
    let confirm = dash
        .get(
            "/operations/new?action=retry&queue=mail&state=failed&kind=",
            None,
        )
        .await;
    assert!(
        confirm
            .body
            .contains(r#"<strong class="matched">3</strong>"#),
        "{}",
        confirm.body
    );
    assert!(confirm.body.contains("retry 3 jobs"), "{}", confirm.body);
    let started = dash
        .post_form(
            "/operations",
            &format!(
                "csrf={}&action=retry&queue=mail&state=failed&kind=",
                confirm.csrf()
            ),
            &[],
        )
        .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.body);
    let progress = started.location().to_string();
    assert!(progress.starts_with("/operations/"), "{progress}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let page = dash.get(&progress, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        if page.body.contains(">completed</span>") {
            assert!(
                page.body.contains(r#"<dd class="affected">3</dd>"#),
                "{}",
                page.body
            );
            assert!(page.body.contains("<progress"), "{}", page.body);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the operation did not complete: {}",
            page.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for id in ids {
        assert_eq!(
            dash.store.job_get(id).await.unwrap().unwrap().state,
            JobState::Available
        );
    }
    // A filter naming a state that does not exist is the form's mistake, named.
    let bad = dash
        .post_form(
            "/operations",
            &format!("csrf={}&action=retry&state=done", confirm.csrf()),
            &[],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert!(bad.body.contains("filter.state"), "{}", bad.body);
}

#[tokio::test]
async fn the_read_only_token_sees_everything_and_changes_nothing() {
    let dash = Dash::new(ServerOptions {
        token: Some("full".into()),
        read_token: Some("reader".into()),
        ..ServerOptions::default()
    })
    .await;
    let id = failed_job(&dash.store, "noop", json!({}), "boom").await;
    let login = dash.get("/login", None).await;
    let ok = dash
        .post_form(
            "/login",
            &format!("csrf={}&token=reader", login.csrf()),
            &[],
        )
        .await;
    let cookie = ok.headers[header::SET_COOKIE].to_str().unwrap();
    let session = cookie.split(';').next().unwrap().to_string();
    for path in [
        "/",
        "/jobs?state=failed",
        &format!("/jobs/{id}"),
        "/failed",
        "/queues/mail",
    ] {
        let page = dash.get(path, Some(&session)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(page.body.contains("read-only"), "{path}");
        assert!(
            !page.body.contains(r#"method="post" action="jobs"#),
            "{path}: no action forms"
        );
        assert!(!page.body.contains(r#"action="operations"#), "{path}");
        assert!(!page.body.contains(r#"action="groups/"#), "{path}");
    }
    let csrf = dash.get("/", Some(&session)).await.csrf();
    let refused = dash
        .post_form(
            &format!("/jobs/{id}/retry"),
            &format!("csrf={csrf}"),
            &[("cookie", &session)],
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "{} {}",
        refused.location(),
        refused.body
    );
    assert!(refused.body.contains("read-only"), "{}", refused.body);
    assert_eq!(
        dash.store.job_get(id).await.unwrap().unwrap().state,
        JobState::Failed
    );
    // The API: reads yes, changes no.
    let read = Request::builder()
        .uri("/v1/jobs")
        .header(header::AUTHORIZATION, "Bearer reader")
        .body(Body::empty())
        .unwrap();
    assert_eq!(dash.send(read).await.status, StatusCode::OK);
    let write = Request::builder()
        .method(Method::POST)
        .uri(format!("/v1/jobs/{id}/retry"))
        .header(header::AUTHORIZATION, "Bearer reader")
        .body(Body::empty())
        .unwrap();
    let answer = dash.send(write).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert_eq!(
        dash.store.job_get(id).await.unwrap().unwrap().state,
        JobState::Failed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tabs_polling_at_once_cost_one_read_of_the_store() {
    let dash = Dash::new(ServerOptions::default()).await;
    dash.store
        .job_insert(&NewJob::new("noop", json!({})).queue("mail"))
        .await
        .unwrap();
    let snapshot_of = |body: &str| {
        let at = body.find("data-snapshot=\"").expect("the snapshot number") + 15;
        body[at..at + body[at..].find('"').unwrap()].to_string()
    };
    let pages = futures::future::join_all((0..20).map(|_| dash.get("/", None))).await;
    let seen: std::collections::BTreeSet<String> =
        pages.iter().map(|p| snapshot_of(&p.body)).collect();
    assert_eq!(seen.len(), 1, "every tab got the one refresh: {seen:?}");
    // An action drops the snapshot: the next page reads the store again and shows the pause.
    let csrf = pages[0].csrf();
    dash.post_form("/queues/mail/pause", &format!("csrf={csrf}"), &[])
        .await;
    let after = dash.get("/", None).await;
    assert_ne!(snapshot_of(&after.body), *seen.iter().next().unwrap());
    assert!(after.body.contains("badge paused"), "{}", after.body);
}

#[tokio::test]
async fn a_routed_job_links_both_ways() {
    use spooler::core::QueueSettings;
    use spooler::core::route::{Route, Routes};
    let dash = Dash::new(ServerOptions::default()).await;
    dash.store
        .queue_configure(&[QueueSettings {
            routes: Routes {
                on_failure: Some(Route::to("mail-b")),
                ..Default::default()
            },
            ..QueueSettings::new("mail")
        }])
        .await
        .unwrap();
    let original = failed_job(&dash.store, "noop", json!({}), "boom").await;
    let next = dash.store.job_routed_from(original, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    let next = next[0].id;
    let page = dash.get(&format!("/jobs/{original}"), None).await;
    assert!(page.body.contains("routed to"), "{}", page.body);
    assert!(
        page.body.contains(&format!(
            r#"<a href="jobs/{next}">job {next}</a> in mail-b"#
        )),
        "{}",
        page.body
    );
    let page = dash.get(&format!("/jobs/{next}"), None).await;
    assert!(
        page.body
            .contains(&format!(r#"<a href="jobs/{original}">job {original}</a>"#)),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn jobs_are_searched_by_args_tag_and_time_in_a_bounded_window() {
    let dash = Dash::new(ServerOptions::default()).await;
    let mut jobs = Vec::new();
    for n in 0..60 {
        let mut job = NewJob::new(
            "mail",
            json!({"to": if n % 2 == 0 { "a@x" } else { "b@x" }, "n": n}),
        );
        if n % 3 == 0 {
            job.tags = vec!["vip".into()];
        }
        jobs.push(job);
    }
    dash.store.job_insert_many(jobs).await.unwrap();
    let ids_on = |body: &str| -> Vec<i64> {
        body.match_indices(r#"<td><a href="jobs/"#)
            .map(|(at, _)| {
                let rest = &body[at + r#"<td><a href="jobs/"#.len()..];
                rest[..rest.find('"').unwrap()].parse().unwrap()
            })
            .collect()
    };
    let page = dash
        .get(
            &format!("/jobs?args={}", "%7B%22to%22%3A%22b%40x%22%7D"),
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let found = ids_on(&page.body);
    assert_eq!(found.len(), 30, "{}", page.body);
    assert!(page.body.contains("this page read 60"), "{}", page.body);
    assert!(
        !page.body.contains(r#"action="operations/new""#),
        "no bulk action for an args search"
    );
    for id in found {
        let job = dash.store.job_get(id).await.unwrap().unwrap();
        assert_eq!(job.args["to"], "b@x");
    }
    // A tag: 20 of the 60; a bulk action covers them by the same filter.
    let page = dash.get("/jobs?tag=vip", None).await;
    assert_eq!(ids_on(&page.body).len(), 20, "{}", page.body);
    assert!(
        page.body.contains(r#"name="tag" value="vip""#),
        "{}",
        page.body
    );
    let confirm = dash
        .get("/operations/new?action=delete&tag=vip", None)
        .await;
    assert!(
        confirm
            .body
            .contains(r#"<strong class="matched">20</strong>"#),
        "{}",
        confirm.body
    );
    // More matches than a page: the next page reads on from where this one stopped.
    let page = dash.get("/jobs?after=2000-01-01T00:00", None).await;
    assert_eq!(ids_on(&page.body).len(), 50);
    let next = page
        .body
        .split(r#"rel="next" href=""#)
        .nth(1)
        .expect("a next page");
    let next = next[..next.find('"').unwrap()].replace("&amp;", "&");
    let rest = dash.get(&format!("/{next}"), None).await;
    assert_eq!(ids_on(&rest.body).len(), 10, "{}", rest.body);
    // Nothing created before 2000; a time that is not one is named.
    let page = dash.get("/jobs?before=2000-01-01T00:00", None).await;
    assert!(ids_on(&page.body).is_empty());
    let bad = dash.get("/jobs?after=yesterday", None).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("after: "), "{}", bad.body);
    let bad = dash.get("/jobs?args=%5B1%5D", None).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn expensive_counts_are_cached_and_say_so() {
    // Every store counts as big here: the first count is taken, later ones served from it.
    let dash = Dash::new(ServerOptions {
        count_cache_above: 0,
        ..ServerOptions::default()
    })
    .await;
    dash.store
        .job_insert(&NewJob::new("noop", json!({})).queue("mail"))
        .await
        .unwrap();
    let queues = |dash: &Dash| {
        let app = dash.app.clone();
        async move {
            let response = app
                .oneshot(
                    Request::builder()
                        .uri("/v1/queues")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        }
    };
    let first = queues(&dash).await;
    assert_eq!(first["counts"], "exact", "{first}");
    assert_eq!(first["queues"][0]["counts"]["available"], 1);
    dash.store
        .job_insert(&NewJob::new("noop", json!({})).queue("mail"))
        .await
        .unwrap();
    let second = queues(&dash).await;
    assert_eq!(second["counts"], "cached", "{second}");
    assert_eq!(second["counted_at"], first["counted_at"]);
    assert_eq!(
        second["queues"][0]["counts"]["available"], 1,
        "the last exact count"
    );
    let page = dash.get("/", None).await;
    assert!(page.body.contains(">cached</span>"), "{}", page.body);
    // A pause here counts again, so the page shows it at once.
    let csrf = page.csrf();
    dash.post_form("/queues/mail/pause", &format!("csrf={csrf}"), &[])
        .await;
    let third = queues(&dash).await;
    assert_eq!(third["counts"], "exact", "{third}");
    assert_eq!(third["queues"][0]["counts"]["available"], 2);
    assert_eq!(third["queues"][0]["paused"], true);
}

#[tokio::test]
async fn the_workers_page_shows_what_each_runs() {
    let dash = Dash::new(ServerOptions::default()).await;
    let now = dash.store.clock().now();
    dash.store
        .worker_heartbeat(&spooler::core::store::WorkerInfo {
            id: "w-1".into(),
            host: "box".into(),
            pid: 42,
            version: "9.8.7".into(),
            queues: [("mail".to_string(), 2)].into_iter().collect(),
            kinds: vec!["noop".into()],
            running: 1,
            started_at: now,
            last_seen_at: now,
        })
        .await
        .unwrap();
    let id = dash
        .store
        .job_insert(&NewJob::new("noop", json!({})).queue("mail"))
        .await
        .unwrap()
        .job
        .id;
    dash.store
        .job_claim(&spooler::core::store::JobClaim {
            queues: vec!["mail".into()],
            kinds: vec!["noop".into()],
            limit: 1,
            worker_id: "w-1".into(),
            lease: std::time::Duration::from_secs(60),
        })
        .await
        .unwrap();
    let page = dash.get("/workers", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<code>w-1</code>"), "{}", page.body);
    assert!(
        page.body
            .contains(&format!(r#"<a href="jobs/{id}">{id} noop</a>"#)),
        "{}",
        page.body
    );
    assert!(page.body.contains("1/2"), "utilisation: {}", page.body);
    assert!(
        page.body.contains("<td>9.8.7</td>"),
        "version: {}",
        page.body
    );
}

#[tokio::test]
async fn charts_show_what_finished_with_run_and_wait_percentiles() {
    use spooler::core::stats::{Granularity, StatsRoll};
    let dash = Dash::new(ServerOptions::default()).await;
    for i in 0..2 {
        failed_job(&dash.store, "send", json!({"n": i}), "refused").await;
    }
    for _ in 0..3 {
        dash.store
            .job_insert(&NewJob::new("noop", json!({})).queue("mail"))
            .await
            .unwrap();
    }
    let claimed = dash
        .store
        .job_claim(&spooler::core::store::JobClaim {
            queues: vec!["mail".into()],
            kinds: vec!["noop".into()],
            limit: 3,
            worker_id: "w".into(),
            lease: std::time::Duration::from_secs(60),
        })
        .await
        .unwrap();
    let finishes: Vec<_> = claimed
        .jobs
        .iter()
        .map(|j| spooler::core::store::JobFinish {
            lease: j.lease(),
            outcome: spooler::core::store::Outcome::Completed { result: None },
        })
        .collect();
    dash.store.job_finish_many(&finishes).await.unwrap();
    // The leader rolls closed minutes; here one roll covers the current one too.
    let now = dash.store.clock().now();
    let minute = Granularity::Minute.floor(now);
    let roll = StatsRoll {
        mark: None,
        from: minute - chrono::TimeDelta::minutes(10),
        until: minute + chrono::TimeDelta::minutes(1),
    };
    assert!(dash.store.stats_roll(&roll).await.unwrap());

    let api = dash
        .get("/v1/stats?granularity=minute&queue=mail", None)
        .await;
    assert_eq!(api.status, StatusCode::OK, "{}", api.body);
    let stats: Value = serde_json::from_str(&api.body).unwrap();
    let sum = |field: &str| {
        stats["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!((sum("completed"), sum("failed")), (3, 2), "{stats}");
    let kinds: Vec<(&str, u64)> = stats["latencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["started"].as_u64().unwrap()))
        .collect();
    assert_eq!(kinds, [("noop", 3), ("send", 2)]);
    assert!(stats["latencies"][0]["run_ms"]["p99"].as_f64().is_some());

    let page = dash.get("/stats?queue=mail", None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("3 completed · 2 failed"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(r#"<rect class="failed""#),
        "{}",
        page.body
    );
    assert!(page.body.contains("<td>send</td>"), "{}", page.body);
    for span in ["hour", "day"] {
        let page = dash.get(&format!("/stats?granularity={span}"), None).await;
        assert_eq!(page.status, StatusCode::OK, "{span}");
        assert!(
            page.body.contains("3 completed · 2 failed"),
            "{span}: {}",
            page.body
        );
    }
    let bad = dash.get("/stats?granularity=week", None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("granularity"), "{}", bad.body);
    let bad = dash.get("/v1/stats?granularity=week", None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body.contains(r#""field":"granularity""#),
        "{}",
        bad.body
    );

    // Each queue's line on the overview has its five-minute sparkline.
    let overview = dash.get("/", None).await;
    assert!(
        overview.body.contains(r#"<svg class="spark""#),
        "{}",
        overview.body
    );
}

#[tokio::test]
async fn a_rare_queue_is_found_window_by_window_below_many_newer_jobs() {
    let dash = Dash::new(ServerOptions::default()).await;
    let rare = dash
        .store
        .job_insert(&NewJob::new("noop", json!({})).queue("rare"))
        .await
        .unwrap()
        .job
        .id;
    let busy: Vec<NewJob> = (0..25_000)
        .map(|_| NewJob::new("noop", json!({})).queue("busy"))
        .collect();
    for chunk in busy.chunks(5_000) {
        dash.store.job_insert_many(chunk.to_vec()).await.unwrap();
    }
    // The rare job lies more than one window (20,000 ids) below the newest.
    let page = dash.get("/jobs?queue=rare", None).await;
    assert_eq!(page.status, StatusCode::OK);
    let found = page.body.contains(&format!(r#"href="jobs/{rare}""#));
    let stopped = page.body.contains("this page looked through");
    assert!(found || stopped, "{}", page.body);
    if stopped {
        // A slow machine ran out of the page's budget: the next page reads on and finds it.
        let at = page.body.find("cursor=").expect("a next page");
        let cursor: String = page.body[at + 7..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let next = dash
            .get(&format!("/jobs?queue=rare&cursor={cursor}"), None)
            .await;
        assert!(
            next.body.contains(&format!(r#"href="jobs/{rare}""#)),
            "{}",
            next.body
        );
    }
    let queue = dash.get("/queues/rare", None).await;
    assert_eq!(queue.status, StatusCode::OK);
}
