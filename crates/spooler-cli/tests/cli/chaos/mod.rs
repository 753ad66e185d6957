//! The chaos suite: N `tcp` jobs enqueued through the HTTP API of a real `spooler serve
//! --no-worker`, delivered to a local TCP sink by W real `spooler worker` processes while faults
//! strike — a random worker SIGKILLed (and restarted) every few seconds; on PostgreSQL (a cluster
//! the test starts itself) every spooler connection terminated, the network to the database
//! partitioned silently for twice the lease, the database restarted as a crash would, one worker's
//! clock skewed; on SQLite the file's filesystem filling up. It then counts, from the store, from
//! a trigger recording every completion, and from the sink: jobs lost, jobs completed twice, jobs
//! left running, and deliveries beyond the first (allowed: at least once; counted, not failed).
//!
//! CI runs it short (`SPOOLER_CHAOS_JOBS` jobs, default 10,000, spread over a fault window of
//! `SPOOLER_CHAOS_SECONDS`, default 30); by hand, longer:
//! `SPOOLER_CHAOS_JOBS=200000 SPOOLER_CHAOS_SECONDS=600 cargo test -p spooler-cli --test cli chaos -- --nocapture`.
//! Also `SPOOLER_CHAOS_WORKERS` (3), `SPOOLER_CHAOS_KILL_EVERY` (2s), `SPOOLER_CHAOS_LEASE` (2s),
//! `SPOOLER_CHAOS_SKEW` (+30s).

pub(crate) mod cluster;
mod proxy;
mod sink;

use crate::processes::{WorkerProcess, skewed_clock};
use crate::server_support::{ServeOptions, Server};
use crate::worker_processes::all_jobs;
use serde_json::{Value, json};
use spooler::JobState;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The run's size and pace, from `SPOOLER_CHAOS_*` variables.
#[derive(Debug, Clone)]
struct Settings {
    jobs: u64,
    /// The fault window: enqueues are spread over it and faults strike within it.
    window: Duration,
    workers: usize,
    kill_every: Duration,
    lease: Duration,
    skew: String,
}

impl Settings {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let duration = |name: &str, default: &str| {
            let text = var(name).unwrap_or_else(|| default.to_string());
            spooler::parse_duration(&text).unwrap_or_else(|e| panic!("{name}={text}: {e}"))
        };
        let number = |name: &str, default: u64| {
            var(name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|e| panic!("{name}={v}: not a whole number ({e})"))
            })
        };
        Self {
            jobs: number("SPOOLER_CHAOS_JOBS", 10_000).max(100),
            window: Duration::from_secs(number("SPOOLER_CHAOS_SECONDS", 30).max(10)),
            workers: number("SPOOLER_CHAOS_WORKERS", 3).max(2) as usize,
            kill_every: duration("SPOOLER_CHAOS_KILL_EVERY", "2s"),
            lease: duration("SPOOLER_CHAOS_LEASE", "2s"),
            skew: var("SPOOLER_CHAOS_SKEW").unwrap_or_else(|| "+30s".into()),
        }
    }

    /// How long the jobs may take to finish once the fault window is over.
    fn drain_timeout(&self) -> Duration {
        Duration::from_secs(120 + self.jobs / 100)
    }
}

/// A fault, at a fraction of the window.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// `pg_terminate_backend` on every backend of the test database but the test's own.
    TerminateAll,
    /// The proxy stops forwarding for twice the lease.
    Partition,
    /// The partition ends.
    Heal,
    /// The cluster stops as a crash would and starts again.
    RestartPostgres,
    /// The SQLite file's filesystem fills up until an enqueue is refused, then space returns.
    DiskFull,
}

/// Where the jobs live.
enum Backend {
    Sqlite {
        db: PathBuf,
        /// The tmpfs holding the file, when mounting one is permitted.
        tmpfs: Option<Tmpfs>,
    },
    Postgres {
        cluster: cluster::Cluster,
        proxy: proxy::Proxy,
    },
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    /// The URL the server and the test use (never through the proxy).
    fn direct_url(&self) -> String {
        match self {
            Backend::Sqlite { db, .. } => format!("sqlite://{}", db.display()),
            Backend::Postgres { cluster, .. } => cluster.url(),
        }
    }

