//! Schedules: one job per tick however many workers declare and fire a schedule; runs by hand,
//! pause and resume.

use crate::support::{Backend, eventually};
use serde::{Deserialize, Serialize};
use serde_json::json;
use spooler::{JobList, JobRow, JobState, NewJob, ScheduleDef, Worker};
use std::collections::BTreeSet;
use std::time::Duration;

crate::on_every_backend!(schedules:
    three_workers_declaring_one_schedule_enqueue_one_job_per_tick,
    a_schedule_runs_by_hand_pauses_and_resumes,
);

#[derive(Serialize, Deserialize)]
struct Tick {}

impl spooler::Job for Tick {
    const KIND: &'static str = "tick";

    async fn run(self, _ctx: spooler::JobContext) -> Result<(), spooler::JobError> {
        Ok(())
    }
}

async fn ticks(b: &Backend) -> Vec<JobRow> {
    let (jobs, _) = b
        .client
        .list(&JobList {
            kind: Some("tick".into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    jobs
}

fn every_second() -> ScheduleDef {
    ScheduleDef::new(
        "every-second",
        "@every 1s",
        NewJob::new("tick", json!({})).queue("ticks"),
    )
}

/// Three workers, each declaring the same `@every 1s` schedule and each taking part in
/// maintenance: whichever leads fires each tick, and no tick enqueues two jobs.
async fn three_workers_declaring_one_schedule_enqueue_one_job_per_tick(b: &Backend) {
    let workers: Vec<_> = (0..3)
        .map(|i| {
            Worker::builder(b.store.clone())
                .id(format!("sched-{i}"))
                .register::<Tick>()
                .queue("ticks", 2)
                .schedule(every_second())
                .maintenance_config(crate::support::fast_maintenance())
                .build()
                .unwrap()
                .start()
        })
        .collect();
    let first = eventually("the first tick's job", Duration::from_secs(30), || async {
        ticks(b).await.last().map(|j| j.created_at)
    })
    .await;
    eventually("five ticks' jobs", Duration::from_secs(30), || async {
        (ticks(b).await.len() >= 5).then_some(())
    })
    .await;
    for w in workers {
        w.shutdown().await.unwrap();
    }
    let jobs = ticks(b).await;
    let keys: BTreeSet<String> = jobs.iter().filter_map(|j| j.unique_key.clone()).collect();
    assert_eq!(
        keys.len(),
        jobs.len(),
        "every job names its tick, and no tick has two jobs: {keys:?}"
    );
    assert!(
        jobs.iter()
            .all(|j| j.tags.contains(&"schedule:every-second".to_string()) && j.queue == "ticks")
    );
    // One per second since the first, give or take the tick in progress.
    let last = jobs.iter().map(|j| j.created_at).max().unwrap();
    let seconds = (last - first).num_milliseconds() as f64 / 1000.0;
    assert!(
        (jobs.len() as f64) <= seconds + 2.0,
        "{} jobs over {seconds:.1}s: more than one per tick",
        jobs.len()
    );
    assert!(jobs.len() >= 5);
    assert!(
        jobs.iter().any(|j| j.state == JobState::Completed),
        "the workers ran the ticks' jobs"
    );
    let listed = b.client.schedule("every-second").await.unwrap();
    assert_eq!(
        listed.row.last_job_id,
        Some(jobs.iter().map(|j| j.id).max().unwrap())
    );
    assert!(
        listed.row.next_run_at > last,
        "the next run is after the last tick"
    );
}

/// A run by hand enqueues at once without moving the next run; pause stops the ticks; resume
/// starts again from the next tick after now.
async fn a_schedule_runs_by_hand_pauses_and_resumes(b: &Backend) {
    let hourly = ScheduleDef::new("hourly", "@hourly", NewJob::new("tick", json!({"n": 1})));
    b.client
        .declare_schedules("app", std::slice::from_ref(&hourly), false)
        .await
        .unwrap();
    let before = b.client.schedule("hourly").await.unwrap();
    assert_eq!(
        before.description,
        spooler::core::Cadence::parse("@hourly", None)
            .unwrap()
            .describe()
    );
    assert_eq!(before.upcoming.len(), 3);
    assert_eq!(before.upcoming[0], before.row.next_run_at);
    let run = b.client.run_schedule("hourly").await.unwrap();
    assert_eq!(run.job.args, json!({"n": 1}));
    assert_eq!(run.job.unique_key, None, "a run by hand is no tick");
    let after = b.client.schedule("hourly").await.unwrap();
    assert_eq!(
        after.row.next_run_at, before.row.next_run_at,
        "the next run did not move"
    );
    assert_eq!(after.row.last_job_id, Some(run.job.id));

    let paused = b.client.pause_schedule("hourly").await.unwrap().row;
    assert!(paused.paused);
    let resumed = b.client.resume_schedule("hourly").await.unwrap().row;
    assert!(!resumed.paused);
    assert!(resumed.next_run_at > b.store.clock().now());

    let missing = b.client.run_schedule("nope").await.unwrap_err();
    assert!(
        missing.to_string().contains("schedule \"nope\" not found"),
        "{missing}"
    );
}
