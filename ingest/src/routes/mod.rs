//! The HTTP API and the state its handlers share.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /api/events/{event_id}/entries` | submit an entry ([`entries`]) |
//! | `GET /api/entries/{entry_id}` | the member's own entry's status ([`entry_status`]) |
//! | `GET /api/events/{event_id}` | an event's public state ([`events`]) |
//! | `GET /`, `GET /static/{file}` | the survey page ([`page`]) |
//! | `GET /api/receipts/key` | the key receipts are signed with ([`receipts`]) |
//! | `GET /events/{event_id}/report`, `GET /api/events/{event_id}/report[/proofs/{entry_id}]` | the event's public report ([`report`]) |
//!
//! `/healthz` and `/metrics` are on the internal ops listener (`crate::ops`).

pub mod entries;
pub mod entry_status;
pub mod events;
pub mod page;
pub mod receipts;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap};
use axum::routing::{get, post};
use axum::Router;
use platform::kafka::EventProducer;
use platform::redis::Connection as ConnectionManager;
use tokio::sync::Semaphore;

use crate::admission::Admitter;
use crate::auth::Verifier;
use crate::auth::{self, MemberId};
use crate::dashboard::tally::Tally;
use crate::error::ApiError;
use crate::rate_limit::MemberRateLimit;
use crate::settings::Limits;
use crate::state::EventCache;
use crate::waiting_room::WaitingRoom;

/// What every handler may use. Cheap to clone (everything inside is shared).
#[derive(Clone)]
pub struct AppState {
    pub cache: EventCache,
    pub redis: ConnectionManager,
    pub admitter: Admitter,
    pub producer: EventProducer,
    pub db: deadpool_postgres::Pool,
    /// Members' bearer tokens, verified with a key and rules built once.
    pub auth: Arc<Verifier>,
    pub limits: Arc<Limits>,
    /// The longest a publish may take before the member gets a 503.
    pub publish_deadline: Duration,
    /// A pending mark may be resumed after this long.
    pub resume_after: Duration,
    /// Entry requests in flight (`limits.max_in_flight` permits). Each may
    /// wait up to `publish_deadline` for Kafka, so without a bound a slow
    /// broker would pile up requests until memory runs out; when every
    /// permit is taken the request is refused at once with 503 `overloaded`.
    /// Taken after the token verified and the member's rate allowed it.
    pub in_flight: Arc<Semaphore>,
    /// Requests per member (429 beyond it, before any Redis call).
    pub member_rate: Arc<MemberRateLimit>,
    /// The waiting room, when `waiting_room.enabled` (`crate::waiting_room`).
    pub waiting_room: Option<WaitingRoom>,
    /// Entry answers by event and outcome on this instance (the dashboard).
    pub tally: Tally,
    /// The name, gift and units left the survey page shows (`events`).
    pub public_facts: events::PublicFacts,
    /// Signs the receipt of every 202 (`crate::receipts`).
    pub receipts: Arc<crate::receipts::Signer>,
    /// Public reports, built at most once per event every few seconds.
    pub reports: report::ReportCache,
}

/// The member behind the request's bearer token (401 otherwise), within its
/// request rate (429 with Retry-After otherwise). Nothing before this touches
/// Redis, Kafka or PostgreSQL.
pub(crate) fn member(app: &AppState, headers: &HeaderMap) -> Result<MemberId, ApiError> {
    let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let member = auth::bearer(header).and_then(|token| app.auth.verify(token)).map_err(|error| {
        tracing::debug!(%error, "token refused");
        ApiError::Unauthorized
    })?;
    tracing::Span::current().record("user_id", member.as_str());
    if let Err(wait) = app.member_rate.check(member.as_str()) {
        metrics::counter!("firstcome_ingest_rate_limited_total").increment(1);
        return Err(ApiError::RateLimited(wait));
    }
    Ok(member)
}

/// The event's state (memory; Redis only on first sight). An id no event may
/// have is unknown without asking Redis.
pub(crate) async fn known_event(
    app: &AppState,
    event_id: &str,
) -> Result<Arc<platform::event_keys::EventMeta>, ApiError> {
    if !crate::ids::is_valid_id(event_id) {
        return Err(ApiError::NotFound);
    }
    let mut redis = app.redis.clone();
    app.cache
        .get_or_load(&mut redis, event_id)
        .await
        .map_err(|e| ApiError::unavailable(format!("event state: {e}")))?
        .ok_or(ApiError::NotFound)
}

/// Where the status of `entry_id` is served.
pub fn status_url(entry_id: &str) -> String {
    format!("/api/entries/{entry_id}")
}

/// The API, every route inside the request middleware.
pub fn router(state: AppState) -> Router {
    let max_body = state.limits.max_body_bytes;
    let guard = crate::request_context::ClientGuard::new(&state.limits);
    Router::new()
        .route("/api/events/{event_id}/entries", post(entries::submit).layer(DefaultBodyLimit::max(max_body)))
        .route("/api/events/{event_id}", get(events::show))
        .route("/api/entries/{entry_id}", get(entry_status::show))
        .route("/api/receipts/key", get(receipts::key))
        .route("/api/events/{event_id}/report", get(report::json))
        .route("/api/events/{event_id}/report/proofs/{entry_id}", get(report::proof))
        .route("/events/{event_id}/report", get(report::page))
        .route("/", get(page::index))
        .route("/static/{file}", get(page::asset))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(guard, crate::request_context::guard))
        .layer(axum::middleware::from_fn(crate::request_context::track))
}
