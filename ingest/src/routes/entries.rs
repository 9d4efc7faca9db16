//! `POST /api/events/{event_id}/entries`: docs/DESIGN.md "Flow" step 1.
//!
//! Checks run cheapest first, and everything that can refuse without Kafka
//! does: token → member's rate (429) → in-flight slot (503 overloaded) →
//! event state (memory: 404, 425, 410 closed) → body (read within its
//! deadline, else 408) → ONE Redis script decision (eligible? first entry?
//! stock left?) → produce → the accept mark → 202 only after the broker's ack.

use std::time::Duration;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use platform::event_keys::{EventMeta, EventStatus, StateChange};
use platform::kafka::RecordContext;
use platform::redis::Connection as ConnectionManager;
use platform::trace_context::TraceParent;
use schemas::SurveySubmitted;
use tracing::Span;
use uuid::Uuid;

use super::{known_event, status_url, AppState};
use crate::admission::Admission;
use crate::auth::MemberId;
use crate::error::{ApiError, Outcome};
use crate::metrics::Stage;
use crate::request_context::CorrelationId;
use crate::state::Gate;
use crate::submission::{EntryBody, Submission};
use crate::waiting_room::Turn;

/// The entry route: [`enter`], its answer counted for the dashboard (events
/// this instance knows only, so the tally stays bounded).
pub async fn submit(State(app): State<AppState>, Path(event_id): Path<String>, request: Request) -> Response {
    let tally = app.tally.clone();
    let known = app.cache.clone();
    let response = enter(State(app), Path(event_id.clone()), request).await.unwrap_or_else(IntoResponse::into_response);
    if let Some(outcome) = response.extensions().get::<Outcome>() {
        if known.get(&event_id).is_some() {
            tally.record(&event_id, outcome.0);
        }
    }
    response
}

async fn enter(
    State(app): State<AppState>,
    Path(event_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let arrived_at = schemas::now_millis();
    let span = Span::current();
    span.record("event_id", event_id.as_str());

    // 1. Who is asking, within their rate: anonymous clients and a member
    // over its rate never reach a slot, Redis or Kafka.
    let member = super::member(&app, request.headers())?;

    // 1b. Load shedding: a free slot now, or 503 at once (never queued). Held
    // until the answer, so it bounds the requests waiting on Kafka.
    let _in_flight = app.in_flight.try_acquire().map_err(|_| ApiError::Overloaded)?;

    // 2. Is the event open, and is it the member's turn?
    let meta = known_event(&app, &event_id).await?;
    let mut redis = app.redis.clone();
    let gate = Gate::of(&meta, arrived_at);
    pass_gate(&app, &mut redis, &event_id, &member, gate).await?;

    // 3. The body, read only now: refused requests above never pay for it.
    let body = read_body(&app, request, &meta).await?;

    // 4. Eligible, first entry, stock left.
    let admitted = admit(&app, &redis, &event_id, &member, gate, &span).await?;
    span.record("entry_id", admitted.entry_id.as_str());

    // 5. Produce, and answer 202 only once the broker acknowledged.
    let event = SurveySubmitted {
        event_id: event_id.clone(),
        entry_id: admitted.entry_id.clone(),
        user_id: member.as_str().to_string(),
        answers: body.submission.answers,
        submitted_at: arrived_at,
        accepted_at: admitted.admitted_at,
        ticket: admitted.ticket,
        client: body.submission.client,
    };
    produce(&app, &event, RecordContext::new_root(body.correlation_id, body.trace), &admitted).await?;

    // 6. The accept mark, then the 202.
    mark_accepted(&app, &redis, &event_id, &member, &admitted.entry_id).await;
    let outcome = if admitted.resumed { "resumed" } else { "accepted" };
    // DEBUG, not INFO: one line per accepted entry was a measurable share of
    // ingest's CPU at tens of thousands of entries/s; refusals and
    // failures are still logged, and the span keeps the correlation id.
    tracing::debug!(outcome, "entry accepted");
    let receipt = super::receipts::sign(&app, &event);
    Ok(accepted(&admitted.entry_id, admitted.ticket, meta.for_sale, outcome, receipt))
}

/// The waiting room (when on), then the event's state. The member's turn is
/// asked for before the body and the admit script; sold out and closed skip
/// the room (answered at once).
async fn pass_gate(
    app: &AppState,
    redis: &mut ConnectionManager,
    event_id: &str,
    member: &MemberId,
    gate: Gate,
) -> Result<(), ApiError> {
    if let (Some(room), Gate::Open | Gate::TooEarly { .. }) = (&app.waiting_room, gate) {
        match room.turn(redis, event_id, member).await {
            Ok(Turn::Pass) => {}
            Ok(Turn::Wait(place)) => return Err(ApiError::Waiting(place)),
            Ok(Turn::PreQueue(place)) => return Err(ApiError::PreQueued { opens_in: place.retry_after, place }),
            Err(error) => return Err(ApiError::unavailable(format!("waiting room: {error}"))),
        }
    }
    match gate {
        Gate::Open => Ok(()),
        Gate::TooEarly { opens_in_ms } => Err(ApiError::TooEarly(Duration::from_millis(opens_in_ms.max(0) as u64))),
        Gate::Closed => Err(ApiError::Closed),
        // Sold out still asks the admit script (Redis, never Kafka) so that a
        // member who already entered gets 409 with their entry id (they may
        // have won) and a non-buyer 403, not a misleading 410; nobody new is
        // admitted until a reopen is announced.
        Gate::SoldOut => Ok(()),
    }
}

/// What the request brings besides the member: the checked answers and
/// the ids that follow the entry downstream.
struct Body {
    submission: Submission,
    correlation_id: String,
    trace: Option<TraceParent>,
}

/// Reads and checks the body. A slow body holds a slot: it gets a
/// deadline, then 408 and the connection is closed.
async fn read_body(app: &AppState, request: Request, meta: &EventMeta) -> Result<Body, ApiError> {
    let correlation_id =
        request.extensions().get::<CorrelationId>().map(|c| c.0.clone()).unwrap_or_else(|| Uuid::new_v4().to_string());
    let trace = request.headers().get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceParent::parse);
    let header_agent = request.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string);
    let Json(body) =
        tokio::time::timeout(app.limits.body_read_timeout(), Json::<EntryBody>::from_request(request, app))
            .await
            .map_err(|_| ApiError::BodyTimeout)??;
    let submission = body.validate(&meta.questions, &app.limits, header_agent.as_deref())?;
    Ok(Body { submission, correlation_id, trace })
}

