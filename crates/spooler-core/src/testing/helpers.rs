//! What the conformance cases share: inserting, claiming and finishing with checks that every
//! observed move is one the state machine allows.

use super::Harness;
use crate::store::*;
use crate::{JobRow, JobState, NewJob, RetryPolicies, RetryPolicy, StoreError};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub(super) const LEASE: Duration = Duration::from_secs(30);

pub(super) fn job(kind: &str) -> NewJob {
    NewJob::new(kind, json!({"n": 1}))
}

pub(super) async fn insert(h: &Harness, new: NewJob) -> JobRow {
    h.store().job_insert(&new).await.expect("insert").job
}

/// Stores `settings` as the queues' settings (the store forgets every other queue's).
pub(super) async fn configure_queues(h: &Harness, settings: &[QueueSettings]) {
    h.store()
        .queue_configure(settings)
        .await
        .expect("configure");
}

pub(super) async fn claim(h: &Harness, queues: &[&str], kinds: &[&str], limit: u32) -> Vec<JobRow> {
    claimed(h, queues, kinds, limit).await.jobs
}

/// A claim, with whether the queues' limits held it back.
pub(super) async fn claimed(h: &Harness, queues: &[&str], kinds: &[&str], limit: u32) -> Claimed {
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

pub(super) async fn claim_one(h: &Harness, kind: &str) -> JobRow {
    let mut got = claim(h, &["default"], &[kind], 1).await;
    assert_eq!(got.len(), 1, "expected one claimed {kind} job");
    got.pop().unwrap()
}

pub(super) async fn get(h: &Harness, id: i64) -> JobRow {
    h.store()
        .job_get(id)
        .await
        .expect("get")
        .expect("job exists")
}

/// Asserts that a job seen as `before` and then as `after` moved as the state machine allows.
pub(super) fn assert_transition(before: &JobRow, after: &JobRow) {
    assert!(
        before.state == after.state || before.state.can_transition(after.state),
        "job {}: {} -> {} is not a transition the state machine allows",
        before.id,
        before.state,
        after.state
    );
}

pub(super) async fn finish(h: &Harness, job: &JobRow, outcome: Outcome) -> bool {
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

/// Finishes the claimed `jobs` in one call (the stores' bulk path), each with its outcome.
pub(super) async fn finish_together(h: &Harness, jobs: &[(&JobRow, Outcome)]) -> Vec<bool> {
    let finishes: Vec<JobFinish> = jobs
        .iter()
        .map(|(job, outcome)| JobFinish {
            lease: job.lease(),
            outcome: outcome.clone(),
        })
        .collect();
    h.store().job_finish_many(&finishes).await.expect("finish")
}

/// Retry policies under which every retry is due at once.
pub(super) fn no_backoff() -> Arc<RetryPolicies> {
    Arc::new(RetryPolicies {
        default: RetryPolicy::fixed(Duration::ZERO),
        ..Default::default()
    })
}

/// Rescues under `retry`, checking that every running job moved as the report says and as the
/// state machine allows, and that every other running job was left alone.
pub(super) async fn rescue_with(h: &Harness, retry: Arc<RetryPolicies>) -> RescueReport {
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

pub(super) async fn rescue(h: &Harness) -> RescueReport {
    rescue_with(h, no_backoff()).await
}

pub(super) async fn cancel(h: &Harness, id: i64) -> Result<JobRow, StoreError> {
    let before = h.store().job_get(id).await.unwrap();
    let result = h.store().job_cancel(id).await;
    if let (Some(before), Ok(after)) = (&before, &result) {
        assert_transition(before, after);
        assert_eq!(&get(h, id).await, after, "cancel returns the job as stored");
    }
    result
}

pub(super) async fn retry_by_id(h: &Harness, id: i64) -> Result<JobRow, StoreError> {
    let before = h.store().job_get(id).await.unwrap();
    let result = h.store().job_retry(id).await;
    if let (Some(before), Ok(after)) = (&before, &result) {
        assert_transition(before, after);
        assert_eq!(&get(h, id).await, after, "retry returns the job as stored");
    }
    result
}

/// A retryable failure ("boom") that would run again at `at`.
pub(super) fn boom(at: chrono::DateTime<chrono::Utc>) -> Outcome {
    Outcome::Retry {
        error: "boom".into(),
        at,
    }
}

pub(super) fn completed() -> Outcome {
    Outcome::Completed { result: None }
}

/// Claims a job of kind `k` and asks for its cancellation while it runs.
pub(super) async fn running_with_cancel_requested(h: &Harness) -> JobRow {
    insert(h, job("k")).await;
    let c = claim_one(h, "k").await;
    let asked = cancel(h, c.id).await.unwrap();
    assert_eq!(asked.state, JobState::Running);
    assert!(asked.cancel_requested);
    c
}

/// Every job `list` matches, page by page with the cursor, in the order the pages came.
pub(super) async fn walk_pages(h: &Harness, list: JobList) -> Vec<JobRow> {
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
