//! W3C trace context across the queue: an enqueue records the current span's `traceparent` in the
//! job's meta (with the `otel` feature), and the run's span continues it, so a job's run is part
//! of the trace that enqueued it however long it waited and whichever process ran it. Without the
//! feature a `traceparent` given with the job (e.g. the header of `POST /v1/jobs`) still travels
//! and the run's span records its `trace_id`.

use spooler_core::{Meta, TRACEPARENT, is_traceparent};

/// Records the current span's trace context as the job's `traceparent`, unless it has one (or,
/// without the `otel` feature, always leaves it as is).
pub(crate) fn stamp(meta: &mut Meta) {
    if meta.contains_key(TRACEPARENT) {
        return;
    }
    #[cfg(feature = "otel")]
    if let Some(traceparent) = otel::current() {
        meta.insert(TRACEPARENT.into(), traceparent.into());
    }
}

/// The trace id of a job's `traceparent`, for the run span's `trace_id` field.
pub(crate) fn trace_id(meta: &Meta) -> Option<&str> {
    let traceparent = meta.get(TRACEPARENT)?.as_str()?;
    is_traceparent(traceparent).then(|| &traceparent[3..35])
}

/// Makes `span` a child of the remote span `traceparent` names (with the `otel` feature; a no-op
/// without it, or when `traceparent` is malformed). For a job's run and for a request that came
/// with a `traceparent` header.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|t| is_traceparent(t)) else {
        return;
    };
    #[cfg(feature = "otel")]
    otel::set_parent(span, traceparent);
    #[cfg(not(feature = "otel"))]
    let _ = (span, traceparent);
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use std::collections::HashMap;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    /// The current span's context as a `traceparent`, when it has a valid one.
    pub(super) fn current() -> Option<String> {
        let cx = tracing::Span::current().context();
        if !cx.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut carrier);
        carrier.remove("traceparent")
    }

    pub(super) fn set_parent(span: &tracing::Span, traceparent: &str) {
        let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
        let cx = TraceContextPropagator::new().extract(&carrier);
        // Fails only when the span is disabled or has no OpenTelemetry layer: nothing to continue.
        let _ = span.set_parent(cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_id_is_read_from_a_well_formed_traceparent_only() {
        let mut meta = Meta::new();
        assert_eq!(trace_id(&meta), None);
        meta.insert(
            TRACEPARENT.into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        );
        assert_eq!(trace_id(&meta), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        meta.insert(TRACEPARENT.into(), "00-xyz".into());
        assert_eq!(trace_id(&meta), None);
    }
}
