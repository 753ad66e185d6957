//! Conformance: Unique jobs: a queue unique by kind and args within a period answers an enqueue
//! with the job enqueued within the period, finished or not, also under many concurrent enqueues
//! (as a `unique_key` does among unfinished jobs); the key is free again once the period passed or
//! its job was deleted.

#![allow(missing_docs)]

use super::Harness;
use super::helpers::*;
use crate::NewJob;
use crate::store::*;
use crate::unique::{UniqueBy, UniquePeriod};
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

/// Makes `queue` unique by kind and args for an hour.
async fn unique_queue(h: &Harness, queue: &str) {
    let settings = QueueSettings {
        unique: Some(UniquePeriod {
            by: UniqueBy {
                kind: true,
                args: true,
                queue: false,
            },
            period: HOUR,
        }),
        ..QueueSettings::new(queue)
    };
    configure_queues(h, &[settings]).await;
}

fn mail(to: &str) -> NewJob {
    NewJob::new("mail", json!({"to": to, "lang": "en"})).queue("once")
}

async fn enqueue(h: &Harness, job: NewJob) -> Inserted {
    h.store().job_insert(&job).await.expect("insert")
}

pub async fn unique_settings_are_stored_with_the_queue(h: Harness) {
    unique_queue(&h, "once").await;
    let stored = h.store().queue_settings().await.unwrap();
    let once = stored.iter().find(|s| s.queue == "once").unwrap();
    assert_eq!(once.unique.map(|u| u.period), Some(HOUR));
    assert!(once.unique.unwrap().by.args);
}

pub async fn a_job_like_one_enqueued_within_the_period_is_answered_with_it(h: Harness) {
    unique_queue(&h, "once").await;
    let first = enqueue(&h, mail("a@example.com")).await;
    assert!(!first.duplicate);
    // The same args in another key order are the same job.
    let same = enqueue(
        &h,
        NewJob::new("mail", json!({"lang": "en", "to": "a@example.com"})).queue("once"),
    )
    .await;
    assert!(same.duplicate);
    assert_eq!(same.job.id, first.job.id);
    assert_eq!(
        same.job.args, first.job.args,
        "the answer is the stored job"
    );
    // Other args, another kind, or a queue that is not unique: new jobs.
    assert!(!enqueue(&h, mail("b@example.com")).await.duplicate);
    assert!(
        !enqueue(&h, NewJob::new("sms", first.job.args.clone()).queue("once"))
            .await
            .duplicate
    );
    assert!(
        !enqueue(&h, mail("a@example.com").queue("default"))
            .await
            .duplicate
    );
    // Finished, it still answers within the period.
    let running = claim(&h, &["once"], &["mail"], 10).await;
    let held = running.iter().find(|j| j.id == first.job.id).unwrap();
    assert!(finish(&h, held, completed()).await);
    let after = enqueue(&h, mail("a@example.com")).await;
    assert!(after.duplicate);
    assert_eq!(after.job.id, first.job.id);
    assert_eq!(after.job.state, crate::JobState::Completed);
    // Once the period passed, a new job is made, and it holds the key for a period of its own.
    h.clock.advance(HOUR);
    let next = enqueue(&h, mail("a@example.com")).await;
    assert!(!next.duplicate);
    assert_ne!(next.job.id, first.job.id);
    let again = enqueue(&h, mail("a@example.com")).await;
    assert_eq!((again.duplicate, again.job.id), (true, next.job.id));
}

pub async fn a_batch_holding_one_job_twice_inserts_it_once(h: Harness) {
    unique_queue(&h, "once").await;
    let out = h
        .store()
        .job_insert_many(vec![
            mail("a@example.com"),
            NewJob::new("plain", json!({})),
            mail("a@example.com"),
            mail("b@example.com"),
        ])
        .await
        .unwrap();
    let dup: Vec<bool> = out.iter().map(|i| i.duplicate).collect();
    assert_eq!(dup, [false, false, true, false]);
    assert_eq!(out[2].job.id, out[0].job.id);
    let ids: HashSet<_> = out.iter().map(|i| i.job.id).collect();
    assert_eq!(ids.len(), 3);
}

pub async fn a_deleted_job_frees_its_key_within_the_period(h: Harness) {
    unique_queue(&h, "once").await;
    let first = enqueue(&h, mail("a@example.com")).await;
    h.store().job_delete(first.job.id).await.unwrap();
    let again = enqueue(&h, mail("a@example.com")).await;
    assert!(!again.duplicate, "the key's job is gone: a new one is made");
    assert_ne!(again.job.id, first.job.id);
    assert!(enqueue(&h, mail("a@example.com")).await.duplicate);
}

pub async fn a_job_with_its_own_unique_key_is_deduplicated_by_that_key_alone(h: Harness) {
    unique_queue(&h, "once").await;
    let keyed = enqueue(&h, mail("a@example.com").unique_key("k1")).await;
    let other_key = enqueue(&h, mail("a@example.com").unique_key("k2")).await;
    assert!(!keyed.duplicate && !other_key.duplicate);
    // Neither holds the period key: a job without a key of its own is new.
    assert!(!enqueue(&h, mail("a@example.com")).await.duplicate);
}

pub async fn fifty_concurrent_enqueues_of_one_job_make_one(h: Harness) {
    unique_queue(&h, "once").await;
    for (what, job) in [
        ("kind and args", mail("a@example.com")),
        (
            "unique_key",
            NewJob::new("k", json!({"n": 1})).unique_key("one"),
        ),
    ] {
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (store, job) = (h.store.clone(), job.clone());
            tasks.push(tokio::spawn(async move {
                store.job_insert(&job).await.expect("insert")
            }));
        }
        let mut ids = HashSet::new();
        let mut fresh = 0;
        for task in tasks {
            let inserted = task.await.unwrap();
            ids.insert(inserted.job.id);
            fresh += usize::from(!inserted.duplicate);
        }
        assert_eq!(ids.len(), 1, "{what}: one job for fifty enqueues");
        assert_eq!(
            fresh, 1,
            "{what}: one enqueue made it, the rest were answered with it"
        );
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_unique {
    ($m:ident!($($a:tt)*)) => {
        $crate::$m!($($a)*; "unique"; unique_settings_are_stored_with_the_queue, a_job_like_one_enqueued_within_the_period_is_answered_with_it, a_batch_holding_one_job_twice_inserts_it_once, a_deleted_job_frees_its_key_within_the_period, a_job_with_its_own_unique_key_is_deduplicated_by_that_key_alone, fifty_concurrent_enqueues_of_one_job_make_one);
    };
}
