//! `GET /api/events/{event_id}`: the public state of an event, from the cache
//! (what the survey page polls), with what the page shows before sign-in —
//! the event's name and gift and the units left — read from Redis at most
//! once a second per event ([`PublicFacts`]), however many pages ask.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use platform::event_keys::EventKeys;
use serde_json::{json, Value};

use super::AppState;
use crate::error::ApiError;
use crate::state::Gate;

/// How stale the units left on the page may be.
const FACTS_TTL: Duration = Duration::from_secs(1);

/// The name, gift and units left of the events pages ask about: one Redis
/// round trip per event per [`FACTS_TTL`] (concurrent misses wait on the one
/// read under way), bounded to known events (the route asks only after the
/// event is known). Cheap to clone.
#[derive(Clone)]
pub struct PublicFacts(moka::future::Cache<String, Arc<Facts>>);

impl Default for PublicFacts {
    fn default() -> Self {
        Self(moka::future::Cache::builder().max_capacity(10_000).time_to_live(FACTS_TTL).build())
    }
}

/// What `firstcome event create` wrote beside the meta (`name`, `gift`;
/// absent for an event the stock stage restored from PostgreSQL) and the
/// stock counter.
#[derive(Debug, Default)]
pub struct Facts {
    name: Option<String>,
    gift: Option<String>,
    units_left: Option<i64>,
}

impl PublicFacts {
    /// The facts of `event_id`; `None` when Redis does not answer (the page
    /// shows the event without them rather than not at all).
    async fn of(&self, app: &AppState, event_id: &str) -> Option<Arc<Facts>> {
        let mut redis = app.redis.clone();
        let keys = EventKeys::new(event_id);
        let read = async move {
            let ((name, gift), stock): ((Option<String>, Option<String>), Option<i64>) = redis::pipe()
                .cmd("HMGET")
                .arg(&keys.meta)
                .arg("name")
                .arg("gift")
                .cmd("GET")
                .arg(&keys.stock)
                .query_async(&mut redis)
                .await?;
            Ok::<_, redis::RedisError>(Arc::new(Facts { name, gift, units_left: stock.map(|s| s.max(0)) }))
        };
        match self.0.try_get_with(event_id.to_string(), read).await {
            Ok(facts) => Some(facts),
            Err(error) => {
                tracing::warn!(event_id, %error, "the event's public facts could not be read");
                None
            }
        }
    }
}

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
    let facts = app.public_facts.of(&app, &event_id).await.unwrap_or_default();
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
        "for_sale": meta.for_sale,
        "name": facts.name,
        "gift": facts.gift,
        "units_left": facts.units_left,
    })))
}

fn rfc3339(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339())
}