/// An entry the admit script let through: new, or a pending one resumed.
struct Admitted {
    entry_id: String,
    admitted_at: i64,
    ticket: i64,
    resumed: bool,
}

/// Eligible, first entry, stock left: one atomic script (grouped with the
/// other requests waiting at this moment, each decided in turn). A refusal
/// that names an entry records it on the request's span.
async fn admit(
    app: &AppState,
    redis: &ConnectionManager,
    event_id: &str,
    member: &MemberId,
    gate: Gate,
    span: &Span,
) -> Result<Admitted, ApiError> {
    let new_entry_id = Uuid::now_v7().to_string();
    let admitting = std::time::Instant::now();
    let admission = app
        .admitter
        .admit_grouped(redis, event_id, member, &new_entry_id, gate != Gate::SoldOut)
        .await
        .map_err(|e| ApiError::unavailable(format!("admission: {e}")))?;
    stage_done(Stage::Admit, admitting);
    match admission {
        Admission::Accept { entry_id, admitted_at_ms, ticket } => {
            Ok(Admitted { entry_id, admitted_at: admitted_at_ms, ticket, resumed: false })
        }
        Admission::Resume { entry_id, admitted_at_ms, ticket } => {
            Ok(Admitted { entry_id, admitted_at: admitted_at_ms, ticket, resumed: true })
        }
        Admission::AlreadyEntered { entry_id } => {
            span.record("entry_id", entry_id.as_str());
            Err(ApiError::AlreadyEntered { entry_id })
        }
        Admission::InProgress { entry_id, retry_after } => {
            span.record("entry_id", entry_id.as_str());
            Err(ApiError::EntryInProgress { entry_id, retry_after })
        }
        Admission::NotEligible => Err(ApiError::NotEligible),
        Admission::SoldOut => {
            // The counter is the truth: stop asking Redis until told otherwise.
            // Only when this request found the event open: under a cached
            // sold-out the script refuses by request (`admit_new` = 0), and
            // re-applying it could undo a reopen that arrived meanwhile.
            if gate == Gate::Open {
                app.cache.apply(&StateChange { event_id: event_id.to_string(), status: EventStatus::SoldOut });
            }
            Err(ApiError::SoldOut)
        }
        Admission::Closed => {
            app.cache.apply(&StateChange { event_id: event_id.to_string(), status: EventStatus::Closed });
            Err(ApiError::Closed)
        }
        Admission::TooEarly { opens_in } => Err(ApiError::TooEarly(opens_in)),
        // admit_grouped waits these out; one that still comes back is a 503.
        Admission::Settling { .. } => Err(ApiError::unavailable("admission: the ticket counter is settling")),
    }
}

