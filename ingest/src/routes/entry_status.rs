//! `GET /api/entries/{entry_id}`: pending → won / lost → sent / failed.
//!
//! Only for the member whose entry it is: the bearer token is required
//! (401), and another member's entry answers 404, as an unknown one does
//! (an entry id reveals nothing, and guessing ids costs the guesser its
//! request rate before any lookup).
//!
//! The entries table (written by the recorder) is the answer; between the
//! 202 and the recorder's write, the entry is only known to Redis (`entries`
//! hash of its event), which is answered as `pending` by any instance.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::{DateTime, Utc};
use platform::event_keys::EventKeys;
use serde_json::{json, Value};
use uuid::Uuid;

use super::AppState;
use crate::auth::MemberId;
use crate::error::ApiError;

pub async fn show(
    State(app): State<AppState>,
    Path(entry_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let span = tracing::Span::current();
    let member = super::member(&app, &headers)?;
    let id = Uuid::parse_str(&entry_id)
        .map_err(|_| ApiError::BadRequest { code: "invalid_entry_id", message: "the entry id is not a UUID".into() })?;
    span.record("entry_id", id.to_string().as_str());

    let db_failure = match from_database(&app.db, id, &member).await {
        Ok(Some(entry)) => return Ok(Json(entry)),
        Ok(None) => None,
        // Redis may still know it as pending: answer that rather than fail.
        Err(error) => Some(error),
    };
    match pending_in(&app, &id.to_string(), &member).await {
        Ok(Some(event_id)) => {
            // Its place in line while it waits for the stock stage: never an outcome.
            let ticket: Option<i64> = redis::cmd("HGET")
                .arg(EventKeys::new(&event_id).tickets)
                .arg(id.to_string())
                .query_async(&mut app.redis.clone())
                .await
                .unwrap_or(None);
            let for_sale = app.cache.get(&event_id).map(|meta| meta.for_sale);
            Ok(Json(json!({
                "entry_id": id.to_string(),
                "event_id": event_id,
                "status": "pending",
                "ticket": ticket,
                "for_sale": for_sale,
            })))
        }
        Ok(None) => match db_failure {
            Some(error) => Err(ApiError::unavailable(format!("entry lookup: {error}"))),
            None => Err(ApiError::NotFound),
        },
        Err(error) => Err(ApiError::unavailable(format!("entry lookup: {error}"))),
    }
}

/// The member's entry from the entries table (`None`: not there, or another member's).
async fn from_database(
    db: &deadpool_postgres::Pool,
    id: Uuid,
    member: &MemberId,
) -> Result<Option<Value>, platform::db::DbError> {
    let client = db.get().await?;
    let row = client
        .query_opt(
            "SELECT e.event_id, e.status, e.outcome, e.unit_no, e.dispatch_status,
                    e.submitted_at, e.accepted_at, e.decided_at, e.dispatched_at, e.ticket,
                    (v.total_stock - v.safety_stock)::bigint AS for_sale
               FROM event_entries e LEFT JOIN events v ON v.event_id = e.event_id
              WHERE e.entry_id = $1 AND e.user_id = $2",
            &[&id, &member.as_str()],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let time = |name: &str| -> Result<Option<String>, tokio_postgres::Error> {
        Ok(row.try_get::<_, Option<DateTime<Utc>>>(name)?.map(|t| t.to_rfc3339()))
    };
    Ok(Some(json!({
        "entry_id": id.to_string(),
        "event_id": row.try_get::<_, String>("event_id")?,
        "status": row.try_get::<_, String>("status")?,
        "outcome": row.try_get::<_, Option<String>>("outcome")?,
        "unit_no": row.try_get::<_, Option<i32>>("unit_no")?,
        "dispatch_status": row.try_get::<_, Option<String>>("dispatch_status")?,
        "submitted_at": time("submitted_at")?,
        "accepted_at": time("accepted_at")?,
        "decided_at": time("decided_at")?,
        "dispatched_at": time("dispatched_at")?,
        "ticket": row.try_get::<_, Option<i64>>("ticket")?,
        "for_sale": row.try_get::<_, Option<i64>>("for_sale")?,
    })))
}

/// Why a pending entry could not be looked up.
#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("recent events: {0}")]
    Database(#[from] platform::db::DbError),
}

/// The event whose `entries` hash holds `entry_id`, if any: first the events
/// this instance has cached (no database round trip), then the events open
/// or recently closed in PostgreSQL. The second look is needed because the
/// 202 may have come from another instance, for an event this one never saw:
/// the member's status poll may land anywhere.
async fn pending_in(app: &AppState, entry_id: &str, member: &MemberId) -> Result<Option<String>, LookupError> {
    let cached = app.cache.known_ids();
    if let Some(event_id) = holding(app, cached.clone(), entry_id, member).await? {
        return Ok(Some(event_id));
    }
    let others: Vec<String> = recent_events(&app.db)
        .await?
        .into_iter()
        .filter(|event_id| !cached.contains(event_id) && crate::ids::is_valid_id(event_id))
        .collect();
    Ok(holding(app, others, entry_id, member).await?)
}

/// Which of `events` holds `entry_id` for `member` in its `entries` hash
/// (entry id → member; one pipelined round trip of HGET).
async fn holding(
    app: &AppState,
    events: Vec<String>,
    entry_id: &str,
    member: &MemberId,
) -> redis::RedisResult<Option<String>> {
    if events.is_empty() {
        return Ok(None);
    }
    let mut pipe = redis::pipe();
    for event_id in &events {
        pipe.cmd("HGET").arg(EventKeys::new(event_id).entries).arg(entry_id);
    }
    let mut redis = app.redis.clone();
    let found: Vec<Option<String>> = pipe.query_async(&mut redis).await?;
    Ok(events
        .into_iter()
        .zip(found)
        .find(|(_, owner)| owner.as_deref() == Some(member.as_str()))
        .map(|(event_id, _)| event_id))
}

/// The events that may still hold pending entries: open, or closed within a
/// day (their Redis keys outlive the close by a day). A handful of rows.
async fn recent_events(db: &deadpool_postgres::Pool) -> Result<Vec<String>, platform::db::DbError> {
    let client = db.get().await?;
    let rows = client.query("SELECT event_id FROM events WHERE close_at > now() - interval '1 day'", &[]).await?;
    Ok(rows.iter().map(|row| row.try_get::<_, String>(0)).collect::<Result<_, _>>()?)
}
