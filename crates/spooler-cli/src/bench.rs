//! `spooler bench`: enqueue, drain, latency and steady-load figures for a store, each workload
//! on a fresh store (a new SQLite file, or a new Postgres schema) unless `--reuse` is given.

use anyhow::{Context, bail};
use async_trait::async_trait;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;
use spooler::core::{JobClaim, JobFinish, JobList, JobState, Outcome};
use spooler::{Client, Handler, JobContext, JobError, NewJob, Store, Worker};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// What `spooler bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// N jobs inserted one per call (by `concurrency` tasks) and in batches of 1,000.
    Enqueue,
    /// N queued no-op jobs drained by a worker at the given concurrency.
    Drain,
    /// Jobs enqueued one at a time with an idle worker: enqueue→start p50/p99.
    Latency,
    /// A fixed offered rate for a duration, default worker settings: completed/s and latency.
    Steady,
    /// N messages along a failover chain whose every destination refuses (three queues routing
    /// their failures on), into a `file` spill: messages spilled per second.
    Spill,
}

/// Arguments of `spooler bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Store to measure: a fresh file beside this path, or a fresh schema on this server.
    #[arg(
        long,
        env = "SPOOLER_STORE",
        default_value = "sqlite://spooler-bench.db"
    )]
    pub store: String,
    /// Jobs for the enqueue and drain workloads.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Worker concurrency (and concurrent enqueuers for the single-insert figure).
    #[arg(long, default_value_t = 10)]
    pub concurrency: u32,
    /// Workloads to run (repeatable); all when none is given.
    #[arg(long = "workload", value_enum)]
    pub workloads: Vec<Workload>,
    /// Jobs for the latency workload, enqueued one at a time.
    #[arg(long, default_value_t = 500)]
    pub latency_jobs: usize,
    /// Offered rate of the steady workload, jobs per second.
    #[arg(long, default_value_t = 2_000)]
    pub rate: u32,
    /// Steady workload: jobs that arrive together, at the same instant. 1 (the default) spreads
    /// arrivals evenly, one every 1/rate seconds; 10 offers the same rate as ten simultaneous
    /// enqueues every 10/rate seconds, where each waits for the others ahead of it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: u32,
    /// Duration of the steady workload.
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub duration: Duration,
    /// Steady workload: also a row per window of this length (latency of the jobs that started
    /// in it, resident memory, rows in the store), to see whether a long run stays flat.
    #[arg(long, value_parser = parse_duration_arg)]
    pub window: Option<Duration>,
    /// Steady workload: how long the worker keeps completed jobs (the library's default when
    /// not given); with a short one, a long run shows the store's size bounded by retention.
    #[arg(long, value_parser = parse_duration_arg)]
    pub retention: Option<Duration>,
    /// Measure the store as it is instead of a fresh one (it must be migrated and should be empty).
    #[arg(long)]
    pub reuse: bool,
    /// Completed jobs to put in the store before the drain: does history slow the queue down?
    #[arg(long, default_value_t = 0)]
    pub history: usize,
    /// One JSON object per line per workload instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Give the drained queue an `on_failure` route (which no job follows): what a configured
    /// route costs a drain.
    #[arg(long)]
    pub routes: bool,
    /// Give the drained queue this rate limit (e.g. "1000000/s", high enough never to hold a
    /// claim back): what the limited claim path costs a drain.
    #[arg(long, value_parser = parse_rate_arg)]
    pub rate_limit: Option<spooler::core::RateLimit>,
}

fn parse_rate_arg(s: &str) -> Result<spooler::core::RateLimit, String> {
    spooler::core::RateLimit::parse(s)
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    spooler::parse_duration(s)
}

