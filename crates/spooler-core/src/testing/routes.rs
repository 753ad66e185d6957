//! Conformance: Routes: a final state enqueues the routed job in the same transaction, from a
//! handler's outcome or a rescue, carrying its chain's origin, and stops after `max_hops`; a
//! spilled message replayed is enqueued once per key.

#![allow(missing_docs)]

use super::Harness;
use super::helpers::*;
use crate::clock::add;
use crate::route::{Origin, Route, Routes};
use crate::store::*;
use crate::{JobRow, JobState, NewJob};
use serde_json::json;
use std::time::Duration;

/// Stores `routes` on the queues they name.
async fn configure(h: &Harness, routes: &[(&str, Routes)]) {
    let settings: Vec<QueueSettings> = routes
        .iter()
        .map(|(queue, routes)| QueueSettings {
            routes: routes.clone(),
            ..QueueSettings::new(*queue)
        })
        .collect();
    configure_queues(h, &settings).await;
}

fn on_failure(route: Route) -> Routes {
    Routes {
        on_failure: Some(route),
        on_success: None,
        ..Default::default()
    }
}

fn on_success(route: Route) -> Routes {
    Routes {
        on_failure: None,
        on_success: Some(route),
        ..Default::default()
    }
}

/// Every job in `queue`, oldest first.
async fn in_queue(h: &Harness, queue: &str) -> Vec<JobRow> {
    let mut jobs = walk_pages(
        h,
        JobList {
            queue: Some(queue.into()),
            limit: 100,
            ..Default::default()
        },
    )
    .await;
    jobs.reverse();
    jobs
}

async fn claim_from(h: &Harness, queue: &str, kind: &str) -> JobRow {
    let mut got = claim(h, &[queue], &[kind], 1).await;
    assert_eq!(got.len(), 1, "expected one {kind} job claimed from {queue}");
    got.pop().unwrap()
}

fn failed(message: &str) -> Outcome {
    Outcome::Failed {
        error: message.into(),
    }
}

pub async fn routes_are_stored_with_the_queue_settings(h: Harness) {
    let mut route = Route::to("spill");
    route.kind = Some("file".into());
    route.args = json!({"path": "spill.jsonl"}).as_object().cloned();
    route.delay = Some(Duration::from_secs(20));
    route.max_hops = 3;
    let routes = Routes {
        on_failure: Some(route),
        on_success: Some(Route::to("done")),
        ..Default::default()
    };
    configure(&h, &[("deliver", routes.clone())]).await;
    let stored = h.store().queue_settings().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].queue, "deliver");
    assert_eq!(stored[0].routes, routes);
}

pub async fn a_failed_job_is_routed_with_the_routes_args_merged_over_its_own(h: Harness) {
    let mut route = Route::to("deliver-b");
    route.args = json!({"address": "b:2"}).as_object().cloned();
    configure(&h, &[("deliver", on_failure(route))]).await;
    let original = insert(
        &h,
        NewJob::new("tcp", json!({"address": "a:1", "payload": "hi"}))
            .queue("deliver")
            .priority(4)
            .max_attempts(2),
    )
    .await;
    // A failure that will be retried is not final: nothing is routed.
    let c = claim_from(&h, "deliver", "tcp").await;
    assert!(finish(&h, &c, boom(h.now())).await);
    assert!(in_queue(&h, "deliver-b").await.is_empty());
    // The last attempt fails it: routed.
    let c = claim_from(&h, "deliver", "tcp").await;
    assert!(finish(&h, &c, boom(h.now())).await);
    assert_eq!(get(&h, original.id).await.state, JobState::Failed);
    let routed = in_queue(&h, "deliver-b").await;
    assert_eq!(routed.len(), 1, "one routed job");
    let r = &routed[0];
    assert_eq!(r.kind, "tcp");
    assert_eq!(r.state, JobState::Available);
    assert_eq!(r.args, json!({"address": "b:2", "payload": "hi"}));
    assert_eq!(r.priority, 4);
    assert_eq!(r.routed_from, Some(original.id));
    assert_eq!(
        r.origin,
        Some(Origin {
            kind: "tcp".into(),
            queue: "deliver".into(),
            args: json!({"address": "a:1", "payload": "hi"}),
            hops: 1,
        })
    );
    // A failure that is final at once routes too.
    insert(&h, NewJob::new("tcp", json!({})).queue("deliver")).await;
    let c = claim_from(&h, "deliver", "tcp").await;
    assert!(finish(&h, &c, failed("refused")).await);
    assert_eq!(in_queue(&h, "deliver-b").await.len(), 2);
}

