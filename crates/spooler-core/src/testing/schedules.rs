//! Conformance: schedules — declared definitions, ticks fenced on `next_run_at`, runs by hand,
//! pause and resume.

#![allow(missing_docs)]

use super::Harness;
use super::helpers::*;
use crate::schedule::{CatchUp, ScheduleDeclare, ScheduleDef, ScheduleFire};
use crate::{JobState, StoreError};
use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;

fn def(name: &str, cron: &str) -> ScheduleDef {
    let mut job = job("tick");
    job.queue = "ticks".into();
    ScheduleDef::new(name, cron, job)
}

async fn declare(h: &Harness, owner: &str, defs: &[(ScheduleDef, DateTime<Utc>)], remove: bool) {
    h.store()
        .schedule_declare(&ScheduleDeclare {
            owner: owner.into(),
            schedules: defs.to_vec(),
            remove_others: remove,
        })
        .await
        .expect("declare");
}

async fn one(h: &Harness, name: &str) -> crate::ScheduleRow {
    h.store()
        .schedule_list()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.def.name == name)
        .unwrap_or_else(|| panic!("schedule {name} is listed"))
}

fn tick(
    name: &str,
    due: DateTime<Utc>,
    next: DateTime<Utc>,
    job: Option<crate::NewJob>,
) -> ScheduleFire {
    ScheduleFire {
        name: name.into(),
        due: Some(due),
        next_run_at: Some(next),
        job,
    }
}

pub async fn declared_schedules_are_listed_with_their_next_run(h: Harness) {
    let next = h.now() + TimeDelta::seconds(10);
    let mut d = def("nightly", "0 3 * * *");
    d.tz = Some("Europe/Berlin".into());
    d.catch_up = CatchUp::None;
    declare(
        &h,
        "config",
        &[(d.clone(), next), (def("often", "@every 1s"), next)],
        false,
    )
    .await;
    let listed = h.store().schedule_list().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|s| s.def.name.as_str())
            .collect::<Vec<_>>(),
        ["nightly", "often"],
        "listed by name"
    );
    let nightly = &listed[0];
    assert_eq!(nightly.def, d, "the definition round-trips");
    assert_eq!(nightly.next_run_at, next);
    assert!(!nightly.paused);
    assert_eq!((nightly.last_run_at, nightly.last_job_id), (None, None));
}

pub async fn declaring_again_keeps_the_next_run_unless_the_cadence_changed(h: Harness) {
    let first = h.now() + TimeDelta::seconds(10);
    declare(&h, "config", &[(def("s", "@every 10s"), first)], false).await;
    h.store()
        .schedule_set_paused("s", true, None)
        .await
        .unwrap();
    let mut changed_job = def("s", "@every 10s");
    changed_job.job.priority = 5;
    let later = h.now() + TimeDelta::seconds(99);
    declare(&h, "config", &[(changed_job.clone(), later)], false).await;
    let row = one(&h, "s").await;
    assert_eq!(row.next_run_at, first, "same cadence: the next run stays");
    assert!(row.paused, "and so does the pause");
    assert_eq!(row.def.job.priority, 5, "the job template is replaced");
    declare(&h, "config", &[(def("s", "@every 20s"), later)], false).await;
    assert_eq!(
        one(&h, "s").await.next_run_at,
        later,
        "new cadence: new next run"
    );
}

pub async fn a_declaration_that_removes_others_removes_only_its_owners(h: Harness) {
    let next = h.now() + TimeDelta::seconds(10);
    declare(
        &h,
        "config",
        &[(def("a", "@every 1s"), next), (def("b", "@every 1s"), next)],
        false,
    )
    .await;
    declare(&h, "app", &[(def("c", "@every 1s"), next)], false).await;
    declare(&h, "config", &[(def("a", "@every 1s"), next)], true).await;
    let names: Vec<String> = h
        .store()
        .schedule_list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.def.name)
        .collect();
    assert_eq!(
        names,
        ["a", "c"],
        "b left the config; c belongs to another owner"
    );
}

pub async fn a_tick_enqueues_one_job_and_moves_the_next_run(h: Harness) {
    let due = h.now();
    let next = due + TimeDelta::seconds(1);
    let d = def("s", "@every 1s");
    declare(&h, "config", &[(d.clone(), due)], false).await;
    let fired = h
        .store()
        .schedule_fire(&tick("s", due, next, Some(d.tick_job(Some(due)))))
        .await
        .unwrap()
        .expect("the first fire of a tick wins");
    assert!(!fired.duplicate);
    assert_eq!(fired.job.queue, "ticks");
    assert_eq!(fired.job.state, JobState::Available);
    assert!(fired.job.tags.contains(&"schedule:s".to_string()));
    let again = h
        .store()
        .schedule_fire(&tick("s", due, next, Some(d.tick_job(Some(due)))))
        .await
        .unwrap();
    assert!(
        again.is_none(),
        "the same tick fired twice enqueues nothing the second time"
    );
    let row = one(&h, "s").await;
    assert_eq!(row.next_run_at, next);
    assert_eq!(row.last_job_id, Some(fired.job.id));
    assert_eq!(row.last_run_at, Some(h.now()));
    let jobs = claim(&h, &["ticks"], &["tick"], 10).await;
    assert_eq!(jobs.len(), 1, "one job for the tick");
}

