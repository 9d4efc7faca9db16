//! The gift provider's HTTP contract (provider-sim/CONTRACT.md), from the
//! caller's side: every answer is sorted into what the sender may conclude.
//!
//! The one distinction that matters for money: was the gift **definitely
//! not** issued (safe to compensate on a permanent refusal), or **maybe**
//! issued (timeouts, broken exchanges, server errors after the request got
//! in) — then only a lookup by idempotency key may settle it.

use std::time::Duration;

use platform::trace_context::TraceParent;
use reqwest::{header, StatusCode};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::settings::ProviderSettings;

/// What the sender asks the provider for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GiftOrder {
    /// The entry id: the provider issues at most one gift per key.
    pub idempotency_key: String,
    pub phone: String,
    pub product: String,
    pub amount: i64,
}

/// The part of the provider's gift the sender reads. Every field but the
/// id may be missing from a hostile answer: [`GiftOrder::mismatch`] then
/// names it, rather than the whole answer being unreadable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IssuedGift {
    pub gift_id: String,
    #[serde(default)]
    pub idempotency_key: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub product: Option<String>,
    #[serde(default)]
    pub amount: Option<i64>,
}

/// The status of a gift that was issued (the contract's only one).
pub const ISSUED: &str = "ISSUED";

/// An answer that is not the gift it should be: another key's gift (a
/// provider bug, a proxy cache, a replayed body), another product or
/// amount, or a gift not (yet) issued. Whether ours exists stays unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the answer is not this gift: {field} is {got:?}, expected {expected:?}")]
pub struct Mismatch {
    pub field: &'static str,
    pub expected: String,
    pub got: String,
}

impl GiftOrder {
    /// Why `gift` is not this order's gift, issued: it must carry our
    /// idempotency key, product and amount, the status `ISSUED` and an id.
    /// The phone is not compared: a gift issued before the member's phone
    /// changed is still theirs (the provider keeps the first phone).
    pub fn mismatch(&self, gift: &IssuedGift) -> Option<Mismatch> {
        let differs =
            |field, expected: String, got: String| (expected != got).then_some(Mismatch { field, expected, got });
        let missing = || "<missing>".to_string();
        differs("idempotency_key", self.idempotency_key.clone(), gift.idempotency_key.clone())
            .or_else(|| differs("status", ISSUED.into(), gift.status.clone()))
            .or_else(|| differs("product", self.product.clone(), gift.product.clone().unwrap_or_else(missing)))
            .or_else(|| differs("amount", self.amount.to_string(), gift.amount.map_or_else(missing, |a| a.to_string())))
            .or_else(|| {
                gift.gift_id.trim().is_empty().then(|| Mismatch {
                    field: "gift_id",
                    expected: "an id".into(),
                    got: gift.gift_id.clone(),
                })
            })
    }
}

/// Why an issue call did not return a gift.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// No answer in time: the gift may exist.
    #[error("timed out")]
    Timeout,
    /// The exchange broke, or the provider failed, after the request may
    /// have reached it: the gift may exist.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The provider answered, but with nothing the contract promises (a
    /// 2xx whose body is unreadable or over the cap, a redirect, a status
    /// outside the contract): the gift may exist, and only a lookup can tell.
    #[error("unusable answer: {0}")]
    Unusable(String),
    /// Definitely not issued; may succeed later (503, 429, 408, connection refused).
    #[error("transient: {reason}")]
    Transient { reason: String, retry_after: Option<Duration> },
    /// The key already holds a gift for a different request (409): a gift exists.
    #[error("idempotency key already used")]
    Conflict,
    /// The provider's business refusal (422, e.g. `phone_refused`): definitely
    /// not issued, and never will be. The only answer that may fail a gift.
    #[error("refused: {reason}")]
    Permanent { reason: String },
    /// A 4xx that says our configuration is wrong (401, 403, 404, 405, 407,
    /// 410, 426: credentials, base URL, protocol): every gift would get the
    /// same answer. Definitely not issued, and not the member's fault: the
    /// gift stays open (never failed, never compensated) and the batch waits
    /// until an operator fixes the configuration.
    #[error("client error {status}: {reason}")]
    ClientError { status: u16, reason: String },
    /// Any other 4xx (400, 413, 415, …): the provider refused this one
    /// request as malformed. Definitely not issued; not the member's
    /// refusal either, and the same request would get the same answer. The
    /// gift is settled on its own (dead-lettered for an operator) so it
    /// never holds the other gifts of its batch.
    #[error("request rejected {status}: {reason}")]
    Rejected { status: u16, reason: String },
}

impl IssueError {
    /// Whether a gift may exist under the key after this error.
    pub fn maybe_issued(&self) -> bool {
        matches!(self, IssueError::Timeout | IssueError::Unknown(_) | IssueError::Unusable(_) | IssueError::Conflict)
    }

