//! Per-request context: the correlation id (taken from `X-Correlation-Id` or
//! made up, echoed in the response and carried into Kafka headers), one
//! tracing span per request, and the request metrics.
//!
//! Handlers fill the span's `event_id`, `user_id` and `entry_id` with
//! `Span::current().record(..)`; the answer's [`Outcome`] labels the metrics.
//!
//! [`guard`] keeps refusals cheap: it counts each client address' costly
//! refusals and answers 429 before the handler once the address has spent
//! its budget (`crate::rate_limit::AddressLimit`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::field::Empty;
use tracing::Instrument;

use crate::error::{ApiError, Outcome};
use crate::rate_limit::AddressLimit;
use crate::settings::Limits;

pub const CORRELATION_HEADER: &str = "x-correlation-id";
/// Longest correlation id taken from a client; longer ones are replaced.
const MAX_CORRELATION_CHARS: usize = 128;

/// The request's correlation id, in the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(pub String);

fn acceptable(value: &str) -> bool {
    !value.is_empty() && value.len() <= MAX_CORRELATION_CHARS && value.bytes().all(|b| b.is_ascii_graphic())
}

impl CorrelationId {
    /// The client's `X-Correlation-Id` when acceptable (1 to 128 visible
    /// ASCII characters: it goes into log lines, Kafka headers and the
    /// response), else a new UUID.
    pub fn from_header(value: Option<&HeaderValue>) -> Self {
        let taken = value.and_then(|v| v.to_str().ok()).filter(|v| acceptable(v));
        Self(taken.map(str::to_string).unwrap_or_else(new_correlation_id))
    }
}

/// A random (v4) UUID from the thread's generator: `uuid::Uuid::new_v4` asks
/// the kernel for its bytes (a `getrandom` syscall) every time, and most
/// requests come without a correlation id. Not a secret: ThreadRng's
/// ChaCha, seeded from the kernel, is more than it needs.
fn new_correlation_id() -> String {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string()
}

/// The middleware around every route.
///
/// Cheap per request, as every request pays it: the span's fields are given
/// as text (kept as is; JSON is built only for a line that is written,
/// `platform::telemetry::SpanFields`), `otel.name` is built only when spans
/// are exported, and the metrics go to handles taken once
/// (`crate::metrics::request_answered`).
pub async fn track(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let CorrelationId(correlation_id) = CorrelationId::from_header(request.headers().get(CORRELATION_HEADER));
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        "request",
        method = request.method().as_str(),
        path = request.uri().path(),
        otel.name = Empty,
        otel.kind = "server",
        correlation_id = correlation_id.as_str(),
        trace_id = Empty,
        event_id = Empty,
        user_id = Empty,
        entry_id = Empty,
        status = Empty,
    );
    if platform::telemetry::exporting() {
        span.record("otel.name", format!("ingest {} {route}", request.method()));
    }
    let response_correlation = HeaderValue::from_str(&correlation_id);
    request.extensions_mut().insert(CorrelationId(correlation_id));
    // The client's `traceparent` (or a new trace) continued by the request's span.
    platform::trace_context::continue_request(&span, request.headers_mut());

    let mut response = next.run(request).instrument(span.clone()).await;

    let status = response.status();
    let outcome = response.extensions().get::<Outcome>().map(|o| o.0).unwrap_or_else(|| by_status(status));
    if let Ok(value) = response_correlation {
        response.headers_mut().insert(CORRELATION_HEADER, value);
    }
    let elapsed = started.elapsed();
    span.record("status", status.as_u16());
    if status.is_server_error() {
        span.in_scope(|| {
            tracing::warn!(
                status = status.as_u16(),
                outcome,
                elapsed_ms = elapsed.as_secs_f64() * 1_000.0,
                "request failed"
            )
        });
    } else if tracing::enabled!(tracing::Level::DEBUG) {
        span.in_scope(|| {
            tracing::debug!(
                status = status.as_u16(),
                outcome,
                elapsed_ms = elapsed.as_secs_f64() * 1_000.0,
                "request finished"
            )
        });
    }
    crate::metrics::request_answered(route, status.as_u16(), outcome, elapsed);
    response
}

/// The per-address budget of costly refusals, around the API's routes.
#[derive(Clone)]
pub struct ClientGuard {
    limit: Arc<AddressLimit>,
    /// Peers whose `X-Forwarded-For` is believed (the load balancers).
    trusted_proxies: Arc<[IpAddr]>,
}

/// The route whose 404 cost a Redis lookup (an event id seen for the first time).
const EVENT_ROUTE: &str = "/api/events/{event_id}";

