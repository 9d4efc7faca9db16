//! The headers on every record: `message-id` (UUID, unique per record),
//! `correlation-id` (the same from the HTTP request to the last consumer) and
//! W3C `traceparent`.

use rdkafka::message::{Header, Headers, OwnedHeaders};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::trace_context::TraceParent;

pub const MESSAGE_ID: &str = "message-id";
pub const CORRELATION_ID: &str = "correlation-id";
pub const TRACEPARENT: &str = crate::trace_context::TRACEPARENT;

/// Identity and lineage of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordContext {
    pub message_id: String,
    pub correlation_id: String,
    pub traceparent: String,
}

impl RecordContext {
    /// The first record of a flow (e.g. an HTTP request with this correlation
    /// id, continuing the request's `trace`). With spans exported, the record
    /// continues the current span (the request's, itself the child of
    /// `trace`), unless that span is in another trace than `trace`.
    pub fn new_root(correlation_id: impl Into<String>, trace: Option<TraceParent>) -> Self {
        let current = TraceParent::current().filter(|c| trace.is_none_or(|t| t.trace_id == c.trace_id));
        let trace = current.or_else(|| trace.map(|t| t.child())).unwrap_or_else(TraceParent::new_root);
        Self {
            message_id: Uuid::new_v4().to_string(),
            correlation_id: correlation_id.into(),
            traceparent: trace.to_string(),
        }
    }

    /// A record produced because of this one: new message id, same
    /// correlation id, the next hop of the same trace.
    ///
    /// With spans exported and called within this record's span (or a span
    /// under it), the new record continues the current span.
    pub fn caused(&self) -> Self {
        let parent = TraceParent::parse(&self.traceparent);
        let current = TraceParent::current().filter(|c| parent.is_some_and(|p| p.trace_id == c.trace_id));
        let trace = current.or_else(|| parent.map(|t| t.child())).unwrap_or_else(TraceParent::new_root);
        Self {
            message_id: Uuid::new_v4().to_string(),
            correlation_id: self.correlation_id.clone(),
            traceparent: trace.to_string(),
        }
    }

    /// Reads the headers of a consumed record. Other producers may omit them:
    /// what is missing is made up, with the message id as correlation id.
    pub fn from_headers<H: Headers>(headers: Option<&H>) -> Self {
        let mut message_id = None;
        let mut correlation_id = None;
        let mut traceparent = None;
        if let Some(headers) = headers {
            for header in headers.iter() {
                let value = header.value.and_then(|v| std::str::from_utf8(v).ok()).map(str::to_owned);
                match header.key {
                    MESSAGE_ID => message_id = value,
                    CORRELATION_ID => correlation_id = value,
                    TRACEPARENT => traceparent = value.filter(|v| TraceParent::parse(v).is_some()),
                    _ => {}
                }
            }
        }
        let message_id = message_id.unwrap_or_else(|| Uuid::new_v4().to_string());
        Self {
            correlation_id: correlation_id.unwrap_or_else(|| message_id.clone()),
            traceparent: traceparent.unwrap_or_else(|| TraceParent::new_root().to_string()),
            message_id,
        }
    }

    /// The Kafka headers for this context.
    pub fn to_headers(&self) -> OwnedHeaders {
        OwnedHeaders::new()
            .insert(Header { key: MESSAGE_ID, value: Some(self.message_id.as_bytes()) })
            .insert(Header { key: CORRELATION_ID, value: Some(self.correlation_id.as_bytes()) })
            .insert(Header { key: TRACEPARENT, value: Some(self.traceparent.as_bytes()) })
    }

    /// The same record sent from another span: `traceparent` becomes `trace`
    /// (the producer's span, so the consumer's span is its child).
    pub fn sent_from(&self, trace: TraceParent) -> Self {
        Self { traceparent: trace.to_string(), ..self.clone() }
    }

    /// The parsed `traceparent`.
    pub fn trace(&self) -> Option<TraceParent> {
        TraceParent::parse(&self.traceparent)
    }

    /// The trace id, for logs.
    pub fn trace_id(&self) -> String {
        TraceParent::parse(&self.traceparent).map(|t| t.trace_id_hex()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_survive_a_round_trip() {
        let ctx = RecordContext::new_root("corr-1", None);
        let headers = ctx.to_headers();
        assert_eq!(RecordContext::from_headers(Some(&headers)), ctx);
    }

    #[test]
    fn a_caused_record_keeps_the_correlation_and_trace() {
        let ctx = RecordContext::new_root("corr-1", None);
        let next = ctx.caused();
        assert_eq!(next.correlation_id, "corr-1");
        assert_ne!(next.message_id, ctx.message_id);
        assert_eq!(next.trace_id(), ctx.trace_id());
    }

    #[test]
    fn missing_headers_are_made_up() {
        let ctx = RecordContext::from_headers::<OwnedHeaders>(None);
        assert_eq!(ctx.correlation_id, ctx.message_id);
        assert!(TraceParent::parse(&ctx.traceparent).is_some());
    }
}
