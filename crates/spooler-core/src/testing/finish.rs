//! Conformance: Finishing attempts: the fence, every outcome, and a cancel asked while the job ran.

#![allow(missing_docs)]

use super::Harness;
use super::helpers::*;
use crate::JobState;
use crate::clock::add;
use crate::store::*;
use serde_json::json;
use std::time::Duration;

pub async fn complete_is_fenced_by_the_claim(h: Harness) {
    insert(&h, job("k")).await;
    let c = claim_one(&h, "k").await;
    assert_eq!(c.fence, 1, "the first claim's fence");
    let mut stale = c.clone();
    stale.fence = 0;
    assert!(
        !finish(&h, &stale, completed()).await,
        "another claim's fence rejected"
    );
    h.clock.advance(Duration::from_secs(1));
    assert!(
        finish(
            &h,
            &c,
            Outcome::Completed {
                result: Some(json!({"ok": true}))
            }
        )
        .await
    );
    let done = get(&h, c.id).await;
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.result, Some(json!({"ok": true})));
    assert_eq!(done.finished_at, Some(h.now()));
    assert_eq!(done.lease_expires_at, None);
    assert!(!finish(&h, &c, completed()).await, "second finish rejected");
    assert!(
        !finish(
            &h,
            &c,
            Outcome::Failed {
                error: "late".into()
            }
        )
        .await
    );
    assert_eq!(get(&h, c.id).await, done);
}

pub async fn finish_many_mixed_outcomes_in_one_call(h: Harness) {
    for _ in 0..4 {
        insert(&h, job("k")).await;
    }
    let c = claim(&h, &["default"], &["k"], 4).await;
    let later = add(h.now(), Duration::from_secs(60));
    let mut stale = c[3].lease();
    stale.fence += 5;
    let acks = h
        .store()
        .job_finish_many(&[
            JobFinish {
                lease: c[0].lease(),
                outcome: completed(),
            },
            JobFinish {
                lease: c[1].lease(),
                outcome: Outcome::Retry {
                    error: "boom".into(),
                    at: later,
                },
            },
            JobFinish {
                lease: c[2].lease(),
                outcome: Outcome::Cancelled {
                    reason: "asked".into(),
                },
            },
            JobFinish {
                lease: stale,
                outcome: completed(),
            },
        ])
        .await
        .unwrap();
    assert_eq!(acks, vec![true, true, true, false]);
    assert_eq!(get(&h, c[0].id).await.state, JobState::Completed);
    assert_eq!(get(&h, c[1].id).await.state, JobState::Scheduled);
    let cancelled = get(&h, c[2].id).await;
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(cancelled.finished_at.is_some());
    assert_eq!(get(&h, c[3].id).await.state, JobState::Running);
}

pub async fn retry_schedules_and_keeps_the_error(h: Harness) {
    insert(&h, job("k")).await;
    let c = claim_one(&h, "k").await;
    let at = add(h.now(), Duration::from_secs(16));
    assert!(
        finish(
            &h,
            &c,
            Outcome::Retry {
                error: "connection refused".into(),
                at
            }
        )
        .await
    );
    let j = get(&h, c.id).await;
    assert_eq!(j.state, JobState::Scheduled);
    assert_eq!(j.run_at, at);
    assert_eq!(j.attempt, 1);
    assert_eq!(j.errors.len(), 1);
    assert_eq!(j.errors[0].attempt, 1);
    assert_eq!(j.errors[0].message, "connection refused");
    assert_eq!(j.errors[0].at, h.now());
    assert_eq!(j.worker_id, None);
    assert_eq!(j.lease_expires_at, None);
    assert!(claim(&h, &["default"], &["k"], 1).await.is_empty());
    assert_eq!(h.store().job_promote(100).await.unwrap(), 0);
    h.clock.advance(Duration::from_secs(16));
    assert_eq!(h.store().job_promote(100).await.unwrap(), 1);
    let again = claim_one(&h, "k").await;
    assert_eq!(again.attempt, 2);
    assert_eq!(again.errors.len(), 1);
}

