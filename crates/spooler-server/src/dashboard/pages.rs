//! The dashboard's HTML: one layout and a function per view, escaped by construction (maud). Links
//! are relative to the `<base href>` the layout sets, so the pages work at any prefix; times are
//! `<time>` elements in UTC that the script shows in the browser's zone (UTC on hover).

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;
use spooler::core::store::WorkerInfo;
use spooler::{JobRow, JobState, QueueInfo, ScheduleView};

/// What every page needs besides its content.
pub(crate) struct Frame<'a> {
    /// `<base href>`: where the dashboard is mounted, ending in `/`.
    pub base: &'a str,
    /// The overview's path (`/`, or the prefix the router is nested under).
    pub home: &'a str,
    /// The CSRF field of its forms.
    pub csrf: &'a str,
    /// Whether action forms are shown (not for the read-only token).
    pub can_act: bool,
    /// Whether a logout button is shown (a token is configured).
    pub logout: bool,
    /// A line saying what the last action did.
    pub notice: Option<&'a str>,
    /// The store, as `describe()` names it.
    pub store: &'a str,
}

const NAV: &[(&str, &str)] = &[
    ("jobs", "Jobs"),
    ("failed", "Failed"),
    ("stats", "Throughput"),
    ("schedules", "Schedules"),
    ("workers", "Workers"),
    ("routes", "Routes"),
];

/// The page around `content`.
pub(crate) fn layout(frame: &Frame<'_>, title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                base href=(frame.base);
                title { (title) " · spooler" }
                link rel="stylesheet" href="assets/dashboard.css";
                script src="assets/dashboard.js" defer {}
            }
            body {
                header {
                    a.brand href=(frame.home) { "spooler" }
                    nav {
                        a href=(frame.home) { "Queues" }
                        @for (href, label) in NAV {
                            a href=(href) { (label) }
                        }
                    }
                    span.store title="store" { (frame.store) }
                    @if !frame.can_act { span.badge title="signed in with the read-only token" { "read-only" } }
                    @if frame.logout {
                        form method="post" action="logout" {
                            (csrf_field(frame.csrf))
                            button type="submit" { "Log out" }
                        }
                    }
                    label.refresh {
                        "Refresh "
                        select #refresh aria-label="refresh interval" {
                            option value="0" { "off" }
                            option value="2" { "2 s" }
                            option value="5" selected { "5 s" }
                            option value="15" { "15 s" }
                            option value="60" { "1 min" }
                        }
                    }
                }
                @if let Some(notice) = frame.notice {
                    p.notice role="status" { (notice) }
                }
                main #live { (content) }
            }
        }
    }
}

fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// A button that posts to `action` (relative to the base).
fn action_button(frame: &Frame<'_>, action: &str, label: &str, danger: bool) -> Markup {
    html! {
        @if frame.can_act {
            form.inline method="post" action=(action) {
                (csrf_field(frame.csrf))
                button type="submit" class=[danger.then_some("danger")] { (label) }
            }
        }
    }
}

/// A time, in UTC, that the script shows in the browser's zone.
pub(crate) fn time(at: DateTime<Utc>) -> Markup {
    let utc = at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    html! { time datetime=(at.to_rfc3339()) title=(utc) { (utc) } }
}

fn opt_time(at: Option<DateTime<Utc>>) -> Markup {
    match at {
        Some(at) => time(at),
        None => html! { span.muted { "—" } },
    }
}

/// A duration in words: `45 s`, `3 min`, `2 h 5 min`, `4 d`.
pub(crate) fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d", s / 86400),
    }
}

fn json_block(value: &Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre.json { (text) } }
}

fn state_badge(state: JobState) -> Markup {
    html! { span class={ "badge state-" (state.as_str()) } { (state.as_str()) } }
}

pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

