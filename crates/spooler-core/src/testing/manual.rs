//! Conformance: One job by hand: cancel, retry and delete in every state.

#![allow(missing_docs)]

use super::Harness;
use super::helpers::*;
use crate::clock::add;
use crate::store::*;
use crate::{JobState, StoreError};
use std::time::Duration;

pub async fn cancel_by_state(h: Harness) {
    let avail = insert(&h, job("k")).await;
    let sched = insert(&h, job("k").run_at(add(h.now(), Duration::from_secs(600)))).await;
    assert_eq!(
        cancel(&h, avail.id).await.unwrap().state,
        JobState::Cancelled
    );
    assert_eq!(
        cancel(&h, sched.id).await.unwrap().state,
        JobState::Cancelled
    );
    insert(&h, job("k")).await;
    let running = claim_one(&h, "k").await;
    let asked = cancel(&h, running.id).await.unwrap();
    assert_eq!(asked.state, JobState::Running);
    assert!(asked.cancel_requested);
    let status = h
        .store()
        .job_lease_extend(&LeaseExtend {
            leases: vec![running.lease()],
            worker_id: "w1".into(),
            lease: LEASE,
        })
        .await
        .unwrap();
    assert_eq!(
        status,
        vec![LeaseStatus {
            id: running.id,
            held: true,
            cancel_requested: true
        }]
    );
    assert!(
        finish(
            &h,
            &running,
            Outcome::Cancelled {
                reason: "cancel requested".into()
            }
        )
        .await
    );
    match cancel(&h, running.id).await {
        Err(StoreError::InvalidState { id, state, .. }) => {
            assert_eq!(id, running.id);
            assert_eq!(state, JobState::Cancelled);
        }
        other => panic!("expected InvalidState, got {other:?}"),
    }
    match cancel(&h, 424_242).await {
        Err(StoreError::JobNotFound { id }) => assert_eq!(id, 424_242),
        other => panic!("expected JobNotFound, got {other:?}"),
    }
}

pub async fn retry_by_hand(h: Harness) {
    insert(&h, job("k").max_attempts(1)).await;
    let c = claim_one(&h, "k").await;
    assert!(
        finish(
            &h,
            &c,
            Outcome::Failed {
                error: "bad".into()
            }
        )
        .await
    );
    h.clock.advance(Duration::from_secs(5));
    let j = retry_by_id(&h, c.id).await.unwrap();
    assert_eq!(j.state, JobState::Available);
    assert_eq!(j.max_attempts, 2);
    assert_eq!(j.run_at, h.now());
    assert_eq!(j.finished_at, None);
    assert_eq!(j.errors.len(), 1, "history is kept");
    let again = claim_one(&h, "k").await;
    assert_eq!(again.attempt, 2);
    match retry_by_id(&h, again.id).await {
        Err(StoreError::InvalidState { state, .. }) => assert_eq!(state, JobState::Running),
        other => panic!("expected InvalidState, got {other:?}"),
    }
    let sched = insert(&h, job("k").run_at(add(h.now(), Duration::from_secs(600)))).await;
    assert_eq!(
        retry_by_id(&h, sched.id).await.unwrap().state,
        JobState::Available
    );
    assert!(matches!(
        retry_by_id(&h, 999_999).await,
        Err(StoreError::JobNotFound { .. })
    ));
}

pub async fn delete_by_state(h: Harness) {
    let a = insert(&h, job("k")).await;
    let deleted = h.store().job_delete(a.id).await.unwrap();
    assert_eq!(deleted.id, a.id);
    assert_eq!(h.store().job_get(a.id).await.unwrap(), None);
    insert(&h, job("k")).await;
    let running = claim_one(&h, "k").await;
    assert!(matches!(
        h.store().job_delete(running.id).await,
        Err(StoreError::InvalidState { .. })
    ));
    assert!(matches!(
        h.store().job_delete(a.id).await,
        Err(StoreError::JobNotFound { .. })
    ));
}

/// This file's cases, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_manual {
    ($m:ident!($($a:tt)*)) => {
        $crate::$m!($($a)*; "manual"; cancel_by_state, retry_by_hand, delete_by_state);
    };
}
