//! Conformance: Promotion of scheduled jobs and pruning of finished ones.

#![allow(missing_docs)]

use super::Harness;
use super::helpers::*;
use crate::JobState;
use crate::clock::add;
use crate::store::*;
use chrono::TimeDelta;
use std::time::Duration;

pub async fn promote_only_due_jobs(h: Harness) {
    let soon = insert(&h, job("k").run_at(add(h.now(), Duration::from_secs(5)))).await;
    let later = insert(&h, job("k").run_at(add(h.now(), Duration::from_secs(500)))).await;
    h.clock.advance(Duration::from_secs(5));
    assert_eq!(h.store().job_promote(100).await.unwrap(), 1);
    assert_eq!(get(&h, soon.id).await.state, JobState::Available);
    assert_eq!(get(&h, later.id).await.state, JobState::Scheduled);
    for _ in 0..30 {
        insert(&h, job("k").run_at(add(h.now(), Duration::from_secs(1)))).await;
    }
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(h.store().job_promote(20).await.unwrap(), 20);
    assert_eq!(h.store().job_promote(20).await.unwrap(), 10);
}

pub async fn prune_only_old_finished_jobs(h: Harness) {
    for _ in 0..3 {
        insert(&h, job("k")).await;
    }
    let c = claim(&h, &["default"], &["k"], 3).await;
    assert!(finish(&h, &c[0], completed()).await);
    assert!(finish(&h, &c[1], Outcome::Failed { error: "x".into() }).await);
    let keep = insert(&h, job("k")).await;
    h.clock.advance(Duration::from_secs(3600));
    let fresh_done = insert(&h, job("k").queue("fresh")).await;
    let f = claim(&h, &["fresh"], &["k"], 1).await;
    assert!(finish(&h, &f[0], completed()).await);
    let cutoff = h.now() - TimeDelta::seconds(60);
    let pruned = h
        .store()
        .job_prune(&JobPrune {
            completed_before: Some(cutoff),
            failed_before: None,
            cancelled_before: Some(cutoff),
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(h.store().job_get(c[0].id).await.unwrap(), None);
    assert!(
        h.store().job_get(c[1].id).await.unwrap().is_some(),
        "failed kept"
    );
    assert!(
        h.store().job_get(c[2].id).await.unwrap().is_some(),
        "running kept"
    );
    assert!(
        h.store().job_get(keep.id).await.unwrap().is_some(),
        "available kept"
    );
    assert!(
        h.store().job_get(fresh_done.id).await.unwrap().is_some(),
        "recent completed kept"
    );
    let pruned = h
        .store()
        .job_prune(&JobPrune {
            failed_before: Some(h.now()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pruned, 1);
}

/// This file's cases, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_maintenance {
    ($m:ident!($($a:tt)*)) => {
        $crate::$m!($($a)*; "maintenance"; promote_only_due_jobs, prune_only_old_finished_jobs);
    };
}