    /// Whether the provider answered about this gift with something that
    /// settles nothing (as opposed to not answering, or being unavailable
    /// or misconfigured for every gift alike).
    pub fn is_unusable(&self) -> bool {
        matches!(self, IssueError::Unusable(_))
    }

    /// The metric label of this answer.
    pub fn label(&self) -> &'static str {
        match self {
            IssueError::Timeout => "timeout",
            IssueError::Unknown(_) => "unknown",
            IssueError::Unusable(_) => "unusable",
            IssueError::Transient { retry_after: Some(_), .. } => "rate_limited",
            IssueError::Transient { .. } => "transient",
            IssueError::Conflict => "conflict",
            IssueError::Permanent { .. } => "refused",
            IssueError::ClientError { .. } => "client_error",
            IssueError::Rejected { .. } => "rejected",
        }
    }
}

/// A lookup that could not tell (the outcome stays unknown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No answer in time, a broken exchange, or the provider unavailable
    /// (5xx, 429, 408): it says nothing about this gift, and would say the
    /// same to every other one now.
    #[error("lookup failed: {0}")]
    Unavailable(String),
    /// A 4xx about our configuration (401, 403, 405, …): every lookup gets it.
    #[error("lookup refused: {0}")]
    Configuration(String),
    /// The provider answered about this gift with something that settles
    /// nothing: a 200 whose body is unreadable or over the cap, a 404
    /// without the contract's `not_found`, a redirect, another status.
    #[error("unusable lookup answer: {0}")]
    Unusable(String),
}

impl LookupError {
    /// See [`IssueError::is_unusable`].
    pub fn is_unusable(&self) -> bool {
        matches!(self, LookupError::Unusable(_))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("failed to build the provider client: {0}")]
pub struct ClientBuildError(#[from] reqwest::Error);

/// The header carrying `provider.api_key` on every call.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Cheap to clone (one connection pool).
///
/// Follows no redirect (a 3xx is an answer, never a hop to wherever it
/// points: the order carries a phone number), sends `provider.api_key` as
/// [`API_KEY_HEADER`] (marked sensitive), and reads at most
/// `provider.max_response_bytes` of any answer. `https` outside local is
/// checked by the settings.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    http: reqwest::Client,
    base_url: String,
    max_response_bytes: usize,
}

impl ProviderClient {
    pub fn new(settings: &ProviderSettings) -> Result<Self, ClientBuildError> {
        use secrecy::ExposeSecret;
        let mut headers = header::HeaderMap::new();
        if let Ok(mut key) = header::HeaderValue::from_str(settings.api_key.expose_secret()) {
            key.set_sensitive(true);
            headers.insert(API_KEY_HEADER, key);
        }
        let http = reqwest::Client::builder()
            .timeout(settings.timeout())
            .connect_timeout(settings.timeout())
            .pool_max_idle_per_host(settings.concurrency)
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .no_proxy()
            .build()?;
        Ok(Self {
            http,
            base_url: settings.base_url.trim_end_matches('/').to_string(),
            max_response_bytes: settings.max_response_bytes,
        })
    }

    /// The answer's JSON body, read up to `max_response_bytes` (an answer
    /// announcing or sending more is refused without buffering it).
    async fn json<T: serde::de::DeserializeOwned>(&self, mut response: reqwest::Response) -> Result<T, BodyError> {
        let limit = self.max_response_bytes;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(BodyError::TooLarge(limit));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
            if body.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| BodyError::Json(e.to_string()))
    }

    /// `POST /v1/gifts`, in the trace of `parent` (the gift's record).
    pub async fn issue(&self, order: &GiftOrder, parent: Option<&TraceParent>) -> Result<IssuedGift, IssueError> {
        let span = call_span("POST /v1/gifts");
        let trace = call_trace(&span, parent);
        self.issue_in(order, trace).instrument(span).await
    }

