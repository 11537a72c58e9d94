//! Logging and tracing, shared by every binary.
//!
//! Logs go to stderr so a CLI's stdout stays data.
//! - Level: `RUST_LOG` (a filter such as `info,aida_worker=debug`), else
//!   the seed's `LOG_LEVEL` (`debug`, `info`, ...), else `info`.
//! - Format: `AIDA_LOG_FORMAT=json` (the images' default) writes one JSON
//!   object per line for log shippers: timestamp, level, target, message,
//!   and the fields of the spans it is in: the `trace_id` of the request or
//!   task, and the task and subtask ids where a line is about one.
//!   Otherwise human-readable, with colours only on a terminal.
//!
//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set (an OTLP/gRPC collector,
//! `http://host:4317`), spans are exported in batches, the service named
//! `aida-<service>` (`OTEL_SERVICE_NAME` overrides). W3C trace context
//! (`traceparent`) travels in gRPC metadata, in the runs handed to workers
//! and in the events published on Redis, so one task is one trace from the
//! gateway to the aggregator.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The W3C trace context headers.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Sets up logging, and tracing when a collector is configured. Call it
/// inside the Tokio runtime (the OTLP exporter needs it); `service` is the
/// short name (`gateway`). A process running several services (`aida dev`,
/// tests) may call it more than once: the first call wins.
pub fn init(service: &str) {
    let filter = EnvFilter::try_from_default_env()
        .ok()
        .or_else(|| {
            std::env::var("LOG_LEVEL")
                .ok()
                .filter(|l| !l.trim().is_empty())
                .and_then(|l| EnvFilter::try_new(l.trim().to_lowercase()).ok())
        })
        .unwrap_or_else(|| EnvFilter::new("info"));
    let json = std::env::var("AIDA_LOG_FORMAT").is_ok_and(|v| v == "json");
    let fmt: BoxedLayer = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed()
    };
    let (otel, failure) = match exporter(service) {
        Ok(Some(tracer)) => (Some(tracer), None),
        Ok(None) => (None, None),
        Err(e) => (None, Some(e)),
    };
    let mut layers: Vec<BoxedLayer> = vec![fmt.with_filter(filter).boxed()];
    layers.extend(otel);
    let installed = tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_ok();
    if let Some(e) = failure {
        tracing::error!(error = %e, "cannot export traces (OTEL_EXPORTER_OTLP_ENDPOINT)");
    } else if installed && PROVIDER.get().is_some() {
        tracing::info!(
            endpoint = %std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default(),
            "exporting traces over OTLP"
        );
    }
}

/// The OpenTelemetry layer, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
fn exporter(service: &str) -> anyhow::Result<Option<BoxedLayer>> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default();
    if endpoint.trim().is_empty() || PROVIDER.get().is_some() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| format!("aida-{service}"));
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(name)
                .build(),
        )
        .build();
    let tracer = provider.tracer("aida");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let _ = PROVIDER.set(provider);
    // Only AIDA's own spans, at info and above: not every HTTP/2 frame.
    let filter = EnvFilter::new(
        "warn,aida=info,aida_core=info,aida_gateway=info,aida_orchestrator=info,aida_worker=info,aida_aggregator=info,tower_http=info",
    );
    Ok(Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter)
            .boxed(),
    ))
}

/// Sends the spans not yet exported; call before the process exits.
pub async fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let provider = provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

/// The current span's W3C `traceparent` (and `tracestate`), to carry to
/// another service; empty when tracing is off.
pub fn current_context() -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    // Untraced, there is nothing to carry: every gRPC call and event batch
    // asks, so skip the propagator.
    if PROVIDER.get().is_none() {
        return carrier;
    }
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier
}

/// The current span's `traceparent`, if it is traced.
pub fn current_traceparent() -> Option<String> {
    current_context().remove("traceparent")
}

/// Makes `span` a child of the remote context `traceparent` names (ignored
/// when absent or malformed), and records its trace id in its `trace_id`
/// field for the logs.
pub fn adopt(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(traceparent) = traceparent.filter(|t| !t.is_empty()) {
        let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        let cx = TraceContextPropagator::new().extract(&carrier);
        let _ = span.set_parent(cx);
    }
    record_trace_id(span);
}

/// Like [`adopt`], from request headers (HTTP or gRPC).
pub fn adopt_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let carrier: HashMap<String, String> = TRACE_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect();
    if !carrier.is_empty() {
        let cx = TraceContextPropagator::new().extract(&carrier);
        let _ = span.set_parent(cx);
    }
    record_trace_id(span);
}

/// Writes the span's trace id into its `trace_id` field (declared
/// `tracing::field::Empty`), when it is traced.
pub fn record_trace_id(span: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt;
    if PROVIDER.get().is_none() {
        return;
    }
    let cx = span.context();
    let span_context = cx.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", span_context.trace_id().to_string());
    }
}

/// Adds the current span's trace context to outgoing gRPC metadata.
pub fn inject_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    for (key, value) in current_context() {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            metadata.insert(key, value);
        }
    }
}
