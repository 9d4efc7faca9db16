//! W3C trace context (`traceparent`) carried on every record and request, so
//! one entry can be followed from the HTTP request through every consumer.
//!
//! Two ways a trace moves, one format:
//! - Spans exported (`platform::telemetry` installed the OpenTelemetry layer,
//!   with or without an OTLP endpoint): a span made where work arrives (the
//!   HTTP request, a consumed record, a provider request) is made the child
//!   of the incoming `traceparent` with [`continue_trace`], and what leaves
//!   (a record's headers, a provider call) carries the context of the span it
//!   leaves from ([`TraceParent::current`]), so the exported spans form one
//!   tree per entry.
//! - No OpenTelemetry layer (unit tests, tools): the incoming trace id is
//!   kept and each hop gets a new span id ([`TraceParent::child`]), so logs
//!   still join on the trace id.
//!
//! Either way the span's `trace_id` field is set, so every log line in it
//! carries the trace id.

use std::fmt;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use rand::RngCore;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The HTTP and Kafka header name.
pub const TRACEPARENT: &str = "traceparent";

/// `00-<trace-id>-<parent-id>-<flags>`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceParent {
    /// A new trace (a request that came without one).
    pub fn new_root() -> Self {
        let mut rng = rand::rng();
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        rng.fill_bytes(&mut trace_id);
        rng.fill_bytes(&mut span_id);
        Self { trace_id, span_id, sampled: true }
    }

    /// The same trace, one hop further (a record produced while handling this one).
    pub fn child(&self) -> Self {
        let mut span_id = [0u8; 8];
        rand::rng().fill_bytes(&mut span_id);
        Self { span_id, ..*self }
    }

    /// Parses a `traceparent` value; `None` when malformed or all-zero.
    ///
    /// Strict to the W3C grammar, as it says a receiver must be: lower-case
    /// hex only, version `ff` invalid, exactly four fields for version `00`
    /// (a later version may append more). The value comes from anyone, and a
    /// lenient parse (a `+` sign in the flags, upper-case ids, a fifth field)
    /// would carry ids onward that no other W3C implementation accepts.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        let mut parts = value.splitn(5, '-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        let rest = parts.next();
        let lower_hex = |field: &str, len: usize| {
            field.len() == len && field.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !lower_hex(version, 2) || version == "ff" || (version == "00" && rest.is_some()) {
            return None;
        }
        if !lower_hex(trace, 32) || !lower_hex(span, 16) || !lower_hex(flags, 2) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The `traceparent` header of an HTTP request, if present and well formed.
    pub fn from_http(headers: &axum::http::HeaderMap) -> Option<Self> {
        headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(Self::parse)
    }

    /// The context of `span` in the exported trace; `None` when spans are
    /// not exported (no OpenTelemetry layer) or `span` is disabled.
    pub fn of_span(span: &tracing::Span) -> Option<Self> {
        if span.is_disabled() {
            return None;
        }
        let context = span.context();
        let otel = context.span();
        let span_context = otel.span_context();
        span_context.is_valid().then(|| Self {
            trace_id: span_context.trace_id().to_bytes(),
            span_id: span_context.span_id().to_bytes(),
            sampled: span_context.is_sampled(),
        })
    }

    /// The context of the current span in the exported trace (see [`Self::of_span`]).
    pub fn current() -> Option<Self> {
        Self::of_span(&tracing::Span::current())
    }

    fn remote_context(&self) -> opentelemetry::Context {
        let flags = if self.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let span_context = SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            flags,
            true,
            TraceState::default(),
        );
        opentelemetry::Context::new().with_remote_span_context(span_context)
    }
}

/// Makes `span` (just created: before it is entered or has children) the
/// continuation of `parent`, and fills its `trace_id` field (declare it
/// `trace_id = tracing::field::Empty`) so every log line in it carries the
/// trace id. Returns the span's own context when spans are exported (the
/// `traceparent` to send onward from it), `None` otherwise.
pub fn continue_trace(span: &tracing::Span, parent: Option<&TraceParent>) -> Option<TraceParent> {
    if let Some(parent) = parent {
        // Fails only without the OpenTelemetry layer (nothing exported) or on
        // a span already started (a caller's mistake: it stays a root).
        let _ = span.set_parent(parent.remote_context());
    }
    let own = TraceParent::of_span(span);
    if let Some(trace) = own.as_ref().or(parent) {
        span.record("trace_id", trace.trace_id_hex().as_str());
    }
    own
}

/// The incoming request's trace, continued by `span` (the request's span).
/// Without exported spans and without a `traceparent` from the client, a new
/// trace is started and written into `headers` as if the client had sent it,
/// so handlers that read the header (the entry's record) stay in the trace
/// the request's log lines carry.
pub fn continue_request(span: &tracing::Span, headers: &mut axum::http::HeaderMap) -> Option<TraceParent> {
    let incoming = TraceParent::from_http(headers);
    let own = continue_trace(span, incoming.as_ref());
    if own.is_none() && incoming.is_none() {
        let root = TraceParent::new_root();
        if let Ok(value) = axum::http::HeaderValue::from_str(&root.to_string()) {
            headers.insert(TRACEPARENT, value);
        }
        span.record("trace_id", root.trace_id_hex().as_str());
    }
    own
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", hex::encode(self.trace_id), hex::encode(self.span_id), u8::from(self.sampled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_survives_printing_and_parsing() {
        let tp = TraceParent::new_root();
        assert_eq!(TraceParent::parse(&tp.to_string()), Some(tp));
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_span() {
        let tp = TraceParent::new_root();
        let child = tp.child();
        assert_eq!(child.trace_id, tp.trace_id);
        assert_ne!(child.span_id, tp.span_id);
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in ["", "00-abc-def-01", "00-00000000000000000000000000000000-0000000000000001-01", "zz"] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        assert!(TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
    }
}