pub async fn retry_due_now_is_available_at_once(h: Harness) {
    insert(&h, job("k")).await;
    let c = claim_one(&h, "k").await;
    assert!(
        finish(
            &h,
            &c,
            Outcome::Retry {
                error: "x".into(),
                at: h.now()
            }
        )
        .await
    );
    assert_eq!(get(&h, c.id).await.state, JobState::Available);
    assert_eq!(claim_one(&h, "k").await.attempt, 2);
}

pub async fn failed_keeps_every_error(h: Harness) {
    insert(&h, job("k").max_attempts(3)).await;
    for attempt in 1..=3 {
        let c = claim_one(&h, "k").await;
        assert_eq!(c.attempt, attempt);
        let outcome = if attempt < 3 {
            Outcome::Retry {
                error: format!("failure {attempt}"),
                at: h.now(),
            }
        } else {
            Outcome::Failed {
                error: format!("failure {attempt}"),
            }
        };
        assert!(finish(&h, &c, outcome).await);
    }
    let j = h
        .store()
        .job_list(&JobList {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .remove(0);
    assert_eq!(j.state, JobState::Failed);
    assert_eq!(j.finished_at, Some(h.now()));
    let messages: Vec<&str> = j.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, vec!["failure 1", "failure 2", "failure 3"]);
    let attempts: Vec<i32> = j.errors.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
}

pub async fn snooze_does_not_spend_an_attempt(h: Harness) {
    insert(&h, job("k").max_attempts(2)).await;
    let c = claim_one(&h, "k").await;
    let until = add(h.now(), Duration::from_secs(30));
    assert!(finish(&h, &c, Outcome::Snoozed { until }).await);
    let j = get(&h, c.id).await;
    assert_eq!(j.state, JobState::Scheduled);
    assert_eq!(j.run_at, until);
    assert_eq!(j.max_attempts, 3);
    assert!(j.errors.is_empty());
}

pub async fn release_makes_available_without_spending_an_attempt(h: Harness) {
    insert(&h, job("k").max_attempts(1)).await;
    let c = claim_one(&h, "k").await;
    assert_eq!((c.attempt, c.max_attempts), (1, 1));
    assert!(finish(&h, &c, Outcome::Released).await);
    let j = get(&h, c.id).await;
    assert_eq!(j.state, JobState::Available);
    assert_eq!(
        j.attempt, 0,
        "the handler never started: the attempt is given back"
    );
    assert_eq!(j.max_attempts, 1, "and the limit stays");
    assert!(j.errors.is_empty());
    assert_eq!(j.worker_id, None);
    let again = claim_one(&h, "k").await;
    assert_eq!(again.attempt, 1, "the same attempt number again");
    assert_ne!(again.lease(), c.lease(), "but another fence");
    assert!(
        !finish(&h, &c, completed()).await,
        "the released claim is dead"
    );
    assert_eq!(get(&h, c.id).await.state, JobState::Running);
    assert!(finish(&h, &again, completed()).await);
}

pub async fn releases_never_inflate_the_attempt_or_the_limit(h: Harness) {
    insert(&h, job("k").max_attempts(2)).await;
    let mut leases = Vec::new();
    for _ in 0..5 {
        let c = claim_one(&h, "k").await;
        assert_eq!(c.attempt, 1);
        assert!(finish(&h, &c, Outcome::Released).await);
        leases.push(c.lease());
    }
    let c = claim_one(&h, "k").await;
    assert_eq!(
        (c.attempt, c.max_attempts),
        (1, 2),
        "five releases spent nothing: the first failure backs off as attempt 1 does"
    );
    leases.push(c.lease());
    let distinct: std::collections::HashSet<_> = leases.iter().collect();
    assert_eq!(distinct.len(), leases.len(), "every claim its own fence");
    // Every earlier claim is dead, whatever its attempt number.
    for stale in &leases[..5] {
        let acks = h
            .store()
            .job_finish_many(&[JobFinish {
                lease: *stale,
                outcome: completed(),
            }])
            .await
            .unwrap();
        assert_eq!(acks, vec![false], "{stale:?}");
    }
    let at = add(h.now(), Duration::from_secs(16));
    assert!(finish(&h, &c, boom(at)).await);
    let j = get(&h, c.id).await;
    assert_eq!(
        (j.state, j.attempt, j.errors.len()),
        (JobState::Scheduled, 1, 1)
    );
    assert_eq!(j.errors[0].attempt, 1);
}

pub async fn an_interrupted_run_spends_no_attempt(h: Harness) {
    insert(&h, job("k").max_attempts(1)).await;
    let c = claim_one(&h, "k").await;
    assert!(finish(&h, &c, Outcome::Interrupted).await);
    let j = get(&h, c.id).await;
    assert_eq!(j.state, JobState::Available);
    assert_eq!(
        (j.attempt, j.max_attempts),
        (1, 2),
        "the handler started: it counts, one more allowed"
    );
    let again = claim_one(&h, "k").await;
    assert_eq!(again.attempt, 2);
}

pub async fn retry_of_a_cancel_requested_job_cancels_it(h: Harness) {
    let c = running_with_cancel_requested(&h).await;
    let at = add(h.now(), Duration::from_secs(16));
    assert!(finish(&h, &c, boom(at)).await);
    let j = get(&h, c.id).await;
    assert_eq!(j.state, JobState::Cancelled);
    assert_eq!(j.finished_at, Some(h.now()));
    assert_eq!(j.errors.len(), 1, "the failed attempt's error is kept");
    assert_eq!(j.errors[0].message, "boom");
    h.clock.advance(Duration::from_secs(16));
    assert_eq!(h.store().job_promote(100).await.unwrap(), 0);
    assert!(claim(&h, &["default"], &["k"], 1).await.is_empty());
}

pub async fn snooze_or_release_of_a_cancel_requested_job_cancels_it(h: Harness) {
    for outcome in [
        Outcome::Snoozed {
            until: add(h.now(), Duration::from_secs(30)),
        },
        Outcome::Released,
    ] {
        let c = running_with_cancel_requested(&h).await;
        assert!(finish(&h, &c, outcome.clone()).await, "{outcome:?}");
        let j = get(&h, c.id).await;
        assert_eq!(j.state, JobState::Cancelled, "{outcome:?}");
        assert_eq!(j.max_attempts, c.max_attempts, "{outcome:?}");
        assert_eq!(j.finished_at, Some(h.now()), "{outcome:?}");
    }
    h.clock.advance(Duration::from_secs(30));
    assert_eq!(h.store().job_promote(100).await.unwrap(), 0);
    assert!(claim(&h, &["default"], &["k"], 1).await.is_empty());
}

pub async fn a_cancel_requested_job_that_succeeds_is_completed(h: Harness) {
    let c = running_with_cancel_requested(&h).await;
    assert!(
        finish(
            &h,
            &c,
            Outcome::Completed {
                result: Some(json!("done"))
            }
        )
        .await
    );
    let j = get(&h, c.id).await;
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(j.result, Some(json!("done")));
}

pub async fn retry_of_the_last_attempt_fails_the_job(h: Harness) {
    insert(&h, job("k").max_attempts(1)).await;
    let c = claim_one(&h, "k").await;
    let at = add(h.now(), Duration::from_secs(16));
    assert!(finish(&h, &c, boom(at)).await);
    let j = get(&h, c.id).await;
    assert_eq!(j.state, JobState::Failed);
    assert_eq!(j.finished_at, Some(h.now()));
    assert_eq!(j.errors.len(), 1);
    assert_eq!(
        j.run_at, c.run_at,
        "a failed job keeps the run_at it ran at"
    );
}

/// This file's cases, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_finish {
    ($m:ident!($($a:tt)*)) => {
        $crate::$m!($($a)*; "finish"; complete_is_fenced_by_the_claim, finish_many_mixed_outcomes_in_one_call, retry_schedules_and_keeps_the_error, retry_due_now_is_available_at_once, failed_keeps_every_error, snooze_does_not_spend_an_attempt, release_makes_available_without_spending_an_attempt, releases_never_inflate_the_attempt_or_the_limit, an_interrupted_run_spends_no_attempt, retry_of_a_cancel_requested_job_cancels_it, snooze_or_release_of_a_cancel_requested_job_cancels_it, a_cancel_requested_job_that_succeeds_is_completed, retry_of_the_last_attempt_fails_the_job);
    };
}
