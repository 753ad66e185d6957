//! Routes: where a job goes when it fails or completes, decided once by [`Route::follow`].
//!
//! A queue's routes are stored with its settings ([`QueueSettings::routes`]), so every process
//! that finishes a job (a server with a config file, or a Rust worker without one) routes it
//! alike. A store follows a route inside the transaction that writes the job's final state: the
//! routed job exists exactly when the original's end does.

use crate::job::{AttemptError, JobRow, NewJob};
use crate::state::JobState;
use crate::store::QueueSettings;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Hops a message may take along its routes when the route does not say.
pub const DEFAULT_MAX_HOPS: u32 = 10;

/// Where a finished job goes next: a new job in `queue`, of the same kind and args unless the
/// route says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The queue the routed job goes to.
    pub queue: String,
    /// The routed job's kind; the original's when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Arguments merged over the original's (top-level keys; the route's win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<serde_json::Map<String, Value>>,
    /// How long the routed job waits before it may run.
    #[serde(
        default,
        with = "crate::job::opt_millis",
        rename = "delay_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub delay: Option<Duration>,
    /// The most hops a message may have taken to be routed on (counted along `routed_from`).
    #[serde(default = "default_max_hops")]
    pub max_hops: u32,
}

fn default_max_hops() -> u32 {
    DEFAULT_MAX_HOPS
}

impl Route {
    /// A route to `queue` with every other field at its default.
    pub fn to(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            kind: None,
            args: None,
            delay: None,
            max_hops: DEFAULT_MAX_HOPS,
        }
    }
}

/// A queue's routes, by the final state that follows them; a kind's own routes in `kinds` are
/// followed instead of the queue's for jobs of that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routes {
    /// Followed when a job becomes `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Route>,
    /// Followed when a job becomes `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<Route>,
    /// Routes of jobs of one kind in this queue, by kind: where one is set for a final state it
    /// is followed instead of the queue's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kinds: BTreeMap<String, KindRoutes>,
}

/// The routes of one kind's jobs in a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindRoutes {
    /// Followed when a job of the kind becomes `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Route>,
    /// Followed when a job of the kind becomes `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<Route>,
}

fn by_state<'a>(
    on_failure: &'a Option<Route>,
    on_success: &'a Option<Route>,
    state: JobState,
) -> Option<&'a Route> {
    match state {
        JobState::Failed => on_failure.as_ref(),
        JobState::Completed => on_success.as_ref(),
        _ => None,
    }
}

impl Routes {
    /// True when no route is set.
    pub fn is_empty(&self) -> bool {
        self.on_failure.is_none() && self.on_success.is_none() && self.kinds.is_empty()
    }

    /// The route a job of `kind` that became `state` follows: its kind's, else the queue's.
    pub fn after(&self, state: JobState, kind: &str) -> Option<&Route> {
        self.kinds
            .get(kind)
            .and_then(|k| by_state(&k.on_failure, &k.on_success, state))
            .or_else(|| by_state(&self.on_failure, &self.on_success, state))
    }

    /// Whether some job that became `state` may follow a route (before its kind is known).
    pub fn may_route(&self, state: JobState) -> bool {
        by_state(&self.on_failure, &self.on_success, state).is_some()
            || self
                .kinds
                .values()
                .any(|k| by_state(&k.on_failure, &k.on_success, state).is_some())
    }

    /// Every route, the queue's and its kinds'.
    pub fn all(&self) -> impl Iterator<Item = &Route> {
        [&self.on_failure, &self.on_success]
            .into_iter()
            .chain(
                self.kinds
                    .values()
                    .flat_map(|k| [&k.on_failure, &k.on_success]),
            )
            .flatten()
    }
}

/// The job a chain of routes began with, carried by every job routed from it: what a spill
/// writes so that a replay sends the message back to the start of its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The first job's kind.
    pub kind: String,
    /// The first job's queue.
    pub queue: String,
    /// The first job's arguments.
    pub args: Value,
    /// Routes taken from it to this job (1 for a job routed from the first).
    pub hops: u32,
}

/// What following a route comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Insert `job` (with `origin`) in the transaction that ended the original.
    Enqueue {
        /// The routed job.
        job: Box<NewJob>,
        /// Its chain's first job and its hop count.
        origin: Origin,
    },
    /// Not routed: the message has taken `max_hops` hops. The error is appended to the original.
    Stop(AttemptError),
}