/// Percent-encodes a query value.
pub(crate) fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One queue's row on the overview.
pub(crate) struct QueueLine<'a> {
    pub info: &'a QueueInfo,
    /// Seconds the oldest available job has waited.
    pub oldest_age_s: Option<i64>,
    /// Jobs wait and no live worker works the queue.
    pub unworked: bool,
    /// Where its failures (and successes) go.
    pub routes: Vec<String>,
    /// Jobs finished in each of the last closed minutes, oldest first.
    pub per_minute: Vec<u64>,
}

/// The count columns, in life order.
const COLUMNS: [JobState; 6] = JobState::ALL;

/// The overview: every queue with its counts per state.
pub(crate) fn overview(
    frame: &Frame<'_>,
    queues: &[QueueLine<'_>],
    live_workers: usize,
    as_of: (u64, DateTime<Utc>, bool),
) -> Markup {
    layout(
        frame,
        "Queues",
        html! {
            h1 { "Queues" }
            p.muted data-snapshot=(as_of.0) {
                (live_workers) " live worker" @if live_workers != 1 { "s" } " · " a href="workers" { "workers" }
                " · counts "
                @if as_of.2 {
                    span.badge title="counting this store takes long: the last exact count is shown, taken again in the background" { "cached" }
                    " "
                } @else {
                    span.badge title="counted for this page" { "exact" }
                    " "
                }
                "as of " (time(as_of.1))
            }
            @if queues.is_empty() {
                p { "No queue holds jobs yet. Enqueue one with " code { "spooler enqueue noop" } " or " code { "POST /v1/jobs" } "." }
            } @else {
                table.queues {
                    thead { tr {
                        th { "queue" }
                        @for s in COLUMNS { th.num { (s.as_str()) } }
                        th { "oldest waiting" }
                        th { a href="stats" title="jobs finished per minute, last 5 closed minutes" { "last 5 min" } }
                        th { "routes to" }
                        th { "" }
                    } }
                    tbody {
                        @for q in queues {
                            tr data-queue=(q.info.name) {
                                td {
                                    a href={ "queues/" (encode(&q.info.name)) } { (q.info.name) }
                                    @if q.info.paused { " " span.badge.paused { "paused" } }
                                    @if q.unworked { " " span.badge.warn title="jobs wait here and no worker with a fresh heartbeat works this queue" { "no live worker" } }
                                }
                                @for s in COLUMNS {
                                    td.num data-state=(s.as_str()) {
                                        a href={ "jobs" (query(&[("queue", &q.info.name), ("state", s.as_str())])) } { (q.info.counts.get(s)) }
                                    }
                                }
                                td { @if let Some(a) = q.oldest_age_s { (age(a)) } @else { span.muted { "—" } } }
                                td.spark {
                                    a href={ "stats" (query(&[("queue", &q.info.name)])) } { (super::charts::sparkline(&q.per_minute)) }
                                    " " (q.per_minute.last().copied().unwrap_or(0)) "/min"
                                }
                                td { @for (i, r) in q.routes.iter().enumerate() { @if i > 0 { ", " } (r) } }
                                td {
                                    @if q.info.paused {
                                        (action_button(frame, &format!("queues/{}/resume", encode(&q.info.name)), "Resume", false))
                                    } @else {
                                        (action_button(frame, &format!("queues/{}/pause", encode(&q.info.name)), "Pause", false))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A list of jobs, newest first, with the filters that made it and a link to the next page.
pub(crate) struct JobsView<'a> {
    pub queue: &'a str,
    pub state: &'a str,
    pub kind: &'a str,
    pub tag: &'a str,
    /// RFC 3339, or empty.
    pub after: String,
    /// RFC 3339, or empty.
    pub before: String,
    /// JSON the args must contain, or empty.
    pub args: &'a str,
    pub jobs: &'a [JobRow],
    pub next: Option<i64>,
    /// Whether an action on every matching job is offered.
    pub bulk: bool,
    /// For a tag, time or args search: how many jobs it read.
    pub searched: Option<usize>,
}

fn jobs_table(jobs: &[JobRow]) -> Markup {
    html! {
        table.jobs {
            thead { tr { th { "id" } th { "state" } th { "queue" } th { "kind" } th.num { "attempt" } th { "run at" } th { "last error" } } }
            tbody {
                @for j in jobs {
                    tr {
                        td { a href={ "jobs/" (j.id) } { (j.id) } }
                        td { (state_badge(j.state)) }
                        td { (j.queue) }
                        td { (j.kind) }
                        td.num { (j.attempt) "/" (j.max_attempts) }
                        td { (time(j.run_at)) }
                        td.error { @if let Some(e) = j.errors.last() { (e.message.lines().next().unwrap_or_default()) } }
                    }
                }
            }
        }
    }
}

/// `/jobs`.
pub(crate) fn jobs(frame: &Frame<'_>, view: &JobsView<'_>) -> Markup {
    let title = if view.state.is_empty() {
        "Jobs".to_string()
    } else {
        format!("Jobs: {}", view.state)
    };
    layout(
        frame,
        &title,
        html! {
            h1 { (title) }
            form.filters method="get" action="jobs" {
                label { "queue " input name="queue" value=(view.queue); }
                label { "state "
                    select name="state" {
                        option value="" { "any" }
                        @for s in COLUMNS { option value=(s.as_str()) selected[view.state == s.as_str()] { (s.as_str()) } }
                    }
                }
                label { "kind " input name="kind" value=(view.kind); }
                label { "tag " input name="tag" value=(view.tag); }
                label { "created after (UTC) " input name="after" value=(view.after) placeholder="2026-01-31T12:00"; }
                label { "before " input name="before" value=(view.before) placeholder="2026-01-31T13:00"; }
                label { "args contain " input name="args" value=(view.args) placeholder=r#"{"to": "a@example.com"}"#; }
                button type="submit" { "Filter" }
            }
            @if let Some(read) = view.searched {
                @if view.tag.is_empty() && view.after.is_empty() && view.before.is_empty() && view.args.is_empty() {
                    p.muted.searched { "Few of the newest jobs match: this page looked through " (read) " of them and stopped" @if view.next.is_some() { "; the next page reads on from where it stopped" } "." }
                } @else {
                    p.muted.searched { "Tag, time and args are matched in the newest jobs of this queue, state and kind: this page read " (read) " of them" @if view.next.is_some() { "; the next page reads on from where it stopped" } "." }
                }
            }
            @if view.jobs.is_empty() {
                p { "No job matches." }
            } @else {
                (jobs_table(view.jobs))
            }
            @if let Some(next) = view.next {
                p { a.next rel="next" href={ "jobs" (query(&[("queue", view.queue), ("state", view.state), ("kind", view.kind), ("tag", view.tag), ("after", &view.after), ("before", &view.before), ("args", view.args), ("cursor", &next.to_string())])) } { "Older jobs →" } }
            }
            @if view.bulk && frame.can_act {
                section.bulk {
                    h2 { "Every matching job" }
                    p.muted { "Counted and confirmed on the next page; it then runs in the background, 1,000 jobs per transaction, skipping the jobs it does not apply to." }
                    @for (action, label, danger) in [("retry", "Retry all…", false), ("cancel", "Cancel all…", true), ("delete", "Delete all…", true)] {
                        form.inline method="get" action="operations/new" {
                            input type="hidden" name="action" value=(action);
                            input type="hidden" name="queue" value=(view.queue);
                            input type="hidden" name="state" value=(view.state);
                            input type="hidden" name="kind" value=(view.kind);
                            input type="hidden" name="tag" value=(view.tag);
                            input type="hidden" name="after" value=(view.after);
                            input type="hidden" name="before" value=(view.before);
                            button type="submit" class=[danger.then_some("danger")] { (label) }
                        }
                    }
                }
            }
        },
    )
}

/// `/jobs/{id}`.
pub(crate) fn job(
    frame: &Frame<'_>,
    j: &JobRow,
    now: DateTime<Utc>,
    routed_to: &[JobRow],
) -> Markup {
    let waited = j.started_at.map(|s| (s - j.run_at).num_milliseconds());
    let ran = j
        .finished_at
        .zip(j.started_at)
        .map(|(f, s)| (f - s).num_milliseconds());
    layout(
        frame,
        &format!("Job {}", j.id),
        html! {
            h1 { "Job " (j.id) " " (state_badge(j.state)) }
            div.actions {
                @if matches!(j.state, JobState::Failed | JobState::Cancelled | JobState::Completed) {
                    (action_button(frame, &format!("jobs/{}/retry", j.id), "Retry", false))
                }
                @if !j.state.is_finished() {
                    (action_button(frame, &format!("jobs/{}/cancel", j.id), "Cancel", true))
                }
                @if j.state != JobState::Running {
                    (action_button(frame, &format!("jobs/{}/delete", j.id), "Delete", true))
                }
            }
            dl.fields {
                dt { "queue" } dd { a href={ "queues/" (encode(&j.queue)) } { (j.queue) } }
                dt { "kind" } dd { (j.kind) }
                dt { "attempt" } dd { (j.attempt) " of " (j.max_attempts) }
                dt { "priority" } dd { (j.priority) }
                dt { "created" } dd { (time(j.created_at)) }
                dt { "run at" } dd { (time(j.run_at)) }
                dt { "started" } dd { (opt_time(j.started_at)) }
                dt { "finished" } dd { (opt_time(j.finished_at)) }
                dt { "waited" } dd { @if let Some(ms) = waited { (ms) " ms" } @else { span.muted { "—" } } }
                dt { "ran" } dd { @if let Some(ms) = ran { (ms) " ms" } @else { span.muted { "—" } } }
                @if let Some(lease) = j.lease_expires_at {
                    dt { "lease" } dd { "held by " (j.worker_id.as_deref().unwrap_or("?")) ", lapses in " (age((lease - now).num_seconds())) }
                }
                @if let Some(key) = &j.unique_key { dt { "unique key" } dd { (key) } }
                @if !j.tags.is_empty() { dt { "tags" } dd { @for t in &j.tags { span.badge { (t) } " " } } }
                @if let Some(from) = j.routed_from { dt { "routed from" } dd { a href={ "jobs/" (from) } { "job " (from) } } }
                @if !routed_to.is_empty() {
                    dt { "routed to" }
                    dd.routed-to { @for (i, next) in routed_to.iter().enumerate() {
                        @if i > 0 { ", " }
                        a href={ "jobs/" (next.id) } { "job " (next.id) } " in " (next.queue) " " (state_badge(next.state))
                    } }
                }
                @if let Some(origin) = &j.origin { dt { "chain began" } dd { (origin.kind) " in " (origin.queue) ", " (origin.hops) " hop" @if origin.hops != 1 { "s" } " since" } }
                @if j.cancel_requested { dt { "cancel" } dd { "asked; the worker stops the run" } }
                @if let Some(tp) = j.meta.get("traceparent").and_then(Value::as_str) { dt { "trace" } dd { code { (tp) } } }
            }
            h2 { "Arguments" }
            (json_block(&j.args))
            @if let Some(result) = &j.result {
                h2 { "Result" }
                (json_block(result))
            }
            h2 { "Attempts" }
            @if j.errors.is_empty() {
                p.muted { "No attempt has failed." }
            } @else {
                table.attempts {
                    thead { tr { th.num { "attempt" } th { "at" } th { "error" } } }
                    tbody {
                        @for e in &j.errors {
                            tr {
                                td.num { (e.attempt) }
                                td { (time(e.at)) }
                                td.error {
                                    @let mut lines = e.message.lines();
                                    (lines.next().unwrap_or_default())
                                    @let rest: Vec<&str> = lines.collect();
                                    @if !rest.is_empty() {
                                        details { summary { "more" } pre { (rest.join("\n")) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// `/queues/{name}`.
pub(crate) fn queue(
    frame: &Frame<'_>,
    line: &QueueLine<'_>,
    settings: Option<&Value>,
    recent: &[JobRow],
) -> Markup {
    let q = line.info;
    layout(
        frame,
        &format!("Queue {}", q.name),
        html! {
            h1 { "Queue " (q.name) @if q.paused { " " span.badge.paused { "paused" } } @if line.unworked { " " span.badge.warn { "no live worker" } } }
            div.actions {
                @if q.paused {
                    (action_button(frame, &format!("queues/{}/resume", encode(&q.name)), "Resume", false))
                } @else {
                    (action_button(frame, &format!("queues/{}/pause", encode(&q.name)), "Pause", false))
                }
            }
            table.counts {
                thead { tr { @for s in COLUMNS { th.num { (s.as_str()) } } } }
                tbody { tr data-queue=(q.name) { @for s in COLUMNS {
                    td.num data-state=(s.as_str()) { a href={ "jobs" (query(&[("queue", &q.name), ("state", s.as_str())])) } { (q.counts.get(s)) } }
                } } }
            }
            @if let Some(settings) = settings {
                h2 { "Settings" }
                (json_block(settings))
            }
            h2 { "Newest jobs" }
            (jobs_table(recent))
            p { a href={ "jobs" (query(&[("queue", &q.name)])) } { "All jobs in " (q.name) " →" } }
        },
    )
}

/// `/schedules`.
pub(crate) fn schedules(frame: &Frame<'_>, schedules: &[ScheduleView]) -> Markup {
    layout(
        frame,
        "Schedules",
        html! {
            h1 { "Schedules" }
            @if schedules.is_empty() {
                p { "No schedule is configured. Add " code { "[[schedules]]" } " to the config file (see README)." }
            } @else {
                table.schedules {
                    thead { tr { th { "name" } th { "cadence" } th { "zone" } th { "job" } th { "next runs" } th { "last run" } th { "" } } }
                    tbody {
                        @for s in schedules {
                            @let def = &s.row.def;
                            tr {
                                td { (def.name) @if s.row.paused { " " span.badge.paused { "paused" } } }
                                td { code { (def.cron) } br; span.muted { (s.description) } }
                                td { (def.tz.as_deref().unwrap_or("UTC")) }
                                td { (def.job.kind) " → " (def.job.queue) }
                                td { @for (i, at) in s.upcoming.iter().take(3).enumerate() { @if i > 0 { br; } (time(*at)) } }
                                td {
                                    (opt_time(s.row.last_run_at))
                                    @if let Some(id) = s.row.last_job_id { " " a href={ "jobs/" (id) } { "job " (id) } }
                                }
                                td {
                                    (action_button(frame, &format!("schedules/{}/run", encode(&def.name)), "Run now", false))
                                    @if s.row.paused {
                                        (action_button(frame, &format!("schedules/{}/resume", encode(&def.name)), "Resume", false))
                                    } @else {
                                        (action_button(frame, &format!("schedules/{}/pause", encode(&def.name)), "Pause", false))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// `/workers`: a worker whose heartbeat is older than `stale_after_s` is highlighted.
pub(crate) fn workers(
    frame: &Frame<'_>,
    workers: &[WorkerInfo],
    running: &[JobRow],
    now: DateTime<Utc>,
    stale_after_s: i64,
) -> Markup {
    layout(
        frame,
        "Workers",
        html! {
            h1 { "Workers" }
            @if workers.is_empty() {
                p.warn { "No worker has sent a heartbeat in the last minute: jobs wait until one runs (" code { "spooler worker" } " or " code { "spooler serve" } ")." }
            } @else {
                table.workers {
                    thead { tr { th { "worker" } th { "host" } th.num { "pid" } th { "version" } th { "queues" } th { "kinds" } th.num { "running" } th { "jobs" } th { "started" } th { "last heartbeat" } } }
                    tbody {
                        @for w in workers {
                            @let seen = (now - w.last_seen_at).num_seconds();
                            @let slots: u32 = w.queues.values().sum();
                            tr class=[(seen > stale_after_s).then_some("stale")] {
                                td { code { (w.id) } }
                                td { (w.host) }
                                td.num { (w.pid) }
                                td { @if w.version.is_empty() { span.muted { "—" } } @else { (w.version) } }
                                td { @for (i, (q, n)) in w.queues.iter().enumerate() { @if i > 0 { ", " } (q) " (" (n) ")" } }
                                td { (w.kinds.join(", ")) }
                                td.num { (w.running) "/" (slots) }
                                td.running { @for (i, j) in running.iter().filter(|j| j.worker_id.as_deref() == Some(w.id.as_str())).take(20).enumerate() {
                                    @if i > 0 { ", " }
                                    a href={ "jobs/" (j.id) } { (j.id) " " (j.kind) }
                                } }
                                td { (time(w.started_at)) }
                                td { (age(seen)) " ago" }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// One route on `/routes`.
pub(crate) struct RouteLine {
    pub queue: String,
    pub kind: Option<String>,
    pub when: &'static str,
    pub to: Value,
}

/// `/routes`.
pub(crate) fn routes(frame: &Frame<'_>, routes: &[RouteLine]) -> Markup {
    layout(
        frame,
        "Routes",
        html! {
            h1 { "Routes" }
            @if routes.is_empty() {
                p { "No route is configured. A queue's " code { "on_failure" } " (and " code { "on_success" } ") in the config file sends its finished jobs on (see README)." }
            } @else {
                table.routes {
                    thead { tr { th { "queue" } th { "kind" } th { "when" } th { "to" } } }
                    tbody {
                        @for r in routes {
                            tr {
                                td { a href={ "queues/" (encode(&r.queue)) } { (r.queue) } }
                                td { @if let Some(k) = &r.kind { (k) } @else { span.muted { "any" } } }
                                td { (r.when) }
                                td { code { (r.to.to_string()) } }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// `/login`.
pub(crate) fn login(base: &str, csrf: &str, failed: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                base href=(base);
                title { "Log in · spooler" }
                link rel="stylesheet" href="assets/dashboard.css";
            }
            body.login {
                main {
                    h1 { "spooler" }
                    @if failed { p.warn role="alert" { "That token is not this server's." } }
                    form method="post" action="login" {
                        (csrf_field(csrf))
                        label { "Token " input type="password" name="token" autocomplete="current-password" autofocus; }
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

/// A page saying what went wrong.
pub(crate) fn error(base: &str, home: &str, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                base href=(base);
                title { "Error · spooler" }
                link rel="stylesheet" href="assets/dashboard.css";
            }
            body { main { h1 { "Something is not right" } p.warn { (message) } p { a href=(home) { "Back to the queues" } } } }
        }
    }
}

/// Failed jobs that share a kind and a first error line.
pub(crate) struct FailureGroup {
    pub kind: String,
    pub error: String,
    pub ids: Vec<i64>,
}

/// Groups failed jobs by kind and the first line of their last error, biggest group first.
pub(crate) fn group_failures(jobs: &[JobRow]) -> Vec<FailureGroup> {
    let mut groups: Vec<FailureGroup> = Vec::new();
    for j in jobs {
        let error = j
            .errors
            .last()
            .map(|e| e.message.lines().next().unwrap_or_default().to_string())
            .unwrap_or_default();
        match groups
            .iter_mut()
            .find(|g| g.kind == j.kind && g.error == error)
        {
            Some(g) => g.ids.push(j.id),
            None => groups.push(FailureGroup {
                kind: j.kind.clone(),
                error,
                ids: vec![j.id],
            }),
        }
    }
    groups.sort_by(|a, b| b.ids.len().cmp(&a.ids.len()).then(a.kind.cmp(&b.kind)));
    groups
}

/// `/failed`: failures grouped, each group with its own retry and delete.
pub(crate) fn failed_groups(
    frame: &Frame<'_>,
    queue: &str,
    groups: &[FailureGroup],
    seen: usize,
    windowed: bool,
) -> Markup {
    layout(
        frame,
        "Failed",
        html! {
            h1 { "Failed jobs" @if !queue.is_empty() { " in " (queue) } }
            p.muted {
                "Grouped by kind and first error line: "
                @if windowed { "the newest " (seen) " failed jobs (older ones are in " } @else { (seen) " failed job" @if seen != 1 { "s" } " (see " }
                a href={ "jobs" (query(&[("queue", queue), ("state", "failed")])) } { "the full list" } ")."
            }
            @if groups.is_empty() {
                p { "No job has failed." }
            } @else {
                table.groups {
                    thead { tr { th.num { "jobs" } th { "kind" } th { "error" } th { "newest" } th { "" } } }
                    tbody {
                        @for g in groups {
                            tr {
                                td.num { (g.ids.len()) }
                                td { (g.kind) }
                                td.error { (g.error) }
                                td { a href={ "jobs/" (g.ids[0]) } { "job " (g.ids[0]) } }
                                td {
                                    @if frame.can_act {
                                    @let ids = g.ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
                                    @for (action, label, danger) in [("retry", "Retry these", false), ("delete", "Delete these", true)] {
                                        form.inline method="post" action={ "groups/" (action) } {
                                            (csrf_field(frame.csrf))
                                            input type="hidden" name="ids" value=(ids);
                                            button type="submit" class=[danger.then_some("danger")] { (label) }
                                        }
                                    }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// `/operations/{id}`: an operation by filter and how far it got.
pub(crate) fn operation(frame: &Frame<'_>, op: &spooler::Operation) -> Markup {
    let visited = op.affected + op.skipped;
    let running = op.state == spooler::OperationState::Running;
    layout(
        frame,
        &format!("Operation {}", op.id),
        html! {
            h1 { "Operation " (op.id) ": " (op.action.as_str()) " " span.badge.op-state { (op.state.as_str()) } }
            p { code { (serde_json::to_string(&op.filter).unwrap_or_default()) } }
            progress max=(op.matched.max(1)) value=(visited.min(op.matched)) {}
            dl.fields {
                dt { "matched" } dd.matched { (op.matched) }
                dt { "affected" } dd.affected { (op.affected) }
                dt { "skipped" } dd.skipped { (op.skipped) }
                dt { "started" } dd { (time(op.created_at)) }
                dt { "last chunk" } dd { (time(op.updated_at)) }
            }
            @if running {
                (action_button(frame, &format!("operations/{}/cancel", op.id), "Cancel", true))
            }
        },
    )
}

/// `/operations/new`: what an operation would cover now, and the form that starts it.
pub(crate) fn confirm_operation(
    frame: &Frame<'_>,
    request: &crate::bulk::BulkRequest,
    matched: i64,
) -> Markup {
    let f = &request.filter;
    let time = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    let action = request.action.as_str();
    let state = f.state.map(|s| s.as_str()).unwrap_or_default();
    let (after, before) = (time(f.after), time(f.before));
    let fields: [(&str, &str); 6] = [
        ("queue", f.queue.as_deref().unwrap_or_default()),
        ("state", state),
        ("kind", f.kind.as_deref().unwrap_or_default()),
        ("tag", f.tag.as_deref().unwrap_or_default()),
        ("after", &after),
        ("before", &before),
    ];
    layout(
        frame,
        "Confirm",
        html! {
            h1 { (action) " every matching job" }
            p { code { (serde_json::to_string(f).unwrap_or_default()) } }
            p { strong.matched { (matched) } " job" @if matched != 1 { "s" } " match now (jobs enqueued later are not covered)." }
            @if matched > 0 && frame.can_act {
                form method="post" action="operations" {
                    (csrf_field(frame.csrf))
                    input type="hidden" name="action" value=(action);
                    @for (name, value) in fields {
                        input type="hidden" name=(name) value=(value);
                    }
                    button type="submit" class=[(action != "retry").then_some("danger")] { (action) " " (matched) " job" @if matched != 1 { "s" } }
                }
            }
            p { a href={ "jobs" (query(&fields)) } { "← back to the jobs" } }
        },
    )
}
