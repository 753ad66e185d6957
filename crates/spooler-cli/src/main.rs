//! The `spooler` command-line tool: run the server or a worker, enqueue and inspect jobs, check
//! health, migrate, and benchmark a store.

mod bench;
mod check;
mod logging;
mod manage;
mod ops;
mod replay;
mod schedules;
mod serve;
mod systemd;
mod target;

/// mimalloc instead of glibc's allocator for Rust's allocations: rows are decoded on the SQLite
/// writer thread and dropped on the runtime's, where glibc's arena locks and consolidation were a
/// sixth of a drain's CPU (docs/performance.md). SQLite's own allocations stay with glibc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

/// spooler: durable background jobs on SQLite or PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "spooler", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API, the dashboard and a worker for the built-in job kinds.
    Serve(serve::ServeArgs),
    /// Run a worker for the built-in job kinds (no HTTP).
    Worker(serve::WorkerArgs),
    /// Create or upgrade the store's schema.
    Migrate(serve::MigrateArgs),
    /// Enqueue a job.
    Enqueue(ops::EnqueueArgs),
    /// Show a job.
    Status(ops::StatusArgs),
    /// List jobs, newest first.
    Jobs(ops::JobsArgs),
    /// Run a finished (failed, cancelled, completed) job again; by filter, every matching one
    /// (a dead-letter replay: `spooler retry --state failed --queue Q`).
    Retry(manage::ActArgs),
    /// Cancel a job, or every job a filter names.
    Cancel(manage::ActArgs),
    /// Delete a job that is not running, or every such job a filter names.
    Delete(manage::ActArgs),
    /// List queues with their jobs per state.
    Queues(manage::QueuesArgs),
    /// Pause a queue: no job is claimed from it until it is resumed.
    Pause(manage::QueueArgs),
    /// Resume a paused queue.
    Resume(manage::QueueArgs),
    /// List schedules, or run, pause or resume one (`spooler schedules run NAME`).
    Schedules(schedules::SchedulesArgs),
    /// Enqueue the messages a `file` spill wrote, each once however often the file is replayed.
    Replay(replay::ReplayArgs),
    /// Delete finished jobs past their retention.
    Prune(ops::PruneArgs),
    /// Health probe: exit 0 healthy, 1 warning, 2 unhealthy.
    Check(check::CheckArgs),
    /// Measure a store: enqueue, drain, latency and steady-load figures.
    Bench(bench::BenchArgs),
}

/// Parses durations like `500ms`, `5s`, `2m`, `24h` in flags.
pub(crate) fn duration_arg(text: &str) -> Result<Duration, String> {
    spooler::parse_duration(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(async {
        let result = match cli.command {
            Command::Serve(a) => serve::serve(a).await,
            Command::Worker(a) => serve::worker(a).await,
            Command::Migrate(a) => serve::migrate(a).await,
            Command::Enqueue(a) => ops::enqueue(a).await,
            Command::Status(a) => ops::status(a).await,
            Command::Jobs(a) => ops::jobs(a).await,
            Command::Retry(a) => manage::act(spooler::BulkAction::Retry, a).await,
            Command::Cancel(a) => manage::act(spooler::BulkAction::Cancel, a).await,
            Command::Delete(a) => manage::act(spooler::BulkAction::Delete, a).await,
            Command::Queues(a) => manage::queues(a).await,
            Command::Pause(a) => manage::pause(a, true).await,
            Command::Resume(a) => manage::pause(a, false).await,
            Command::Schedules(a) => schedules::schedules(a).await,
            Command::Replay(a) => replay::replay(a).await,
            Command::Prune(a) => ops::prune(a).await,
            Command::Check(a) => Ok(check::run(a).await),
            Command::Bench(a) => bench::run(a).await.map(|()| 0),
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        }
    });
    // Do not wait for stray blocking tasks (a DNS lookup, a store thread): the answer is given.
    runtime.shutdown_timeout(Duration::from_millis(200));
    logging::shutdown();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
