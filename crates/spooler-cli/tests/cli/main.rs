//! The `spooler` binary's tests in one test binary, a module per area: the API, the CLI, checks,
//! jobs and kinds through a real server, shutdown, operations by filter, and real worker
//! processes on SQLite and PostgreSQL (killed, restarted, racing). One binary links once.

mod server_support;

mod chaos;
mod dashboard_browser;
mod deploy;
mod postgres_processes;
mod postgres_tls;
mod processes;
mod server_api;
mod server_bulk;
mod server_check;
mod server_cli;
mod server_failover;
mod server_hardening;
mod server_jobs;
mod server_kinds;
mod server_queue_control;
mod server_reload;
mod server_schedules;
mod server_shutdown;
mod tracing_otlp;
mod worker_processes;