impl Route {
    /// Where `job`, which just became final at `now`, goes along this route.
    pub fn follow(&self, job: &JobRow, now: DateTime<Utc>) -> Next {
        let origin = job.origin.clone().unwrap_or_else(|| Origin {
            kind: job.kind.clone(),
            queue: job.queue.clone(),
            args: job.args.clone(),
            hops: 0,
        });
        let hops = origin.hops.saturating_add(1);
        if hops > self.max_hops {
            return Next::Stop(AttemptError {
                attempt: job.attempt,
                at: now,
                message: format!(
                    "not routed to queue {}: the message has taken {} hops (max_hops {})",
                    self.queue, origin.hops, self.max_hops
                ),
            });
        }
        let args = match (&self.args, &job.args) {
            (None, args) => args.clone(),
            (Some(over), Value::Object(base)) => {
                let mut merged = base.clone();
                merged.extend(over.iter().map(|(k, v)| (k.clone(), v.clone())));
                Value::Object(merged)
            }
            (Some(over), _) => Value::Object(over.clone()),
        };
        let mut next = NewJob::new(self.kind.clone().unwrap_or_else(|| job.kind.clone()), args)
            .queue(self.queue.clone())
            .priority(job.priority);
        if let Some(delay) = self.delay
            && let Ok(delay) = chrono::TimeDelta::from_std(delay)
            && let Some(at) = now.checked_add_signed(delay)
        {
            next = next.run_at(at);
        }
        next.tags = job.tags.clone();
        next.meta = job.meta.clone();
        next.routed_from = Some(job.id);
        Next::Enqueue {
            job: Box::new(next),
            origin: Origin { hops, ..origin },
        }
    }
}

/// The route a job of `kind` in `queue` that became `state` follows, from the queues' `settings`.
pub fn route_for<'a>(
    settings: &'a crate::store::QueueSettingsMap,
    queue: &str,
    kind: &str,
    state: JobState,
) -> Option<&'a Route> {
    settings
        .get(queue)
        .and_then(|s| s.routes.after(state, kind))
}

/// Whether a job of `queue` that became `state` may follow a route, whatever its kind: whether
/// a store must read it to find out.
pub fn may_route(settings: &crate::store::QueueSettingsMap, queue: &str, state: JobState) -> bool {
    settings
        .get(queue)
        .is_some_and(|s| s.routes.may_route(state))
}

/// True when some queue routes completed jobs: finishing a completion must then read the job
/// and may insert, so it needs a transaction.
pub fn any_on_success(settings: &crate::store::QueueSettingsMap) -> bool {
    any_may_route(settings, JobState::Completed)
}

/// Whether a job of some queue that became `state` may follow a route: when not, a store need not
/// learn a finished job's queue.
pub fn any_may_route(settings: &crate::store::QueueSettingsMap, state: JobState) -> bool {
    settings.values().any(|s| s.routes.may_route(state))
}

