//! spooler-server: the job server's HTTP API, dashboard, metrics, built-in job kinds and config file.
//!
//! This is the only spooler crate that knows HTTP and the wire JSON. [`router`] returns an axum
//! [`Router`](axum::Router) that can be served on its own (that is what `spooler serve` does) or
//! nested in a user's own axum application:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let store = spooler::connect("sqlite://jobs.db").await?;
//! let state = spooler_server::AppState::new(store, spooler_server::ServerOptions::default());
//! let app = axum::Router::new().nest("/jobs", spooler_server::router(state));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7700").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! The pieces:
//! - [`router`] and [`AppState`]: the HTTP API (`/v1/...`), `/healthz`, `/metrics`, `/openapi.json`
//!   and the dashboard at `/`.
//! - [`kinds`]: the built-in job kinds (`http`, `tcp`, `command`, `file`, `noop`, `sleep`) as
//!   [`spooler::Handler`]s.
//! - [`config`]: the TOML config file; every error names the file, the line and the key.
//! - [`run`]: wiring used by the `spooler` binary: a worker for the built-in kinds, serving with
//!   graceful shutdown; [`reload`]: the config read again on `SIGHUP`.
//! - [`wire`]: the JSON shape of a job and the parsing of enqueue requests.
//! - [`bulk`]: operations by filter (`POST /v1/jobs/bulk`, `/v1/operations/{id}`).
//!
//! | feature    | default | what it adds |
//! |------------|---------|--------------|
//! | `sqlite`   | yes     | the SQLite store (`spooler/sqlite`) |
//! | `postgres` | no      | the PostgreSQL store (`spooler/postgres`) |
//!
//! A user who nests the router pulls only the backends they enable.

mod api;
mod auth;
pub mod bulk;
pub mod config;
mod counts;
mod dashboard;
mod error;
mod extract;
pub mod kinds;
mod metrics;
mod openapi;
pub mod reload;
pub mod replay;
pub mod run;
mod state;
pub mod wire;

pub use api::{route_table, router, worker_router};
pub use error::ApiError;
pub use metrics::prometheus_handle;
pub use openapi::OPENAPI_JSON;
pub use state::{AppState, ServerOptions};
