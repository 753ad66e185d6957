//! Enqueue → claim → run → complete; many jobs exactly once; wake-ups; delays; kinds; uniqueness.

use crate::support::{Backend, eventually, fast_maintenance, wait_state};
use serde::{Deserialize, Serialize};
use serde_json::json;
use spooler::{Job, JobContext, JobError, JobState, Worker};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

crate::on_every_backend!(lifecycle:
    enqueue_runs_and_completes_with_a_result,
    many_jobs_each_run_exactly_once,
    an_own_process_enqueue_wakes_an_idle_worker,
    a_delayed_job_waits_for_its_time,
    kinds_without_a_handler_stay_available_and_visible,
    unique_keys_deduplicate_through_the_client,
    blocking_jobs_run_on_the_blocking_pool,
    a_queue_with_its_own_retention_is_pruned_by_it,
    jobs_read_the_applications_state,
);

#[derive(Serialize, Deserialize)]
struct Double {
    n: i64,
}

impl Job for Double {
    const KIND: &'static str = "double";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        ctx.set_result(json!({ "doubled": self.n * 2 }));
        Ok(())
    }
}

async fn enqueue_runs_and_completes_with_a_result(b: &Backend) {
    let worker = Worker::builder(b.store.clone())
        .register::<Double>()
        .build()
        .unwrap()
        .start();
    let id = b.client.enqueue(Double { n: 21 }).await.unwrap();
    let job = b.client.wait(id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.result, Some(json!({ "doubled": 42 })));
    assert_eq!(job.attempt, 1);
    assert!(job.errors.is_empty());
    assert!(job.started_at.is_some() && job.finished_at >= job.started_at);
    worker.shutdown().await.unwrap();
}

/// Counts runs per job id across every test that uses it (keyed by a per-test tag).
fn runs() -> &'static Mutex<HashMap<(u64, i64), u32>> {
    static RUNS: OnceLock<Mutex<HashMap<(u64, i64), u32>>> = OnceLock::new();
    RUNS.get_or_init(Default::default)
}

#[derive(Serialize, Deserialize)]
struct Counted {
    tag: u64,
}

impl Job for Counted {
    const KIND: &'static str = "counted";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        *runs()
            .lock()
            .unwrap()
            .entry((self.tag, ctx.id()))
            .or_default() += 1;
        Ok(())
    }
}

async fn many_jobs_each_run_exactly_once(b: &Backend) {
    let tag = rand::random::<u64>();
    let n = 3000;
    let jobs = (0..n)
        .map(|_| b.client.enqueue(Counted { tag }).into_new_job().unwrap())
        .collect();
    let inserted = b.client.enqueue_many(jobs).await.unwrap();
    assert_eq!(inserted.len(), n);
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(
            Worker::builder(b.store.clone())
                .register::<Counted>()
                .queue("default", 10)
                .build()
                .unwrap()
                .start(),
        );
    }
    eventually("every job completed", Duration::from_secs(60), || async {
        let queues = b.store.queue_list().await.unwrap();
        let q = queues.iter().find(|q| q.name == "default")?;
        (q.counts.completed == n as i64).then_some(())
    })
    .await;
    for w in workers {
        w.shutdown().await.unwrap();
    }
    let mine: Vec<u32> = runs()
        .lock()
        .unwrap()
        .iter()
        .filter(|((t, _), _)| *t == tag)
        .map(|(_, c)| *c)
        .collect();
    assert_eq!(mine.len(), n, "every job ran");
    assert!(mine.iter().all(|c| *c == 1), "no job ran twice");
    let queues = b.store.queue_list().await.unwrap();
    let q = queues.iter().find(|q| q.name == "default").unwrap();
    assert_eq!(q.counts.running, 0);
    assert_eq!(q.counts.available, 0);
}

