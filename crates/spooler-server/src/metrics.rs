//! Prometheus metrics: the runtime's counters and histograms through the process-wide recorder,
//! plus queue gauges computed from the store at scrape time.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use spooler::QueueInfo;
use std::fmt::Write;
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The handle of the process-wide Prometheus recorder, installed on first call. If the host
/// application installed another recorder already, a private one is used: `/metrics` then shows
/// only the queue gauges, and the runtime's counters go to the host's recorder.
pub fn prometheus_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("spooler_job_run_seconds".into()),
                &[
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
                ],
            );
            let builder = match builder {
                Ok(b) => b,
                Err(_) => PrometheusBuilder::new(),
            };
            match builder.install_recorder() {
                Ok(handle) => handle,
                Err(e) => {
                    tracing::warn!(error = %e, "another metrics recorder is installed: /metrics shows queue gauges only");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// The exposition text: the recorder's metrics, then `spooler_queue_jobs{queue,state}` and
/// `spooler_queue_oldest_available_age_seconds{queue}` for `queues`.
pub(crate) fn render(
    handle: Option<&PrometheusHandle>,
    queues: &[QueueInfo],
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let mut out = handle.map(|h| h.render()).unwrap_or_default();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("# HELP spooler_queue_jobs Jobs in the queue, per state.\n");
    out.push_str("# TYPE spooler_queue_jobs gauge\n");
    for q in queues {
        for state in spooler::JobState::ALL {
            let _ = writeln!(
                out,
                "spooler_queue_jobs{{queue=\"{}\",state=\"{}\"}} {}",
                escape(&q.name),
                state.as_str(),
                q.counts.get(state)
            );
        }
    }
    out.push_str("# HELP spooler_queue_oldest_available_age_seconds How long the oldest available job has waited.\n");
    out.push_str("# TYPE spooler_queue_oldest_available_age_seconds gauge\n");
    for q in queues {
        let age = oldest_age_seconds(q, now).unwrap_or(0.0);
        let _ = writeln!(
            out,
            "spooler_queue_oldest_available_age_seconds{{queue=\"{}\"}} {age}",
            escape(&q.name)
        );
    }
    out
}

/// Seconds the oldest available job of `q` has waited, if it has one.
pub(crate) fn oldest_age_seconds(q: &QueueInfo, now: chrono::DateTime<chrono::Utc>) -> Option<f64> {
    q.oldest_available_at
        .map(|at| ((now - at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6).max(0.0))
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
