//! Conformance: Limits: a queue's rate limit and global concurrency hold at the claim, across
//! claims made at once, keep the claim order, say when they held a claim back, and are stored with
//! the queue's settings.

#![allow(missing_docs)]

use super::Harness;
use super::helpers::*;
use crate::limit::{CONCURRENCY_RECHECK, QueueLimits, RateLimit};
use crate::store::*;
use crate::{JobState, NewJob};
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

/// Stores `limits` on the queues they name.
async fn configure(h: &Harness, limits: &[(&str, QueueLimits)]) {
    let settings: Vec<QueueSettings> = limits
        .iter()
        .map(|(queue, limits)| QueueSettings {
            limits: *limits,
            ..QueueSettings::new(*queue)
        })
        .collect();
    configure_queues(h, &settings).await;
}

fn rate(text: &str) -> QueueLimits {
    QueueLimits {
        rate: Some(RateLimit::parse(text).unwrap()),
        concurrency: None,
    }
}

fn concurrency(n: u32) -> QueueLimits {
    QueueLimits {
        rate: None,
        concurrency: Some(n),
    }
}

async fn fill(h: &Harness, queue: &str, n: usize) {
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob::new("k", json!({ "i": i })).queue(queue))
        .collect();
    h.store().job_insert_many(jobs).await.expect("insert");
}

pub async fn limits_are_stored_with_the_queue_settings(h: Harness) {
    let both = QueueLimits {
        rate: Some(RateLimit::parse("500/h").unwrap()),
        concurrency: Some(4),
    };
    configure(&h, &[("mail", both), ("plain", QueueLimits::default())]).await;
    let stored = h.store().queue_settings().await.unwrap();
    let by_queue = |q: &str| stored.iter().find(|s| s.queue == q).unwrap().limits;
    assert_eq!(by_queue("mail"), both);
    assert!(by_queue("plain").is_none());
}

pub async fn a_rate_limit_admits_a_burst_then_one_job_per_interval(h: Harness) {
    // 20/s: one job every 50 ms, in bursts of 2.
    configure(&h, &[("q", rate("20/s"))]).await;
    fill(&h, "q", 20).await;
    let first = claimed(&h, &["q"], &["k"], 10).await;
    assert_eq!(first.jobs.len(), 2, "a burst");
    assert_eq!(
        first.held_back,
        Some(Duration::from_millis(100)),
        "held back until a burst is admitted again"
    );
    let none = claimed(&h, &["q"], &["k"], 10).await;
    assert!(none.jobs.is_empty(), "nothing more within the interval");
    assert!(none.held_back.is_some());
    h.clock.advance(Duration::from_millis(50));
    assert_eq!(claim(&h, &["q"], &["k"], 10).await.len(), 1);
    h.clock.advance(Duration::from_secs(60));
    assert_eq!(
        claim(&h, &["q"], &["k"], 10).await.len(),
        2,
        "an idle minute refills one burst, no more"
    );
}

pub async fn a_limited_claim_keeps_the_claim_order(h: Harness) {
    configure(&h, &[("q", rate("20/s"))]).await;
    for priority in [0, 5, 1, 9, 3] {
        insert(
            &h,
            NewJob::new("k", json!({})).queue("q").priority(priority),
        )
        .await;
    }
    let got = claim(&h, &["q"], &["k"], 10).await;
    let priorities: Vec<i32> = got.iter().map(|j| j.priority).collect();
    assert_eq!(priorities, vec![9, 5], "the highest priorities first");
    h.clock.advance(Duration::from_secs(1));
    let got = claim(&h, &["q"], &["k"], 10).await;
    assert_eq!(got.iter().map(|j| j.priority).collect::<Vec<_>>(), [3, 1]);
}

pub async fn a_claim_the_queue_ran_dry_for_was_not_held_back(h: Harness) {
    configure(&h, &[("q", rate("20/s")), ("c", concurrency(3))]).await;
    fill(&h, "q", 1).await;
    fill(&h, "c", 2).await;
    for queue in ["q", "c"] {
        let got = claimed(&h, &[queue], &["k"], 10).await;
        assert!(!got.jobs.is_empty());
        assert_eq!(
            got.held_back, None,
            "{queue}: the queue ran dry, no limit held"
        );
    }
    // Asking for no more than the limit allows is not being held back either.
    fill(&h, "c", 5).await;
    let got = claimed(&h, &["c"], &["k"], 1).await;
    assert_eq!((got.jobs.len(), got.held_back), (1, None));
}