    /// The URL worker `i` uses: on PostgreSQL worker 0 connects directly (so someone can rescue
    /// while the others are partitioned away), the rest through the proxy.
    fn worker_url(&self, i: usize) -> String {
        match self {
            Backend::Postgres { proxy, .. } if i > 0 => {
                format!("postgres://postgres@{}/chaos", proxy.addr)
            }
            _ => self.direct_url(),
        }
    }

    /// Installs a trigger recording every transition to `completed` in `chaos_completions`:
    /// a job completed twice has two rows there, whatever the store's own row says now.
    async fn install_recorder(&self) {
        match self {
            Backend::Sqlite { db, .. } => {
                sqlite(
                    db,
                    "CREATE TABLE chaos_completions (job_id INTEGER, attempt INTEGER, worker_id TEXT);
                     CREATE TRIGGER chaos_record AFTER UPDATE ON spooler_jobs
                     WHEN NEW.state = 'completed'
                      AND (OLD.state IS NOT 'completed' OR OLD.finished_at IS NOT NEW.finished_at)
                     BEGIN
                       INSERT INTO chaos_completions VALUES (NEW.id, OLD.attempt, OLD.worker_id);
                     END;",
                );
            }
            Backend::Postgres { cluster, .. } => {
                let mut conn = pg(&cluster.url()).await;
                // BEFORE UPDATE: it fires on the row's partition even when the update moves the
                // row to the finished partition, and it sees the claim's worker, which the
                // completion clears; it rolls back with the update if that does not commit.
                for sql in [
                    "CREATE TABLE public.chaos_completions (job_id bigint, attempt int, worker_id text)",
                    "CREATE FUNCTION public.chaos_record() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN
                       IF NEW.state = 'completed' AND (OLD.state <> 'completed'
                          OR OLD.finished_at IS DISTINCT FROM NEW.finished_at) THEN
                         INSERT INTO public.chaos_completions VALUES (NEW.id, OLD.attempt, OLD.worker_id);
                       END IF;
                       RETURN NEW;
                     END $$",
                    "CREATE TRIGGER chaos_record BEFORE UPDATE ON spooler.jobs
                     FOR EACH ROW EXECUTE FUNCTION public.chaos_record()",
                ] {
                    sqlx::query(sql)
                        .execute(&mut conn)
                        .await
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                }
            }
        }
    }

    /// Every completion recorded: (job id, attempt, worker id).
    async fn completions(&self) -> Vec<(i64, i64, String)> {
        match self {
            Backend::Sqlite { db, .. } => sqlite(
                db,
                "SELECT job_id, attempt, coalesce(worker_id, '') FROM chaos_completions",
            )
            .lines()
            .filter_map(|line| {
                let mut parts = line.splitn(3, '|');
                Some((
                    parts.next()?.parse().ok()?,
                    parts.next()?.parse().ok()?,
                    parts.next()?.to_string(),
                ))
            })
            .collect(),
            Backend::Postgres { cluster, .. } => {
                let mut conn = pg(&cluster.url()).await;
                sqlx::query_as::<_, (i64, i32, Option<String>)>(
                    "SELECT job_id, attempt, worker_id FROM public.chaos_completions",
                )
                .fetch_all(&mut conn)
                .await
                .expect("read chaos_completions")
                .into_iter()
                .map(|(id, attempt, w)| (id, attempt.into(), w.unwrap_or_default()))
                .collect()
            }
        }
    }
}

/// Runs `sql` with the `sqlite3` shell (waiting out the writers' locks); returns its output.
fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .args(["-batch", "-cmd", ".timeout 30000"])
        .arg(db)
        .arg(sql)
        .output()
        .expect("run sqlite3 (apt-get install sqlite3)");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh connection to PostgreSQL (the pool of a previous call may have been terminated).