/// A cycle of routes none of which has a delay, as the queues along it (the first repeated at
/// the end), if the queues' `settings` hold one: a message on it would be routed on at once,
/// hop after hop, until `max_hops`.
pub fn undelayed_cycle(settings: &[QueueSettings]) -> Option<Vec<String>> {
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in settings {
        for route in s.routes.all() {
            if route.delay.is_none_or(|d| d.is_zero()) {
                edges
                    .entry(s.queue.as_str())
                    .or_default()
                    .insert(route.queue.as_str());
            }
        }
    }
    // Depth-first search, keeping the path, from each queue in name order.
    fn visit<'a>(
        at: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|q| *q == at) {
            let mut cycle: Vec<String> = path[start..].iter().map(|q| q.to_string()).collect();
            cycle.push(at.to_string());
            return Some(cycle);
        }
        if !done.insert(at) {
            return None;
        }
        path.push(at);
        for next in edges.get(at).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for start in edges.keys() {
        if let Some(cycle) = visit(start, &edges, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn job(args: Value, origin: Option<Origin>) -> JobRow {
        let mut row = NewJob::new("tcp", args)
            .queue("deliver")
            .priority(3)
            .into_row(7, now());
        row.tags = vec!["t".into()];
        row.attempt = 2;
        row.origin = origin;
        row
    }

    #[test]
    fn a_route_keeps_kind_and_args_and_merges_its_own_over_them() {
        let mut route = Route::to("deliver-b");
        route.args = Some(
            json!({"address": "b:2", "extra": true})
                .as_object()
                .unwrap()
                .clone(),
        );
        let Next::Enqueue { job: next, origin } =
            route.follow(&job(json!({"address": "a:1", "payload": "p"}), None), now())
        else {
            panic!("routed")
        };
        assert_eq!(next.kind, "tcp");
        assert_eq!(next.queue, "deliver-b");
        assert_eq!(
            next.args,
            json!({"address": "b:2", "payload": "p", "extra": true})
        );
        assert_eq!(next.priority, 3);
        assert_eq!(next.tags, vec!["t".to_string()]);
        assert_eq!(next.routed_from, Some(7));
        assert_eq!(next.run_at, None);
        assert_eq!(
            origin,
            Origin {
                kind: "tcp".into(),
                queue: "deliver".into(),
                args: json!({"address": "a:1", "payload": "p"}),
                hops: 1
            }
        );
    }

    #[test]
    fn a_route_may_change_the_kind_and_delay_the_job_and_the_origin_is_carried_on() {
        let mut route = Route::to("spill");
        route.kind = Some("file".into());
        route.delay = Some(Duration::from_secs(20));
        let first = Origin {
            kind: "tcp".into(),
            queue: "deliver".into(),
            args: json!({"address": "a:1"}),
            hops: 2,
        };
        let Next::Enqueue { job: next, origin } =
            route.follow(&job(json!({"address": "c:3"}), Some(first.clone())), now())
        else {
            panic!("routed")
        };
        assert_eq!(next.kind, "file");
        assert_eq!(next.run_at, Some(now() + chrono::TimeDelta::seconds(20)));
        assert_eq!(origin, Origin { hops: 3, ..first });
    }

    #[test]
    fn a_message_stops_after_max_hops_with_the_reason() {
        let mut route = Route::to("again");
        route.max_hops = 3;
        let at = |hops| Origin {
            kind: "k".into(),
            queue: "q".into(),
            args: json!({}),
            hops,
        };
        assert!(matches!(
            route.follow(&job(json!({}), Some(at(2))), now()),
            Next::Enqueue { .. }
        ));
        let Next::Stop(error) = route.follow(&job(json!({}), Some(at(3))), now()) else {
            panic!("stopped")
        };
        assert_eq!(error.attempt, 2);
        assert!(error.message.contains("max_hops 3"), "{}", error.message);
        assert!(error.message.contains("queue again"), "{}", error.message);
    }

    fn queue(name: &str, failure: Option<Route>, success: Option<Route>) -> QueueSettings {
        QueueSettings {
            routes: Routes {
                on_failure: failure,
                on_success: success,
                ..Default::default()
            },
            ..QueueSettings::new(name)
        }
    }

    #[test]
    fn a_kinds_route_is_followed_instead_of_the_queues() {
        let mut routes = Routes {
            on_failure: Some(Route::to("dead")),
            ..Default::default()
        };
        routes.kinds.insert(
            "mail".into(),
            KindRoutes {
                on_failure: Some(Route::to("mail-dead")),
                on_success: Some(Route::to("sent")),
            },
        );
        let to = |state, kind| routes.after(state, kind).map(|r| r.queue.as_str());
        assert_eq!(to(JobState::Failed, "mail"), Some("mail-dead"));
        assert_eq!(to(JobState::Failed, "other"), Some("dead"));
        assert_eq!(to(JobState::Completed, "mail"), Some("sent"));
        assert_eq!(to(JobState::Completed, "other"), None);
        assert_eq!(to(JobState::Cancelled, "mail"), None);
        assert!(routes.may_route(JobState::Completed));
        assert!(!routes.may_route(JobState::Cancelled));
        let mut kinds_only = Routes::default();
        kinds_only.kinds.insert(
            "mail".into(),
            KindRoutes {
                on_failure: None,
                on_success: Some(Route::to("mail")),
            },
        );
        let settings = [QueueSettings {
            routes: kinds_only,
            ..QueueSettings::new("mail")
        }];
        assert_eq!(
            undelayed_cycle(&settings),
            Some(vec!["mail".into(), "mail".into()]),
            "a kind's routes count for cycles"
        );
    }

    #[test]
    fn a_cycle_without_a_delay_is_found_and_named() {
        let chain = [
            queue("a", Some(Route::to("b")), None),
            queue("b", Some(Route::to("c")), None),
            queue("c", None, Some(Route::to("a"))),
        ];
        assert_eq!(
            undelayed_cycle(&chain),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
        let own = [queue("a", Some(Route::to("a")), None)];
        assert_eq!(undelayed_cycle(&own), Some(vec!["a".into(), "a".into()]));
    }

    #[test]
    fn a_delay_anywhere_on_the_cycle_or_no_cycle_is_allowed() {
        let mut delayed = Route::to("a");
        delayed.delay = Some(Duration::from_secs(20));
        let chain = [
            queue("a", Some(Route::to("b")), None),
            queue("b", Some(Route::to("spill")), None),
            queue("spill", Some(delayed), None),
        ];
        assert_eq!(undelayed_cycle(&chain), None);
        let diamond = [
            queue("a", Some(Route::to("b")), Some(Route::to("c"))),
            queue("b", Some(Route::to("d")), None),
            queue("c", Some(Route::to("d")), None),
        ];
        assert_eq!(undelayed_cycle(&diamond), None);
    }
}
