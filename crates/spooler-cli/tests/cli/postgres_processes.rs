//! Real `spooler` processes sharing one PostgreSQL schema: four workers drain 200,000 jobs exactly
//! once, a killed worker's jobs are rescued, a killed leader is replaced, a worker whose database
//! connections are all killed (three times, mid-drain) loses no job, and two processes migrate at
//! the same moment. Runs when `SPOOLER_TEST_POSTGRES` is set (CI sets it).

use crate::processes::{WorkerProcess, spooler_sync as spooler};
use crate::server_support::wait_for;
use serde_json::json;

use spooler::{Client, JobList, JobState, NewJob, Store};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

/// A fresh schema on the test server, dropped when the test ends; `None` when not configured.
pub(crate) struct Schema {
    server: String,
    name: String,
}

impl Schema {
    pub(crate) fn new() -> Option<Self> {
        let Ok(server) = std::env::var("SPOOLER_TEST_POSTGRES") else {
            eprintln!(
                "skipped: SPOOLER_TEST_POSTGRES is not set (e.g. postgres://postgres@127.0.0.1:5432/test)"
            );
            return None;
        };
        Some(Self {
            server,
            name: format!("spooler_proc_{:016x}", rand::random::<u64>()),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn url(&self) -> String {
        let sep = if self.server.contains('?') { '&' } else { '?' };
        format!("{}{sep}schema={}", self.server, self.name)
    }

    pub(crate) async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&self.server)
            .await
            .unwrap_or_else(|e| panic!("SPOOLER_TEST_POSTGRES={} is set but unreachable: {e} (start Postgres or unset it)", self.server))
    }

    pub(crate) async fn drop_schema(&self) {
        let pool = self.pool().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.name
        )))
        .execute(&pool)
        .await
        .expect("drop schema");
    }
}

