//! Prometheus metrics: the runtime's counters and histograms through the process-wide recorder,
//! plus queue gauges computed from the store at scrape time.
//!
//! Label values come from clients (queue and kind names), so every label set is bounded: past
//! [`LABEL_VALUES_CAP`] distinct values of one label, further values are counted as `other`, and
//! the queue gauges show that many queues and sum the rest under `queue="other"`. `/metrics`
//! is open to anyone who reaches the listener; its size must not grow with what clients send.

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use spooler::{QueueInfo, StateCounts};
use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::{OnceLock, RwLock};

/// How many distinct values one label keeps before further ones are counted as `other`.
pub const LABEL_VALUES_CAP: usize = 100;

/// The label value that stands for every value past the cap.
pub const OTHER: &str = "other";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The handle of the process-wide Prometheus recorder, installed on first call. If the host
/// application installed another recorder already, a private one is used: `/metrics` then shows
/// only the queue gauges, and the runtime's counters go to the host's recorder.
pub fn prometheus_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            // Run and wait times span a millisecond to minutes.
            let buckets = [
                0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
            ];
            let histogram = |name: &str| {
                metrics_exporter_prometheus::Matcher::Full(name.to_string())
            };
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(histogram(spooler::metrics::JOB_RUN_SECONDS), &buckets)
                .and_then(|b| {
                    b.set_buckets_for_metric(histogram(spooler::metrics::JOB_WAIT_SECONDS), &buckets)
                });
            let builder = match builder {
                Ok(b) => b,
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = CappedRecorder::new(builder.build_recorder(), LABEL_VALUES_CAP);
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    spooler::metrics::describe();
                    handle
                }
                Err(e) => {
                    tracing::warn!(error = %e, "another metrics recorder is installed: /metrics shows queue gauges only");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// A Prometheus recorder whose label sets are bounded: each label keeps the first `cap` distinct
/// values it sees; any further value is recorded as [`OTHER`].
pub(crate) struct CappedRecorder {
    inner: PrometheusRecorder,
    cap: usize,
    seen: RwLock<HashMap<String, HashSet<String>>>,
}

impl CappedRecorder {
    pub(crate) fn new(inner: PrometheusRecorder, cap: usize) -> Self {
        Self {
            inner,
            cap,
            seen: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn handle(&self) -> PrometheusHandle {
        self.inner.handle()
    }

    /// True when `value` of label `name` is kept as is (seen before, or admitted now).
    fn admits(&self, name: &str, value: &str) -> bool {
        if value == OTHER {
            return true;
        }
        let known = |seen: &HashMap<String, HashSet<String>>| {
            seen.get(name)
                .map(|values| (values.contains(value), values.len()))
        };
        let read = self.seen.read().unwrap_or_else(|e| e.into_inner());
        match known(&read) {
            Some((true, _)) => return true,
            Some((false, n)) if n >= self.cap => return false,
            _ => {}
        }
        drop(read);
        let mut write = self.seen.write().unwrap_or_else(|e| e.into_inner());
        let values = write.entry(name.to_string()).or_default();
        if values.contains(value) {
            return true;
        }
        if values.len() >= self.cap {
            return false;
        }
        values.insert(value.to_string());
        true
    }

    /// `key` with every label value past the cap replaced by [`OTHER`], or `None` if it is kept.
    fn capped(&self, key: &Key) -> Option<Key> {
        if key.labels().all(|l| self.admits(l.key(), l.value())) {
            return None;
        }
        let labels: Vec<Label> = key
            .labels()
            .map(|l| {
                if self.admits(l.key(), l.value()) {
                    l.clone()
                } else {
                    Label::new(l.key().to_string(), OTHER)
                }
            })
            .collect();
        Some(Key::from_parts(key.name_shared(), labels))
    }
}

impl Recorder for CappedRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description)
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description)
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description)
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        match self.capped(key) {
            Some(k) => self.inner.register_counter(&k, metadata),
            None => self.inner.register_counter(key, metadata),
        }
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        match self.capped(key) {
            Some(k) => self.inner.register_gauge(&k, metadata),
            None => self.inner.register_gauge(key, metadata),
        }
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        match self.capped(key) {
            Some(k) => self.inner.register_histogram(&k, metadata),
            None => self.inner.register_histogram(key, metadata),
        }
    }
}