pub async fn completions_follow_on_success_and_cancels_follow_nothing(h: Harness) {
    let mut route = Route::to("after");
    route.kind = Some("audit".into());
    configure(&h, &[("default", on_success(route))]).await;
    for _ in 0..3 {
        insert(&h, job("k")).await;
    }
    let c = claim(&h, &["default"], &["k"], 3).await;
    // Two completions in one call (the stores' bulk path) and a cancel.
    let cancel = Outcome::Cancelled {
        reason: "asked".into(),
    };
    let acks = finish_together(
        &h,
        &[(&c[0], completed()), (&c[1], completed()), (&c[2], cancel)],
    )
    .await;
    assert_eq!(acks, vec![true, true, true]);
    let routed = in_queue(&h, "after").await;
    let mut from: Vec<_> = routed.iter().map(|r| r.routed_from).collect();
    from.sort();
    assert_eq!(from, vec![Some(c[0].id), Some(c[1].id)]);
    assert!(routed.iter().all(|r| r.kind == "audit"));
    // One completion alone (the one-by-one path) routes as well; a late one routes nothing.
    insert(&h, job("k")).await;
    let one = claim_one(&h, "k").await;
    assert!(finish(&h, &one, completed()).await);
    assert!(!finish(&h, &one, completed()).await);
    assert_eq!(in_queue(&h, "after").await.len(), 3);
}

pub async fn a_kinds_own_route_is_followed_instead_of_the_queues(h: Harness) {
    let mut routes = on_failure(Route::to("dead"));
    routes.kinds.insert(
        "mail".into(),
        crate::route::KindRoutes {
            on_failure: Some(Route::to("mail-dead")),
            on_success: Some(Route::to("sent")),
        },
    );
    configure(&h, &[("default", routes)]).await;
    let mail = insert(&h, job("mail")).await;
    let other = insert(&h, job("k")).await;
    let c = claim(&h, &["default"], &["mail", "k"], 2).await;
    for c in &c {
        assert!(finish(&h, c, failed("no")).await);
    }
    assert_eq!(
        in_queue(&h, "mail-dead").await[0].routed_from,
        Some(mail.id)
    );
    assert_eq!(in_queue(&h, "dead").await[0].routed_from, Some(other.id));
    assert_eq!(in_queue(&h, "mail-dead").await.len(), 1);
    assert_eq!(in_queue(&h, "dead").await.len(), 1);
    // Completions: only the kind with an on_success route is routed (both in one call).
    let mail = insert(&h, job("mail")).await;
    insert(&h, job("k")).await;
    let c = claim(&h, &["default"], &["mail", "k"], 2).await;
    let acks = finish_together(&h, &[(&c[0], completed()), (&c[1], completed())]).await;
    assert_eq!(acks, vec![true, true]);
    let sent = in_queue(&h, "sent").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].routed_from, Some(mail.id));
    assert_eq!(sent[0].kind, "mail");
}

pub async fn attempts_exhausted_at_rescue_follow_on_failure(h: Harness) {
    configure(&h, &[("default", on_failure(Route::to("dead")))]).await;
    let original = insert(&h, job("k").max_attempts(1)).await;
    let c = claim_one(&h, "k").await;
    h.clock.advance(LEASE + Duration::from_secs(1));
    let report = rescue(&h).await;
    assert_eq!(report.failed, vec![original.id]);
    let routed = in_queue(&h, "dead").await;
    assert_eq!(routed.len(), 1);
    assert_eq!(routed[0].routed_from, Some(original.id));
    assert_eq!(routed[0].args, original.args);
    // The worker that lost the lease comes back late: rejected, and nothing is routed again.
    assert!(!finish(&h, &c, failed("late")).await);
    assert_eq!(in_queue(&h, "dead").await.len(), 1);
}

pub async fn a_delayed_route_schedules_the_routed_job(h: Harness) {
    let mut route = Route::to("later");
    route.delay = Some(Duration::from_secs(20));
    configure(&h, &[("default", on_failure(route))]).await;
    insert(&h, job("k")).await;
    let c = claim_one(&h, "k").await;
    assert!(finish(&h, &c, failed("no")).await);
    let routed = in_queue(&h, "later").await;
    assert_eq!(routed.len(), 1);
    assert_eq!(routed[0].state, JobState::Scheduled);
    assert_eq!(routed[0].run_at, add(h.now(), Duration::from_secs(20)));
}