pub async fn concurrent_fires_of_one_tick_enqueue_one_job(h: Harness) {
    let due = h.now();
    let next = due + TimeDelta::seconds(1);
    let d = def("s", "@every 1s");
    declare(&h, "config", &[(d.clone(), due)], false).await;
    let fires = (0..8).map(|_| {
        let store = h.store.clone();
        let fire = tick("s", due, next, Some(d.tick_job(Some(due))));
        tokio::spawn(async move { store.schedule_fire(&fire).await })
    });
    let mut won = 0;
    for f in fires.collect::<Vec<_>>() {
        if f.await.unwrap().unwrap().is_some() {
            won += 1;
        }
    }
    assert_eq!(
        won, 1,
        "exactly one of eight concurrent fires wins the tick"
    );
    assert_eq!(claim(&h, &["ticks"], &["tick"], 10).await.len(), 1);
}

pub async fn a_skipped_tick_moves_the_next_run_and_enqueues_nothing(h: Harness) {
    let due = h.now();
    let next = due + TimeDelta::seconds(60);
    declare(&h, "config", &[(def("s", "@every 1m"), due)], false).await;
    let fired = h
        .store()
        .schedule_fire(&tick("s", due, next, None))
        .await
        .unwrap();
    assert!(fired.is_none());
    let row = one(&h, "s").await;
    assert_eq!(row.next_run_at, next);
    assert_eq!(row.last_job_id, None);
    assert!(claim(&h, &["ticks"], &["tick"], 10).await.is_empty());
}

pub async fn a_run_by_hand_enqueues_without_moving_the_next_run(h: Harness) {
    let next = h.now() + TimeDelta::hours(1);
    let d = def("s", "@hourly");
    declare(&h, "config", &[(d.clone(), next)], false).await;
    h.store()
        .schedule_set_paused("s", true, None)
        .await
        .unwrap();
    let run = ScheduleFire {
        name: "s".into(),
        due: None,
        next_run_at: None,
        job: Some(d.tick_job(None)),
    };
    let fired = h
        .store()
        .schedule_fire(&run)
        .await
        .unwrap()
        .expect("a run by hand enqueues");
    let row = one(&h, "s").await;
    assert_eq!(row.next_run_at, next, "the next run did not move");
    assert_eq!(row.last_job_id, Some(fired.job.id));
    assert!(row.paused, "a paused schedule can be run by hand");
    let missing = h
        .store()
        .schedule_fire(&ScheduleFire {
            name: "nope".into(),
            ..run
        })
        .await;
    assert!(matches!(missing, Err(StoreError::ScheduleNotFound { name }) if name == "nope"));
}

pub async fn a_paused_schedule_does_not_tick_and_resumes_from_a_new_next_run(h: Harness) {
    let due = h.now();
    let d = def("s", "@every 1s");
    declare(&h, "config", &[(d.clone(), due)], false).await;
    let paused = h
        .store()
        .schedule_set_paused("s", true, None)
        .await
        .unwrap();
    assert!(paused.paused);
    let next = due + TimeDelta::seconds(1);
    let fired = h
        .store()
        .schedule_fire(&tick("s", due, next, Some(d.tick_job(Some(due)))))
        .await
        .unwrap();
    assert!(fired.is_none(), "a paused schedule's tick enqueues nothing");
    h.clock.advance(Duration::from_secs(30));
    let resumed_next = h.now() + TimeDelta::seconds(1);
    let resumed = h
        .store()
        .schedule_set_paused("s", false, Some(resumed_next))
        .await
        .unwrap();
    assert!(!resumed.paused);
    assert_eq!(
        resumed.next_run_at, resumed_next,
        "ticks missed while paused are not caught up"
    );
    let missing = h.store().schedule_set_paused("nope", true, None).await;
    assert!(matches!(missing, Err(StoreError::ScheduleNotFound { .. })));
}

pub async fn a_schedule_with_a_bad_cadence_is_refused(h: Harness) {
    let next = h.now();
    let refused = h
        .store()
        .schedule_declare(&ScheduleDeclare {
            owner: "config".into(),
            schedules: vec![(def("bad", "61 * * * *"), next)],
            remove_others: false,
        })
        .await;
    assert!(
        matches!(&refused, Err(StoreError::InvalidInput { field: "cron", message }) if message.contains("bad")),
        "{refused:?}"
    );
    assert!(
        h.store().schedule_list().await.unwrap().is_empty(),
        "nothing was written"
    );
}

/// This file's cases, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_schedules {
    ($m:ident!($($a:tt)*)) => {
        $crate::$m!($($a)*; "schedules"; declared_schedules_are_listed_with_their_next_run, declaring_again_keeps_the_next_run_unless_the_cadence_changed, a_declaration_that_removes_others_removes_only_its_owners, a_tick_enqueues_one_job_and_moves_the_next_run, concurrent_fires_of_one_tick_enqueue_one_job, a_skipped_tick_moves_the_next_run_and_enqueues_nothing, a_run_by_hand_enqueues_without_moving_the_next_run, a_paused_schedule_does_not_tick_and_resumes_from_a_new_next_run, a_schedule_with_a_bad_cadence_is_refused);
    };
}
