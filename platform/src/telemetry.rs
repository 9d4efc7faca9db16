//! Tracing, set up once per process: log lines (pretty or JSON) and the
//! spans of every stage, exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set.
//!
//! - Logs go to stderr (stdout stays free for command output), filtered by
//!   `telemetry.log_filter` (`RUST_LOG` wins). A JSON line carries the
//!   `correlation_id` and `trace_id` of the request or record it was written
//!   in at its top level, beside the event's own fields (see [`JsonLine`]).
//! - Spans: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the OpenTelemetry layer
//!   gives every request and record span its own trace and span id, which
//!   `traceparent` carries to the next hop (`platform::trace_context`), and
//!   exports them (OTLP over HTTP/protobuf, in batches, e.g.
//!   `http://127.0.0.1:4318` for Jaeger or an OpenTelemetry Collector),
//!   filtered by `telemetry.trace_filter`, independently of the log filter.
//!   Unset, the layer is not installed: it cost ~5 % of ingest's CPU per
//!   request for ids nobody collects. Traces still flow: a request
//!   without `traceparent` gets a new root, and every record carries the
//!   trace it was produced in, so log lines keep their `trace_id` end to end.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use serde_json::{Map, Value};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{self, FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

use crate::settings::{LogFormat, TelemetrySettings};

/// The OTLP endpoint (base URL; `/v1/traces` is appended). Unset: no export.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Overrides the service name the spans are exported under.
pub const SERVICE_NAME_ENV: &str = "OTEL_SERVICE_NAME";
/// Every `OTEL_*` variable firstcome reads (the compose test checks the
/// compose file sets no other).
pub const OTEL_ENV: &[&str] = &[OTLP_ENDPOINT_ENV, SERVICE_NAME_ENV];
/// The span fields a JSON line lifts to its top level from its spans.
pub const LIFTED_FIELDS: &[&str] = &["correlation_id", "trace_id"];

/// The consumer loop's span around one batch (`platform::kafka::consumer`): logged, not exported.
const BATCH_SPAN: &str = "batch";

/// How long spans wait in the batch before they are exported.
const EXPORT_DELAY: Duration = Duration::from_millis(500);

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber for `service`, exporting spans to
/// `OTEL_EXPORTER_OTLP_ENDPOINT` when it is set (under `OTEL_SERVICE_NAME`,
/// else `service`). A second call (tests that start several services in one
/// process) keeps the first one.
pub fn init(service: &'static str, settings: &TelemetrySettings) {
    let endpoint = std::env::var(OTLP_ENDPOINT_ENV).ok().filter(|e| !e.trim().is_empty());
    let service_name = std::env::var(SERVICE_NAME_ENV).unwrap_or_else(|_| service.to_string());
    init_exporting(service, settings, &service_name, endpoint.as_deref());
}

/// [`init`] with the OTLP endpoint and the exported service name given
/// (tests, which must not change the process' environment while threads run).
pub fn init_exporting(service: &'static str, settings: &TelemetrySettings, service_name: &str, endpoint: Option<&str>) {
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log_filter));
    let logs = match settings.log_format {
        LogFormat::Json => {
            fmt::layer().json().event_format(JsonLine).with_writer(std::io::stderr).with_filter(log_filter).boxed()
        }
        LogFormat::Pretty => {
            fmt::layer().with_writer(std::io::stderr).with_target(false).with_filter(log_filter).boxed()
        }
    };
    let exporting = endpoint.map(|endpoint| tracer_provider(service_name, endpoint));
    let (provider, export_error) = match exporting {
        Some(Ok(provider)) => (Some(provider), None),
        Some(Err(error)) => (None, Some(error)),
        None => (None, None),
    };
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_tracked_inactivity(false)
            .with_filter(EnvFilter::new(&settings.trace_filter))
            // A consumer batch holds records of many entries, each continuing
            // its own trace: exported, it would be a one-span trace per batch.
            .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
                !(metadata.is_span() && metadata.name() == BATCH_SPAN)
            }))
    });
    let result = tracing_subscriber::registry().with(logs).with(spans).try_init();
    if result.is_ok() {
        if let Some(provider) = provider {
            let _ = PROVIDER.set(provider);
        }
        tracing::info!(service, otlp_endpoint = endpoint.unwrap_or("none"), "telemetry initialised");
        if let Some(error) = export_error {
            tracing::error!(%error, "the OTLP exporter could not be built; spans are not exported");
        }
    }
}

/// Exports the spans still in the batch and stops the exporter; call once
/// at the end of `main`. Without an endpoint it does nothing.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(error) = provider.shutdown() {
            eprintln!("telemetry: flushing spans failed: {error}");
        }
    }
}

/// Exports finished spans: once in a while, without waiting for the batch.
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
    }
}

/// A provider that exports to `endpoint` over OTLP/HTTP, in batches.
fn tracer_provider(service: &str, endpoint: &str) -> Result<SdkTracerProvider, String> {
    let resource = Resource::builder().with_service_name(service.to_string()).build();
    let traces_url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url)
        .build()
        .map_err(|error| error.to_string())?;
    let batch = BatchConfigBuilder::default().with_scheduled_delay(EXPORT_DELAY).build();
    let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
    Ok(SdkTracerProvider::builder().with_resource(resource).with_span_processor(processor).build())
}

