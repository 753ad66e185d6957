//! Conformance: Claiming: order, limits, queues and kinds, the lease and the attempt, paused queues, races.

#![allow(missing_docs)]

use super::Harness;
use super::helpers::*;
use crate::clock::add;
use crate::store::*;
use crate::{JobState, NewJob};
use chrono::TimeDelta;
use std::collections::HashSet;
use std::time::Duration;

pub async fn claim_orders_by_priority_then_run_at_then_id(h: Harness) {
    let t = h.now();
    let a = insert(&h, job("k").run_at(t - TimeDelta::seconds(10))).await;
    let b = insert(&h, job("k").run_at(t - TimeDelta::seconds(20))).await;
    let c = insert(&h, job("k").priority(5)).await;
    let d = insert(&h, job("k").run_at(t - TimeDelta::seconds(20))).await;
    let got: Vec<i64> = claim(&h, &["default"], &["k"], 10)
        .await
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(got, vec![c.id, b.id, d.id, a.id]);
}

pub async fn claim_respects_limit_queues_and_kinds(h: Harness) {
    for _ in 0..5 {
        insert(&h, job("a")).await;
        insert(&h, job("b")).await;
        insert(&h, job("a").queue("other")).await;
    }
    let got = claim(&h, &["default"], &["a"], 3).await;
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|j| j.kind == "a" && j.queue == "default"));
    let got = claim(&h, &["default"], &["a"], 10).await;
    assert_eq!(got.len(), 2);
    // No kind "b" handler asked: b jobs stay available, never dropped.
    assert!(claim(&h, &["default"], &["a"], 10).await.is_empty());
    let got = claim(&h, &["default", "other"], &["a", "b"], 100).await;
    assert_eq!(got.len(), 10);
    assert!(claim(&h, &["default"], &[], 10).await.is_empty());
    assert!(claim(&h, &[], &["a"], 10).await.is_empty());
}

pub async fn claim_sets_lease_and_counts_the_attempt(h: Harness) {
    let j = insert(&h, job("k")).await;
    h.clock.advance(Duration::from_secs(3));
    let c = claim_one(&h, "k").await;
    assert_eq!(c.id, j.id);
    assert_eq!(c.state, JobState::Running);
    assert_eq!(c.attempt, 1);
    assert_eq!(c.started_at, Some(h.now()));
    assert_eq!(c.lease_expires_at, Some(add(h.now(), LEASE)));
    assert_eq!(c.worker_id.as_deref(), Some("w1"));
    assert_eq!(get(&h, j.id).await, c);
}

pub async fn claim_skips_paused_queues(h: Harness) {
    insert(&h, job("k")).await;
    h.store().queue_pause("default").await.unwrap();
    assert!(claim(&h, &["default"], &["k"], 10).await.is_empty());
    let queues = h.store().queue_list().await.unwrap();
    assert!(queues.iter().any(|q| q.name == "default" && q.paused));
    h.store().queue_resume("default").await.unwrap();
    assert_eq!(claim(&h, &["default"], &["k"], 10).await.len(), 1);
    // Pausing a queue with no jobs yet is remembered.
    h.store().queue_pause("empty").await.unwrap();
    let queues = h.store().queue_list().await.unwrap();
    assert!(queues.iter().any(|q| q.name == "empty" && q.paused));
}

pub async fn concurrent_claims_never_share_a_job(h: Harness) {
    let jobs: Vec<NewJob> = (0..400).map(|_| job("k")).collect();
    h.store().job_insert_many(jobs).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = h.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .job_claim(&JobClaim {
                        queues: vec!["default".into()],
                        kinds: vec!["k".into()],
                        limit: 7,
                        worker_id: format!("w{w}"),
                        lease: LEASE,
                    })
                    .await
                    .unwrap()
                    .jobs;
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|j| j.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for t in tasks {
        for id in t.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "job {id} claimed twice");
        }
    }
    assert_eq!(total, 400);
}

/// This file's cases, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_claim {
    ($m:ident!($($a:tt)*)) => {
        $crate::$m!($($a)*; "claim"; claim_orders_by_priority_then_run_at_then_id, claim_respects_limit_queues_and_kinds, claim_sets_lease_and_counts_the_attempt, claim_skips_paused_queues, concurrent_claims_never_share_a_job);
    };
}
