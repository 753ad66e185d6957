//! Conformance: Rescue of lapsed leases: the late result rejected, attempts exhausted, the backoff, a cancel asked, renewed leases left alone.

#![allow(missing_docs)]

use super::Harness;
use super::helpers::*;
use crate::clock::add;
use crate::store::*;
use crate::{JobState, RetryPolicies, RetryPolicy};
use std::sync::Arc;
use std::time::Duration;

pub async fn rescue_expired_lease_and_reject_the_late_result(h: Harness) {
    insert(&h, job("k")).await;
    let c = claim_one(&h, "k").await;
    let report = rescue(&h).await;
    assert_eq!(report, RescueReport::default(), "lease not yet expired");
    h.clock.advance(LEASE + Duration::from_secs(1));
    let report = rescue(&h).await;
    assert_eq!(report.retried, vec![c.id]);
    let j = get(&h, c.id).await;
    assert_eq!(j.state, JobState::Available);
    assert_eq!(j.errors.len(), 1);
    assert!(j.errors[0].message.contains("lease"), "{:?}", j.errors);
    let second = claim_one(&h, "k").await;
    assert_eq!(second.attempt, 2);
    assert!(
        !finish(&h, &c, completed()).await,
        "the first worker's late result is rejected"
    );
    assert!(finish(&h, &second, completed()).await);
    assert_eq!(get(&h, c.id).await.state, JobState::Completed);
}

pub async fn rescue_out_of_attempts_fails_the_job(h: Harness) {
    insert(&h, job("k").max_attempts(1)).await;
    let c = claim_one(&h, "k").await;
    h.clock.advance(LEASE * 2);
    let report = rescue(&h).await;
    assert_eq!(report.failed, vec![c.id]);
    let j = get(&h, c.id).await;
    assert_eq!(j.state, JobState::Failed);
    assert_eq!(j.errors.len(), 1);
    assert_eq!(j.errors[0].attempt, 1);
    assert_eq!(
        j.errors[0].message,
        "lease expired (worker w1 stopped renewing it)"
    );
    assert_eq!(j.finished_at, Some(h.now()));
}

pub async fn rescue_applies_the_backoff(h: Harness) {
    insert(&h, job("k").queue("slow").max_attempts(3)).await;
    insert(&h, job("other")).await;
    let slow = claim(&h, &["slow"], &["k"], 1).await.remove(0);
    let other = claim_one(&h, "other").await;
    h.clock.advance(LEASE * 2);
    let mut retry = RetryPolicies::default();
    retry
        .by_queue
        .insert("slow".into(), RetryPolicy::fixed(Duration::from_secs(60)));
    retry
        .by_kind
        .insert("other".into(), RetryPolicy::fixed(Duration::ZERO));
    let report = rescue_with(&h, Arc::new(retry)).await;
    let mut both = vec![slow.id, other.id];
    both.sort_unstable();
    assert_eq!(report.retried, both);
    let j = get(&h, slow.id).await;
    assert_eq!(
        j.state,
        JobState::Scheduled,
        "waits for its queue's backoff"
    );
    assert_eq!(j.run_at, add(h.now(), Duration::from_secs(60)));
    assert_eq!(j.errors.len(), 1);
    assert!(
        j.errors[0].message.contains("lease expired"),
        "{:?}",
        j.errors
    );
    assert_eq!(get(&h, other.id).await.state, JobState::Available);
    assert_eq!(h.store().job_promote(100).await.unwrap(), 0);
    h.clock.advance(Duration::from_secs(60));
    assert_eq!(h.store().job_promote(100).await.unwrap(), 1);
    assert_eq!(claim(&h, &["slow"], &["k"], 1).await[0].attempt, 2);
}

pub async fn rescue_of_a_cancel_requested_job_cancels_it(h: Harness) {
    insert(&h, job("k")).await;
    let c = claim_one(&h, "k").await;
    assert!(cancel(&h, c.id).await.unwrap().cancel_requested);
    h.clock.advance(LEASE * 2);
    let report = rescue(&h).await;
    assert_eq!(report.cancelled, vec![c.id]);
    let j = get(&h, c.id).await;
    assert_eq!(j.state, JobState::Cancelled);
    assert_eq!(j.finished_at, Some(h.now()));
    assert!(
        j.errors[0].message.contains("lease expired"),
        "{:?}",
        j.errors
    );
    assert!(claim(&h, &["default"], &["k"], 1).await.is_empty());
}

pub async fn extended_lease_is_not_rescued(h: Harness) {
    insert(&h, job("k")).await;
    let c = claim_one(&h, "k").await;
    h.clock.advance(Duration::from_secs(20));
    let mut stale = c.lease();
    stale.fence = 9;
    let status = h
        .store()
        .job_lease_extend(&LeaseExtend {
            leases: vec![c.lease(), stale],
            worker_id: "w1".into(),
            lease: LEASE,
        })
        .await
        .unwrap();
    let held: Vec<(i64, bool)> = status.iter().map(|s| (s.id, s.held)).collect();
    assert!(held.contains(&(c.id, true)));
    assert_eq!(status.iter().filter(|s| s.held).count(), 1);
    assert_eq!(
        get(&h, c.id).await.lease_expires_at,
        Some(add(h.now(), LEASE))
    );
    h.clock.advance(Duration::from_secs(20));
    let report = rescue(&h).await;
    assert!(report.retried.is_empty() && report.failed.is_empty());
    assert_eq!(get(&h, c.id).await.state, JobState::Running);
}

/// This file's cases, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_rescue {
    ($m:ident!($($a:tt)*)) => {
        $crate::$m!($($a)*; "rescue"; rescue_expired_lease_and_reject_the_late_result, rescue_out_of_attempts_fails_the_job, rescue_applies_the_backoff, rescue_of_a_cancel_requested_job_cancels_it, extended_lease_is_not_rescued);
    };
}