impl ClientGuard {
    pub fn new(limits: &Limits) -> Self {
        Self {
            limit: Arc::new(AddressLimit::new(
                limits.address_refusals_per_sec,
                limits.address_refusal_burst,
                limits.max_tracked_addresses,
            )),
            trusted_proxies: limits.trusted_proxies.clone().into(),
        }
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy;
    /// then the right-most `X-Forwarded-For` hop that is not one (the hops
    /// left of it are the client's to forge).
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut current = peer;
        if !self.trusted_proxies.contains(&current) {
            return current;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                Some(address) => {
                    current = address;
                    if !self.trusted_proxies.contains(&address) {
                        break;
                    }
                }
                // A hop a trusted proxy would not write: stop at the last good one.
                None => break,
            }
        }
        current
    }
}

/// One `X-Forwarded-For` hop: an address, or an address with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// Whether answering `status` on `route` cost work worth budgeting: a token
/// checked and found bad (any route), or an event id looked up and not
/// found (the event state route: a new random id is a Redis call).
fn costly_refusal(method: &Method, route: Option<&str>, status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED
        || (status == StatusCode::NOT_FOUND && method == Method::GET && route == Some(EVENT_ROUTE))
}

/// The middleware that keeps refusals cheap: an address over its budget of
/// costly refusals is answered 429 `too_many_refusals` before the handler
/// (no HMAC, no Redis); otherwise each costly refusal is counted. Requests
/// served without a peer address (tests on a bare router) pass.
pub async fn guard(State(guard): State<ClientGuard>, request: Request, next: Next) -> Response {
    let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return next.run(request).await;
    };
    let address = guard.client_address(peer.ip(), request.headers());
    let prepaid = match guard.limit.admit(address) {
        Ok(prepaid) => prepaid,
        Err(wait) => {
            metrics::counter!("firstcome_ingest_address_refused_total").increment(1);
            return ApiError::TooManyRefusals(wait).into_response();
        }
    };
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let costly = costly_refusal(&method, route.as_ref().map(MatchedPath::as_str), response.status());
    guard.limit.settle(address, prepaid, costly);
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
    fn a_made_up_correlation_id_is_a_new_v4_uuid() {
        let (one, two) = (CorrelationId::from_header(None).0, CorrelationId::from_header(None).0);
        assert_ne!(one, two);
        for id in [one, two] {
            let parsed = uuid::Uuid::parse_str(&id).unwrap();
            assert_eq!(parsed.get_version(), Some(uuid::Version::Random), "{id}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
    }

    #[test]
    fn only_short_printable_correlation_ids_are_taken() {
        assert!(acceptable("req-123"));
        assert!(!acceptable(""));
        assert!(!acceptable("a b"));
        assert!(!acceptable(&"x".repeat(129)));
    }

    fn guard_trusting(proxies: &[&str]) -> ClientGuard {
        let limits =
            Limits { trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(), ..Limits::default() };
        ClientGuard::new(&limits)
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let guard = guard_trusting(&["10.0.0.1", "10.0.0.2"]);
        let headers = forwarded(&["198.51.100.9, 203.0.113.7, 10.0.0.2"]);
        // From the load balancer: the right-most hop it did not add itself.
        assert_eq!(guard.client_address(ip("10.0.0.1"), &headers), ip("203.0.113.7"));
        // From anyone else: the header is theirs to forge.
        assert_eq!(guard.client_address(ip("192.0.2.5"), &headers), ip("192.0.2.5"));
        // Several headers are one list; garbage stops the walk.
        let split = forwarded(&["203.0.113.7", "10.0.0.2"]);
        assert_eq!(guard.client_address(ip("10.0.0.1"), &split), ip("203.0.113.7"));
        let garbage = forwarded(&["203.0.113.7, nonsense"]);
        assert_eq!(guard.client_address(ip("10.0.0.1"), &garbage), ip("10.0.0.1"));
        assert_eq!(guard.client_address(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
    }

    #[test]
    fn only_bad_tokens_and_unknown_events_are_costly() {
        assert!(costly_refusal(&Method::POST, Some("/api/events/{event_id}/entries"), StatusCode::UNAUTHORIZED));
        assert!(costly_refusal(&Method::GET, Some(EVENT_ROUTE), StatusCode::NOT_FOUND));
        assert!(!costly_refusal(&Method::GET, Some("/api/entries/{entry_id}"), StatusCode::NOT_FOUND));
        assert!(!costly_refusal(&Method::GET, Some(EVENT_ROUTE), StatusCode::OK));
        assert!(!costly_refusal(&Method::POST, None, StatusCode::GONE));
    }
}
