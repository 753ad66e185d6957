//! Logs to stderr: pretty on a terminal, JSON lines otherwise (or when asked), filtered by
//! `RUST_LOG` or the config's `log_level`, written by a thread of their own; and, with the `otel`
//! feature, spans exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.

use clap::ValueEnum;
use std::io::IsTerminal;
use std::sync::Mutex;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Pretty on a terminal, JSON lines otherwise.
    Auto,
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Reads the config file's `log_format` value.
    pub fn from_config(value: &str) -> Option<Self> {
        Self::from_str(value, true).ok()
    }
}

/// The log writer thread's guard: dropping it writes the lines still queued.
static WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Installs the global subscriber. `level` is the default filter when `RUST_LOG` is unset.
///
/// A line is formatted where it is logged and written to stderr by a thread of their own, which
/// writes whatever has queued in one call and waits for nothing: the server logs a line per
/// request, and writing each with its own system call on the request's thread cost a sixth of
/// the HTTP API's throughput (`docs/performance.md`). The queue is not lossy: a burst of lines
/// waits for room rather than being dropped.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let (stderr, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("spooler-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let fmt = tracing_subscriber::fmt::layer().with_writer(stderr);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = if json {
        Box::new(
            fmt.json()
                .flatten_event(true)
                // A job's run (and a request) is a span: its fields go on every line logged in it.
                .with_current_span(true)
                .with_span_list(false),
        )
    } else {
        Box::new(fmt.with_target(false))
    };
    let registry = tracing_subscriber::registry().with(fmt).with(filter);
    #[cfg(feature = "otel")]
    let registry = registry.with(otlp::layer());
    // A second init (only possible in tests) keeps the first subscriber.
    if registry.try_init().is_ok() {
        *WRITER.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    }
}

/// Writes the log lines still queued, and sends the spans not yet exported (at most a few
/// seconds); call before the process exits.
pub fn shutdown() {
    drop(WRITER.lock().unwrap_or_else(|e| e.into_inner()).take());
    #[cfg(feature = "otel")]
    otlp::shutdown();
}

#[cfg(feature = "otel")]
mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use std::sync::OnceLock;
    use tracing_subscriber::registry::LookupSpan;

    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

    /// The OTLP layer, when an endpoint is configured: the standard `OTEL_EXPORTER_OTLP_*`
    /// variables (endpoint, headers, timeout; `OTEL_EXPORTER_OTLP_PROTOCOL` `http/protobuf`, the
    /// default, or `http/json`), `OTEL_SERVICE_NAME` (default `spooler`) and the batch
    /// processor's `OTEL_BSP_*`.
    pub(super) fn layer<S>()
    -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let configured = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|e| !e.is_empty()));
        if !configured {
            return None;
        }
        let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            Ok("http/json") => Protocol::HttpJson,
            _ => Protocol::HttpBinary,
        };
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .build()
        {
            Ok(exporter) => exporter,
            Err(e) => {
                eprintln!("warning: spans are not exported: the OTLP exporter cannot start: {e}");
                return None;
            }
        };
        let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "spooler".into());
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build();
        let tracer = provider.tracer("spooler");
        let _ = PROVIDER.set(provider);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    }

    pub(super) fn shutdown() {
        if let Some(provider) = PROVIDER.get()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: not every span was exported: {e}");
        }
    }
}