/// One JSON object per line: `timestamp`, `level`, `target`, the span's
/// name, `correlation_id` and `trace_id` (from the innermost span that has
/// them), the event's fields (with `message`), and the fields of its spans
/// under `span`.
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::String(metadata.level().to_string()));
        line.insert("target".into(), Value::String(metadata.target().to_string()));

        // The spans' fields, outermost first so inner spans win.
        let mut span_fields = Map::new();
        let mut span_name = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                span_name = Some(span.name());
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else { continue };
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields.as_str()) {
                    // `otel.name`, `otel.kind`: for the exporter, not for readers.
                    span_fields.extend(map.into_iter().filter(|(key, _)| !key.starts_with("otel.")));
                }
            }
        }
        if let Some(name) = span_name {
            line.insert("span".into(), Value::String(name.to_string()));
        }
        for key in LIFTED_FIELDS {
            if let Some(value) = span_fields.remove(*key) {
                line.insert((*key).into(), value);
            }
        }

        let mut fields = FieldsVisitor(Map::new());
        event.record(&mut fields);
        for key in LIFTED_FIELDS {
            if let Some(value) = fields.0.remove(*key) {
                line.insert((*key).into(), value);
            }
        }
        line.extend(fields.0);
        if !span_fields.is_empty() {
            line.insert("spans".into(), Value::Object(span_fields));
        }
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Collects an event's fields as JSON values.
struct FieldsVisitor(Map<String, Value>);

impl tracing::field::Visit for FieldsVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &tracing::field::Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), Value::String(crate::error::ErrorChain(value).to_string()));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::kafka::RecordContext;
    use crate::trace_context::{continue_trace, TraceParent};

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<Value> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
        }
    }

    /// The subscriber `init` installs with an endpoint (JSON logs, spans
    /// with ids; a provider without an exporter here), for the current thread only.
    fn subscriber(out: Captured) -> impl Subscriber + Send + Sync {
        let provider = SdkTracerProvider::builder().build();
        tracing_subscriber::registry()
            .with(
                fmt::layer()
                    .json()
                    .event_format(JsonLine)
                    .with_writer(move || out.clone())
                    .with_filter(EnvFilter::new("info")),
            )
            .with(
                tracing_opentelemetry::layer().with_tracer(provider.tracer("test")).with_filter(EnvFilter::new("info")),
            )
    }

    #[test]
    fn every_line_in_a_record_span_carries_the_correlation_and_trace_ids() {
        let out = Captured::default();
        let incoming = TraceParent::new_root();
        tracing::subscriber::with_default(subscriber(out.clone()), || {
            let span = tracing::info_span!(
                "record",
                correlation_id = "corr-7",
                trace_id = tracing::field::Empty,
                entry_id = tracing::field::Empty
            );
            continue_trace(&span, Some(&incoming));
            span.in_scope(|| {
                tracing::info!(outcome = "WON", "decided");
                let inner = tracing::info_span!("stock decide");
                inner.in_scope(|| tracing::warn!("inside a span of its own"));
            });
        });
        let lines = out.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        for line in &lines {
            assert_eq!(line["correlation_id"], "corr-7", "{line}");
            assert_eq!(line["trace_id"], incoming.trace_id_hex().as_str(), "{line}");
        }
        assert_eq!(lines[0]["outcome"], "WON");
        assert_eq!(lines[0]["message"], "decided");
        assert_eq!(lines[1]["span"], "stock decide");
    }

    /// The subscriber `init` installs without an endpoint: JSON logs only.
    fn subscriber_without_export(out: Captured) -> impl Subscriber + Send + Sync {
        tracing_subscriber::registry().with(
            fmt::layer()
                .json()
                .event_format(JsonLine)
                .with_writer(move || out.clone())
                .with_filter(EnvFilter::new("info")),
        )
    }

    #[test]
    fn without_an_endpoint_lines_still_carry_the_incoming_trace() {
        let out = Captured::default();
        let incoming = TraceParent::new_root();
        tracing::subscriber::with_default(subscriber_without_export(out.clone()), || {
            let span = tracing::info_span!("record", correlation_id = "corr-8", trace_id = tracing::field::Empty);
            assert_eq!(continue_trace(&span, Some(&incoming)), None, "no span ids without the layer");
            span.in_scope(|| {
                tracing::info!("decided");
                // A record produced here continues the incoming trace.
                let record = RecordContext::new_root("corr-8", Some(incoming));
                assert_eq!(record.trace_id(), incoming.trace_id_hex());
            });
        });
        let lines = out.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["trace_id"], incoming.trace_id_hex().as_str());
        assert_eq!(lines[0]["correlation_id"], "corr-8");
    }

    #[test]
    fn a_span_continues_the_incoming_trace_and_records_leave_from_the_current_span() {
        let incoming = TraceParent::new_root();
        tracing::subscriber::with_default(subscriber(Captured::default()), || {
            let span = tracing::info_span!("request", trace_id = tracing::field::Empty);
            let own = continue_trace(&span, Some(&incoming)).expect("spans have ids");
            assert_eq!(own.trace_id, incoming.trace_id);
            assert_ne!(own.span_id, incoming.span_id);
            span.in_scope(|| {
                // The record continues the request's span, not a made-up hop.
                let record = RecordContext::new_root("corr", Some(incoming));
                assert_eq!(record.trace(), Some(own));
                // A record of another trace, caused in this span: keeps its own trace.
                let foreign = TraceParent::new_root();
                let other = RecordContext::new_root("corr", Some(foreign)).caused();
                assert_eq!(other.trace_id(), foreign.trace_id_hex());
            });
        });
    }

    #[test]
    fn without_the_layer_records_still_carry_the_trace() {
        let incoming = TraceParent::new_root();
        let span = tracing::info_span!("request", trace_id = tracing::field::Empty);
        assert_eq!(continue_trace(&span, Some(&incoming)), None);
        let record = RecordContext::new_root("corr", Some(incoming));
        assert_eq!(record.trace_id(), incoming.trace_id_hex());
    }
}