/// At most [`LABEL_VALUES_CAP`] queues as they are (in the order given), and one more named
/// [`OTHER`] that sums the counts of the rest and keeps their oldest available job.
fn capped_queues(queues: &[QueueInfo]) -> Vec<QueueInfo> {
    if queues.len() <= LABEL_VALUES_CAP {
        return queues.to_vec();
    }
    let (kept, rest) = queues.split_at(LABEL_VALUES_CAP);
    let mut other = QueueInfo {
        name: OTHER.to_string(),
        paused: false,
        counts: StateCounts::default(),
        oldest_available_at: None,
    };
    for q in rest {
        for state in spooler::JobState::ALL {
            other.counts.add(state, q.counts.get(state));
        }
        other.oldest_available_at = match (other.oldest_available_at, q.oldest_available_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let mut out = kept.to_vec();
    out.push(other);
    out
}

/// The exposition text: the recorder's metrics, then `spooler_queue_jobs{queue,state}` and
/// `spooler_queue_oldest_available_age_seconds{queue}` for `queues` (capped, see the module), and
/// `spooler_workers_live`, the workers that sent a heartbeat within the last minute.
pub(crate) fn render(
    handle: Option<&PrometheusHandle>,
    queues: &[QueueInfo],
    live_workers: usize,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let queues = &capped_queues(queues)[..];
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
    out.push_str("# HELP spooler_workers_live Workers that sent a heartbeat to the store within the last minute.\n");
    out.push_str("# TYPE spooler_workers_live gauge\n");
    let _ = writeln!(out, "spooler_workers_live {live_workers}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_past_the_cap_are_counted_as_other() {
        let recorder = CappedRecorder::new(PrometheusBuilder::new().build_recorder(), 100);
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for i in 0..3000 {
                metrics::counter!("spooler_jobs_enqueued_total", "queue" => format!("q{i}"), "kind" => format!("k{i}"))
                    .increment(1);
            }
            metrics::counter!("spooler_jobs_enqueued_total", "queue" => "q7", "kind" => "k7")
                .increment(1);
        });
        let text = handle.render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("spooler_jobs_enqueued_total{"))
            .collect();
        assert_eq!(series.len(), 101, "100 kept and one other: {}", text.len());
        assert!(
            series
                .iter()
                .any(|l| l.contains(r#"queue="other""#) && l.ends_with(" 2900")),
            "{series:?}"
        );
        assert!(
            series
                .iter()
                .any(|l| l.contains(r#"queue="q7""#) && l.ends_with(" 2")),
            "a kept value keeps counting: {series:?}"
        );
    }

    #[test]
    fn queue_gauges_show_at_most_the_cap_and_sum_the_rest() {
        let now = chrono::Utc::now();
        let queues: Vec<QueueInfo> = (0..3000)
            .map(|i| {
                let mut counts = StateCounts::default();
                counts.add(spooler::JobState::Available, 1);
                QueueInfo {
                    name: format!("q{i:04}"),
                    paused: false,
                    counts,
                    oldest_available_at: Some(now - chrono::TimeDelta::seconds(i)),
                }
            })
            .collect();
        let text = render(None, &queues, 0, now);
        assert!(
            text.len() < 60_000,
            "{} bytes (3,000 queues uncapped: over 1 MB)",
            text.len()
        );
        assert!(
            text.contains(r#"spooler_queue_jobs{queue="other",state="available"} 2900"#),
            "{text}"
        );
        assert!(
            text.contains(r#"spooler_queue_oldest_available_age_seconds{queue="other"} 2999"#),
            "{text}"
        );
    }
}
