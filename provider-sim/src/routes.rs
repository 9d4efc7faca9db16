//! The provider API (`/v1/gifts`) and the sandbox controls (`/admin/…`).
//! CONTRACT.md is the reader's version of this file.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::chance::Dice;
use crate::faults::Faults;
use crate::rate_limit::{Admit, Window};
use crate::store::{Gift, GiftRequest, GiftStore, Issued};

/// Everything the handlers share.
pub struct SimState {
    pub store: GiftStore,
    faults: RwLock<Faults>,
    dice: Dice,
    window: Window,
    /// Cancelled on shutdown: held responses are released at once.
    pub stopping: CancellationToken,
}

impl SimState {
    pub fn new(faults: Faults, seed: u64) -> Self {
        Self {
            store: GiftStore::default(),
            faults: RwLock::new(faults),
            dice: Dice::seeded(seed),
            window: Window::new(),
            stopping: CancellationToken::new(),
        }
    }

    fn faults(&self) -> Faults {
        self.faults.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn set_faults(&self, faults: Faults) {
        *self.faults.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = faults;
    }

    /// Sleeps, unless the simulator is stopping.
    async fn pause(&self, duration: Duration) {
        if duration.is_zero() {
            return;
        }
        tokio::select! {
            _ = self.stopping.cancelled() => {}
            _ = tokio::time::sleep(duration) => {}
        }
    }

    /// The provider's rate limit, when one is set.
    fn over_limit(&self, faults: &Faults) -> Option<Response> {
        let limit = faults.rate_limit_per_sec?;
        match self.window.admit(limit) {
            Admit::Yes => None,
            Admit::RetryAfter(wait) => {
                let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
                let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", None);
                if let Ok(value) = seconds.to_string().parse() {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                Some(response)
            }
        }
    }
}

/// The API key header the sender sends (`provider.api_key`).
pub const API_KEY_HEADER: &str = "x-api-key";

/// The issue and lookup calls need the configured API key (401
/// `{"error":"unauthorized"}` without it), as a real provider's do. The
/// listing and the admin routes stay open: they are the simulator's own,
/// for operators and tests on the local stack.
pub fn router(state: Arc<SimState>, api_key: secrecy::SecretString) -> Router {
    let keyed = Router::new()
        .route("/v1/gifts", axum::routing::post(issue_gift))
        .route("/v1/gifts/{key}", get(get_gift))
        .route_layer(axum::middleware::from_fn_with_state(Arc::new(api_key), require_key));
    Router::new()
        .route("/v1/gifts", get(list_gifts))
        .merge(keyed)
        .route("/admin/faults", put(put_faults).get(get_faults))
        .route("/admin/gifts", axum::routing::delete(clear_gifts))
        .route_layer(axum::middleware::from_fn(traced))
        .with_state(state)
}

/// One span per request, continuing the caller's `traceparent` (the
/// sender's provider call), so the simulator's work is in the entry's trace.
async fn traced(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route =
        request.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
    let span = tracing::info_span!(
        "provider_request",
        otel.name = %format!("provider-sim {} {route}", request.method()),
        otel.kind = "server",
        trace_id = tracing::field::Empty,
    );
    platform::trace_context::continue_trace(
        &span,
        platform::trace_context::TraceParent::from_http(request.headers()).as_ref(),
    );
    next.run(request).instrument(span).await
}

async fn require_key(
    State(expected): State<Arc<secrecy::SecretString>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use secrecy::ExposeSecret;
    let given = request.headers().get(API_KEY_HEADER).map(|v| v.as_bytes());
    // Compared in full whatever the first difference (no early exit on a prefix).
    let matches = given.is_some_and(|given| {
        let expected = expected.expose_secret().as_bytes();
        given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if !matches {
        count("auth", "unauthorized");
        return error(StatusCode::UNAUTHORIZED, "unauthorized", None);
    }
    next.run(request).await
}

fn error(status: StatusCode, code: &str, detail: Option<String>) -> Response {
    let body = match detail {
        Some(detail) => json!({ "error": code, "detail": detail }),
        None => json!({ "error": code }),
    };
    (status, Json(body)).into_response()
}

/// A gift answer, unless a hostile-answer fault fires: another key's gift
/// (`wrong_key_rate`) or a body that is not JSON (`malformed_rate`).
fn gift_answer(state: &SimState, faults: &Faults, route: &'static str, status: StatusCode, gift: Gift) -> Response {
    if state.dice.roll(faults.wrong_key_rate) {
        count(route, "wrong_key");
        let other = state.store.other_than(&gift.idempotency_key).unwrap_or_else(|| Gift {
            gift_id: format!("gft_{}", uuid::Uuid::now_v7().simple()),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            ..gift.clone()
        });
        tracing::info!(gift_id = %other.gift_id, "answering with another key's gift");
        return (status, Json(other)).into_response();
    }
    if state.dice.roll(faults.malformed_rate) {
        count(route, "malformed");
        tracing::info!("answering with a body that is not JSON");
        return (status, [(header::CONTENT_TYPE, "application/json")], "{\"gift_id\": \"gft_").into_response();
    }
    (status, Json(gift)).into_response()
}

/// The head of an answer whose body breaks: the connection is closed before
/// the answer completes, as a reset after the request was taken does.
fn broken(status: StatusCode) -> Response {
    let body = futures::stream::once(async {
        Err::<axum::body::Bytes, _>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected reset"))
    });
    (status, [(header::CONTENT_TYPE, "application/json")], axum::body::Body::from_stream(body)).into_response()
}

/// The simulator's metrics, described when it is built (help text, and the
/// series known before the first call at zero).
pub const METRICS: &[platform::metrics::Metric] = &[
    platform::metrics::Metric::counter("firstcome_provider_sim_requests_total", "Calls answered, by route and result")
        .labels(&["route", "result"])
        .known(&[&["issue", "issued"], &["lookup", "found"]]),
    platform::metrics::Metric::gauge(
        "firstcome_provider_sim_gifts",
        platform::metrics::Unit::Count,
        "Gifts the simulator has issued and keeps",
    ),
];

fn count(route: &'static str, result: &'static str) {
    metrics::counter!("firstcome_provider_sim_requests_total", "route" => route, "result" => result).increment(1);
}

/// `POST /v1/gifts`: rate limit → latency → transient 503 (nothing issued)
/// → issue or replay (or 409 / 422) → maybe hold the response.
async fn issue_gift(State(state): State<Arc<SimState>>, body: Result<Json<GiftRequest>, JsonRejection>) -> Response {
    let key = body.as_ref().map(|Json(r)| r.idempotency_key.clone()).unwrap_or_default();
    let span = tracing::info_span!("issue_gift", idempotency_key = %key);
    async move {
        let faults = state.faults();
        if let Some(limited) = state.over_limit(&faults) {
            count("issue", "rate_limited");
            return limited;
        }
        let request = match body {
            Ok(Json(request)) => request,
            Err(rejection) => {
                count("issue", "invalid");
                return error(StatusCode::BAD_REQUEST, "invalid_request", Some(rejection.body_text()));
            }
        };
        if let Some(problem) = request.problem() {
            count("issue", "invalid");
            return error(StatusCode::BAD_REQUEST, "invalid_request", Some(problem.into()));
        }
        state.pause(state.dice.latency(faults.latency_ms, faults.jitter_ms)).await;
        if state.dice.roll(faults.transient_failure_rate) {
            count("issue", "unavailable");
            tracing::info!("injected 503 before issuing");
            return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", None);
        }
        let (status, gift) = match state.store.issue(&request, faults.refuses(&request.phone)) {
            Issued::New(gift) => {
                count("issue", "issued");
                metrics::gauge!("firstcome_provider_sim_gifts").set(state.store.len() as f64);
                tracing::info!(gift_id = %gift.gift_id, "gift issued");
                (StatusCode::CREATED, gift)
            }
            Issued::Replayed(gift) => {
                count("issue", "replayed");
                (StatusCode::OK, gift)
            }
            Issued::Conflict(gift) => {
                count("issue", "conflict");
                let detail = format!("key already used for gift {} with another request", gift.gift_id);
                return error(StatusCode::CONFLICT, "idempotency_conflict", Some(detail));
            }
            Issued::Refused => {
                count("issue", "refused");
                return error(StatusCode::UNPROCESSABLE_ENTITY, "phone_refused", None);
            }
        };
        if state.dice.roll(faults.reset_after_issue_rate) {
            // The gift exists; the exchange breaks before the caller learns it.
            count("issue", "reset");
            tracing::info!("breaking the connection after issuing");
            return broken(status);
        }
        if state.dice.roll(faults.timeout_after_issue_rate) {
            // The gift exists; the caller will time out without knowing it.
            count("issue", "held");
            tracing::info!(hang_ms = faults.hang_ms, "holding the response after issuing");
            state.pause(faults.hang()).await;
        }
        gift_answer(&state, &faults, "issue", status, gift)
    }
    .instrument(span)
    .await
}

/// `GET /v1/gifts/{key}`: how a caller resolves an unknown outcome.
async fn get_gift(State(state): State<Arc<SimState>>, Path(key): Path<String>) -> Response {
    let faults = state.faults();
    if let Some(limited) = state.over_limit(&faults) {
        count("lookup", "rate_limited");
        return limited;
    }
    state.pause(state.dice.latency(faults.latency_ms, faults.jitter_ms)).await;
    if state.dice.roll(faults.lookup_failure_rate) {
        count("lookup", "unavailable");
        return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", None);
    }
    match state.store.get(&key) {
        Some(gift) => {
            count("lookup", "found");
            gift_answer(&state, &faults, "lookup", StatusCode::OK, gift)
        }
        None => {
            count("lookup", "not_found");
            error(StatusCode::NOT_FOUND, "not_found", None)
        }
    }
}

/// `GET /v1/gifts`: every gift issued (reconciliation, tests). No faults.
async fn list_gifts(State(state): State<Arc<SimState>>) -> Response {
    let gifts = state.store.all();
    Json(json!({ "count": gifts.len(), "gifts": gifts })).into_response()
}

async fn get_faults(State(state): State<Arc<SimState>>) -> Response {
    Json(state.faults()).into_response()
}

/// `PUT /admin/faults`: replaces the whole fault set (missing fields take
/// their defaults, so `{}` clears every fault).
async fn put_faults(State(state): State<Arc<SimState>>, body: Result<Json<Faults>, JsonRejection>) -> Response {
    let faults = match body {
        Ok(Json(faults)) => faults,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, "invalid_faults", Some(rejection.body_text())),
    };
    if let Err(problem) = faults.validate() {
        return error(StatusCode::BAD_REQUEST, "invalid_faults", Some(problem));
    }
    tracing::info!(faults = ?faults.for_logs(), "faults changed");
    state.set_faults(faults.clone());
    Json(faults).into_response()
}

/// `DELETE /admin/gifts`: forgets every gift (a fresh sandbox between drills).
async fn clear_gifts(State(state): State<Arc<SimState>>) -> Response {
    let cleared = state.store.clear();
    metrics::gauge!("firstcome_provider_sim_gifts").set(0.0);
    tracing::info!(cleared, "gifts cleared");
    Json(json!({ "cleared": cleared })).into_response()
}
