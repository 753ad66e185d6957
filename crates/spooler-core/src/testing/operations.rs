//! Conformance cases of operations by filter: counts, chunks, the cursor, skips, cancel.

#![allow(missing_docs)]

use super::Harness;
use crate::clock::add;
use crate::store::*;
use crate::{
    BulkAction, JobFilter, JobRow, JobState, NewJob, Operation, OperationNew, OperationState,
    StoreError,
};
use serde_json::json;
use std::time::Duration;

async fn insert(h: &Harness, new: NewJob) -> JobRow {
    h.store().job_insert(&new).await.expect("insert").job
}

/// Inserts a job and takes it to `failed` (one attempt, a final error).
async fn failed(h: &Harness, new: NewJob) -> JobRow {
    let job = insert(h, new.max_attempts(1)).await;
    let claimed = h
        .store()
        .job_claim(&JobClaim {
            queues: vec![job.queue.clone()],
            kinds: vec![job.kind.clone()],
            limit: 1,
            worker_id: "w1".into(),
            lease: Duration::from_secs(30),
        })
        .await
        .unwrap()
        .jobs;
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        claimed[0].id, job.id,
        "no other job of its kind waits in its queue"
    );
    let acks = h
        .store()
        .job_finish_many(&[JobFinish {
            lease: claimed[0].lease(),
            outcome: Outcome::Failed {
                error: "boom".into(),
            },
        }])
        .await
        .unwrap();
    assert_eq!(acks, vec![true]);
    h.store().job_get(job.id).await.unwrap().unwrap()
}

async fn state(h: &Harness, id: i64) -> JobState {
    h.store().job_get(id).await.unwrap().unwrap().state
}

/// Creates an operation applying `action` to the jobs `filter` matches, `chunk` per step.
async fn create(h: &Harness, action: BulkAction, filter: JobFilter, chunk: u32) -> Operation {
    h.store()
        .operation_create(&OperationNew {
            action,
            filter,
            chunk,
        })
        .await
        .unwrap()
}

fn failed_jobs() -> JobFilter {
    JobFilter {
        state: Some(JobState::Failed),
        ..JobFilter::default()
    }
}

async fn count(h: &Harness, filter: JobFilter) -> i64 {
    h.store().job_count(&filter).await.unwrap()
}

fn filter_queue_state(queue: &str, state: JobState) -> JobFilter {
    JobFilter {
        queue: Some(queue.into()),
        state: Some(state),
        ..JobFilter::default()
    }
}

pub async fn operation_retries_matching_jobs_chunk_by_chunk(h: Harness) {
    let mut ours = Vec::new();
    for _ in 0..7 {
        ours.push(failed(&h, NewJob::new("k", json!({})).queue("q")).await.id);
    }
    let elsewhere = failed(&h, NewJob::new("k", json!({})).queue("other")).await;
    let filter = filter_queue_state("q", JobState::Failed);
    assert_eq!(h.store().job_count(&filter).await.unwrap(), 7);
    let op = create(&h, BulkAction::Retry, filter.clone(), 3).await;
    assert_eq!(op.state, OperationState::Running);
    assert_eq!((op.matched, op.affected, op.skipped), (7, 0, 0));
    assert_eq!(op.done_through, 0);
    // A job failing after the operation was created is not covered by it.
    let later = failed(&h, NewJob::new("k", json!({})).queue("q")).await;
    assert_eq!(
        h.store().operation_list_running().await.unwrap(),
        vec![op.clone()]
    );

    let first = h.store().operation_step(op.id).await.unwrap();
    assert_eq!((first.affected, first.skipped), (3, 0));
    assert_eq!(first.done_through, ours[2]);
    assert_eq!(first.state, OperationState::Running);
    for (i, id) in ours.iter().enumerate() {
        let expected = if i < 3 {
            JobState::Available
        } else {
            JobState::Failed
        };
        assert_eq!(state(&h, *id).await, expected, "job {id} after one chunk");
    }
    let second = h.store().operation_step(op.id).await.unwrap();
    assert_eq!((second.affected, second.done_through), (6, ours[5]));
    let third = h.store().operation_step(op.id).await.unwrap();
    assert_eq!(third.affected, 7);
    assert_eq!(third.state, OperationState::Completed);
    assert!(third.finished_at.is_some());
    assert_eq!(third.done_through, third.max_id);
    // Stepping a finished operation changes nothing.
    assert_eq!(h.store().operation_step(op.id).await.unwrap(), third);
    assert!(h.store().operation_list_running().await.unwrap().is_empty());
    for id in &ours {
        let job = h.store().job_get(*id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Available);
        assert_eq!(
            job.max_attempts, 2,
            "one more attempt allowed, as a retry by hand"
        );
        assert_eq!(job.errors.len(), 1, "history is kept");
    }
    assert_eq!(state(&h, elsewhere.id).await, JobState::Failed);
    assert_eq!(state(&h, later.id).await, JobState::Failed);
    assert_eq!(
        h.store().operation_get(op.id).await.unwrap(),
        Some(third),
        "the operation reads back as stepped"
    );
}

