//! The operations dashboard, on the internal ops listener beside `/healthz`
//! and `/metrics`, behind the operator token (`operator.token`, a bearer
//! distinct from member tokens: a member JWT is never accepted here).
//!
//! | route | what |
//! | --- | --- |
//! | `GET /dashboard` | the page (plain HTML + JS; it asks for the operator token) |
//! | `GET /ops/api/events` | recent events (the page's picker) |
//! | `GET /ops/api/events/{id}` | one [`Snapshot`] of the event's figures |
//! | `GET /ops/api/events/{id}/stream` | server-sent events: a snapshot every second |
//! | `POST /ops/api/events/{id}/close` | 403 `operator_action`: closing is the operator's, with `firstcome event close` |
//!
//! Snapshots are shared: one per event per [`SNAPSHOT_TTL`], however many
//! dashboards watch, and at most [`MAX_STREAMS`] streams are open at once,
//! so the dashboard cannot become a load on PostgreSQL, Redis or Kafka.
//! The streams end when ingest shuts down.

pub mod snapshot;
pub mod tally;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde_json::json;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::routes::AppState;
use crate::settings::OperatorSettings;
use snapshot::KafkaFigures;
pub use snapshot::Snapshot;

/// One snapshot per event is computed at most this often.
pub const SNAPSHOT_TTL: Duration = Duration::from_millis(900);
/// How often a stream sends a snapshot.
pub const STREAM_EVERY: Duration = Duration::from_secs(1);
/// Most dashboard streams open at once.
pub const MAX_STREAMS: usize = 16;

/// What the dashboard's handlers share. Cheap to clone.
#[derive(Clone)]
pub struct Dashboard {
    app: AppState,
    operator: Arc<OperatorSettings>,
    /// Made on the first snapshot: an instance nobody watches opens no extra Kafka clients.
    kafka: Arc<std::sync::OnceLock<Result<KafkaFigures, String>>>,
    kafka_settings: Arc<platform::settings::KafkaSettings>,
    cache: Arc<Mutex<HashMap<String, (Instant, Snapshot)>>>,
    streams: Arc<Semaphore>,
    stop: CancellationToken,
}

impl Dashboard {
    pub fn new(
        app: AppState,
        operator: OperatorSettings,
        kafka: &platform::settings::KafkaSettings,
        stop: CancellationToken,
    ) -> Self {
        Self {
            app,
            operator: Arc::new(operator),
            kafka: Arc::new(std::sync::OnceLock::new()),
            kafka_settings: Arc::new(kafka.clone()),
            cache: Arc::new(Mutex::new(HashMap::new())),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            stop,
        }
    }

    /// The event's figures: the shared one while fresh, else read anew
    /// (concurrent callers wait on the lock and share it). `None`: unknown event.
    pub async fn snapshot(&self, event_id: &str) -> Option<Snapshot> {
        let mut cache = self.cache.lock().await;
        if let Some((at, snapshot)) = cache.get(event_id) {
            if at.elapsed() < SNAPSHOT_TTL {
                return Some(snapshot.clone());
            }
        }
        let snapshot = self.read(event_id).await?;
        // Bounded: only known events are kept, and the oldest go first.
        if cache.len() >= 64 {
            cache.retain(|_, (at, _)| at.elapsed() < SNAPSHOT_TTL);
        }
        cache.insert(event_id.to_string(), (Instant::now(), snapshot.clone()));
        Some(snapshot)
    }

    async fn read(&self, event_id: &str) -> Option<Snapshot> {
        let mut snapshot =
            Snapshot { event_id: event_id.to_string(), at_ms: schemas::now_millis(), ..Default::default() };
        let mut redis = self.app.redis.clone();
        match snapshot::redis_figures(&mut redis, event_id, &mut snapshot).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(error) => snapshot.errors.push(format!("redis: {error}")),
        }
        if let Err(error) = snapshot::database_figures(&self.app.db, event_id, &mut snapshot).await {
            snapshot.errors.push(format!("database: {error}"));
        }
        let (kafka, settings) = (self.kafka.clone(), self.kafka_settings.clone());
        let read = move || match kafka.get_or_init(|| KafkaFigures::new(&settings).map_err(|e| e.to_string())) {
            Ok(figures) => figures.read().map_err(|e| e.to_string()),
            Err(error) => Err(error.clone()),
        };
        match tokio::task::spawn_blocking(read).await {
            Ok(Ok((lag, dead))) => {
                snapshot.lag = lag;
                snapshot.dead_letters = dead;
            }
            Ok(Err(error)) => snapshot.errors.push(format!("kafka: {error}")),
            Err(error) => snapshot.errors.push(format!("kafka: {error}")),
        }
        snapshot.answers = self.app.tally.of(event_id);
        for error in &snapshot.errors {
            tracing::warn!(event_id, %error, "dashboard figure unavailable");
        }
        // Operators see which figure is missing, not internal addresses.
        snapshot.errors = snapshot.errors.iter().map(|e| platform::redact::urls(e)).collect();
        Some(snapshot)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|token| self.operator.accepts(token.trim()))
    }
}

