//! spooler: background jobs for Rust — typed jobs, a client to enqueue them and a worker runtime to run them.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use spooler::{Client, Job, JobContext, JobError, Worker};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SendEmail { to: String }
//!
//! impl Job for SendEmail {
//!     const KIND: &'static str = "send_email";
//!     async fn run(self, _ctx: JobContext) -> Result<(), JobError> {
//!         println!("sending to {}", self.to);
//!         Ok(())
//!     }
//! }
//!
//! # async fn demo() -> Result<(), spooler::Error> {
//! let client = Client::connect("sqlite://jobs.db").await?;
//! let id = client.enqueue(SendEmail { to: "a@example.com".into() }).await?;
//! let worker = Worker::builder(client.store()).register::<SendEmail>().queue("default", 10).build()?;
//! worker.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! | feature    | default | what it adds |
//! |------------|---------|--------------|
//! | `sqlite`   | yes     | the embedded SQLite store, `sqlite://path` and `sqlite::memory:` URLs |
//! | `postgres` | no      | the PostgreSQL store, `postgres://` URLs |
//! | `otel`     | no      | W3C trace context from the current span ([`trace`]): a job's run continues the trace that enqueued it |
//!
//! [`testing`] is a kit for an application's own tests: run a job inline, drain a worker, assert a
//! job was enqueued.

mod client;
mod connect;
mod error;
mod every;
mod job;
pub mod maintenance;
pub mod metrics;
mod operations;
mod schedules;
pub mod testing;
pub mod trace;
mod worker;

pub use client::{Client, Enqueue, Stats};
pub use connect::{ConnectOptions, connect, connect_with, migration_script};
pub use error::Error;
pub use job::{BlockingJob, Handler, Job, JobContext, JobError};
pub use operations::OperationRunner;
pub use schedules::ScheduleView;
pub use spooler_core as core;
pub use spooler_core::schedule::{CatchUp, ScheduleDef, ScheduleRow};
/// The `Store` trait and its parts (`JobStore`, `QueueStore`, …): `use spooler::prelude::*` to call
/// store methods.
pub use spooler_core::store::prelude;
pub use spooler_core::{
    BulkAction, Capabilities, Clock, Inserted, JobFilter, JobId, JobList, JobRow, JobState, NewJob,
    Operation, OperationState, QueueInfo, RetryPolicy, StateCounts, Store, StoreError, SystemClock,
    WorkerInfo, format_duration, parse_duration,
};
pub use worker::{Retention, Worker, WorkerBuilder, WorkerHandle};

#[cfg(feature = "postgres")]
pub use spooler_postgres as postgres;
/// The sqlx the Postgres store uses, for the transactions jobs are enqueued in
/// ([`Enqueue::tx`]): one version, so the two cannot drift apart.
#[cfg(feature = "postgres")]
pub use spooler_postgres::sqlx;
#[cfg(feature = "sqlite")]
pub use spooler_sqlite as sqlite;