/// Produces the entry within the publish deadline; `Ok` only once the broker
/// acknowledged.
///
/// The pending mark `P|entry|ms` is already set. If this produce fails (Kafka
/// down, delivery timeout, registry down) or the process dies before the ack,
/// the mark stays: the member's retry after `resume_after` (longer than any
/// publish may take) RESUMES the same entry id instead of being refused or
/// given a second one. That is how "a crash between the first-entry mark and
/// the broker's ack must not lock the member out" holds without ever
/// creating two entries for one member; a record that did reach the log
/// before the failure is produced twice with one entry id, and consumers
/// dedupe on it.
async fn produce(
    app: &AppState,
    event: &SurveySubmitted,
    context: RecordContext,
    admitted: &Admitted,
) -> Result<(), ApiError> {
    let publishing = std::time::Instant::now();
    let published = tokio::time::timeout(app.publish_deadline, app.producer.publish(event, context)).await;
    stage_done(Stage::Produce, publishing);
    let reason = match published {
        Ok(Ok(_delivery)) => return Ok(()),
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no acknowledgement within {:?}", app.publish_deadline),
    };
    metrics::counter!("firstcome_ingest_produce_failures_total").increment(1);
    let resumable_in = (admitted.admitted_at + app.resume_after.as_millis() as i64 - schemas::now_millis()).max(0);
    Err(ApiError::Unavailable {
        reason: format!("producing entry {}: {reason}", admitted.entry_id),
        retry_after: Duration::from_millis(resumable_in as u64),
    })
}

/// The accept mark, written before the 202. The entry is in the log: from
/// here on the member is answered 202 even if Redis fails, since a pending
/// mark only costs a harmless re-produce later. Grouped with the other
/// requests' marks (one script call per batch).
async fn mark_accepted(app: &AppState, redis: &ConnectionManager, event_id: &str, member: &MemberId, entry_id: &str) {
    let marking = std::time::Instant::now();
    let marked = app.admitter.mark_accepted_grouped(redis, event_id, member, entry_id).await;
    stage_done(Stage::MarkAccepted, marking);
    match marked {
        Ok(true) => {}
        Ok(false) => tracing::warn!("first-entry mark was gone or changed before the accept mark"),
        Err(error) => tracing::warn!(%error, "could not mark the entry accepted; a retry will re-produce it"),
    }
}

/// The time one step of the accept path took,
/// `firstcome_ingest_stage_seconds{stage}` (admit script, produce to the
/// broker's ack, accept mark): where an entry's latency goes.
fn stage_done(stage: Stage, started: std::time::Instant) {
    crate::metrics::stage_done(stage, started.elapsed());
}

/// The 202's body, serialised straight from the struct: no
/// `serde_json::Value` tree (a map and a copy of every string) built first.
/// Fields in the order `json!` wrote them (its map is sorted).
#[derive(serde::Serialize)]
struct AcceptedBody<'a> {
    entry_id: &'a str,
    for_sale: i64,
    receipt: Option<&'a crate::receipts::Receipt>,
    status: &'static str,
    status_url: &'a str,
    ticket: i64,
}

/// The 202: the entry, where to follow it, and the member's place in line
/// (`ticket` of `for_sale` units), with the signed receipt of both. Never
/// an outcome: only the stock stage decides one.
fn accepted(
    entry_id: &str,
    ticket: i64,
    for_sale: i64,
    outcome: &'static str,
    receipt: Option<crate::receipts::Receipt>,
) -> Response {
    let url = status_url(entry_id);
    let body =
        AcceptedBody { entry_id, for_sale, receipt: receipt.as_ref(), status: "pending", status_url: &url, ticket };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response.extensions_mut().insert(Outcome(outcome));
    response
}
