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
//! - A span's fields are kept as they are given ([`SpanFields`]: the text,
//!   no escaping) and turned into JSON only when a line inside the span is
//!   written. `tracing-subscriber`'s JSON fields re-parse and re-serialise a
//!   span's whole object on every `record`: with five records per request
//!   that was half of what tracing cost ingest, for lines mostly never
//!   written (the accept path logs at DEBUG).

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

/// Whether spans are exported (an OTLP endpoint was set when [`init`] ran):
/// what only the exporter reads (`otel.name`) need not be built otherwise.
pub fn exporting() -> bool {
    PROVIDER.get().is_some()
}

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
        LogFormat::Json => json_logs(std::io::stderr).with_filter(log_filter).boxed(),
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

/// The JSON log layer `init` installs (unfiltered), writing to `writer`:
/// one [`JsonLine`] per event, span fields kept as [`SpanFields`].
pub fn json_logs<S, W>(writer: W) -> fmt::Layer<S, SpanFields, JsonLine, W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> fmt::MakeWriter<'w> + 'static,
{
    fmt::layer().fmt_fields(SpanFields).event_format(JsonLine).with_writer(writer)
}

/// Separates a field's name from its value in [`SpanFields`]' text.
const NAME_END: char = '\u{1f}';
/// Ends a field in [`SpanFields`]' text.
const FIELD_END: char = '\u{1e}';
/// Marks a value kept as JSON (a number or a boolean), not as text.
const RAW: char = '=';
/// Marks a value kept as text.
const TEXT: char = ':';

/// How the log layer keeps a span's fields until a line is written: each
/// field appended as `name US kind value RS` (the ASCII unit and record
/// separators; a separator inside a value becomes U+FFFD), a later `record`
/// of the same name appended after it (the last one wins when read). No
/// JSON is built and nothing is parsed until [`JsonLine`] writes a line.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpanFields;

impl<'w> FormatFields<'w> for SpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut keep = KeepFields { out: writer, result: Ok(()) };
        fields.record(&mut keep);
        keep.result
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        // Appended as is: the default would add a space between the records.
        let mut keep = KeepFields { out: current.as_writer(), result: Ok(()) };
        fields.record(&mut keep);
        keep.result
    }
}

/// Appends fields in [`SpanFields`]' form.
struct KeepFields<'w> {
    out: Writer<'w>,
    result: std::fmt::Result,
}

/// Writes text with the two separators replaced.
struct NoSeparators<'a, 'w>(&'a mut Writer<'w>);

impl std::fmt::Write for NoSeparators<'_, '_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        if !text.contains([NAME_END, FIELD_END]) {
            return self.0.write_str(text);
        }
        for c in text.chars() {
            self.0.write_char(if c == NAME_END || c == FIELD_END { '\u{fffd}' } else { c })?;
        }
        Ok(())
    }
}

impl KeepFields<'_> {
    fn keep(&mut self, field: &tracing::field::Field, kind: char, value: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            self.out.write_str(field.name())?;
            self.out.write_char(NAME_END)?;
            self.out.write_char(kind)?;
            NoSeparators(&mut self.out).write_fmt(value)?;
            self.out.write_char(FIELD_END)
        })();
    }
}

impl tracing::field::Visit for KeepFields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.keep(field, TEXT, format_args!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.keep(field, TEXT, format_args!("{value}"));
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.keep(field, RAW, format_args!("{value}"));
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.keep(field, RAW, format_args!("{value}"));
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        // NaN and the infinities are no JSON numbers: kept as text.
        let kind = if value.is_finite() { RAW } else { TEXT };
        self.keep(field, kind, format_args!("{value}"));
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.keep(field, RAW, format_args!("{value}"));
    }
    fn record_error(&mut self, field: &tracing::field::Field, value: &(dyn std::error::Error + 'static)) {
        self.keep(field, TEXT, format_args!("{}", crate::error::ErrorChain(value)));
    }
}

/// The fields [`SpanFields`] kept, as JSON values (a later one of a name wins).
fn kept_fields(text: &str, into: &mut Map<String, Value>) {
    for field in text.split(FIELD_END) {
        let Some((name, value)) = field.split_once(NAME_END) else { continue };
        let value = match value.strip_prefix(RAW) {
            Some(raw) => serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string())),
            None => Value::String(value.strip_prefix(TEXT).unwrap_or(value).to_string()),
        };
        into.insert(name.to_string(), value);
    }
}

/// One JSON object per line: `timestamp`, `level`, `target`, the span's
/// name, `correlation_id` and `trace_id` (from the innermost span that has
/// them), the event's fields (with `message`), and the fields of its spans
/// under `span`.
pub struct JsonLine;

impl<S> FormatEvent<S, SpanFields> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, SpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
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
                let Some(fields) = extensions.get::<FormattedFields<SpanFields>>() else { continue };
                kept_fields(fields.as_str(), &mut span_fields);
            }
        }
        // `otel.name`, `otel.kind`: for the exporter, not for readers.
        span_fields.retain(|key, _| !key.starts_with("otel."));
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
        tracing_subscriber::registry().with(json_logs(move || out.clone()).with_filter(EnvFilter::new("info"))).with(
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
        tracing_subscriber::registry().with(json_logs(move || out.clone()).with_filter(EnvFilter::new("info")))
    }

    #[test]
    fn span_fields_recorded_later_are_on_the_line_with_their_json_types() {
        let out = Captured::default();
        tracing::subscriber::with_default(subscriber_without_export(out.clone()), || {
            let span = tracing::info_span!(
                "request",
                path = %"/api/events/e1/entries",
                correlation_id = "corr-9",
                entry_id = tracing::field::Empty,
                status = tracing::field::Empty,
                fast = tracing::field::Empty,
                elapsed_ms = tracing::field::Empty,
            );
            span.record("entry_id", "first");
            span.record("entry_id", "second");
            span.record("status", 202_u16);
            span.record("fast", true);
            span.record("elapsed_ms", 1.5_f64);
            span.in_scope(|| tracing::info!("answered"));
        });
        let lines = out.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let spans = &lines[0]["spans"];
        assert_eq!(lines[0]["correlation_id"], "corr-9");
        assert_eq!(spans["path"], "/api/events/e1/entries");
        assert_eq!(spans["entry_id"], "second", "the last record wins");
        assert_eq!(spans["status"], 202);
        assert_eq!(spans["fast"], true);
        assert_eq!(spans["elapsed_ms"], 1.5);
    }

    #[test]
    fn a_separator_inside_a_value_cannot_make_up_a_field() {
        let out = Captured::default();
        tracing::subscriber::with_default(subscriber_without_export(out.clone()), || {
            let forged = "x\u{1e}correlation_id\u{1f}:forged\u{1e}";
            let span = tracing::info_span!("request", correlation_id = "real", user_agent = forged, nan = f64::NAN);
            span.in_scope(|| tracing::info!("answered"));
        });
        let line = &out.lines()[0];
        assert_eq!(line["correlation_id"], "real");
        assert_eq!(line["spans"]["user_agent"], "x\u{fffd}correlation_id\u{fffd}:forged\u{fffd}");
        assert_eq!(line["spans"]["nan"], "NaN");
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
