//! Operator actions on an event, for the CLI (`firstcome event close`), run
//! with the operator's credentials: ingest's own may not write an event's
//! status (the dashboard's button answers with the command instead).

use platform::event_keys::{EventKeys, EventStatus, StateChange, STATE_CHANNEL};

#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    #[error("no event {0}")]
    NoSuchEvent(String),
    #[error("database: {0}")]
    Database(#[from] platform::db::DbError),
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("encoding the state change: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Closes the event now, PostgreSQL first (the record of the decision), then
/// Redis' `meta` status and the state change on the pub/sub channel in one
/// MULTI (every ingest instance answers 410 from then on; the admit and
/// stock scripts read the same status). Running it again is harmless.
pub async fn close_event(
    db: &deadpool_postgres::Pool,
    redis: &mut platform::redis::Connection,
    event_id: &str,
) -> Result<(), CloseError> {
    let client = db.get().await.map_err(platform::db::DbError::from)?;
    let updated = client
        .execute(
            "UPDATE events SET status = 'closed', closed_at = coalesce(closed_at, now()) WHERE event_id = $1",
            &[&event_id],
        )
        .await?;
    if updated == 0 {
        return Err(CloseError::NoSuchEvent(event_id.to_string()));
    }
    let keys = EventKeys::new(event_id);
    // Keys gone (a day after close_at) need nothing: HSET would leave a meta
    // without its expiry.
    let known: bool = redis::cmd("EXISTS").arg(&keys.meta).query_async(redis).await?;
    if !known {
        return Ok(());
    }
    let change = serde_json::to_string(&StateChange { event_id: event_id.into(), status: EventStatus::Closed })?;
    let _: () = redis::pipe()
        .atomic()
        .hset(&keys.meta, "status", EventStatus::Closed.as_str())
        .publish(STATE_CHANNEL, change)
        .query_async(redis)
        .await?;
    tracing::info!(event_id, "event closed by an operator");
    Ok(())
}
