//! Per-request context: the correlation id (taken from `X-Correlation-Id` or
//! made up, echoed in the response and carried into Kafka headers), one
//! tracing span per request, and the request metrics.
//!
//! Handlers fill the span's `event_id`, `user_id` and `entry_id` with
//! `Span::current().record(..)`; the answer's [`Outcome`] labels the metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tracing::field::Empty;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::Outcome;

pub const CORRELATION_HEADER: &str = "x-correlation-id";
/// Longest correlation id taken from a client; longer ones are replaced.
const MAX_CORRELATION_CHARS: usize = 128;

/// The request's correlation id, in the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(pub String);

fn acceptable(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_CORRELATION_CHARS
        && value.bytes().all(|b| b.is_ascii_graphic())
}

/// The middleware around every route.
pub async fn track(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let correlation_id = request
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_string)
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        otel.name = %format!("ingest {} {route}", request.method()),
        otel.kind = "server",
        correlation_id = %correlation_id,
        trace_id = Empty,
        event_id = Empty,
        user_id = Empty,
        entry_id = Empty,
        status = Empty,
    );
    request.extensions_mut().insert(CorrelationId(correlation_id.clone()));
    // The client's `traceparent` (or a new trace) continued by the request's span.
    platform::trace_context::continue_request(&span, request.headers_mut());

    let mut response = next.run(request).instrument(span.clone()).await;

    let status = response.status();
    let outcome = response.extensions().get::<Outcome>().map(|o| o.0).unwrap_or_else(|| by_status(status));
    if let Ok(value) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert(CORRELATION_HEADER, value);
    }
    let elapsed = started.elapsed();
    span.record("status", status.as_u16());
    span.in_scope(|| {
        let elapsed_ms = elapsed.as_secs_f64() * 1_000.0;
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), outcome, elapsed_ms, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), outcome, elapsed_ms, "request finished");
        }
    });
    let status_label = status.as_u16().to_string();
    metrics::counter!("firstcome_ingest_requests_total", "outcome" => outcome, "route" => route.clone(), "status" => status_label.clone())
        .increment(1);
    metrics::histogram!("firstcome_ingest_request_seconds", "route" => route, "status" => status_label).record(elapsed.as_secs_f64());
    response
}

fn by_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "ok",
        404 => "not_found",
        405 => "method_not_allowed",
        400..=499 => "client_error",
        _ => "server_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_printable_correlation_ids_are_taken() {
        assert!(acceptable("req-123"));
        assert!(!acceptable(""));
        assert!(!acceptable("a b"));
        assert!(!acceptable(&"x".repeat(129)));
    }
}
