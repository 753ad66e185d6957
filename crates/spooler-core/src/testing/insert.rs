//! Conformance: Inserting and reading back: round trips, scheduled inserts, ids, validation, unique keys.

#![allow(missing_docs)]

use super::Harness;
use super::helpers::*;
use crate::clock::add;
use crate::store::*;
use crate::{JobState, NewJob, StoreError};
use chrono::TimeDelta;
use serde_json::json;
use std::time::Duration;

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
    let ins = h.store().job_insert_many(jobs).await.unwrap();
    assert_eq!(ins.len(), 250);
    for (i, pair) in ins.windows(2).enumerate() {
        assert!(pair[0].job.id < pair[1].job.id, "ids increase at {i}");
    }
    for (i, inserted) in ins.iter().enumerate() {
        assert_eq!(inserted.job.args, json!({ "i": i }));
    }
    assert!(h.store().job_insert_many(vec![]).await.unwrap().is_empty());
}

/// A batch of jobs alike in queue and kind, each different in everything else, stores each one's
/// own fields (a store may bind what the jobs share once per statement, as SQLite does), beside
/// jobs of other queues and kinds in the same batch.
pub async fn a_batch_keeps_each_jobs_own_fields(h: Harness) {
    let later = add(h.now(), Duration::from_secs(90));
    let jobs: Vec<NewJob> = (0..71)
        .map(|i: i32| {
            let mut j = NewJob::new(if i < 67 { "alike" } else { "other" }, json!({ "i": i }))
                .priority(i % 5)
                .max_attempts(1 + i % 7)
                .timeout(Duration::from_millis(1000 + i as u64));
            if i >= 69 {
                j = j.queue("elsewhere");
            }
            if i % 3 == 0 {
                j.tags = vec![format!("t{i}")];
            }
            if i % 4 == 0 {
                j.meta.insert("n".into(), json!(i));
            }
            if i % 6 == 0 {
                j = j.run_at(later);
            }
            j
        })
        .collect();
    let inserted = h.store().job_insert_many(jobs.clone()).await.unwrap();
    assert_eq!(inserted.len(), jobs.len());
    for (new, ins) in jobs.iter().zip(&inserted) {
        let stored = get(&h, ins.job.id).await;
        assert_eq!(stored, ins.job, "job {} reads back as answered", ins.job.id);
        assert_eq!(
            (stored.queue.as_str(), stored.kind.as_str()),
            (new.queue.as_str(), new.kind.as_str())
        );
        assert_eq!(stored.args, new.args);
        assert_eq!(stored.priority, new.priority);
        assert_eq!(Some(stored.max_attempts), new.max_attempts);
        assert_eq!(stored.timeout, new.timeout);
        assert_eq!(stored.tags, new.tags);
        assert_eq!(stored.meta, new.meta);
        assert_eq!(stored.created_at, h.now());
        let scheduled = new.run_at.is_some();
        assert_eq!(stored.run_at, if scheduled { later } else { h.now() });
        assert_eq!(
            stored.state,
            if scheduled {
                JobState::Scheduled
            } else {
                JobState::Available
            },
            "job {}",
            stored.id
        );
    }
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
    assert!(h.store().job_insert_many(batch).await.is_err());
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
        .job_insert_many(vec![job("k").unique_key("b"), job("k").unique_key("b")])
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

pub async fn insert_takes_the_queues_stored_defaults(h: Harness) {
    let store = h.store();
    let mail = QueueSettings {
        queue: "mail".into(),
        max_attempts: Some(3),
        timeout: Some(Duration::from_millis(2500)),
        retention: Default::default(),
        routes: Default::default(),
        limits: Default::default(),
        unique: None,
    };
    let only_attempts = QueueSettings {
        queue: "slow".into(),
        max_attempts: Some(7),
        timeout: None,
        retention: Default::default(),
        routes: Default::default(),
        limits: Default::default(),
        unique: None,
    };
    store
        .queue_configure(&[mail.clone(), only_attempts.clone()])
        .await
        .unwrap();
    let mut stored = store.queue_settings().await.unwrap();
    stored.sort_by(|a, b| a.queue.cmp(&b.queue));
    assert_eq!(stored, vec![mail.clone(), only_attempts.clone()]);
    // One insert and a batch alike: the job's own values win, the queue's fill in, then the defaults.
    let one = insert(&h, job("k").queue("mail")).await;
    let batch = store
        .job_insert_many(vec![
            job("k").queue("mail").max_attempts(9),
            job("k").queue("mail").timeout(Duration::from_secs(1)),
            job("k").queue("slow"),
            job("k").queue("other"),
        ])
        .await
        .unwrap();
    let got: Vec<_> = std::iter::once(one)
        .chain(batch.into_iter().map(|i| i.job))
        .collect();
    let want = [
        (3, Some(Duration::from_millis(2500))),
        (9, Some(Duration::from_millis(2500))),
        (3, Some(Duration::from_secs(1))),
        (7, None),
        (crate::DEFAULT_MAX_ATTEMPTS, None),
    ];
    for (j, (max_attempts, timeout)) in got.iter().zip(want) {
        assert_eq!(
            (j.max_attempts, j.timeout),
            (max_attempts, timeout),
            "{j:?}"
        );
        assert_eq!(
            &get(&h, j.id).await,
            j,
            "the returned row is the stored one"
        );
    }
    // A configuration names the whole truth: queues it leaves out lose their defaults.
    store
        .queue_configure(std::slice::from_ref(&only_attempts))
        .await
        .unwrap();
    assert_eq!(store.queue_settings().await.unwrap(), vec![only_attempts]);
    let plain = insert(&h, job("k").queue("mail")).await;
    assert_eq!(plain.max_attempts, crate::DEFAULT_MAX_ATTEMPTS);
    assert_eq!(plain.timeout, None);
    assert_eq!(get(&h, plain.id).await, plain);
}

/// A job's meta travels with it: stored by a single and a batched insert, read back, claimed with
/// the job; an empty meta stays empty; a malformed traceparent is refused naming the field.
pub async fn meta_travels_with_the_job(h: Harness) {
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut one = NewJob::new("traced", json!({}));
    one.meta
        .insert(crate::TRACEPARENT.into(), traceparent.into());
    one.meta.insert("tenant".into(), json!({"id": 7}));
    let single = h.store().job_insert(&one).await.unwrap().job;
    assert_eq!(single.meta, one.meta);
    let batch = h
        .store()
        .job_insert_many(vec![one.clone(), NewJob::new("traced", json!({}))])
        .await
        .unwrap();
    assert_eq!(batch[0].job.meta, one.meta);
    assert!(batch[1].job.meta.is_empty());
    assert_eq!(get(&h, single.id).await.meta, one.meta);
    assert!(get(&h, batch[1].job.id).await.meta.is_empty());
    let claimed = claim(&h, &["default"], &["traced"], 10).await;
    assert_eq!(claimed.len(), 3);
    for job in claimed {
        let expected = if job.id == batch[1].job.id {
            Default::default()
        } else {
            one.meta.clone()
        };
        assert_eq!(job.meta, expected, "job {}", job.id);
    }
    let mut bad = NewJob::new("traced", json!({}));
    bad.meta.insert(crate::TRACEPARENT.into(), "00-nope".into());
    match h.store().job_insert(&bad).await {
        Err(StoreError::InvalidInput { field, .. }) => assert_eq!(field, "meta.traceparent"),
        other => panic!("expected the traceparent refused, got {other:?}"),
    }
}

/// A large batch of varied jobs (a store may stream such a batch rather than bind it): each job
/// reads back exactly as the insert answered it, text with every character a bulk format gives a
/// meaning, tags that look like `NULL` or hold commas, quotes and braces, scheduled and available
/// jobs, defaults resolved from the queue's settings.
pub async fn a_large_batch_reads_back_as_it_was_answered(h: Harness) {
    let mut settings = QueueSettings::new("bulk");
    settings.max_attempts = Some(7);
    settings.timeout = Some(Duration::from_secs(9));
    h.store().queue_configure(&[settings]).await.unwrap();
    let origin = insert(&h, job("origin")).await;
    let texts = [
        "plain",
        "tab\there\tand\nnewline\r\n",
        "back\\slash \\N \\. end",
        "quote \" and 'single'",
        "unicode é ✓ 🚀",
        "{braces}, [brackets], commas",
    ];
    let tags: Vec<String> = ["NULL", "a,b", "q\"d", "b\\s", "", "{x}", "tab\tt", "sp ace"]
        .map(String::from)
        .to_vec();
    let jobs: Vec<NewJob> = (0..300)
        .map(|i| {
            let text = texts[i % texts.len()];
            let mut new = NewJob::new(format!("kind {}", i % 3), json!({"i": i, "text": text}))
                .queue(if i % 2 == 0 { "default" } else { "bulk" })
                .priority((i % 7) as i32 - 3);
            if i % 5 == 0 {
                new = new.run_at(h.now() + TimeDelta::seconds(60));
            }
            if i % 5 == 1 {
                new = new.run_at(h.now() - TimeDelta::seconds(60));
            }
            if i % 4 == 0 {
                new = new.max_attempts(2).timeout(Duration::from_millis(1500));
            }
            if i % 6 == 0 {
                new.tags = tags.clone();
            }
            if i % 9 == 0 {
                new.routed_from = Some(origin.id);
            }
            if i % 10 == 3 {
                new.meta
                    .insert("tenant".into(), json!({"id": i, "note": text}));
            }
            new
        })
        .collect();
    let inserted = h.store().job_insert_many(jobs.clone()).await.unwrap();
    assert_eq!(inserted.len(), jobs.len());
    for (i, pair) in inserted.windows(2).enumerate() {
        assert!(pair[0].job.id < pair[1].job.id, "ids increase at {i}");
    }
    for (i, (sent, ins)) in jobs.iter().zip(&inserted).enumerate() {
        let job = &ins.job;
        assert!(!ins.duplicate);
        assert_eq!(
            (&job.kind, &job.args, &job.queue),
            (&sent.kind, &sent.args, &sent.queue)
        );
        assert_eq!((&job.tags, &job.meta), (&sent.tags, &sent.meta), "job {i}");
        let scheduled = i % 5 == 0;
        assert_eq!(
            job.state,
            if scheduled {
                JobState::Scheduled
            } else {
                JobState::Available
            },
            "job {i}"
        );
        let (attempts, timeout) = match (i % 4 == 0, i % 2 == 1) {
            (true, _) => (2, Some(Duration::from_millis(1500))),
            (false, true) => (7, Some(Duration::from_secs(9))),
            (false, false) => (crate::DEFAULT_MAX_ATTEMPTS, None),
        };
        assert_eq!(
            (job.max_attempts, job.timeout),
            (attempts, timeout),
            "job {i}"
        );
        assert_eq!(
            get(&h, job.id).await,
            *job,
            "job {i} reads back as answered"
        );
    }
    let available = jobs.len() - jobs.len().div_ceil(5);
    let mut claimed = claim(
        &h,
        &["default", "bulk"],
        &["kind 0", "kind 1", "kind 2"],
        1000,
    )
    .await;
    claimed.sort_by_key(|j| j.id);
    assert_eq!(claimed.len(), available);
}

/// Many callers inserting at once (a store may write them together, as one statement and one
/// commit): each is answered with its own jobs in its own order, and a unique key several callers
/// carry makes one job, which every other caller is answered with.
pub async fn concurrent_inserts_each_get_their_own_jobs(h: Harness) {
    let mut calls = tokio::task::JoinSet::new();
    for caller in 0..40 {
        let store = h.store.clone();
        calls.spawn(async move {
            let mut jobs: Vec<NewJob> = (0..caller % 3 + 1)
                .map(|k| NewJob::new("mix", json!({"caller": caller, "k": k})).priority(k))
                .collect();
            if caller % 10 == 0 {
                jobs.push(NewJob::new("shared", json!({"caller": caller})).unique_key("shared"));
            }
            let inserted = store.job_insert_many(jobs.clone()).await.unwrap();
            (jobs, inserted)
        });
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut shared = Vec::new();
    let mut fresh_shared = 0;
    while let Some(done) = calls.join_next().await {
        let (sent, inserted) = done.unwrap();
        assert_eq!(inserted.len(), sent.len());
        for (job, ins) in sent.iter().zip(&inserted) {
            if job.unique_key.is_some() {
                shared.push(ins.job.id);
                fresh_shared += usize::from(!ins.duplicate);
                assert_eq!(ins.job.kind, "shared");
                continue;
            }
            assert!(!ins.duplicate);
            assert_eq!((&ins.job.kind, &ins.job.args), (&job.kind, &job.args));
            assert_eq!(ins.job.priority, job.priority);
            assert!(ids.insert(ins.job.id), "job {} answered twice", ins.job.id);
            assert_eq!(get(&h, ins.job.id).await.args, job.args);
        }
    }
    assert_eq!(ids.len(), (0..40).map(|c| c % 3 + 1).sum::<i32>() as usize);
    assert_eq!(shared.len(), 4);
    assert_eq!(fresh_shared, 1);
    assert!(shared.iter().all(|id| *id == shared[0]));
    assert!(!ids.contains(&shared[0]));
}

/// This file's cases, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_insert {
    ($m:ident!($($a:tt)*)) => {
        $crate::$m!($($a)*; "insert"; insert_and_get_round_trip, insert_in_the_future_is_scheduled, insert_many_assigns_increasing_ids, a_batch_keeps_each_jobs_own_fields, insert_rejects_invalid_fields, unique_key_returns_the_unfinished_job, get_unknown_is_none, insert_takes_the_queues_stored_defaults, meta_travels_with_the_job, a_large_batch_reads_back_as_it_was_answered, concurrent_inserts_each_get_their_own_jobs);
    };
}
