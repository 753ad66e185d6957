//! The dashboard's pages: what each view reads (through the same `Client` calls and rules as
//! the API) and hands to its template in `pages`.

use super::actions::{OperationForm, operation_request};
use super::*;

/// Every queue's line: counts, the oldest wait, whether a live worker works it, its routes; from
/// the shared snapshot.
pub(super) fn queue_lines(snapshot: &cache::Snapshot) -> Vec<QueueLineData> {
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
            per_minute: snapshot
                .per_minute
                .get(&q.name)
                .cloned()
                .unwrap_or_else(|| vec![0; cache::SPARK_MINUTES as usize]),
        })
        .collect()
}

pub(super) struct QueueLineData {
    oldest_age_s: Option<i64>,
    unworked: bool,
    routes: Vec<String>,
    per_minute: Vec<u64>,
}

pub(super) fn route_targets(routes: &spooler::core::route::Routes) -> Vec<String> {
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
            per_minute: d.per_minute,
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
pub(super) async fn jobs(
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
        after_id: None,
    };
    let (found, next, searched) = if narrowing.is_empty() {
        match windowed(&state, list).await {
            Ok(found) => found,
            Err(e) => return page.error(e),
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
pub(super) const PAGE: u32 = 50;

/// A filtered listing reads the jobs below its cursor this many ids at a time...
const WINDOW: i64 = 20_000;

/// ...until it has a page, the ids run out, or this long has passed: then it shows what it found
/// and where it stopped. A queue, state or kind that is rare among the newest jobs so costs a
/// page this long at most, where one query would read the whole table for it (50-230 ms on a
/// million jobs), and no index beyond those the workers need is kept for it.
const WINDOW_BUDGET: std::time::Duration = std::time::Duration::from_millis(25);

/// `list`, read window by window when it filters; the cursor to go on from, and, when the budget
/// ran out before a page was found, how many ids it read.
pub(super) async fn windowed(
    state: &AppState,
    list: JobList,
) -> Result<(Vec<spooler::JobRow>, Option<i64>, Option<usize>), ApiError> {
    let client = &state.inner.client;
    if list.queue.is_none() && list.state.is_none() && list.kind.is_none() {
        let (found, next) = client.list(&list).await?;
        return Ok((found, next, None));
    }
    let top = match list.before_id {
        Some(cursor) => cursor,
        None => {
            let newest = JobList {
                limit: 1,
                ..Default::default()
            };
            match client.list(&newest).await?.0.first() {
                Some(j) => j.id + 1,
                None => return Ok((Vec::new(), None, None)),
            }
        }
    };
    let started = std::time::Instant::now();
    let mut found = Vec::new();
    let mut upper = top;
    loop {
        let lower = (upper - WINDOW).max(0);
        let window = JobList {
            limit: list.limit - found.len() as u32,
            before_id: Some(upper),
            after_id: Some(lower),
            ..list.clone()
        };
        found.extend(client.list(&window).await?.0);
        if found.len() == list.limit as usize {
            let next = found.last().map(|j| j.id);
            return Ok((found, next, None));
        }
        if lower == 0 {
            return Ok((found, None, None));
        }
        // Ids up to `lower` remain.
        upper = lower + 1;
        if started.elapsed() >= WINDOW_BUDGET {
            return Ok((found, Some(upper), Some((top - upper) as usize)));
        }
    }
}

/// How many of the newest jobs (of the queue, state and kind asked) an args, tag or time search
/// reads per page before it says where it stopped.
pub(super) const SEARCH_WINDOW: usize = 10_000;

/// The filters of `/jobs` the store's listing does not take: matched in Rust, by the same rules
/// as everywhere ([`spooler::core::json_contains`] for args), over a bounded window of the newest
/// jobs that match the rest.
pub(super) struct Narrowing {
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
pub(super) fn parse_time(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| t.and_utc())
}

/// `GET /jobs/{id}`.
pub(super) async fn job(
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
pub(super) async fn queue(
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
    let recent = match windowed(&state, recent).await {
        Ok((jobs, _, _)) => jobs,
        Err(e) => return page.error(e),
    };
    let line = QueueLine {
        info,
        oldest_age_s: d.oldest_age_s,
        unworked: d.unworked,
        routes: d.routes,
        per_minute: d.per_minute,
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
pub(super) async fn schedules(
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
pub(super) async fn workers(State(state): State<AppState>, page: Page) -> Response {
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

/// `GET /stats?granularity=&queue=&kind=`: what finished per bucket, and run and wait
/// percentiles per queue and kind.
pub(super) async fn stats(
    State(state): State<AppState>,
    page: Page,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !page.allowed {
        return page.to_login();
    }
    let get = |k: &str| query.get(k).map(|v| v.trim()).unwrap_or_default();
    let some = |k: &str| Some(get(k)).filter(|v| !v.is_empty());
    let granularity = match crate::api::read_granularity(some("granularity")) {
        Ok(g) => g,
        Err(e) => return page.error(e),
    };
    let (queue, kind) = match (
        crate::api::name_param("queue", some("queue")),
        crate::api::name_param("kind", some("kind")),
    ) {
        (Ok(queue), Ok(kind)) => (queue, kind),
        (Err(e), _) | (_, Err(e)) => return page.error(e),
    };
    let stats = match state.inner.client.stats(granularity, queue, kind).await {
        Ok(stats) => stats,
        Err(e) => return page.error(e.into()),
    };
    let (csrf, store) = (session::csrf(&state), state.inner.store.describe());
    html(charts::stats_page(
        &page.frame(&state, &csrf, &store, None),
        &charts::StatsView {
            stats: &stats,
            queue: get("queue"),
            kind: get("kind"),
        },
    ))
}

/// `GET /routes`: every stored route, by queue and kind.
pub(super) async fn routes_page(State(state): State<AppState>, page: Page) -> Response {
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

/// `GET /login`.
pub(super) async fn login_page(
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

/// How many of the newest failed jobs `/failed` groups.
pub(super) const GROUP_WINDOW: u32 = 1000;

/// `GET /failed?queue=`: the newest failed jobs grouped by kind and first error line.
pub(super) async fn failed_groups(
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
    // The newest failed jobs, window by window of ids within the page's budget (at most 1,000,
    // the store's cap per listing).
    let list = JobList {
        queue: queue.map(str::to_string),
        state: Some(JobState::Failed),
        limit: GROUP_WINDOW,
        ..Default::default()
    };
    let (jobs, _, searched) = match windowed(&state, list).await {
        Ok(found) => found,
        Err(e) => return page.error(e),
    };
    let windowed = jobs.len() == GROUP_WINDOW as usize || searched.is_some();
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

/// `GET /operations/new?action=&queue=&state=…`: how many jobs the operation would cover now (a
/// dry run), and the form that starts it.
pub(super) async fn confirm_operation(
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

/// `GET /operations/{id}`: its progress.
pub(super) async fn operation(
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
