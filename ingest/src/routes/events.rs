//! `GET /api/events/{event_id}`: the public state of an event, from the cache
//! (what the survey page polls; it never reaches more than one Redis read).

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::AppState;
use crate::error::ApiError;
use crate::state::Gate;

pub async fn show(State(app): State<AppState>, Path(event_id): Path<String>) -> Result<Json<Value>, ApiError> {
    tracing::Span::current().record("event_id", event_id.as_str());
    let meta = super::known_event(&app, &event_id).await?;
    let now = schemas::now_millis();
    // The pre-queue draw's commitment (made on first sight, so it is public
    // before anyone can queue; one Redis call per event and instance, then
    // remembered) and, from the opening on, its seed.
    let shuffle = match &app.waiting_room {
        Some(room) => {
            let mut redis = app.redis.clone();
            room.public(&mut redis, &event_id, meta.open_at_ms, now)
                .await
                .inspect_err(|error| tracing::warn!(%error, "shuffle commitment unavailable"))
                .ok()
        }
        None => None,
    };
    Ok(Json(json!({
        "event_id": meta.event_id,
        "status": Gate::of(&meta, now).as_str(),
        "open_at": rfc3339(meta.open_at_ms),
        "close_at": rfc3339(meta.close_at_ms),
        "open_at_ms": meta.open_at_ms,
        "close_at_ms": meta.close_at_ms,
        "server_time_ms": now,
        "questions": meta.questions,
        "shuffle": shuffle,
    })))
}

fn rfc3339(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339())
}