async fn pg(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(url)).await
        {
            Ok(Ok(conn)) => return conn,
            Ok(Err(e)) if Instant::now() > deadline => panic!("connect {url}: {e}"),
            Err(_) if Instant::now() > deadline => panic!("connect {url}: timed out"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A small tmpfs mounted on a temporary directory; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one of `size` (e.g. `64m`); `Err` with mount's message when not permitted.
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }

    /// Writes a file until the filesystem has no space left; returns the bytes written.
    fn fill(&self) -> u64 {
        use std::io::Write;
        let mut file = std::fs::File::create(self.filler()).expect("create filler");
        let mut written = 0;
        for chunk in [1 << 20, 4096, 512] {
            let bytes = vec![0u8; chunk];
            while file.write_all(&bytes).is_ok() {
                written += chunk as u64;
            }
        }
        let _ = file.sync_all();
        written
    }

    /// Gives the space back.
    fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// The worker processes, each restarted after it is killed.
struct Pool {
    dir: PathBuf,
    specs: Vec<(String, Vec<(String, String)>)>,
    procs: Vec<WorkerProcess>,
    flags: Vec<String>,
    starts: usize,
    kills: usize,
}

impl Pool {
    fn start(dir: &Path, specs: Vec<(String, Vec<(String, String)>)>, flags: Vec<String>) -> Self {
        let mut pool = Self {
            dir: dir.to_path_buf(),
            specs,
            procs: Vec::new(),
            flags,
            starts: 0,
            kills: 0,
        };
        for i in 0..pool.specs.len() {
            let p = pool.spawn(i);
            pool.procs.push(p);
        }
        pool
    }

    fn spawn(&mut self, i: usize) -> WorkerProcess {
        self.starts += 1;
        let (url, env) = &self.specs[i];
        let name = format!("w{i}-{}", self.starts);
        // Each worker also works a queue of its own, so that after the faults each can be
        // shown to claim and complete again, whoever drained the backlog.
        let probe = format!("{}=1", probe_queue(i));
        let mut flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        flags.extend(["--queue", "default=20", "--queue", &probe]);
        WorkerProcess::start_with_env(url, &self.dir, &name, &flags, env)
    }

    /// SIGKILLs a random worker and starts it again at once.
    fn kill_random(&mut self) {
        let i = rand::random_range(0..self.procs.len());
        self.procs[i].kill9();
        self.kills += 1;
        self.procs[i] = self.spawn(i);
    }
}

/// What the enqueuer saw.
#[derive(Debug, Default)]
struct Enqueued {
    /// Job number → job id, for every job a 201 accepted.
    accepted: HashMap<u64, i64>,
    /// Answers other than 201, by status (0: no answer: connection error or timeout).
    refused: BTreeMap<u16, u64>,
    /// The first answer of each status other than 201: Retry-After and body.
    samples: BTreeMap<u16, (Option<String>, String)>,
    done: bool,
}

impl Enqueued {
    fn refusals(&self) -> u64 {
        self.refused.values().sum()
    }
}

/// Enqueues jobs `chaos-0`… in batches through `POST /v1/jobs/batch`, spread evenly over
/// `window`; a refused batch is sent again (its `unique_key`s make a repeat of one that was in
/// fact inserted return the same jobs).
async fn enqueue_all(
    url: String,
    sink: String,
    jobs: u64,
    window: Duration,
    log: Arc<Mutex<Enqueued>>,
) {
    const BATCH: u64 = 100;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let batches = jobs.div_ceil(BATCH);
    let start = Instant::now();
    let give_up = start + window + Duration::from_secs(180);
    for b in 0..batches {
        tokio::time::sleep_until(start + window.mul_f64(b as f64 / batches as f64)).await;
        let numbers: Vec<u64> = (b * BATCH..((b + 1) * BATCH).min(jobs)).collect();
        let body = json!({ "jobs": numbers.iter().map(|n| json!({
            "kind": "tcp",
            "args": { "address": sink, "payload": format!("chaos-{n}"),
                      "connect_timeout": "2s", "write_timeout": "2s" },
            "unique_key": format!("chaos-{n}"),
        })).collect::<Vec<_>>() });
        while Instant::now() < give_up {
            let answer = http
                .post(format!("{url}/v1/jobs/batch"))
                .json(&body)
                .send()
                .await;
            let (status, retry_after, text) = match answer {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let retry_after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    (status, retry_after, r.text().await.unwrap_or_default())
                }
                Err(e) => (0, None, e.to_string()),
            };
            if status == 201 {
                let v: Value = serde_json::from_str(&text).expect("batch answer is JSON");
                let ids = v["jobs"].as_array().expect("jobs in the batch answer");
                let mut log = log.lock().unwrap();
                for (n, job) in numbers.iter().zip(ids) {
                    log.accepted.insert(*n, job["id"].as_i64().expect("job id"));
                }
                break;
            }
            {
                let mut log = log.lock().unwrap();
                *log.refused.entry(status).or_default() += 1;
                log.samples.entry(status).or_insert((retry_after, text));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    log.lock().unwrap().done = true;
}

/// What one run measured.
#[derive(Debug, Default)]
struct Report {
    backend: &'static str,
    accepted: usize,
    rows: usize,
    completed: usize,
    /// Accepted jobs missing from the store, or completed without reaching the sink.
    lost: Vec<u64>,
    /// Jobs with more than one completion recorded.
    completed_twice: Vec<i64>,
    /// Jobs still running when the drain ended.
    left_running: Vec<i64>,
    /// Jobs neither finished nor running when the drain ended (available, scheduled).
    unfinished: Vec<i64>,
    /// Jobs failed (attempts exhausted) though the sink never refused.
    failed: Vec<(i64, i32, String)>,
    deliveries: u64,
    /// Deliveries beyond each job's first (at least once allows them).
    extra_deliveries: u64,
    /// Connections to the sink that ended without a whole line.
    partial_deliveries: u64,
    /// Jobs run more than once (attempt > 1).
    rerun: usize,
    max_attempt: i32,
    kills: usize,
    faults: Vec<String>,
    refused: BTreeMap<u16, u64>,
    samples: BTreeMap<u16, (Option<String>, String)>,
    /// Workers alive at the end that completed nothing after the faults ended.
    not_recovered: Vec<String>,
    /// The disk-full episode: the answers while full, and whether enqueues came back.
    disk_full: Option<DiskFull>,
    window: Duration,
    drained_in: Duration,
    total: Duration,
}

#[derive(Debug, Default, Clone)]
struct DiskFull {
    filled_bytes: u64,
    /// Statuses answered while the disk was full.
    answers: BTreeMap<u16, u64>,
    /// Seconds until the first refusal.
    refused_after: Option<f64>,
    /// Seconds from freeing the space to the next accepted batch.
    accepted_again_after: Option<f64>,
}

impl Report {
    fn print(&self) {
        let few = |v: &[i64]| format!("{:?}", &v[..v.len().min(20)]);
        eprintln!(
            "\n=== chaos on {} ===\n\
             accepted {} jobs, {} rows in the store, {} completed; window {:?}, drained {:?} after it, total {:?}\n\
             faults: {} SIGKILLs; {}\n\
             LOST: {} {:?}\n\
             COMPLETED TWICE: {} {}\n\
             LEFT RUNNING: {} {}\n\
             unfinished (available/scheduled): {} {}\n\
             failed: {} {:?}\n\
             deliveries: {} ({} beyond the first; {} partial connections); {} jobs ran more than once, max attempt {}\n\
             enqueue answers other than 201: {:?}; samples: {:?}\n\
             workers that did not recover: {:?}\n\
             disk full: {:?}\n",
            self.backend,
            self.accepted,
            self.rows,
            self.completed,
            self.window,
            self.drained_in,
            self.total,
            self.kills,
            self.faults.join("; "),
            self.lost.len(),
            &self.lost[..self.lost.len().min(20)],
            self.completed_twice.len(),
            few(&self.completed_twice),
            self.left_running.len(),
            few(&self.left_running),
            self.unfinished.len(),
            few(&self.unfinished),
            self.failed.len(),
            &self.failed[..self.failed.len().min(5)],
            self.deliveries,
            self.extra_deliveries,
            self.partial_deliveries,
            self.rerun,
            self.max_attempt,
            self.refused,
            self.samples,
            self.not_recovered,
            self.disk_full,
        );
    }

    /// The guarantees: nothing lost, one completion each, nothing stuck, every worker back at
    /// work, and the store's faults answered 503 (never 500).
    fn assert_guarantees(&self) {
        let mut broken = Vec::new();
        if !self.lost.is_empty() {
            broken.push(format!("{} jobs lost", self.lost.len()));
        }
        if !self.completed_twice.is_empty() {
            broken.push(format!(
                "{} jobs completed twice",
                self.completed_twice.len()
            ));
        }
        if !self.left_running.is_empty() {
            broken.push(format!("{} jobs left running", self.left_running.len()));
        }
        if !self.unfinished.is_empty() {
            broken.push(format!("{} jobs never finished", self.unfinished.len()));
        }
        if !self.failed.is_empty() {
            broken.push(format!("{} jobs failed", self.failed.len()));
        }
        if !self.not_recovered.is_empty() {
            broken.push(format!("workers never recovered: {:?}", self.not_recovered));
        }
        for (status, n) in &self.refused {
            if *status != 503 && *status != 0 {
                broken.push(format!(
                    "{n} enqueues answered {status} (a store fault is a 503)"
                ));
            }
        }
        assert!(
            broken.is_empty(),
            "chaos on {}: {}",
            self.backend,
            broken.join("; ")
        );
    }
}

/// One run: the server, the workers, the enqueuer and the faults; then the drain and the counts.
async fn run(
    backend: &Backend,
    settings: &Settings,
    faults: &[(f64, Fault)],
    skew: bool,
) -> Report {
    let began = Instant::now();
    let mut report_note = None;
    let sink = sink::Sink::start().await;
    let lease = spooler::format_duration(settings.lease);
    let config = "[queues.default]\nconcurrency = 20\nmax_attempts = 100\nbackoff = \"1s\"\n";
    let server = Server::start_with(ServeOptions {
        store: Some(backend.direct_url()),
        config: Some(config.into()),
        no_worker: true,
        ..Default::default()
    })
    .await;
    backend.install_recorder().await;
    let store = spooler::connect(&backend.direct_url())
        .await
        .expect("open the store");

    let specs = (0..settings.workers)
        .map(|i| {
            let env = if skew && i + 1 == settings.workers {
                skewed_clock(&settings.skew).unwrap_or_else(|| {
                    eprintln!(
                        "SKIPPED: chaos on {}: the skewed clock: libfaketime is not installed (apt-get install faketime)",
                        backend.name()
                    );
                    Vec::new()
                })
            } else {
                Vec::new()
            };
            (backend.worker_url(i), env)
        })
        .collect::<Vec<_>>();
    let skewed = specs.last().is_some_and(|(_, env)| !env.is_empty());
    let started_at = chrono::Utc::now();
    let flags = vec![
        "--config".to_string(),
        server.path("spooler.toml").display().to_string(),
        "--lease".into(),
        lease.clone(),
        "--poll".into(),
        "100ms".into(),
        "--grace".into(),
        "2s".into(),
    ];
    let mut pool = Pool::start(server.dir.path(), specs, flags);
    if skewed {
        // The fault must be real: the skewed worker stamps its log by its own clock.
        let w = pool.procs.last().unwrap();
        let offset = crate::server_support::wait_for(
            "the skewed worker's first log line",
            Duration::from_secs(30),
            || async { logged_clock_offset(&w.log_text(), started_at) },
        )
        .await;
        let want = spooler::parse_duration(settings.skew.trim_start_matches(['+', '-']))
            .map_or(0.0, |d| d.as_secs_f64());
        assert!(
            (offset.abs() - want).abs() < 5.0,
            "the skewed worker's clock is {offset:.1}s off, not {}",
            settings.skew
        );
        report_note = Some(format!(
            "worker w{} runs {offset:+.1}s off",
            settings.workers - 1
        ));
    }

    let log = Arc::new(Mutex::new(Enqueued::default()));
    let enqueuer = tokio::spawn(enqueue_all(
        server.url.clone(),
        sink.addr.to_string(),
        settings.jobs,
        settings.window,
        log.clone(),
    ));

    // The fault schedule (timers: it only decides when faults strike).
    let start = Instant::now();
    let end = start + settings.window.mul_f64(0.8);
    let mut schedule: Vec<(Instant, Fault)> = faults
        .iter()
        .map(|(at, f)| (start + settings.window.mul_f64(*at), *f))
        .collect();
    let mut next_kill = start + settings.kill_every;
    let mut report = Report {
        backend: backend.name(),
        window: settings.window,
        ..Default::default()
    };
    report.faults.extend(report_note.take());
    loop {
        schedule.sort_by_key(|(at, _)| *at);
        let next_fault = schedule.first().map(|(at, _)| *at);
        let kill_at = (next_kill < end).then_some(next_kill);
        let Some(wake) = next_fault.into_iter().chain(kill_at).min() else {
            break;
        };
        tokio::time::sleep_until(wake).await;
        if Some(wake) == next_fault {
            let (_, fault) = schedule.remove(0);
            let t = start.elapsed().as_secs_f64();
            let note = strike(backend, fault, settings, &log, &mut report).await;
            if fault == Fault::Partition {
                schedule.push((Instant::now() + settings.lease * 2, Fault::Heal));
            }
            eprintln!("chaos {}: t={t:.1}s {fault:?}: {note}", backend.name());
            report.faults.push(format!("t={t:.1}s {fault:?}: {note}"));
        } else {
            pool.kill_random();
            next_kill += settings.kill_every;
        }
    }
    tokio::time::sleep_until(end).await;
    report.kills = pool.kills;

    let fault_end = Instant::now();
    wait_until(settings.drain_timeout() + settings.window, || {
        let done = log.lock().unwrap().done;
        async move { done }
    })
    .await;
    enqueuer.await.expect("enqueuer");
    let expected = log.lock().unwrap().accepted.len() as i64;
    let drained = wait_until(settings.drain_timeout(), || {
        let store = store.clone();
        async move {
            let Ok(queues) = store.queue_list().await else {
                return false;
            };
            let c = queues
                .iter()
                .fold(spooler::core::StateCounts::default(), |mut a, q| {
                    a.completed += q.counts.completed;
                    a.failed += q.counts.failed;
                    a.cancelled += q.counts.cancelled;
                    a.running += q.counts.running;
                    a.available += q.counts.available;
                    a.scheduled += q.counts.scheduled;
                    a
                });
            c.running + c.available + c.scheduled == 0
                && c.completed + c.failed + c.cancelled >= expected
        }
    })
    .await;
    report.drained_in = fault_end.elapsed();
    if !drained {
        eprintln!(
            "chaos {}: the jobs did not drain within {:?}",
            backend.name(),
            settings.drain_timeout()
        );
    }

    // Count, before the workers stop (a graceful stop would release what is still running).
    let done = backend.completions().await;
    let rows = all_jobs(store.as_ref()).await;
    let deliveries = sink.deliveries();
    let enqueued = std::mem::take(&mut *log.lock().unwrap());
    count(&mut report, &enqueued, &rows, &done, &deliveries);
    report.partial_deliveries = sink.partial();

    // Each live worker claims and completes again after the faults: one job in its own queue.
    let client = spooler::Client::new(store.clone());
    let mut probes = Vec::new();
    for i in 0..pool.procs.len() {
        let job = spooler::NewJob::new("noop", serde_json::json!({})).queue(probe_queue(i));
        probes.push(
            client
                .enqueue_new(job)
                .await
                .expect("enqueue a probe")
                .job
                .id,
        );
    }
    for (i, id) in probes.into_iter().enumerate() {
        let done = wait_until(Duration::from_secs(30), || {
            let client = client.clone();
            async move {
                client
                    .status(id)
                    .await
                    .is_ok_and(|j| j.state == spooler::JobState::Completed)
            }
        })
        .await;
        if !done {
            let w = &pool.procs[i];
            report.not_recovered.push(format!(
                "w{i} (pid {}) did not complete its probe job {id} within 30s; log tail:\n{}",
                w.pid(),
                tail(&w.log_text(), 15)
            ));
        }
    }

    for (i, w) in pool.procs.iter_mut().enumerate() {
        let status = w.terminate(Duration::from_secs(30));
        if !status.success() {
            eprintln!(
                "chaos: worker w{i} exited with {status}; log tail:\n{}",
                tail(&w.log_text(), 20)
            );
        }
    }
    drop(store);
    report.total = began.elapsed();
    report
}

/// The queue only worker `i` works.
fn probe_queue(i: usize) -> String {
    format!("probe-w{i}")
}

/// Fills in the counts from what the enqueuer, the store, the recorder and the sink saw.
fn count(
    report: &mut Report,
    enqueued: &Enqueued,
    rows: &[spooler::JobRow],
    done: &[(i64, i64, String)],
    deliveries: &HashMap<u64, u32>,
) {
    report.accepted = enqueued.accepted.len();
    report.rows = rows.len();
    report.refused = enqueued.refused.clone();
    report.samples = enqueued.samples.clone();
    let by_id: HashMap<i64, &spooler::JobRow> = rows.iter().map(|r| (r.id, r)).collect();
    for (n, id) in &enqueued.accepted {
        let delivered = deliveries.get(n).copied().unwrap_or(0);
        match by_id.get(id) {
            None => report.lost.push(*n),
            Some(row) if row.state == JobState::Completed && delivered == 0 => report.lost.push(*n),
            _ => {}
        }
    }
    report.lost.sort();
    for row in rows {
        match row.state {
            JobState::Completed => report.completed += 1,
            JobState::Running => report.left_running.push(row.id),
            JobState::Failed => report.failed.push((
                row.id,
                row.attempt,
                row.errors
                    .last()
                    .map(|e| e.message.clone())
                    .unwrap_or_default(),
            )),
            JobState::Cancelled => {}
            _ => report.unfinished.push(row.id),
        }
        if row.attempt > 1 {
            report.rerun += 1;
        }
        report.max_attempt = report.max_attempt.max(row.attempt);
    }
    let mut per_job: HashMap<i64, usize> = HashMap::new();
    for (id, _, _) in done {
        *per_job.entry(*id).or_default() += 1;
    }
    report.completed_twice = per_job
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    report.completed_twice.sort();
    // The recorder must have seen every completion the store shows, or it measures nothing.
    let unrecorded = rows
        .iter()
        .filter(|r| r.state == JobState::Completed && !per_job.contains_key(&r.id))
        .count();
    assert_eq!(unrecorded, 0, "completions the recorder missed");
    report.deliveries = deliveries.values().map(|n| *n as u64).sum();
    report.extra_deliveries = deliveries
        .values()
        .map(|n| n.saturating_sub(1) as u64)
        .sum();
}

/// Strikes `fault`; returns a note of what it did.
async fn strike(
    backend: &Backend,
    fault: Fault,
    settings: &Settings,
    log: &Arc<Mutex<Enqueued>>,
    report: &mut Report,
) -> String {
    match (fault, backend) {
        (Fault::TerminateAll, Backend::Postgres { cluster, .. }) => {
            let mut conn = pg(&cluster.url()).await;
            let n: i64 = sqlx::query_scalar(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_one(&mut conn)
            .await
            .expect("pg_terminate_backend");
            format!("{n} backends terminated")
        }
        (Fault::Partition, Backend::Postgres { proxy, .. }) => {
            proxy.partition();
            format!(
                "workers 1.. cut off from the database for {}",
                spooler::format_duration(settings.lease * 2)
            )
        }
        (Fault::Heal, Backend::Postgres { proxy, .. }) => {
            proxy.heal();
            "forwarding again".into()
        }
        (Fault::RestartPostgres, Backend::Postgres { cluster, .. }) => {
            let t = Instant::now();
            tokio::task::block_in_place(|| cluster.restart(Duration::from_secs(2)));
            format!(
                "stopped (immediate), down 2s, up again after {:.1?}",
                t.elapsed()
            )
        }
        (
            Fault::DiskFull,
            Backend::Sqlite {
                tmpfs: Some(fs), ..
            },
        ) => {
            let (refused_before, accepted_before) = {
                let log = log.lock().unwrap();
                (log.refused.clone(), log.accepted.len())
            };
            let total_before: u64 = refused_before.values().sum();
            let t0 = Instant::now();
            let filled = fs.fill();
            // Every batch adds rows, so the file must grow: an enqueue will be refused.
            let refused = wait_until(Duration::from_secs(60), || {
                let n = log.lock().unwrap().refusals();
                async move { n > total_before }
            })
            .await;
            let refused_after = refused.then(|| t0.elapsed().as_secs_f64());
            // The disk stays full a moment longer: the workers meet it too (a timer of the
            // schedule, not a wait for an event).
            tokio::time::sleep(Duration::from_secs(2)).await;
            let answers: BTreeMap<u16, u64> = {
                let log = log.lock().unwrap();
                log.refused
                    .iter()
                    .map(|(s, n)| (*s, n - refused_before.get(s).copied().unwrap_or(0)))
                    .filter(|(_, n)| *n > 0)
                    .collect()
            };
            let accepted_while_full = log.lock().unwrap().accepted.len() - accepted_before;
            fs.free();
            let t1 = Instant::now();
            let back = wait_until(Duration::from_secs(60), || {
                let n = log.lock().unwrap().accepted.len();
                async move { n > accepted_before + accepted_while_full }
            })
            .await;
            let episode = DiskFull {
                filled_bytes: filled,
                answers,
                refused_after,
                accepted_again_after: back.then(|| t1.elapsed().as_secs_f64()),
            };
            let note = format!("{} MiB filled; {episode:?}", episode.filled_bytes >> 20);
            report.disk_full = Some(episode);
            note
        }
        (fault, backend) => panic!("{fault:?} is not a fault of {}", backend.name()),
    }
}

/// How far ahead of the test's clock the first line `log` wrote is stamped, in seconds.
fn logged_clock_offset(log: &str, written_after: chrono::DateTime<chrono::Utc>) -> Option<f64> {
    let line = log.lines().next()?;
    let v: Value = serde_json::from_str(line).ok()?;
    let at: chrono::DateTime<chrono::Utc> = v["timestamp"].as_str()?.parse().ok()?;
    Some((at - written_after).num_milliseconds() as f64 / 1000.0)
}

/// Polls `check` every 250 ms until it is true (→ true) or `timeout` passes (→ false).
async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// SQLite: workers SIGKILLed every few seconds while jobs arrive, and the file's filesystem (a
/// small tmpfs) filling up mid-run: enqueues are refused with a 503 naming the store, and accepted
/// again once space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_sqlite() {
    let settings = Settings::from_env();
    let plain = tempfile::tempdir().unwrap();
    let size = format!("{}m", 64 + settings.jobs / 2000);
    let (tmpfs, db) = match Tmpfs::mount(&size) {
        Ok(fs) => {
            let db = fs.path().join("jobs.db");
            (Some(fs), db)
        }
        Err(why) => {
            eprintln!(
                "SKIPPED: chaos on sqlite: the disk-full episode: {why} (the kills still run)"
            );
            (None, plain.path().join("jobs.db"))
        }
    };
    let faults: &[(f64, Fault)] = if tmpfs.is_some() {
        &[(0.4, Fault::DiskFull)]
    } else {
        &[]
    };
    let backend = Backend::Sqlite { db, tmpfs };
    let report = run(&backend, &settings, faults, false).await;
    report.print();
    report.assert_guarantees();
    if let Backend::Sqlite { tmpfs: Some(_), .. } = &backend {
        let episode = report.disk_full.clone().expect("the disk-full episode ran");
        assert!(
            episode.refused_after.is_some(),
            "no enqueue was refused while the disk was full: {episode:?}"
        );
        assert!(
            episode.answers.keys().all(|s| *s == 503),
            "a full disk is a 503, not {:?}; samples: {:?}",
            episode.answers,
            report.samples
        );
        let (retry_after, body) = report.samples.get(&503).cloned().unwrap_or_default();
        assert!(
            retry_after.is_some() && body.contains("store"),
            "the 503 has a Retry-After and names the store: {retry_after:?} {body}"
        );
        assert!(
            episode.accepted_again_after.is_some(),
            "enqueues were accepted again once space returned: {episode:?}"
        );
    }
}

/// PostgreSQL, on a cluster of the test's own: workers SIGKILLed every few seconds, every
/// spooler connection terminated, workers 1.. partitioned from the database (a proxy that goes
/// silent) for twice the lease, the database restarted as a crash would, and the last worker's
/// clock skewed (`SPOOLER_CHAOS_SKEW`, default +30s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_postgres() {
    let settings = Settings::from_env();
    let cluster = match tokio::task::spawn_blocking(cluster::Cluster::start)
        .await
        .unwrap()
    {
        Ok(cluster) => cluster,
        Err(why) => {
            eprintln!("SKIPPED: chaos on postgres: {why}");
            return;
        }
    };
    let proxy = proxy::Proxy::start(cluster.addr()).await;
    let backend = Backend::Postgres { cluster, proxy };
    let faults = [
        (0.2, Fault::TerminateAll),
        (0.35, Fault::Partition),
        (0.6, Fault::RestartPostgres),
    ];
    let report = run(&backend, &settings, &faults, true).await;
    report.print();
    report.assert_guarantees();
}
