//! The conformance cases. Each takes a [`Harness`] with a fresh store; none sleeps to wait.

#![allow(missing_docs)]

use super::Harness;
use crate::clock::add;
use crate::store::*;
use crate::{JobRow, JobState, NewJob, RetryPolicies, RetryPolicy, StoreError};
use chrono::TimeDelta;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

fn job(kind: &str) -> NewJob {
    NewJob::new(kind, json!({"n": 1}))
}

async fn insert(h: &Harness, new: NewJob) -> JobRow {
    h.store().job_insert(&new).await.expect("insert").job
}

async fn claim(h: &Harness, queues: &[&str], kinds: &[&str], limit: u32) -> Vec<JobRow> {
    h.store()
        .job_claim(&JobClaim {
            queues: queues.iter().map(|q| q.to_string()).collect(),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            limit,
            worker_id: "w1".into(),
            lease: LEASE,
        })
        .await
        .expect("claim")
}

async fn claim_one(h: &Harness, kind: &str) -> JobRow {
    let mut got = claim(h, &["default"], &[kind], 1).await;
    assert_eq!(got.len(), 1, "expected one claimed {kind} job");
    got.pop().unwrap()
}

async fn get(h: &Harness, id: i64) -> JobRow {
    h.store()
        .job_get(id)
        .await
        .expect("get")
        .expect("job exists")
}

/// Asserts that a job seen as `before` and then as `after` moved as the state machine allows.
fn assert_transition(before: &JobRow, after: &JobRow) {
    assert!(
        before.state == after.state || before.state.can_transition(after.state),
        "job {}: {} -> {} is not a transition the state machine allows",
        before.id,
        before.state,
        after.state
    );
}

async fn finish(h: &Harness, job: &JobRow, outcome: Outcome) -> bool {
    let before = get(h, job.id).await;
    let acks = h
        .store()
        .job_finish_many(&[JobFinish {
            lease: job.lease(),
            outcome,
        }])
        .await
        .expect("finish");
    assert_eq!(acks.len(), 1);
    let after = get(h, job.id).await;
    assert_transition(&before, &after);
    if acks[0] {
        assert!(
            after.state != JobState::Running,
            "an accepted finish ends the attempt"
        );
        assert_eq!(
            (after.worker_id.as_deref(), after.lease_expires_at),
            (None, None)
        );
    } else {
        assert_eq!(after, before, "a rejected finish changes nothing");
    }
    acks[0]
}

/// Retry policies under which every retry is due at once.
fn no_backoff() -> Arc<RetryPolicies> {
    Arc::new(RetryPolicies {
        default: RetryPolicy::fixed(Duration::ZERO),
        ..Default::default()
    })
}

