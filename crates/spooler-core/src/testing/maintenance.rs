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
            ..Default::default()
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

pub async fn prune_only_the_queues_in_scope(h: Harness) {
    let mut done = Vec::new();
    for queue in ["a", "b", "c"] {
        insert(&h, job("k").queue(queue)).await;
        let c = claim(&h, &[queue], &["k"], 1).await;
        assert!(finish(&h, &c[0], completed()).await);
        done.push(c[0].id);
    }
    h.clock.advance(Duration::from_secs(60));
    let prune = |queues: QueueScope| JobPrune {
        completed_before: Some(h.now()),
        queues,
        limit: 1000,
        ..Default::default()
    };
    let only_a = prune(QueueScope::Only(vec!["a".into()]));
    assert_eq!(h.store().job_prune(&only_a).await.unwrap(), 1);
    assert_eq!(
        h.store().job_get(done[0]).await.unwrap(),
        None,
        "a's job pruned"
    );
    let all_but_b = prune(QueueScope::Except(vec!["b".into()]));
    assert_eq!(
        h.store().job_get(done[1]).await.unwrap().map(|j| j.id),
        Some(done[1])
    );
    assert_eq!(
        h.store().job_prune(&all_but_b).await.unwrap(),
        1,
        "c's job, not b's"
    );
    assert!(
        h.store().job_get(done[1]).await.unwrap().is_some(),
        "b is out of scope"
    );
    assert_eq!(h.store().job_get(done[2]).await.unwrap(), None);
}

pub async fn queue_retention_round_trips_with_the_queue_settings(h: Harness) {
    let settings = vec![
        QueueSettings {
            queue: "audit".into(),
            max_attempts: None,
            timeout: None,
            retention: QueueRetention {
                completed: Some(Keep::For(Duration::from_secs(3600))),
                failed: Some(Keep::Forever),
                cancelled: None,
            },
            routes: Default::default(),
            limits: Default::default(),
            unique: None,
        },
        QueueSettings {
            queue: "plain".into(),
            max_attempts: Some(3),
            timeout: None,
            retention: QueueRetention::default(),
            routes: Default::default(),
            limits: Default::default(),
            unique: None,
        },
    ];
    h.store().queue_configure(&settings).await.unwrap();
    assert_eq!(h.store().queue_settings().await.unwrap(), settings);
}

/// This file's cases, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_maintenance {
    ($m:ident!($($a:tt)*)) => {
        $crate::$m!($($a)*; "maintenance"; promote_only_due_jobs, prune_only_old_finished_jobs, prune_only_the_queues_in_scope, queue_retention_round_trips_with_the_queue_settings);
    };
}
