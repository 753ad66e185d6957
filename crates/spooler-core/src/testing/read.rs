//! Conformance: Listing jobs page by page, and queues with their counts.

#![allow(missing_docs)]

use super::Harness;
use super::helpers::*;
use crate::JobState;
use crate::clock::add;
use crate::store::*;
use std::time::Duration;

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

pub async fn a_listing_reads_only_the_ids_between_its_bounds(h: Harness) {
    let mut ids = Vec::new();
    for i in 0..10 {
        let q = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(insert(&h, job("k").queue(q)).await.id);
    }
    for state in [None, Some(JobState::Available)] {
        let list = JobList {
            queue: Some("even".into()),
            state,
            limit: 100,
            before_id: Some(ids[8]),
            after_id: Some(ids[2]),
            ..Default::default()
        };
        let got: Vec<i64> = h
            .store()
            .job_list(&list)
            .await
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(
            got,
            [ids[6], ids[4]],
            "{state:?}: newest first, bounds excluded"
        );
    }
    let all_above = JobList {
        limit: 100,
        after_id: Some(ids[7]),
        ..Default::default()
    };
    assert_eq!(h.store().job_list(&all_above).await.unwrap().len(), 2);
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

/// This file's cases, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_read {
    ($m:ident!($($a:tt)*)) => {
        $crate::$m!($($a)*; "read"; list_filters_and_pages_newest_first, a_listing_reads_only_the_ids_between_its_bounds, queue_list_counts_and_oldest_wait);
    };
}