/// One line of results.
#[derive(Debug, Clone, Serialize)]
struct Row {
    workload: &'static str,
    mode: std::borrow::Cow<'static, str>,
    backend: String,
    jobs: usize,
    concurrency: u32,
    seconds: f64,
    jobs_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offered_per_sec: Option<u32>,
    rss_mb: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<usize>,
    /// Rows in the store at the end of a window, any state.
    #[serde(skip_serializing_if = "Option::is_none")]
    stored_jobs: Option<i64>,
    /// Latency and steady workloads: how long the enqueue call itself took (its share of
    /// enqueue→start).
    #[serde(skip_serializing_if = "Option::is_none")]
    enqueue_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enqueue_p99_ms: Option<f64>,
}

/// Runs the benchmark.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.jobs == 0 || args.concurrency == 0 {
        bail!("--jobs and --concurrency must be at least 1");
    }
    let workloads = if args.workloads.is_empty() {
        vec![
            Workload::Enqueue,
            Workload::Drain,
            Workload::Latency,
            Workload::Steady,
        ]
    } else {
        args.workloads.clone()
    };
    let mut rows = Vec::new();
    for workload in workloads {
        let fresh = FreshStore::create(&args.store, args.reuse).await?;
        let result = match workload {
            Workload::Enqueue => enqueue(&args, &fresh).await,
            Workload::Drain => drain(&args, &fresh).await,
            Workload::Latency => latency(&args, &fresh).await,
            Workload::Steady => steady(&args, &fresh).await,
            Workload::Spill => spill(&args, &fresh).await,
        };
        fresh.remove().await;
        for row in result? {
            if args.json {
                println!("{}", serde_json::to_string(&row)?);
            }
            rows.push(row);
        }
    }
    if !args.json {
        print_table(&rows);
    }
    Ok(())
}

/// A store made for one workload and removed after it.
struct FreshStore {
    store: Arc<dyn Store>,
    backend: String,
    cleanup: Cleanup,
}

enum Cleanup {
    None,
    Dir(std::path::PathBuf),
    Schema(Arc<spooler::postgres::PgStore>),
}

impl FreshStore {
    async fn create(url: &str, reuse: bool) -> anyhow::Result<Self> {
        let scheme = url.split(':').next().unwrap_or_default().to_string();
        if reuse {
            let store = spooler::connect(url)
                .await
                .with_context(|| format!("opening {url}"))?;
            return Ok(Self {
                store,
                backend: scheme,
                cleanup: Cleanup::None,
            });
        }
        match scheme.as_str() {
            "sqlite" => {
                if url.contains(":memory:") {
                    let store = spooler::connect(url).await?;
                    return Ok(Self {
                        store,
                        backend: "sqlite-memory".into(),
                        cleanup: Cleanup::None,
                    });
                }
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                let path = std::path::Path::new(path);
                let parent = match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => std::path::PathBuf::from("."),
                };
                let dir = parent.join(format!("spooler-bench-{:08x}", rand::random::<u32>()));
                std::fs::create_dir_all(&dir).with_context(|| {
                    format!(
                        "creating bench directory {} (does {} exist?)",
                        dir.display(),
                        parent.display()
                    )
                })?;
                let fresh = format!("sqlite://{}", dir.join("bench.db").display());
                let store = spooler::connect(&fresh)
                    .await
                    .with_context(|| format!("opening {fresh}"))?;
                Ok(Self {
                    store,
                    backend: "sqlite".into(),
                    cleanup: Cleanup::Dir(dir),
                })
            }
            "postgres" | "postgresql" => {
                let schema = format!("spooler_bench_{:08x}", rand::random::<u32>());
                let sep = if url.contains('?') { '&' } else { '?' };
                let fresh = format!("{url}{sep}schema={schema}");
                let pg = spooler::postgres::PgStore::connect(&fresh)
                    .await
                    .with_context(|| {
                        format!("connecting to {}", spooler::core::error::redact_url(url))
                    })?;
                pg.migrate().await?;
                let pg = Arc::new(pg);
                Ok(Self {
                    store: pg.clone(),
                    backend: "postgres".into(),
                    cleanup: Cleanup::Schema(pg),
                })
            }
            _ => bail!(
                "unsupported store URL \"{}\" (expected sqlite://PATH, sqlite::memory: or postgres://USER@HOST:PORT/DB)",
                spooler::core::error::redact_url(url)
            ),
        }
    }

    async fn remove(self) {
        let Self { store, cleanup, .. } = self;
        drop(store);
        match cleanup {
            Cleanup::None => {}
            Cleanup::Dir(dir) => {
                // Give the store's writer thread a moment to close the file.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(path = %dir.display(), error = %e, "could not remove the bench directory");
                }
            }
            Cleanup::Schema(pg) => {
                if let Err(e) = pg.drop_schema().await {
                    tracing::warn!(schema = %pg.schema(), error = %e, "could not drop the bench schema");
                }
            }
        }
    }
}