    async fn issue_in(&self, order: &GiftOrder, trace: Option<TraceParent>) -> Result<IssuedGift, IssueError> {
        let request = traced(self.http.post(format!("{}/v1/gifts", self.base_url)), trace);
        let sent = request.json(order).send().await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return Err(classify_transport(&error)),
        };
        let status = response.status();
        match status {
            StatusCode::OK | StatusCode::CREATED => self
                .json::<IssuedGift>(response)
                .await
                // Issued for sure, but the body is unreadable: a lookup will tell.
                .map_err(|e| match e {
                    BodyError::Read(e) if e.is_timeout() => IssueError::Timeout,
                    BodyError::Read(e) => IssueError::Unknown(format!("answer broken off: {}", transport_text(&e))),
                    e => IssueError::Unusable(format!("unreadable gift: {e}")),
                }),
            StatusCode::CONFLICT => Err(IssueError::Conflict),
            StatusCode::TOO_MANY_REQUESTS => Err(IssueError::Transient {
                reason: "429 rate limited".into(),
                retry_after: Some(retry_after(response.headers()).unwrap_or(Duration::from_secs(1))),
            }),
            // 503 (overloaded, refused before processing) and 408 (the
            // request never got processed) are safe to repeat as they are.
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => {
                Err(IssueError::Transient { reason: status.to_string(), retry_after: retry_after(response.headers()) })
            }
            // Any other server error may have come after the gift was issued.
            status if status.is_server_error() => Err(IssueError::Unknown(status.to_string())),
            // The documented business refusal is the only permanent answer.
            StatusCode::UNPROCESSABLE_ENTITY => Err(IssueError::Permanent { reason: rejection(response).await }),
            // Any other 4xx says our request or configuration is wrong, not
            // that the member can never get the gift.
            status if is_configuration_error(status) => {
                Err(IssueError::ClientError { status: status.as_u16(), reason: rejection(response).await })
            }
            status if status.is_client_error() => {
                Err(IssueError::Rejected { status: status.as_u16(), reason: rejection(response).await })
            }
            status => Err(IssueError::Unusable(format!("unexpected status {status}"))),
        }
    }

    /// `GET /v1/gifts/{key}`: `Some` when a gift exists under `key`, `None`
    /// when the provider says none does (issuing again is safe).
    pub async fn lookup(&self, key: &str, parent: Option<&TraceParent>) -> Result<Option<IssuedGift>, LookupError> {
        let span = call_span("GET /v1/gifts/{key}");
        let trace = call_trace(&span, parent);
        self.lookup_in(key, trace).instrument(span).await
    }

    async fn lookup_in(&self, key: &str, trace: Option<TraceParent>) -> Result<Option<IssuedGift>, LookupError> {
        let response = traced(self.http.get(format!("{}/v1/gifts/{key}", self.base_url)), trace)
            .send()
            .await
            .map_err(|e| LookupError::Unavailable(transport_text(&e)))?;
        match response.status() {
            StatusCode::OK => self.json::<IssuedGift>(response).await.map(Some).map_err(|e| match e {
                BodyError::Read(e) => LookupError::Unavailable(format!("reading the answer: {}", transport_text(&e))),
                e => LookupError::Unusable(e.to_string()),
            }),
            // Only the contract's `{"error":"not_found"}` proves nothing was
            // issued; a bare 404 (a wrong base URL, a proxy) proves nothing.
            StatusCode::NOT_FOUND => match rejection(response).await.as_str() {
                "not_found" => Ok(None),
                other => Err(LookupError::Unusable(format!("404 without not_found: {other}"))),
            },
            status @ (StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT) => {
                Err(LookupError::Unavailable(status.to_string()))
            }
            status if status.is_server_error() => Err(LookupError::Unavailable(status.to_string())),
            status if is_configuration_error(status) => Err(LookupError::Configuration(status.to_string())),
            status => Err(LookupError::Unusable(format!("unexpected status {status}"))),
        }
    }
}

/// The span of one provider call, a child of the gift's `dispatch` span.
fn call_span(route: &'static str) -> tracing::Span {
    let span = tracing::info_span!(
        "provider_call",
        otel.name = %format!("provider call {route}"),
        otel.kind = "client",
        trace_id = tracing::field::Empty,
    );
    platform::trace_context::continue_trace(&span, None);
    span
}

/// The `traceparent` a provider call sends: the call span's own context when
/// spans are exported; otherwise the next hop of the gift's record trace
/// (`parent`), so the provider's logs still carry the entry's trace id.
fn call_trace(span: &tracing::Span, parent: Option<&TraceParent>) -> Option<TraceParent> {
    TraceParent::of_span(span).or_else(|| parent.map(TraceParent::child))
}

/// The request with the call's `traceparent`, so the provider continues the
/// entry's trace.
fn traced(request: reqwest::RequestBuilder, trace: Option<TraceParent>) -> reqwest::RequestBuilder {
    match trace {
        Some(trace) => request.header(platform::trace_context::TRACEPARENT, trace.to_string()),
        None => request,
    }
}

/// Why an answer's body could not be taken.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("answer over {0} bytes")]
    TooLarge(usize),
    #[error("reading the answer: {0}")]
    Read(reqwest::Error),
    #[error("unreadable answer: {0}")]
    Json(String),
}

/// 4xx answers about where and how we call, not about one request: every
/// gift would get the same one, so they hold the batch (see [`IssueError::ClientError`]).
fn is_configuration_error(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::PROXY_AUTHENTICATION_REQUIRED
            | StatusCode::GONE
            | StatusCode::UPGRADE_REQUIRED
    )
}

