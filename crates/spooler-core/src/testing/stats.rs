//! Conformance: throughput and latency history rolled up from finished jobs.

#![allow(missing_docs)]

use super::Harness;
use super::helpers::*;
use crate::stats::*;
use crate::store::*;
use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;

/// Sets the clock to the start of the next hour, so a case's jobs share its minute, hour and day.
fn at_next_hour(h: &Harness) -> DateTime<Utc> {
    let t0 = Granularity::Hour.floor(h.now()) + TimeDelta::hours(1);
    h.clock.set(t0);
    t0
}

/// Rolls every stretch due by the store's clock, as a leader that was behind would.
async fn roll_all(h: &Harness) -> usize {
    let mut rolls = 0;
    let mut mark = h.store().stats_mark().await.unwrap();
    while let Some(roll) = plan_roll(mark, h.now()) {
        assert!(h.store().stats_roll(&roll).await.unwrap(), "{roll:?}");
        mark = Some(roll.until);
        assert_eq!(h.store().stats_mark().await.unwrap(), mark);
        rolls += 1;
    }
    rolls
}

async fn read(h: &Harness, g: Granularity, since: DateTime<Utc>) -> Vec<StatsRow> {
    h.store()
        .stats_read(&StatsQuery {
            granularity: g,
            since,
            queue: None,
            kind: None,
        })
        .await
        .unwrap()
}

fn hist(ms: &[(f64, u64)]) -> Histogram {
    let mut h = Histogram::default();
    for &(ms, n) in ms {
        h.add(bucket_of(ms), n);
    }
    h
}

pub async fn a_roll_counts_finished_jobs_with_run_and_wait_times(h: Harness) {
    let t0 = at_next_hour(&h);
    for _ in 0..3 {
        insert(&h, job("send").queue("mail")).await;
    }
    insert(&h, job("k").max_attempts(1)).await;
    let never_started = insert(&h, job("idle").queue("mail")).await;
    h.clock.advance(Duration::from_secs(2));
    let sends = claim(&h, &["mail"], &["send"], 3).await;
    h.clock.advance(Duration::from_millis(250));
    for s in &sends {
        assert!(finish(&h, s, completed()).await);
    }
    let k = claim_one(&h, "k").await;
    h.clock.advance(Duration::from_secs(1));
    let failed = Outcome::Failed { error: "x".into() };
    assert!(finish(&h, &k, failed).await);
    cancel(&h, never_started.id).await.unwrap();
    // Still running: not counted.
    insert(&h, job("k")).await;
    claim_one(&h, "k").await;

    h.clock.advance(Duration::from_secs(120));
    assert_eq!(h.store().stats_mark().await.unwrap(), None);
    assert!(roll_all(&h).await >= 1);
    for g in Granularity::ALL {
        let rows = read(&h, g, g.floor(t0)).await;
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.bucket,
                    r.queue.as_str(),
                    r.kind.as_str(),
                    (r.completed, r.failed, r.cancelled),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (g.floor(t0), "default", "k", (0, 1, 0)),
                (g.floor(t0), "mail", "idle", (0, 0, 1)),
                (g.floor(t0), "mail", "send", (3, 0, 0)),
            ],
            "{g}"
        );
        assert_eq!(rows[0].run, hist(&[(1000.0, 1)]), "{g}: k ran 1 s");
        assert_eq!(rows[0].wait, hist(&[(2250.0, 1)]), "{g}: k waited 2.25 s");
        assert_eq!(rows[1].run.count() + rows[1].wait.count(), 0, "never ran");
        assert_eq!(rows[2].run, hist(&[(250.0, 3)]), "{g}");
        assert_eq!(rows[2].wait, hist(&[(2000.0, 3)]), "{g}");
    }
    let only_mail = h
        .store()
        .stats_read(&StatsQuery {
            granularity: Granularity::Minute,
            since: t0,
            queue: Some("mail".into()),
            kind: Some("send".into()),
        })
        .await
        .unwrap();
    assert_eq!(only_mail.len(), 1);
    assert_eq!(only_mail[0].completed, 3);
}

pub async fn a_stretch_is_rolled_once_however_many_leaders_roll_it(h: Harness) {
    let t0 = at_next_hour(&h);
    insert(&h, job("k")).await;
    let c = claim_one(&h, "k").await;
    assert!(finish(&h, &c, completed()).await);
    h.clock.advance(Duration::from_secs(90));
    let mark = h.store().stats_mark().await.unwrap();
    let roll = StatsRoll {
        mark,
        from: t0 - TimeDelta::minutes(5),
        until: t0 + TimeDelta::minutes(1),
    };
    assert!(h.store().stats_roll(&roll).await.unwrap());
    // A second leader planned the same roll from the mark it read before.
    assert!(!h.store().stats_roll(&roll).await.unwrap());
    let stale = StatsRoll {
        mark: Some(t0 - TimeDelta::minutes(5)),
        ..roll
    };
    assert!(!h.store().stats_roll(&stale).await.unwrap());
    assert_eq!(h.store().stats_mark().await.unwrap(), Some(roll.until));
    let rows = read(&h, Granularity::Hour, t0).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].completed, 1, "counted once");
}

pub async fn later_rolls_add_to_the_hour_and_prune_past_what_is_kept(h: Harness) {
    let t0 = at_next_hour(&h);
    h.clock.advance(Duration::from_secs(30));
    finish_one(&h).await;
    h.clock.advance(Duration::from_secs(60));
    roll_all(&h).await;
    h.clock.advance(Duration::from_secs(300));
    finish_one(&h).await;
    finish_one(&h).await;
    h.clock.advance(Duration::from_secs(60));
    roll_all(&h).await;
    let minutes = read(&h, Granularity::Minute, t0).await;
    let counts: Vec<_> = minutes.iter().map(|r| (r.bucket, r.completed)).collect();
    assert_eq!(
        counts,
        [(t0, 1), (t0 + TimeDelta::minutes(6), 2)],
        "one row per minute"
    );
    let hours = read(&h, Granularity::Hour, t0).await;
    assert_eq!(hours.len(), 1);
    assert_eq!(hours[0].completed, 3, "both rolls added to the hour");

    h.clock.advance(Duration::from_secs(3 * 3600));
    roll_all(&h).await;
    assert!(
        read(&h, Granularity::Minute, t0).await.is_empty(),
        "minutes older than the last hour and one minute are deleted"
    );
    assert_eq!(read(&h, Granularity::Hour, t0).await[0].completed, 3);
    let days = read(&h, Granularity::Day, Granularity::Day.floor(t0)).await;
    assert_eq!(days[0].completed, 3);
}

async fn finish_one(h: &Harness) {
    insert(h, job("k")).await;
    let c = claim_one(h, "k").await;
    assert!(finish(h, &c, completed()).await);
}

/// This file's cases, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_stats {
    ($m:ident!($($a:tt)*)) => {
        $crate::$m!($($a)*; "stats"; a_roll_counts_finished_jobs_with_run_and_wait_times, a_stretch_is_rolled_once_however_many_leaders_roll_it, later_rolls_add_to_the_hour_and_prune_past_what_is_kept);
    };
}