/// Rescues under `retry`, checking that every running job moved as the report says and as the
/// state machine allows, and that every other running job was left alone.
async fn rescue_with(h: &Harness, retry: Arc<RetryPolicies>) -> RescueReport {
    let running = h
        .store()
        .job_list(&JobList {
            state: Some(JobState::Running),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let report = h
        .store()
        .job_rescue(&JobRescue { limit: 100, retry })
        .await
        .expect("rescue");
    for before in &running {
        let after = get(h, before.id).await;
        assert_transition(before, &after);
        let expected = if report.failed.contains(&before.id) {
            Some(JobState::Failed)
        } else if report.cancelled.contains(&before.id) {
            Some(JobState::Cancelled)
        } else if report.retried.contains(&before.id) {
            None
        } else {
            Some(JobState::Running)
        };
        match expected {
            Some(state) => assert_eq!(after.state, state, "job {}", before.id),
            None => assert!(
                matches!(after.state, JobState::Available | JobState::Scheduled),
                "job {} rescued as {}",
                before.id,
                after.state
            ),
        }
    }
    report
}

async fn rescue(h: &Harness) -> RescueReport {
    rescue_with(h, no_backoff()).await
}

async fn cancel(h: &Harness, id: i64) -> Result<JobRow, StoreError> {
    let before = h.store().job_get(id).await.unwrap();
    let result = h.store().job_cancel(id).await;
    if let (Some(before), Ok(after)) = (&before, &result) {
        assert_transition(before, after);
        assert_eq!(&get(h, id).await, after, "cancel returns the job as stored");
    }
    result
}

async fn retry_by_id(h: &Harness, id: i64) -> Result<JobRow, StoreError> {
    let before = h.store().job_get(id).await.unwrap();
    let result = h.store().job_retry(id).await;
    if let (Some(before), Ok(after)) = (&before, &result) {
        assert_transition(before, after);
        assert_eq!(&get(h, id).await, after, "retry returns the job as stored");
    }
    result
}

/// A retryable failure ("boom") that would run again at `at`.
fn boom(at: chrono::DateTime<chrono::Utc>) -> Outcome {
    Outcome::Retry {
        error: "boom".into(),
        at,
    }
}

fn completed() -> Outcome {
    Outcome::Completed { result: None }
}

pub async fn insert_and_get_round_trip(h: Harness) {
    let mut new = NewJob::new("email", json!({"to": "a@example.com", "n": [1, 2]}))
        .queue("mail")
        .priority(3)
        .max_attempts(4)
        .timeout(Duration::from_millis(1500))
        .unique_key("k1");
    new.tags = vec!["a".into(), "b".into()];
    let ins = h.store().job_insert(&new).await.unwrap();
    assert!(!ins.duplicate);
    let j = ins.job;
    assert!(j.id > 0);
    assert_eq!(j.queue, "mail");
    assert_eq!(j.kind, "email");
    assert_eq!(j.args, json!({"to": "a@example.com", "n": [1, 2]}));
    assert_eq!(j.state, JobState::Available);
    assert_eq!(j.priority, 3);
    assert_eq!(j.attempt, 0);
    assert_eq!(j.max_attempts, 4);
    assert_eq!(j.timeout, Some(Duration::from_millis(1500)));
    assert_eq!(j.unique_key.as_deref(), Some("k1"));
    assert_eq!(j.tags, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(j.created_at, h.now());
    assert_eq!(j.run_at, h.now());
    assert!(j.errors.is_empty());
    assert_eq!(j.result, None);
    assert_eq!(j.started_at, None);
    assert_eq!(j.finished_at, None);
    assert_eq!(j.worker_id, None);
    assert!(!j.cancel_requested);
    assert_eq!(get(&h, j.id).await, j);
}

pub async fn insert_in_the_future_is_scheduled(h: Harness) {
    let at = add(h.now(), Duration::from_secs(60));
    let j = insert(&h, job("k").run_at(at)).await;
    assert_eq!(j.state, JobState::Scheduled);
    assert_eq!(j.run_at, at);
    assert_eq!(get(&h, j.id).await, j);
    // A time and a timeout finer than the stores keep come back as stored.
    let fine = add(h.now(), Duration::from_nanos(90_000_001_999));
    let f = insert(
        &h,
        job("k").run_at(fine).timeout(Duration::from_micros(1500)),
    )
    .await;
    assert_eq!(f.timeout, Some(Duration::from_millis(1)));
    assert_eq!(get(&h, f.id).await, f);
    let past = insert(&h, job("k").run_at(h.now() - TimeDelta::seconds(5))).await;
    assert_eq!(past.state, JobState::Available);
    assert!(claim(&h, &["default"], &["k"], 10).await.len() == 1);
}

pub async fn insert_many_assigns_increasing_ids(h: Harness) {
    let jobs: Vec<NewJob> = (0..250)
        .map(|i| NewJob::new("k", json!({ "i": i })))
        .collect();
    let ins = h.store().job_insert_many(&jobs).await.unwrap();
    assert_eq!(ins.len(), 250);
    for (i, pair) in ins.windows(2).enumerate() {
        assert!(pair[0].job.id < pair[1].job.id, "ids increase at {i}");
    }
    for (i, inserted) in ins.iter().enumerate() {
        assert_eq!(inserted.job.args, json!({ "i": i }));
    }
    assert!(h.store().job_insert_many(&[]).await.unwrap().is_empty());
}

pub async fn insert_rejects_invalid_fields(h: Harness) {
    for (bad, field) in [
        (NewJob::new("", json!({})), "kind"),
        (job("k").queue(""), "queue"),
        (job("k").max_attempts(0), "max_attempts"),
    ] {
        let err = h.store().job_insert(&bad).await.unwrap_err();
        match err {
            StoreError::InvalidInput { field: f, .. } => assert_eq!(f, field),
            other => panic!("expected InvalidInput for {field}, got {other:?}"),
        }
    }
    // A bad job in a batch inserts nothing.
    let batch = vec![job("ok"), NewJob::new("", json!({}))];
    assert!(h.store().job_insert_many(&batch).await.is_err());
    assert!(
        h.store()
            .job_list(&JobList {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn unique_key_returns_the_unfinished_job(h: Harness) {
    let first = h
        .store()
        .job_insert(&job("k").unique_key("once"))
        .await
        .unwrap();
    assert!(!first.duplicate);
    let again = h
        .store()
        .job_insert(&job("k").unique_key("once"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.job.id, first.job.id);
    // Within one batch as well.
    let batch = h
        .store()
        .job_insert_many(&[job("k").unique_key("b"), job("k").unique_key("b")])
        .await
        .unwrap();
    assert!(!batch[0].duplicate);
    assert!(batch[1].duplicate);
    assert_eq!(batch[0].job.id, batch[1].job.id);
    // While running it still deduplicates; once finished, a new job is made.
    let running = claim(&h, &["default"], &["k"], 10).await;
    assert_eq!(running.len(), 2);
    assert!(
        h.store()
            .job_insert(&job("k").unique_key("once"))
            .await
            .unwrap()
            .duplicate
    );
    let j = running.iter().find(|j| j.id == first.job.id).unwrap();
    assert!(finish(&h, j, completed()).await);
    let fresh = h
        .store()
        .job_insert(&job("k").unique_key("once"))
        .await
        .unwrap();
    assert!(!fresh.duplicate);
    assert_ne!(fresh.job.id, first.job.id);
}

pub async fn get_unknown_is_none(h: Harness) {
    assert_eq!(h.store().job_get(987_654).await.unwrap(), None);
}

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
    h.store().job_insert_many(&jobs).await.unwrap();
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
                    .unwrap();
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

pub async fn complete_is_fenced_by_the_attempt(h: Harness) {
    insert(&h, job("k")).await;
    let c = claim_one(&h, "k").await;
    let mut stale = c.clone();
    stale.attempt = 0;
    assert!(
        !finish(&h, &stale, completed()).await,
        "wrong attempt rejected"
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
    stale.attempt += 5;
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
    assert!(finish(&h, &c, Outcome::Released).await);
    let j = get(&h, c.id).await;
    assert_eq!(j.state, JobState::Available);
    assert_eq!(j.max_attempts, 2);
    assert!(j.errors.is_empty());
    assert_eq!(j.worker_id, None);
    let again = claim_one(&h, "k").await;
    assert_eq!(again.attempt, 2);
    assert!(
        !finish(&h, &c, completed()).await,
        "the released claim is dead"
    );
}

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

/// Claims a job of kind `k` and asks for its cancellation while it runs.
async fn running_with_cancel_requested(h: &Harness) -> JobRow {
    insert(h, job("k")).await;
    let c = claim_one(h, "k").await;
    let asked = cancel(h, c.id).await.unwrap();
    assert_eq!(asked.state, JobState::Running);
    assert!(asked.cancel_requested);
    c
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

pub async fn extended_lease_is_not_rescued(h: Harness) {
    insert(&h, job("k")).await;
    let c = claim_one(&h, "k").await;
    h.clock.advance(Duration::from_secs(20));
    let mut stale = c.lease();
    stale.attempt = 9;
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

/// Every job `list` matches, page by page with the cursor, in the order the pages came.
async fn walk_pages(h: &Harness, list: JobList) -> Vec<JobRow> {
    let mut list = list;
    let mut walked = Vec::new();
    loop {
        let page = h.store().job_list(&list).await.unwrap();
        let Some(last) = page.last() else {
            return walked;
        };
        list.before_id = Some(last.id);
        walked.extend(page);
    }
}

pub async fn list_filters_and_pages_newest_first(h: Harness) {
    let mut ids = Vec::new();
    for i in 0..25 {
        let q = if i % 2 == 0 { "even" } else { "odd" };
        let kind = if i % 5 == 0 { "five" } else { "other" };
        ids.push(insert(&h, job(kind).queue(q)).await.id);
    }
    let all = h
        .store()
        .job_list(&JobList {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 10);
    let expect: Vec<i64> = ids.iter().rev().take(10).copied().collect();
    assert_eq!(all.iter().map(|j| j.id).collect::<Vec<_>>(), expect);
    // The cursor walks every page exactly once.
    let walked = walk_pages(
        &h,
        JobList {
            limit: 7,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        walked.iter().map(|j| j.id).collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<_>>()
    );
    let even = h
        .store()
        .job_list(&JobList {
            queue: Some("even".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(even.len(), 13);
    let five = h
        .store()
        .job_list(&JobList {
            kind: Some("five".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(five.len(), 5);
    claim(&h, &["odd"], &["other"], 3).await;
    let running = h
        .store()
        .job_list(&JobList {
            state: Some(JobState::Running),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 3);
    assert!(running.iter().all(|j| j.queue == "odd"));
    for job in &running[..2] {
        assert!(finish(&h, job, completed()).await);
    }
    // A state filter pages with the cursor like the rest, newest first, for unfinished and
    // finished states alike (stores may read them from different places).
    let pages = |state: JobState| {
        let h = &h;
        async move {
            let page = JobList {
                state: Some(state),
                limit: 4,
                ..Default::default()
            };
            let walked = walk_pages(h, page).await;
            assert!(walked.iter().all(|j| j.state == state));
            walked.iter().map(|j| j.id).collect::<Vec<_>>()
        }
    };
    let mut completed_ids: Vec<i64> = running[..2].iter().map(|j| j.id).collect();
    completed_ids.sort_by(|a, b| b.cmp(a));
    assert_eq!(pages(JobState::Completed).await, completed_ids);
    assert_eq!(pages(JobState::Running).await, vec![running[2].id]);
    let available: Vec<i64> = ids
        .iter()
        .rev()
        .filter(|id| !running.iter().any(|j| j.id == **id))
        .copied()
        .collect();
    assert_eq!(available.len(), 22);
    assert_eq!(pages(JobState::Available).await, available);
}

pub async fn queue_list_counts_and_oldest_wait(h: Harness) {
    let first = insert(&h, job("k").queue("q1")).await;
    h.clock.advance(Duration::from_secs(10));
    insert(&h, job("k").queue("q1")).await;
    insert(&h, job("k").queue("q1")).await;
    insert(
        &h,
        job("k")
            .queue("q1")
            .run_at(add(h.now(), Duration::from_secs(100))),
    )
    .await;
    insert(&h, job("k").queue("q2")).await;
    let c = claim(&h, &["q1"], &["k"], 1).await;
    assert!(finish(&h, &c[0], completed()).await);
    claim(&h, &["q1"], &["k"], 1).await;
    let queues = h.store().queue_list().await.unwrap();
    let q1 = queues.iter().find(|q| q.name == "q1").expect("q1 listed");
    assert_eq!(
        q1.counts,
        StateCounts {
            scheduled: 1,
            available: 1,
            running: 1,
            completed: 1,
            failed: 0,
            cancelled: 0
        }
    );
    assert!(!q1.paused);
    assert!(q1.oldest_available_at.is_some());
    assert!(q1.oldest_available_at.unwrap() > first.created_at);
    let q2 = queues.iter().find(|q| q.name == "q2").expect("q2 listed");
    assert_eq!(q2.counts.available, 1);
    assert_eq!(q2.oldest_available_at, Some(h.now()));
}

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

pub async fn leader_election_and_takeover(h: Harness) {
    let elect = |holder: &str| LeaderElect {
        name: "maintenance".into(),
        holder: holder.into(),
        ttl: Duration::from_secs(10),
    };
    assert!(h.store().leader_try_elect(&elect("a")).await.unwrap());
    assert!(!h.store().leader_try_elect(&elect("b")).await.unwrap());
    h.clock.advance(Duration::from_secs(5));
    assert!(
        h.store().leader_try_elect(&elect("a")).await.unwrap(),
        "renewal"
    );
    h.clock.advance(Duration::from_secs(6));
    assert!(
        !h.store().leader_try_elect(&elect("b")).await.unwrap(),
        "renewed lease holds"
    );
    h.clock.advance(Duration::from_secs(5));
    assert!(
        h.store().leader_try_elect(&elect("b")).await.unwrap(),
        "takeover after ttl"
    );
    assert!(!h.store().leader_try_elect(&elect("a")).await.unwrap());
    h.store().leader_resign("maintenance", "a").await.unwrap();
    assert!(
        !h.store().leader_try_elect(&elect("a")).await.unwrap(),
        "a cannot resign b"
    );
    h.store().leader_resign("maintenance", "b").await.unwrap();
    assert!(
        h.store().leader_try_elect(&elect("a")).await.unwrap(),
        "resigned at once"
    );
}

pub async fn worker_registry(h: Harness) {
    let mut info = WorkerInfo {
        id: "w-1".into(),
        host: "host-a".into(),
        pid: 42,
        queues: [("default".to_string(), 10)].into_iter().collect(),
        kinds: vec!["a".into(), "b".into()],
        running: 3,
        started_at: h.now(),
        last_seen_at: h.now(),
    };
    h.store().worker_heartbeat(&info).await.unwrap();
    h.clock.advance(Duration::from_secs(5));
    info.running = 4;
    h.store().worker_heartbeat(&info).await.unwrap();
    let listed = h
        .store()
        .worker_list(h.now() - TimeDelta::seconds(1))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].running, 4);
    assert_eq!(listed[0].last_seen_at, h.now());
    assert_eq!(listed[0].kinds, info.kinds);
    assert_eq!(listed[0].queues, info.queues);
    h.clock.advance(Duration::from_secs(60));
    assert!(
        h.store()
            .worker_list(h.now() - TimeDelta::seconds(30))
            .await
            .unwrap()
            .is_empty()
    );
    h.store().worker_remove("w-1").await.unwrap();
    assert!(
        h.store()
            .worker_list(h.now() - TimeDelta::days(1))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn migrate_is_idempotent(h: Harness) {
    h.store().migrate().await.unwrap();
    h.store().migrate().await.unwrap();
    let j = insert(&h, job("k")).await;
    assert_eq!(get(&h, j.id).await.id, j.id);
}

pub async fn subscribe_hears_own_inserts(h: Harness) {
    let mut rx = h.store().subscribe();
    insert(&h, job("k").queue("wake")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("a wake-up within 5s");
        match got {
            Ok(w) if w.queue == "wake" => break,
            Ok(_) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(e) => panic!("subscription closed: {e}"),
        }
    }
}