/// Transport failures: only a refused connection proves the request never arrived.
fn classify_transport(error: &reqwest::Error) -> IssueError {
    if error.is_timeout() {
        IssueError::Timeout
    } else if error.is_connect() {
        IssueError::Transient { reason: transport_text(error), retry_after: None }
    } else {
        IssueError::Unknown(transport_text(error))
    }
}

/// The error with its cause chain (reqwest's own text hides the cause).
fn transport_text(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `Retry-After` in seconds (the HTTP-date form is not used by providers here).
fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let seconds = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(seconds))
}

/// The provider's error code (`{"error": "phone_refused"}`), or the status.
async fn rejection(response: reqwest::Response) -> String {
    let status = response.status();
    #[derive(Deserialize)]
    struct Body {
        error: String,
    }
    // Error bodies are small; a long one is not read at all.
    let short = response.content_length().is_some_and(|n| n <= 4_096);
    match if short { response.json::<Body>().await.ok() } else { None } {
        Some(body) if !body.error.is_empty() => body.error,
        _ => format!("provider_rejected_{}", status.as_u16()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_exported_spans_a_call_continues_the_records_trace() {
        let record = TraceParent::new_root();
        let span = tracing::info_span!("provider_call");
        let sent = call_trace(&span, Some(&record)).expect("the record's trace");
        assert_eq!(sent.trace_id, record.trace_id, "the entry's trace");
        assert_ne!(sent.span_id, record.span_id, "a hop of its own");
        assert_eq!(call_trace(&span, None), None, "no trace to continue: none sent");
    }

    #[test]
    fn only_uncertain_answers_may_have_issued() {
        assert!(IssueError::Timeout.maybe_issued());
        assert!(IssueError::Unknown("500".into()).maybe_issued());
        assert!(IssueError::Conflict.maybe_issued());
        assert!(!IssueError::Transient { reason: "503".into(), retry_after: None }.maybe_issued());
        assert!(!IssueError::Permanent { reason: "phone_refused".into() }.maybe_issued());
        assert!(!IssueError::ClientError { status: 404, reason: "provider_rejected_404".into() }.maybe_issued());
        assert!(!IssueError::Rejected { status: 400, reason: "invalid_request".into() }.maybe_issued());
    }

    fn order() -> GiftOrder {
        GiftOrder { idempotency_key: "k-1".into(), phone: "010".into(), product: "coffee".into(), amount: 4_500 }
    }

    fn gift(key: &str, status: &str, product: &str, amount: i64) -> IssuedGift {
        IssuedGift {
            gift_id: "gft_1".into(),
            idempotency_key: key.into(),
            status: status.into(),
            product: Some(product.into()),
            amount: Some(amount),
        }
    }

    #[test]
    fn only_our_issued_gift_matches_the_order() {
        assert_eq!(order().mismatch(&gift("k-1", ISSUED, "coffee", 4_500)), None);
        let field = |g: IssuedGift| order().mismatch(&g).map(|m| m.field);
        assert_eq!(field(gift("k-2", ISSUED, "coffee", 4_500)), Some("idempotency_key"));
        assert_eq!(field(gift("k-1", "PENDING", "coffee", 4_500)), Some("status"));
        assert_eq!(field(gift("k-1", ISSUED, "tea", 4_500)), Some("product"));
        assert_eq!(field(gift("k-1", ISSUED, "coffee", 10_000)), Some("amount"));
        assert_eq!(field(IssuedGift { amount: None, ..gift("k-1", ISSUED, "coffee", 4_500) }), Some("amount"));
        assert_eq!(field(IssuedGift { gift_id: " ".into(), ..gift("k-1", ISSUED, "coffee", 4_500) }), Some("gift_id"));
    }

    #[test]
    fn an_unusable_answer_may_have_issued() {
        let unusable = IssueError::Unusable("unreadable gift".into());
        assert!(unusable.maybe_issued() && unusable.is_unusable());
        assert!(!IssueError::Timeout.is_unusable(), "no answer says nothing about the gift");
        assert!(LookupError::Unusable("404 without not_found".into()).is_unusable());
        assert!(!LookupError::Unavailable("503".into()).is_unusable());
    }

    #[test]
    fn configuration_answers_are_told_apart_from_a_rejected_request() {
        for status in [401, 403, 404, 405, 407, 410, 426] {
            assert!(is_configuration_error(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        for status in [400, 411, 413, 414, 415, 431] {
            assert!(!is_configuration_error(StatusCode::from_u16(status).unwrap()), "{status}");
        }
    }

    #[test]
    fn client_errors_are_counted_apart_from_refusals() {
        assert_eq!(IssueError::Permanent { reason: "phone_refused".into() }.label(), "refused");
        assert_eq!(IssueError::ClientError { status: 401, reason: "unauthorized".into() }.label(), "client_error");
        assert_eq!(IssueError::Rejected { status: 400, reason: "invalid_request".into() }.label(), "rejected");
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = header::HeaderMap::new();
        headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }
}