pub async fn a_message_stops_after_max_hops_failed_with_the_reason(h: Harness) {
    // A queue that routes its failures back to itself after a delay, at most 3 hops.
    let mut route = Route::to("loop");
    route.delay = Some(Duration::from_secs(1));
    route.max_hops = 3;
    configure(&h, &[("loop", on_failure(route))]).await;
    let first = insert(&h, job("k").queue("loop")).await;
    let mut ids = vec![first.id];
    loop {
        h.clock.advance(Duration::from_secs(2));
        h.store().job_promote(100).await.unwrap();
        let mut got = claim(&h, &["loop"], &["k"], 1).await;
        let Some(c) = got.pop() else { break };
        assert!(finish(&h, &c, failed("down")).await);
        let jobs = in_queue(&h, "loop").await;
        if let Some(next) = jobs.last().filter(|j| !ids.contains(&j.id)) {
            assert_eq!(next.routed_from, Some(c.id), "each hop links back");
            ids.push(next.id);
        }
        assert!(ids.len() <= 10, "the chain ends");
    }
    assert_eq!(ids.len(), 4, "the first job and 3 hops");
    let last = get(&h, *ids.last().unwrap()).await;
    assert_eq!(last.state, JobState::Failed);
    assert_eq!(last.origin.as_ref().map(|o| o.hops), Some(3));
    let reason = &last.errors.last().unwrap().message;
    assert!(
        reason.contains("max_hops 3"),
        "the reason is kept: {reason}"
    );
    for job in in_queue(&h, "loop").await {
        assert_eq!(job.state, JobState::Failed, "job {}", job.id);
    }
}

pub async fn a_replayed_message_is_enqueued_once_however_often_it_is_replayed(h: Harness) {
    let message = |key: &str, n: i64| Replay {
        key: key.into(),
        job: NewJob::new("tcp", json!({"n": n})).queue("deliver"),
    };
    let first = h
        .store()
        .job_replay(&[
            message("spill:1", 1),
            message("spill:2", 2),
            message("spill:1", 1),
        ])
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|r| r.enqueued).collect::<Vec<_>>(),
        vec![true, true, false],
        "a key repeated in one call is enqueued once"
    );
    assert!(first[0].id.is_some() && first[1].id.is_some());
    assert_ne!(first[0].id, first[1].id);
    assert_eq!(
        first[2].id, first[0].id,
        "the repeat answers the job it got"
    );
    let jobs = in_queue(&h, "deliver").await;
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].args, json!({"n": 1}));
    // Finished (or even deleted) since: a second replay still enqueues nothing.
    let c = claim_from(&h, "deliver", "tcp").await;
    assert!(finish(&h, &c, completed()).await);
    h.store().job_delete(c.id).await.unwrap();
    let again = h
        .store()
        .job_replay(&[
            message("spill:1", 1),
            message("spill:2", 2),
            message("spill:3", 3),
        ])
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|r| r.enqueued).collect::<Vec<_>>(),
        vec![false, false, true]
    );
    assert_eq!(again[1].id, first[1].id);
    assert_eq!(
        in_queue(&h, "deliver").await.len(),
        2,
        "one new job, one deleted"
    );
    // A message a store refuses fails the call and records nothing.
    let bad = Replay {
        key: "spill:4".into(),
        job: NewJob::new("", json!({})),
    };
    assert!(h.store().job_replay(&[bad]).await.is_err());
    let retried = h
        .store()
        .job_replay(&[message("spill:4", 4)])
        .await
        .unwrap();
    assert!(retried[0].enqueued, "a refused message's key is not spent");
}

/// Where a message went next: the jobs routed from a job, by `routed_from`, oldest first; none
/// for a job no route left; the limit holds; the routed job carries the original's meta.
pub async fn the_jobs_routed_from_a_job_are_found_by_it(h: Harness) {
    configure(
        &h,
        &[
            ("a", on_failure(Route::to("b"))),
            ("b", on_failure(Route::to("c"))),
        ],
    )
    .await;
    let mut first = NewJob::new("tcp", json!({"n": 1}))
        .queue("a")
        .max_attempts(1);
    first.meta.insert(
        crate::TRACEPARENT.into(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    );
    let original = insert(&h, first.clone()).await;
    let other = insert(
        &h,
        NewJob::new("tcp", json!({"n": 2}))
            .queue("a")
            .max_attempts(1),
    )
    .await;
    let c = claim_from(&h, "a", "tcp").await;
    assert_eq!(c.id, original.id);
    assert!(finish(&h, &c, failed("refused")).await);
    let next = h.store().job_routed_from(original.id, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].queue, "b");
    assert_eq!(next[0].routed_from, Some(original.id));
    assert_eq!(
        next[0].meta, first.meta,
        "the trace goes on with the message"
    );
    assert!(
        h.store()
            .job_routed_from(other.id, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        h.store()
            .job_routed_from(next[0].id, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        h.store()
            .job_routed_from(original.id, 0)
            .await
            .unwrap()
            .is_empty()
    );
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_routes {
    ($m:ident!($($a:tt)*)) => {
        $crate::$m!($($a)*; "routes"; routes_are_stored_with_the_queue_settings, a_failed_job_is_routed_with_the_routes_args_merged_over_its_own, completions_follow_on_success_and_cancels_follow_nothing, a_kinds_own_route_is_followed_instead_of_the_queues, attempts_exhausted_at_rescue_follow_on_failure, a_delayed_route_schedules_the_routed_job, a_message_stops_after_max_hops_failed_with_the_reason, a_replayed_message_is_enqueued_once_however_often_it_is_replayed, the_jobs_routed_from_a_job_are_found_by_it);
    };
}