/// Counts runs and reports when `target` is reached; optionally reports each start.
struct Noop {
    done: AtomicUsize,
    target: AtomicUsize,
    reached: Notify,
    starts: Option<mpsc::UnboundedSender<(i64, Instant)>>,
}

impl Noop {
    fn new(target: usize, starts: Option<mpsc::UnboundedSender<(i64, Instant)>>) -> Arc<Self> {
        Arc::new(Self {
            done: AtomicUsize::new(0),
            target: AtomicUsize::new(target),
            reached: Notify::new(),
            starts,
        })
    }
}

#[async_trait]
impl Handler for Noop {
    async fn run(&self, _args: Value, ctx: JobContext) -> Result<Option<Value>, JobError> {
        if let Some(tx) = &self.starts {
            let _ = tx.send((ctx.id(), Instant::now()));
        }
        let n = self.done.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.target.load(Ordering::Acquire) {
            self.reached.notify_one();
        }
        Ok(None)
    }
}

const KIND: &str = "bench_noop";

fn noop_job(i: usize) -> NewJob {
    NewJob::new(KIND, serde_json::json!({ "i": i }))
}

fn progress(len: usize, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("progress template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn row(
    args: &BenchArgs,
    fresh: &FreshStore,
    workload: &'static str,
    mode: impl Into<std::borrow::Cow<'static, str>>,
    jobs: usize,
    took: Duration,
) -> Row {
    Row {
        workload,
        mode: mode.into(),
        backend: fresh.backend.clone(),
        jobs,
        concurrency: args.concurrency,
        seconds: round(took.as_secs_f64(), 3),
        jobs_per_sec: round(jobs as f64 / took.as_secs_f64(), 0),
        p50_ms: None,
        p99_ms: None,
        max_ms: None,
        offered_per_sec: None,
        rss_mb: rss_mb(),
        history: None,
        stored_jobs: None,
        enqueue_p50_ms: None,
        enqueue_p99_ms: None,
    }
}

async fn insert_batches(client: &Client, n: usize, bar: &ProgressBar) -> anyhow::Result<()> {
    let mut i = 0;
    while i < n {
        let end = (i + 1000).min(n);
        client
            .enqueue_many((i..end).map(noop_job).collect())
            .await?;
        bar.inc((end - i) as u64);
        i = end;
    }
    Ok(())
}

/// Puts `n` completed jobs in the store (inserted, claimed and completed a thousand at a time,
/// as a worker would), then lets the store do its upkeep, as its leader would.
async fn fill_history(store: &Arc<dyn Store>, n: usize) -> anyhow::Result<()> {
    if n == 0 {
        return Ok(());
    }
    const HISTORY: &str = "bench_history";
    let client = Client::new(store.clone());
    let bar = progress(n, "history");
    let mut left = n;
    while left > 0 {
        let batch = left.min(1000);
        client
            .enqueue_many(
                (0..batch)
                    .map(|_| NewJob::new(HISTORY, Value::Null))
                    .collect(),
            )
            .await?;
        let claimed = store
            .job_claim(&JobClaim {
                queues: vec![spooler::core::DEFAULT_QUEUE.to_string()],
                kinds: vec![HISTORY.to_string()],
                limit: batch as u32,
                worker_id: "bench-history".into(),
                lease: Duration::from_secs(600),
            })
            .await?
            .jobs;
        let finishes: Vec<JobFinish> = claimed
            .iter()
            .map(|j| JobFinish {
                lease: j.lease(),
                outcome: Outcome::Completed { result: None },
            })
            .collect();
        store.job_finish_many(&finishes).await?;
        left -= claimed.len().min(left);
        bar.inc(claimed.len() as u64);
        if claimed.is_empty() {
            bail!("filling history: inserted jobs could not be claimed");
        }
    }
    bar.finish_and_clear();
    store.housekeep().await?;
    Ok(())
}

/// Whether any job is still available, running or scheduled.
async fn has_unfinished(store: &Arc<dyn Store>) -> anyhow::Result<bool> {
    for state in [JobState::Available, JobState::Running, JobState::Scheduled] {
        let list = JobList {
            state: Some(state),
            limit: 1,
            ..JobList::default()
        };
        if !store.job_list(&list).await?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn enqueue(args: &BenchArgs, fresh: &FreshStore) -> anyhow::Result<Vec<Row>> {
    let client = Client::new(fresh.store.clone());
    let n = args.jobs;
    // One job per call, from `concurrency` tasks.
    let bar = progress(n, "enqueue");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, next, bar) = (client.clone(), next.clone(), bar.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, spooler::Error>(());
                }
                client.enqueue_new(noop_job(i)).await?;
                if i % 256 == 0 {
                    bar.set_position(i as u64);
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let single = row(args, fresh, "enqueue", "single", n, started.elapsed());
    bar.finish_and_clear();
    // Batches of 1,000 from one task.
    let bar = progress(n, "batch");
    let started = Instant::now();
    insert_batches(&client, n, &bar).await?;
    let batch = row(args, fresh, "enqueue", "batch", n, started.elapsed());
    bar.finish_and_clear();
    Ok(vec![single, batch])
}

async fn drain(args: &BenchArgs, fresh: &FreshStore) -> anyhow::Result<Vec<Row>> {
    let client = Client::new(fresh.store.clone());
    let n = args.jobs;
    fill_history(&fresh.store, args.history).await?;
    let bar = progress(n, "queue");
    insert_batches(&client, n, &bar).await?;
    bar.finish_and_clear();
    if args.routes || args.rate_limit.is_some() {
        let mut settings = spooler::core::QueueSettings::new(spooler::core::DEFAULT_QUEUE);
        if args.routes {
            let mut route = spooler::core::Route::to("bench_dead");
            route.kind = Some("bench_never".into());
            settings.routes.on_failure = Some(route);
        }
        settings.limits.rate = args.rate_limit;
        fresh.store.queue_configure(&[settings]).await?;
    }
    let noop = Noop::new(n, None);
    let worker = Worker::builder(fresh.store.clone())
        .handler(KIND, noop.clone())
        .queue(spooler::core::DEFAULT_QUEUE, args.concurrency)
        .build()?;
    let bar = progress(n, "drain");
    let started = Instant::now();
    let reached = noop.reached.notified();
    let handle = worker.start();
    let ticker = {
        let (bar, noop) = (bar.clone(), noop.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bar.set_position(noop.done.load(Ordering::Relaxed) as u64);
            }
        })
    };
    reached.await;
    // Every handler has run; wait until the completer has written every outcome. The wait reads
    // only unfinished jobs, so it costs the same however much history the store holds.
    while has_unfinished(&fresh.store).await? {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = started.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    let completed: i64 = fresh
        .store
        .queue_list()
        .await?
        .iter()
        .map(|q| q.counts.completed)
        .sum();
    if completed as usize != n + args.history {
        bail!(
            "drain: {completed} jobs completed, expected {}",
            n + args.history
        );
    }
    let mut mode = "no-op".to_string();
    if args.history > 0 {
        mode.push_str(", with history");
    }
    if args.routes {
        mode.push_str(", routes configured");
    }
    if let Some(rate) = args.rate_limit {
        mode.push_str(&format!(", rate limit {rate}"));
    }
    let mut out = row(args, fresh, "drain", mode, n, took);
    out.history = (args.history > 0).then_some(args.history);
    handle.shutdown().await?;
    Ok(vec![out])
}

/// A destination that always refuses: the job fails at once, and its queue's route moves it on.
struct Refuse;

#[async_trait]
impl Handler for Refuse {
    async fn run(&self, _args: Value, _ctx: JobContext) -> Result<Option<Value>, JobError> {
        Err(JobError::fail("refused"))
    }
}

async fn spill(args: &BenchArgs, fresh: &FreshStore) -> anyhow::Result<Vec<Row>> {
    let n = args.jobs;
    let dir = std::env::temp_dir().join(format!(
        "spooler-bench-spill-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("spill.jsonl");
    let hops = ["bench_a", "bench_b", "bench_c"];
    let mut settings = Vec::new();
    for (i, queue) in hops.iter().enumerate() {
        let route = match hops.get(i + 1) {
            Some(next) => spooler::core::Route::to(*next),
            None => {
                let mut r = spooler::core::Route::to("bench_spill");
                r.kind = Some("file".into());
                r.args = serde_json::json!({ "path": path.display().to_string() })
                    .as_object()
                    .cloned();
                r
            }
        };
        settings.push(spooler::core::QueueSettings {
            max_attempts: Some(1),
            routes: spooler::core::Routes {
                on_failure: Some(route),
                on_success: None,
                ..Default::default()
            },
            ..spooler::core::QueueSettings::new(*queue)
        });
    }
    fresh.store.queue_configure(&settings).await?;
    let client = Client::new(fresh.store.clone());
    let bar = progress(n, "queue");
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        let jobs = chunk
            .iter()
            .map(|&i| {
                NewJob::new("bench_refused", serde_json::json!({ "payload": i })).queue(hops[0])
            })
            .collect();
        client.enqueue_many(jobs).await?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let file = spooler_server::kinds::FileKind::new(spooler_server::kinds::FileAllow::new(vec![
        dir.clone(),
    ]));
    let mut builder = Worker::builder(fresh.store.clone())
        .handler("bench_refused", Arc::new(Refuse))
        .handler("file", Arc::new(file))
        .queue("bench_spill", args.concurrency);
    for queue in hops {
        builder = builder.queue(queue, args.concurrency);
    }
    let started = Instant::now();
    let handle = builder.build()?.start();
    let bar = progress(n, "spill");
    loop {
        let spilled = fresh
            .store
            .queue_list()
            .await?
            .iter()
            .find(|q| q.name == "bench_spill")
            .map_or(0, |q| q.counts.completed);
        bar.set_position(spilled as u64);
        if spilled as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    bar.finish_and_clear();
    handle.shutdown().await?;
    let lines = std::fs::read_to_string(&path)?.lines().count();
    let _ = std::fs::remove_dir_all(&dir);
    if lines != n {
        bail!("spill: {lines} lines in the file, expected {n}");
    }
    Ok(vec![row(
        args,
        fresh,
        "spill",
        "3 refusing hops → file",
        n,
        took,
    )])
}

async fn latency(args: &BenchArgs, fresh: &FreshStore) -> anyhow::Result<Vec<Row>> {
    let client = Client::new(fresh.store.clone());
    let (tx, mut starts) = mpsc::unbounded_channel();
    let noop = Noop::new(usize::MAX, Some(tx));
    let handle = Worker::builder(fresh.store.clone())
        .handler(KIND, noop)
        .queue(spooler::core::DEFAULT_QUEUE, args.concurrency)
        .build()?
        .start();
    // Let the worker go idle first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n = args.latency_jobs;
    let bar = progress(n, "latency");
    let mut samples = latency_histogram();
    let mut enqueue_took = latency_histogram();
    let mut started = Instant::now();
    for i in 0..LATENCY_WARMUP + n {
        if i == LATENCY_WARMUP {
            samples.reset();
            enqueue_took.reset();
            started = Instant::now();
        }
        let t0 = Instant::now();
        let id = client.enqueue_new(noop_job(i)).await?.job.id;
        enqueue_took.saturating_record(t0.elapsed().as_micros().max(1) as u64);
        loop {
            let (started_id, at) = tokio::time::timeout(Duration::from_secs(30), starts.recv())
                .await
                .with_context(|| format!("job {id} did not start within 30s"))?
                .context("worker stopped")?;
            if started_id == id {
                samples.saturating_record((at - t0).as_micros().max(1) as u64);
                break;
            }
        }
        if i >= LATENCY_WARMUP {
            bar.inc(1);
        }
        // A short idle gap, so each job finds the worker idle.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = started.elapsed();
    bar.finish_and_clear();
    handle.shutdown().await?;
    let mut r = row(args, fresh, "latency", "enqueue→start", n, took);
    fill_from_histogram(&mut r, &samples);
    fill_enqueue_split(&mut r, &enqueue_took);
    Ok(vec![r])
}

/// Jobs run before the latency workload counts: they open the pool's connections, whose new
/// server processes each load the catalog and plan (or compile) the statements once. Pools cycle
/// through their connections, so a cold start would otherwise put that one-time cost, a few
/// milliseconds for each connection and statement, into the 99th percentile.
const LATENCY_WARMUP: usize = 100;

/// How many jobs are due, sent each time it grows: jobs arrive in bursts of `burst`, burst `b`
/// at `b * burst / rate` seconds after the start. A thread of its own keeps the time, sleeping
/// until the next burst is due, so arrivals are spread as asked (tokio's timer, with its
/// millisecond wheel, would bunch them: ten enqueues at once every 5 ms, each waiting for those
/// ahead of it). When the thread wakes late, every job due by then is sent at once.
fn paced_arrivals(rate: f64, burst: usize, total: usize) -> mpsc::UnboundedReceiver<usize> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("bench-arrivals".into())
        .spawn(move || {
            let begin = Instant::now();
            let due_by = |elapsed: Duration| {
                let bursts = (elapsed.as_secs_f64() * rate / burst as f64) as usize + 1;
                bursts.saturating_mul(burst).min(total)
            };
            let mut due = due_by(Duration::ZERO);
            loop {
                if tx.send(due).is_err() || due >= total {
                    return;
                }
                let next =
                    begin + Duration::from_secs_f64((due / burst) as f64 * burst as f64 / rate);
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                due = due_by(begin.elapsed()).max(due + burst).min(total);
            }
        })
        .expect("start the arrivals thread");
    rx
}

/// Enqueues of the steady workload in flight at once, at most.
const STEADY_IN_FLIGHT: usize = 64;

async fn steady(args: &BenchArgs, fresh: &FreshStore) -> anyhow::Result<Vec<Row>> {
    let client = Client::new(fresh.store.clone());
    let (tx, mut starts) = mpsc::unbounded_channel();
    let noop = Noop::new(usize::MAX, Some(tx));
    let mut builder = Worker::builder(fresh.store.clone())
        .handler(KIND, noop.clone())
        .queue(spooler::core::DEFAULT_QUEUE, args.concurrency);
    if let Some(completed) = args.retention {
        builder = builder.retention(spooler::Retention {
            completed: Some(completed),
            ..Default::default()
        });
    }
    let handle = builder.build()?.start();
    let rate = f64::from(args.rate.max(1));
    let total = (rate * args.duration.as_secs_f64()).round() as usize;
    let burst = args.burst.max(1) as usize;
    let bar = progress(total, "steady");
    // Sized by what is in flight, not by the run: entries leave once their job started, so a
    // long run's own bookkeeping does not grow (a map sized for the whole run touched ever more
    // of its pages, which showed as the process's memory growing).
    let enqueued_at = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        spooler::JobId,
        Instant,
    >::new()));
    // The enqueue calls' own time, the first part of enqueue→start.
    let enqueue_took = Arc::new(std::sync::Mutex::new(latency_histogram()));
    let producer = {
        let (client, enqueued_at, bar) = (client.clone(), enqueued_at.clone(), bar.clone());
        let enqueue_took = enqueue_took.clone();
        tokio::spawn(async move {
            // Jobs arrive as from many independent callers: each due job is enqueued by its own
            // task, so the offered rate does not depend on one enqueue's round trip.
            let in_flight = Arc::new(tokio::sync::Semaphore::new(STEADY_IN_FLIGHT));
            let mut enqueues = tokio::task::JoinSet::new();
            let mut arrivals = paced_arrivals(rate, burst, total);
            let mut sent = 0usize;
            while sent < total {
                let Some(due) = arrivals.recv().await else {
                    break;
                };
                while sent < due {
                    let permit = in_flight.clone().acquire_owned().await.expect("open");
                    let (client, enqueued_at) = (client.clone(), enqueued_at.clone());
                    let enqueue_took = enqueue_took.clone();
                    let job = noop_job(sent);
                    enqueues.spawn(async move {
                        let t0 = Instant::now();
                        let id = client.enqueue_new(job).await?.job.id;
                        let micros = t0.elapsed().as_micros().max(1) as u64;
                        enqueue_took.lock().expect("lock").saturating_record(micros);
                        enqueued_at.lock().expect("lock").insert(id, t0);
                        drop(permit);
                        Ok::<_, spooler::Error>(())
                    });
                    sent += 1;
                }
                while let Some(done) = enqueues.try_join_next() {
                    done.expect("enqueue task")?;
                }
                bar.set_position(sent as u64);
            }
            while let Some(done) = enqueues.join_next().await {
                done.expect("enqueue task")?;
            }
            Ok::<_, spooler::Error>(())
        })
    };
    let started = Instant::now();
    // Histograms rather than every sample, so a long run's own bookkeeping stays flat.
    let mut all = latency_histogram();
    let mut window = latency_histogram();
    let mut window_began = started;
    let mut rows = Vec::new();
    let mut pending = Vec::new();
    let mut last_progress = Instant::now();
    while (all.len() as usize) < total {
        // A job can start before its enqueue returned its id: such starts wait in `pending`
        // until the id is known, so the map is looked at again even when no start comes.
        match tokio::time::timeout(Duration::from_millis(100), starts.recv()).await {
            Ok(Some(start)) => {
                pending.push(start);
                last_progress = Instant::now();
            }
            Ok(None) => bail!("worker stopped"),
            Err(_) if last_progress.elapsed() > Duration::from_secs(60) => {
                bail!("no job started for 60s")
            }
            Err(_) => {}
        }
        {
            let mut map = enqueued_at.lock().expect("lock");
            pending.retain(|(id, at)| match map.remove(id) {
                Some(t0) => {
                    let micros = (*at - t0).as_micros().max(1) as u64;
                    all.saturating_record(micros);
                    window.saturating_record(micros);
                    false
                }
                None => true,
            });
        }
        if let Some(length) = args.window
            && window_began.elapsed() >= length
        {
            let mut r = row(
                args,
                fresh,
                "steady",
                "window",
                window.len() as usize,
                window_began.elapsed(),
            );
            r.seconds = round(started.elapsed().as_secs_f64(), 1);
            r.offered_per_sec = Some(args.rate);
            fill_from_histogram(&mut r, &window);
            r.stored_jobs = Some(stored_jobs(&client).await?);
            if args.json {
                // As it happens, so a long run's windows survive its end.
                println!("{}", serde_json::to_string(&r)?);
            } else {
                rows.push(r);
            }
            window.reset();
            window_began = Instant::now();
        }
    }
    let took = started.elapsed();
    producer.await??;
    bar.finish_and_clear();
    handle.shutdown().await?;
    let mut r = row(args, fresh, "steady", "offered", total, took);
    r.offered_per_sec = Some(args.rate);
    fill_from_histogram(&mut r, &all);
    fill_enqueue_split(&mut r, &enqueue_took.lock().expect("lock"));
    rows.push(r);
    Ok(rows)
}

/// Microseconds from 1 µs to an hour, three significant figures.
fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

fn fill_from_histogram(r: &mut Row, h: &hdrhistogram::Histogram<u64>) {
    if !h.is_empty() {
        r.p50_ms = Some(ms_at(h, 0.50));
        r.p99_ms = Some(ms_at(h, 0.99));
        r.max_ms = Some(ms_at(h, 1.0));
    }
}

/// The enqueue calls' own share of enqueue→start.
fn fill_enqueue_split(r: &mut Row, h: &hdrhistogram::Histogram<u64>) {
    if !h.is_empty() {
        r.enqueue_p50_ms = Some(ms_at(h, 0.50));
        r.enqueue_p99_ms = Some(ms_at(h, 0.99));
    }
}

/// The histogram's value at quantile `q` (1.0: its maximum), in milliseconds.
fn ms_at(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    let micros = if q >= 1.0 {
        h.max()
    } else {
        h.value_at_quantile(q)
    };
    round(micros as f64 / 1000.0, 3)
}

/// Rows in the store, any state.
async fn stored_jobs(client: &Client) -> anyhow::Result<i64> {
    let queues = client.queues().await.context("counting the store's jobs")?;
    Ok(queues
        .iter()
        .map(|q| {
            let c = &q.counts;
            c.scheduled + c.available + c.running + c.completed + c.failed + c.cancelled
        })
        .sum())
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// Resident memory of this process, from /proc (0 where unavailable).
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| round(kb / 1024.0, 1))
        .unwrap_or(0.0)
}

fn print_table(rows: &[Row]) {
    let ms = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
    println!(
        "{:<9} {:<14} {:<8} {:>8} {:>5} {:>9} {:>11} {:>8} {:>8} {:>8} {:>7} {:>8}",
        "workload",
        "mode",
        "backend",
        "jobs",
        "conc",
        "seconds",
        "jobs/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "rss MB",
        "stored"
    );
    for r in rows {
        println!(
            "{:<9} {:<14} {:<8} {:>8} {:>5} {:>9.3} {:>11.0} {:>8} {:>8} {:>8} {:>7.1} {:>8}",
            r.workload,
            r.mode,
            r.backend,
            r.jobs,
            r.concurrency,
            r.seconds,
            r.jobs_per_sec,
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.max_ms),
            r.rss_mb,
            r.stored_jobs
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::paced_arrivals;

    /// Every count sent is a whole number of bursts (or the total), grows each time, and ends at
    /// the total, whatever the thread's wake-ups: bursts are never split.
    #[tokio::test]
    async fn arrivals_come_in_whole_bursts_up_to_the_total() {
        for (burst, total) in [(1, 500), (10, 1_000), (7, 100)] {
            let mut arrivals = paced_arrivals(200_000.0, burst, total);
            let mut last = 0;
            while let Some(due) = arrivals.recv().await {
                assert!(due > last, "burst {burst}: {due} after {last}");
                assert!(
                    due % burst == 0 || due == total,
                    "burst {burst}: {due} splits a burst"
                );
                last = due;
            }
            assert_eq!(last, total, "burst {burst}");
        }
    }
}