pub async fn operation_skips_jobs_its_action_does_not_apply_to(h: Harness) {
    let done = failed(&h, NewJob::new("k", json!({})).queue("q")).await;
    let running = insert(&h, NewJob::new("k", json!({})).queue("q")).await;
    let claimed = h
        .store()
        .job_claim(&JobClaim {
            queues: vec!["q".into()],
            kinds: vec!["k".into()],
            limit: 1,
            worker_id: "w1".into(),
            lease: Duration::from_secs(30),
        })
        .await
        .unwrap()
        .jobs;
    assert_eq!(claimed[0].id, running.id);
    let waiting = insert(&h, NewJob::new("k", json!({})).queue("q")).await;
    let all_q = JobFilter {
        queue: Some("q".into()),
        ..JobFilter::default()
    };
    // Delete: a running job is skipped; the others go.
    let op = create(&h, BulkAction::Delete, all_q.clone(), 1000).await;
    let op = h.store().operation_step(op.id).await.unwrap();
    assert_eq!((op.matched, op.affected, op.skipped), (3, 2, 1));
    assert_eq!(op.state, OperationState::Completed);
    assert_eq!(state(&h, running.id).await, JobState::Running);
    assert!(h.store().job_get(done.id).await.unwrap().is_none());
    assert!(h.store().job_get(waiting.id).await.unwrap().is_none());
    // Cancel: the running job is asked to stop (it counts as affected).
    let op = create(&h, BulkAction::Cancel, all_q, 1000).await;
    let op = h.store().operation_step(op.id).await.unwrap();
    assert_eq!((op.matched, op.affected, op.skipped), (1, 1, 0));
    let job = h.store().job_get(running.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Running);
    assert!(job.cancel_requested);
}

pub async fn job_count_filters_by_every_field(h: Harness) {
    let t0 = h.now();
    let mut tagged = NewJob::new("a", json!({})).queue("q");
    tagged.tags = vec!["red".into(), "big".into()];
    insert(&h, tagged).await;
    h.clock.advance(Duration::from_secs(10));
    let t1 = h.now();
    insert(&h, NewJob::new("b", json!({})).queue("q")).await;
    insert(&h, NewJob::new("a", json!({})).queue("r")).await;
    failed(&h, NewJob::new("c", json!({})).queue("r")).await;
    assert_eq!(count(&h, JobFilter::default()).await, 4);
    let by = |f: fn(&mut JobFilter)| {
        let mut filter = JobFilter::default();
        f(&mut filter);
        filter
    };
    assert_eq!(count(&h, by(|f| f.queue = Some("q".into()))).await, 2);
    assert_eq!(count(&h, by(|f| f.kind = Some("a".into()))).await, 2);
    assert_eq!(count(&h, by(|f| f.state = Some(JobState::Failed))).await, 1);
    assert_eq!(count(&h, by(|f| f.tag = Some("big".into()))).await, 1);
    assert_eq!(count(&h, by(|f| f.tag = Some("blue".into()))).await, 0);
    let before = JobFilter {
        before: Some(t1),
        ..JobFilter::default()
    };
    assert_eq!(count(&h, before).await, 1);
    let after = JobFilter {
        after: Some(t1),
        ..JobFilter::default()
    };
    assert_eq!(count(&h, after).await, 3);
    let window = JobFilter {
        after: Some(t0),
        before: Some(add(t0, Duration::from_secs(1))),
        queue: Some("q".into()),
        ..JobFilter::default()
    };
    assert_eq!(count(&h, window).await, 1);
}

pub async fn operation_cancel_stops_it_and_keeps_what_was_done(h: Harness) {
    for _ in 0..4 {
        failed(&h, NewJob::new("k", json!({}))).await;
    }
    let op = create(&h, BulkAction::Retry, failed_jobs(), 2).await;
    h.store().operation_step(op.id).await.unwrap();
    let cancelled = h.store().operation_cancel(op.id).await.unwrap();
    assert_eq!(cancelled.state, OperationState::Cancelled);
    assert_eq!(cancelled.affected, 2);
    assert!(cancelled.finished_at.is_some());
    assert_eq!(h.store().operation_step(op.id).await.unwrap(), cancelled);
    assert_eq!(h.store().operation_cancel(op.id).await.unwrap(), cancelled);
    assert_eq!(count(&h, failed_jobs()).await, 2);
    assert_eq!(h.store().operation_get(424_242).await.unwrap(), None);
    assert!(matches!(
        h.store().operation_step(424_242).await,
        Err(StoreError::OperationNotFound { id: 424_242 })
    ));
    assert!(matches!(
        h.store().operation_cancel(424_242).await,
        Err(StoreError::OperationNotFound { id: 424_242 })
    ));
    assert!(matches!(
        h.store()
            .operation_create(&OperationNew {
                action: BulkAction::Retry,
                filter: JobFilter::default(),
                chunk: 1001,
            })
            .await,
        Err(StoreError::InvalidInput { field: "chunk", .. })
    ));
}

pub async fn operation_retry_never_gives_two_unfinished_jobs_one_unique_key(h: Harness) {
    let a = failed(&h, NewJob::new("k", json!({})).unique_key("key-1")).await;
    let b = failed(&h, NewJob::new("k", json!({})).unique_key("key-1")).await;
    let c = failed(&h, NewJob::new("k", json!({})).unique_key("key-2")).await;
    let holder = insert(&h, NewJob::new("k", json!({})).unique_key("key-2")).await;
    let op = create(&h, BulkAction::Retry, failed_jobs(), 1000).await;
    let op = h.store().operation_step(op.id).await.unwrap();
    assert_eq!(op.state, OperationState::Completed);
    assert_eq!((op.matched, op.affected, op.skipped), (3, 1, 2));
    assert_eq!(state(&h, a.id).await, JobState::Available);
    assert_eq!(state(&h, b.id).await, JobState::Failed);
    assert_eq!(state(&h, c.id).await, JobState::Failed);
    assert_eq!(state(&h, holder.id).await, JobState::Available);
}

/// This file's cases, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_operations {
    ($m:ident!($($a:tt)*)) => {
        $crate::$m!($($a)*; "operations"; operation_retries_matching_jobs_chunk_by_chunk, operation_skips_jobs_its_action_does_not_apply_to, job_count_filters_by_every_field, operation_cancel_stops_it_and_keeps_what_was_done, operation_retry_never_gives_two_unfinished_jobs_one_unique_key);
    };
}