pub async fn global_concurrency_caps_the_jobs_running_until_some_end(h: Harness) {
    configure(&h, &[("q", concurrency(3))]).await;
    fill(&h, "q", 10).await;
    let first = claimed(&h, &["q"], &["k"], 10).await;
    assert_eq!(first.jobs.len(), 3);
    assert_eq!(first.held_back, Some(CONCURRENCY_RECHECK));
    let none = claimed(&h, &["q"], &["k"], 10).await;
    assert!(none.jobs.is_empty());
    assert_eq!(none.held_back, Some(CONCURRENCY_RECHECK));
    // One completes, one is handed back unstarted: two slots.
    assert!(finish(&h, &first.jobs[0], Outcome::Completed { result: None }).await);
    assert!(finish(&h, &first.jobs[1], Outcome::Released).await);
    let next = claim(&h, &["q"], &["k"], 10).await;
    assert_eq!(next.len(), 2);
    let running = walk_pages(
        &h,
        JobList {
            queue: Some("q".into()),
            state: Some(JobState::Running),
            limit: 100,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(running.len(), 3);
}

pub async fn claims_at_once_from_many_tasks_never_exceed_the_limits(h: Harness) {
    configure(&h, &[("c", concurrency(3)), ("r", rate("50/s"))]).await;
    fill(&h, "c", 40).await;
    fill(&h, "r", 40).await;
    for (queue, most) in [("c", 3), ("r", 5)] {
        let mut tasks = Vec::new();
        for w in 0..8 {
            let store = h.store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .job_claim(&JobClaim {
                        queues: vec![queue.into()],
                        kinds: vec!["k".into()],
                        limit: 4,
                        worker_id: format!("w{w}"),
                        lease: LEASE,
                    })
                    .await
                    .expect("claim")
                    .jobs
            }));
        }
        let mut ids = HashSet::new();
        for task in tasks {
            for job in task.await.unwrap() {
                assert!(ids.insert(job.id), "job {} claimed twice", job.id);
            }
        }
        assert!(
            ids.len() <= most,
            "{queue}: {} claimed at once, the limit admits {most}",
            ids.len()
        );
        // What claims that stepped aside left is still there to take, up to the limit.
        let rest = claim(&h, &[queue], &["k"], 10).await;
        assert_eq!(ids.len() + rest.len(), most, "{queue}");
    }
}

pub async fn a_claim_over_several_queues_takes_from_the_limited_ones_what_they_admit(h: Harness) {
    configure(&h, &[("slow", rate("20/s"))]).await;
    fill(&h, "slow", 5).await;
    fill(&h, "fast", 3).await;
    let got = claimed(&h, &["slow", "fast"], &["k"], 10).await;
    let from = |q: &str| got.jobs.iter().filter(|j| j.queue == q).count();
    assert_eq!((from("fast"), from("slow")), (3, 2));
    assert!(got.held_back.is_some(), "the limited queue held it back");
    // A paused limited queue gives nothing and holds nothing back.
    h.store().queue_pause("slow").await.unwrap();
    h.clock.advance(Duration::from_secs(1));
    let got = claimed(&h, &["slow"], &["k"], 10).await;
    assert!(got.jobs.is_empty());
    assert_eq!(got.held_back, None);
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_limits {
    ($m:ident!($($a:tt)*)) => {
        $crate::$m!($($a)*; "limits"; limits_are_stored_with_the_queue_settings, a_rate_limit_admits_a_burst_then_one_job_per_interval, a_limited_claim_keeps_the_claim_order, a_claim_the_queue_ran_dry_for_was_not_held_back, global_concurrency_caps_the_jobs_running_until_some_end, claims_at_once_from_many_tasks_never_exceed_the_limits, a_claim_over_several_queues_takes_from_the_limited_ones_what_they_admit);
    };
}