async fn an_own_process_enqueue_wakes_an_idle_worker(b: &Backend) {
    // With a one-minute poll interval, only the wake-up can start the job in time.
    let worker = Worker::builder(b.store.clone())
        .register::<Double>()
        .poll_interval(Duration::from_secs(60))
        .test_signals()
        .build()
        .unwrap()
        .start();
    // Wait for the producer to go idle after its first (empty) claim: from then on only a
    // wake-up (or the poll, a minute away) makes it claim again.
    let signals = worker.test_signals();
    signals.idle.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        signals.claimed.count(),
        1,
        "idle after its first claim, and no other"
    );
    let id = b.client.enqueue(Double { n: 1 }).await.unwrap();
    let job = b.client.wait(id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(job.state, JobState::Completed);
    worker.shutdown().await.unwrap();
}

async fn a_delayed_job_waits_for_its_time(b: &Backend) {
    let worker = Worker::builder(b.store.clone())
        .register::<Double>()
        .maintenance_config(fast_maintenance())
        .build()
        .unwrap()
        .start();
    let id = b
        .client
        .enqueue(Double { n: 2 })
        .delay(Duration::from_millis(400))
        .await
        .unwrap();
    let queued = b.client.status(id).await.unwrap();
    assert_eq!(queued.state, JobState::Scheduled);
    let job = b.client.wait(id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(job.state, JobState::Completed);
    // run_at is set from the client's clock reading before the insert, created_at during it.
    let started = job.started_at.unwrap();
    assert!(
        started >= queued.run_at,
        "started at {started}, before its run_at {}",
        queued.run_at
    );
    assert!(
        queued.run_at - queued.created_at >= chrono::TimeDelta::milliseconds(300),
        "run_at {} is not the delay after created_at {}",
        queued.run_at,
        queued.created_at
    );
    worker.shutdown().await.unwrap();
}

#[derive(Serialize, Deserialize)]
struct Orphan;

impl Job for Orphan {
    const KIND: &'static str = "orphan";

    async fn run(self, _ctx: JobContext) -> Result<(), JobError> {
        unreachable!("no worker in this test registers orphan")
    }
}

async fn kinds_without_a_handler_stay_available_and_visible(b: &Backend) {
    let worker = Worker::builder(b.store.clone())
        .register::<Double>()
        .build()
        .unwrap()
        .start();
    let orphan = b.client.enqueue(Orphan).await.unwrap();
    let handled = b.client.enqueue(Double { n: 3 }).await.unwrap();
    assert_eq!(
        b.client
            .wait(handled, Duration::from_secs(10))
            .await
            .unwrap()
            .state,
        JobState::Completed
    );
    let job = b.client.status(orphan).await.unwrap();
    assert_eq!(
        job.state,
        JobState::Available,
        "never claimed, never dropped"
    );
    assert_eq!(job.attempt, 0);
    let queues = b.store.queue_list().await.unwrap();
    let q = queues.iter().find(|q| q.name == "default").unwrap();
    assert_eq!(q.counts.available, 1);
    assert_eq!(
        q.oldest_available_at,
        Some(job.run_at),
        "its wait shows in queue stats"
    );
    worker.shutdown().await.unwrap();
}

async fn unique_keys_deduplicate_through_the_client(b: &Backend) {
    let first = b
        .client
        .enqueue(Double { n: 1 })
        .unique_key("report-7")
        .inserted()
        .await
        .unwrap();
    let second = b
        .client
        .enqueue(Double { n: 2 })
        .unique_key("report-7")
        .inserted()
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(first.job.id, second.job.id);
    assert_eq!(second.job.args, json!({ "n": 1 }));
}

#[derive(Serialize, Deserialize)]
struct Crunch {
    panic: bool,
}

impl spooler::BlockingJob for Crunch {
    const KIND: &'static str = "crunch";
    const MAX_ATTEMPTS: Option<i32> = Some(1);

    fn run(self, ctx: JobContext) -> Result<(), JobError> {
        if self.panic {
            panic!("crunch exploded");
        }
        let name = std::thread::current()
            .name()
            .unwrap_or_default()
            .to_string();
        ctx.set_result(json!({ "thread": name }));
        Ok(())
    }
}

async fn blocking_jobs_run_on_the_blocking_pool(b: &Backend) {
    let worker = Worker::builder(b.store.clone())
        .register_blocking::<Crunch>()
        .build()
        .unwrap()
        .start();
    let ok = b
        .client
        .enqueue_blocking(Crunch { panic: false })
        .await
        .unwrap();
    let bad = b
        .client
        .enqueue_blocking(Crunch { panic: true })
        .await
        .unwrap();
    let job = b.client.wait(ok, Duration::from_secs(10)).await.unwrap();
    assert_eq!(job.state, JobState::Completed);
    assert!(job.result.is_some());
    let job = wait_state(&b.client, bad, JobState::Failed, Duration::from_secs(10)).await;
    assert_eq!(job.errors.len(), 1);
    assert!(
        job.errors[0].message.contains("crunch exploded"),
        "{:?}",
        job.errors
    );
    worker.shutdown().await.unwrap();
}

/// A queue whose stored settings keep completed jobs for a second is pruned by that; another
/// queue keeps them as the process's default says (here: forever); jobs not finished stay.
async fn a_queue_with_its_own_retention_is_pruned_by_it(b: &Backend) {
    use spooler::core::{Keep, QueueRetention, QueueSettings};
    b.store
        .queue_configure(&[QueueSettings {
            retention: QueueRetention {
                completed: Some(Keep::For(Duration::from_secs(1))),
                ..Default::default()
            },
            ..QueueSettings::new("short")
        }])
        .await
        .unwrap();
    let worker = Worker::builder(b.store.clone())
        .register::<Double>()
        .queue("short", 2)
        .queue("long", 2)
        .maintenance(false)
        .build()
        .unwrap()
        .start();
    let short = b
        .client
        .enqueue(Double { n: 1 })
        .queue("short")
        .await
        .unwrap();
    let long = b
        .client
        .enqueue(Double { n: 2 })
        .queue("long")
        .await
        .unwrap();
    for id in [short, long] {
        wait_state(&b.client, id, JobState::Completed, Duration::from_secs(10)).await;
    }
    worker.shutdown().await.unwrap();
    let waiting = b
        .client
        .enqueue(Double { n: 3 })
        .queue("short")
        .await
        .unwrap();
    let forever = spooler::Retention {
        completed: None,
        failed: None,
        cancelled: None,
    };
    let pruned = eventually(
        "the short queue's job past its second",
        Duration::from_secs(10),
        || async {
            let n = b.client.prune(&forever, 100).await.unwrap();
            (n > 0).then_some(n)
        },
    )
    .await;
    assert_eq!(pruned, 1);
    assert!(
        b.client.status(short).await.is_err(),
        "short's completed job is gone"
    );
    assert_eq!(
        b.client.status(long).await.unwrap().state,
        JobState::Completed,
        "long keeps its own"
    );
    assert_eq!(
        b.client.status(waiting).await.unwrap().state,
        JobState::Available,
        "unfinished jobs stay"
    );
}

/// The application's values, given once to the worker, read typed by every job: no globals.
struct Greeting(String);

#[derive(Serialize, Deserialize)]
struct Greet {
    name: String,
}

impl Job for Greet {
    const KIND: &'static str = "greet";

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        let greeting = ctx.state::<Greeting>()?;
        let times = ctx.state::<u32>()?;
        ctx.set_result(json!(format!("{}, {} (x{times})", greeting.0, self.name)));
        // A type the worker was not given is an error naming it, which `?` turns into a retry.
        match ctx.state::<Vec<u8>>() {
            Err(e) => assert!(e.to_string().contains("Vec<u8>"), "{e}"),
            Ok(_) => panic!("no such state was given"),
        }
        Ok(())
    }
}

async fn jobs_read_the_applications_state(b: &Backend) {
    let worker = Worker::builder(b.store.clone())
        .register::<Greet>()
        .state(Greeting("hello".into()))
        .state(3u32)
        .build()
        .unwrap()
        .start();
    let id = b
        .client
        .enqueue(Greet { name: "ops".into() })
        .await
        .unwrap();
    let job = wait_state(&b.client, id, JobState::Completed, Duration::from_secs(10)).await;
    assert_eq!(job.result, Some(json!("hello, ops (x3)")));
    worker.shutdown().await.unwrap();
}
