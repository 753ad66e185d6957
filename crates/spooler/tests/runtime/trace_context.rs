//! W3C trace context across the queue (the `otel` feature): a job enqueued inside a span runs in a
//! span of the same trace, a child of the enqueuing span, checked with OpenTelemetry's in-memory
//! exporter; a job enqueued outside any trace carries none.

use crate::support::{Backend, wait_state};
use opentelemetry::trace::{SpanKind, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde::{Deserialize, Serialize};
use spooler::{Job, JobContext, JobError, JobState, Worker};
use std::time::Duration;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Serialize, Deserialize)]
struct Traced;

impl Job for Traced {
    const KIND: &'static str = "traced";
    async fn run(self, _ctx: JobContext) -> Result<(), JobError> {
        tracing::info!("running inside the job's span");
        Ok(())
    }
}

// On one thread: the subscriber below is this thread's default, and every task of the test (the
// worker's included) runs here.
#[tokio::test]
async fn a_job_enqueued_in_a_span_runs_in_a_child_span_of_the_same_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);

    let b = Backend::sqlite().await;
    let enqueuer = tracing::info_span!("enqueue_signup");
    let (id, trace_id, enqueuer_id) = async {
        let cx = tracing::Span::current().context();
        let ids = (
            cx.span().span_context().trace_id(),
            cx.span().span_context().span_id(),
        );
        let id = b.client.enqueue(Traced).await.unwrap();
        (id, ids.0, ids.1)
    }
    .instrument(enqueuer)
    .await;
    let untraced = b.client.enqueue(Traced).await.unwrap();
    let job = b.client.status(id).await.unwrap();
    let traceparent = job.meta["traceparent"]
        .as_str()
        .expect("traceparent in meta");
    assert_eq!(traceparent, format!("00-{trace_id}-{enqueuer_id}-01"));
    assert!(b.client.status(untraced).await.unwrap().meta.is_empty());

    let worker = Worker::builder(b.store.clone())
        .register::<Traced>()
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap()
        .start();
    wait_state(&b.client, id, JobState::Completed, Duration::from_secs(10)).await;
    wait_state(
        &b.client,
        untraced,
        JobState::Completed,
        Duration::from_secs(10),
    )
    .await;
    worker.shutdown().await.unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let job_spans: Vec<_> = spans.iter().filter(|s| s.name == "job").collect();
    assert_eq!(
        job_spans.len(),
        2,
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let run = job_spans
        .iter()
        .find(|s| s.span_context.trace_id() == trace_id)
        .expect("the run's span is in the enqueuer's trace");
    assert_eq!(run.parent_span_id, enqueuer_id);
    assert_eq!(run.span_kind, SpanKind::Internal);
    let other = job_spans
        .iter()
        .find(|s| s.span_context.trace_id() != trace_id)
        .expect("the untraced job's run");
    assert!(!other.parent_span_is_remote);
    b.cleanup().await;
}