/// 401 unless the request carries the operator token.
fn refuse(dashboard: &Dashboard, headers: &HeaderMap) -> Option<Response> {
    if dashboard.authorized(headers) {
        return None;
    }
    metrics::counter!("firstcome_ingest_dashboard_refused_total").increment(1);
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({ "error": "unauthorized", "message": "the operator token is required" })),
        )
            .into_response(),
    )
}

fn valid(event_id: &str) -> bool {
    crate::ids::is_valid_id(event_id)
}

async fn page() -> Response {
    crate::routes::page::html(crate::routes::page::DASHBOARD_HTML.to_string())
}

async fn events(State(dashboard): State<Dashboard>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse(&dashboard, &headers) {
        return refused;
    }
    match snapshot::recent_events(&dashboard.app.db).await {
        Ok(events) => Json(json!({
            "events": events.into_iter().map(|(id, name, status)| json!({"event_id": id, "name": name, "status": status})).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(error) => {
            tracing::warn!(%error, "dashboard: events unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "unavailable"}))).into_response()
        }
    }
}

async fn show(State(dashboard): State<Dashboard>, Path(event_id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse(&dashboard, &headers) {
        return refused;
    }
    if !valid(&event_id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match dashboard.snapshot(&event_id).await {
        Some(snapshot) => Json(snapshot).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "not_found"}))).into_response(),
    }
}

async fn stream(State(dashboard): State<Dashboard>, Path(event_id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse(&dashboard, &headers) {
        return refused;
    }
    if !valid(&event_id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Ok(slot) = dashboard.streams.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "5")], Json(json!({"error": "overloaded"})))
            .into_response();
    };
    Sse::new(snapshots(dashboard, event_id, slot)).keep_alive(KeepAlive::default()).into_response()
}

/// A snapshot every [`STREAM_EVERY`], with answers per second since the
/// previous one, until ingest stops.
fn snapshots(
    dashboard: Dashboard,
    event_id: String,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct Cursor {
        dashboard: Dashboard,
        event_id: String,
        previous: Option<(i64, std::collections::BTreeMap<&'static str, u64>)>,
        first: bool,
        _slot: tokio::sync::OwnedSemaphorePermit,
    }
    let cursor = Cursor { dashboard, event_id, previous: None, first: true, _slot: slot };
    futures::stream::unfold(cursor, |mut cursor| async move {
        if !cursor.first {
            tokio::select! {
                _ = cursor.dashboard.stop.cancelled() => return None,
                _ = tokio::time::sleep(STREAM_EVERY) => {}
            }
        }
        cursor.first = false;
        if cursor.dashboard.stop.is_cancelled() {
            return None;
        }
        let event = match cursor.dashboard.snapshot(&cursor.event_id).await {
            Some(mut snapshot) => {
                if let Some((at, before)) = &cursor.previous {
                    let secs = ((snapshot.at_ms - at) as f64 / 1000.0).max(0.001);
                    for (outcome, now) in &snapshot.answers {
                        let then = before.get(outcome).copied().unwrap_or(0);
                        snapshot.answers_per_sec.insert(outcome, now.saturating_sub(then) as f64 / secs);
                    }
                }
                cursor.previous = Some((snapshot.at_ms, snapshot.answers.clone()));
                snapshot_event(&snapshot)
            }
            None => Event::default().event("gone").data("no such event"),
        };
        Some((Ok(event), cursor))
    })
}

/// One snapshot as a server-sent event: `event: snapshot`, the JSON on
/// `data:` lines (what `static/dashboard.js` reads back; its parsing is
/// checked against this in `tests/fuzz.rs`).
pub fn snapshot_event(snapshot: &Snapshot) -> Event {
    Event::default().event("snapshot").json_data(snapshot).unwrap_or_else(|_| Event::default().comment("unencodable"))
}

/// Closing an event is the operator's action, with the operator's
/// credentials (`firstcome event close`): ingest's own Redis user and
/// database role may not write an event's status (neither close nor
/// reopen), so a compromised public service cannot change an event's state.
/// The button answers with the command to run.
async fn close(State(dashboard): State<Dashboard>, Path(event_id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse(&dashboard, &headers) {
        return refused;
    }
    if !valid(&event_id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let command = format!("firstcome event close {event_id}");
    let message = format!("closing an event is an operator action: run `{command}` with the operator's credentials");
    (StatusCode::FORBIDDEN, Json(json!({"error": "operator_action", "message": message, "command": command})))
        .into_response()
}

/// The dashboard's routes, for the ops listener.
pub fn router(dashboard: Dashboard) -> Router {
    Router::new()
        .route("/dashboard", get(page))
        .route("/static/{file}", get(crate::routes::page::asset))
        .route("/ops/api/events", get(events))
        .route("/ops/api/events/{event_id}", get(show))
        .route("/ops/api/events/{event_id}/stream", get(stream))
        .route("/ops/api/events/{event_id}/close", post(close))
        .with_state(dashboard)
}