async fn open(url: &str) -> Arc<dyn Store> {
    spooler::connect(url).await.expect("open store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_four_worker_processes_drain_200000_jobs_exactly_once() {
    let Some(schema) = Schema::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = schema.url();
    let store = open(&url).await;
    let client = Client::new(store.clone());
    let n: i64 = 200_000;
    for start in (0..n).step_by(5000) {
        let jobs = (start..start + 5000)
            .map(|i| NewJob::new("noop", json!({ "i": i })))
            .collect();
        client.enqueue_many(jobs).await.unwrap();
    }
    let mut workers: Vec<WorkerProcess> = (0..4)
        .map(|i| {
            WorkerProcess::start(
                &url,
                dir.path(),
                &format!("w{i}"),
                &["--queue", "default=20"],
            )
        })
        .collect();
    wait_for(
        "200,000 completed jobs",
        Duration::from_secs(600),
        || async {
            let queues = store.queue_list().await.ok()?;
            (queues.iter().map(|q| q.counts.completed).sum::<i64>() == n).then_some(())
        },
    )
    .await;
    for w in &mut workers {
        let status = w.terminate(Duration::from_secs(30));
        assert!(
            status.success(),
            "worker exited with {status}; log:\n{}",
            w.log_text()
        );
    }
    let pool = schema.pool().await;
    let (total, not_once, not_completed): (i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*), count(*) FILTER (WHERE attempt <> 1), count(*) FILTER (WHERE state::text <> 'completed') FROM \"{}\".jobs",
        schema.name
    )))
    .fetch_one(&pool)
    .await
    .expect("count jobs");
    assert_eq!(total, n);
    assert_eq!(not_completed, 0, "every job completed, none left running");
    assert_eq!(
        not_once, 0,
        "each claim adds one to attempt: no job ran twice"
    );
    drop(store);
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_killed_workers_job_is_rescued_and_its_late_result_rejected() {
    let Some(schema) = Schema::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    crate::processes::a_killed_workers_job_is_rescued(
        &schema.url(),
        dir.path(),
        &["--lease", "2s"],
    )
    .await;
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_killed_leader_is_replaced_and_maintenance_goes_on() {
    let Some(schema) = Schema::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = schema.url();
    let store = open(&url).await;
    let client = Client::new(store.clone());
    // The leader runs alone first, so it is elected; it also takes a long job.
    let mut leader = WorkerProcess::start(&url, dir.path(), "leader", &["--lease", "2s"]);
    let stuck = client
        .enqueue_new(NewJob::new("sleep", json!({ "duration": "2s" })))
        .await
        .unwrap()
        .job
        .id;
    wait_for(
        "the leader to elect itself and start the job",
        Duration::from_secs(30),
        || async {
            let job = store.job_get(stuck).await.ok()??;
            (leader.log_text().contains("\"leader\":true") && job.state == JobState::Running)
                .then_some(())
        },
    )
    .await;
    let mut follower = WorkerProcess::start(&url, dir.path(), "follower", &["--lease", "2s"]);
    wait_for("the follower to start", Duration::from_secs(30), || async {
        follower.log_text().contains("worker started").then_some(())
    })
    .await;
    leader.kill9();
    // Only a leader promotes scheduled jobs and rescues expired leases: both must happen now.
    let delayed = client
        .enqueue_new(
            NewJob::new("noop", json!({}))
                .run_at(chrono::Utc::now() + chrono::TimeDelta::seconds(1)),
        )
        .await
        .unwrap()
        .job
        .id;
    for id in [delayed, stuck] {
        wait_for(
            &format!("job {id} to complete under the new leader"),
            Duration::from_secs(60),
            || async {
                let job = store.job_get(id).await.ok()??;
                (job.state == JobState::Completed).then_some(())
            },
        )
        .await;
    }
    assert!(
        follower.log_text().contains("\"leader\":true"),
        "the follower took over:\n{}",
        follower.log_text()
    );
    let rescued = store.job_get(stuck).await.unwrap().unwrap();
    assert_eq!(rescued.attempt, 2, "rescued from the dead leader");
    let status = follower.terminate(Duration::from_secs(30));
    assert!(status.success());
    drop(store);
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_processes_migrating_at_once_both_start() {
    let Some(schema) = Schema::new() else { return };
    let url = schema.url();
    let spawn = || {
        spooler()
            .args(["migrate", "--store", &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start spooler migrate")
    };
    let (a, b) = (spawn(), spawn());
    for out in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
        assert!(
            out.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let store = open(&url).await;
    let id = Client::new(store.clone())
        .enqueue_new(NewJob::new("noop", json!({})))
        .await
        .unwrap()
        .job
        .id;
    assert!(store.job_get(id).await.unwrap().is_some());
    let listed = store
        .job_list(&JobList {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    drop(store);
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_workers_connections_killed_mid_drain_lose_no_job() {
    let Some(schema) = Schema::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = schema.url();
    let store = open(&url).await;
    let client = Client::new(store.clone());
    let n: i64 = 6000;
    for _ in 0..3 {
        let jobs = (0..n / 6)
            .map(|_| NewJob::new("sleep", json!({ "duration": "5ms" })))
            .collect();
        client.enqueue_many(jobs).await.unwrap();
    }
    // The worker's connections carry a name of their own, so only they are killed.
    let app = format!("spooler_kill_{:08x}", rand::random::<u32>());
    let worker_url = format!("{url}&application_name={app}");
    let mut worker = WorkerProcess::start(&worker_url, dir.path(), "w", &["--queue", "default=10"]);
    let completed = || async {
        let queues = store.queue_list().await.ok()?;
        Some(queues.iter().map(|q| q.counts.completed).sum::<i64>())
    };
    let pool = schema.pool().await;
    let kill = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{app}'"
    );
    for round in 0..3 {
        let before = completed().await.unwrap_or(0);
        wait_for(
            "the worker to make progress",
            Duration::from_secs(60),
            || async { (completed().await? > before + 200).then_some(()) },
        )
        .await;
        let killed: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(kill.as_str()))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(
            killed >= 2,
            "round {round}: the pool and the listener were killed ({killed})"
        );
        // Jobs keep arriving while the worker reconnects.
        let jobs = (0..n / 6)
            .map(|_| NewJob::new("sleep", json!({ "duration": "5ms" })))
            .collect();
        client.enqueue_many(jobs).await.unwrap();
    }
    wait_for(
        "every job to complete",
        Duration::from_secs(300),
        || async { (completed().await? == n).then_some(()) },
    )
    .await;
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "worker exited with {status}:\n{}",
        worker.log_text()
    );
    let (total, unfinished): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*), count(*) FILTER (WHERE state <> 'completed') FROM \"{}\".jobs",
        schema.name
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (total, unfinished),
        (n, 0),
        "every job completed, none left running"
    );
    drop(store);
    schema.drop_schema().await;
}

/// A leader whose wall clock runs 30 s ahead rescues no healthy job, because leases, rescue and
/// leadership are timed by the database's clock. (Timed by each process's own clock, such a leader
/// rescued a healthy job under heartbeats every second and failed it with "lease expired" errors.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_leader_with_a_skewed_clock_rescues_no_healthy_job() {
    let Some(schema) = Schema::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = schema.url();
    let store = open(&url).await;
    let client = Client::new(store.clone());
    let Some(skewed) =
        WorkerProcess::start_skewed("+30s", &url, dir.path(), "skewed", &["--lease", "2s"])
    else {
        eprintln!("skipped: faketime is not installed (apt-get install faketime)");
        schema.drop_schema().await;
        return;
    };
    wait_for(
        "the skewed worker to elect itself",
        Duration::from_secs(30),
        || async { skewed.log_text().contains("\"leader\":true").then_some(()) },
    )
    .await;
    // Only the healthy worker works "slow": the job runs there under a 2 s lease, renewed.
    let _healthy = WorkerProcess::start(
        &url,
        dir.path(),
        "healthy",
        &["--lease", "2s", "--queue", "slow=1"],
    );
    let id = client
        .enqueue_new(NewJob::new("sleep", json!({ "duration": "5s" })).queue("slow"))
        .await
        .unwrap()
        .job
        .id;
    let done = wait_for(
        "the job to complete on the healthy worker",
        Duration::from_secs(60),
        || async {
            let job = store.job_get(id).await.ok()??;
            job.state.is_finished().then_some(job)
        },
    )
    .await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(done.attempt, 1, "never rescued: {:?}", done.errors);
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    let log = skewed.log_text();
    assert!(
        log.contains("differs from the database's"),
        "the skewed process saw its clock was off:\n{log}"
    );
    assert!(!log.contains("\"leader\":false"), "it kept leading:\n{log}");
    drop(store);
    schema.drop_schema().await;
}
