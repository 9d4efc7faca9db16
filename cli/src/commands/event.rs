//! `firstcome event create | show | close`.
//!
//! `create` writes the event and its ledger to PostgreSQL, loads the eligible
//! members (bought the product) from the replica into Redis and sets the
//! event's keys (see `platform::event_keys`), all expiring after close.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::Serialize;

use platform::event_keys::{write_event, EventKeys, EventMeta, EventStatus, StateChange, STATE_CHANNEL};

use crate::settings::CliSettings;

/// The survey every demo event asks.
pub const DEFAULT_QUESTIONS: [&str; 2] = ["satisfaction", "recommend"];

/// An event to create.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub name: String,
    pub product_id: String,
    pub total_stock: i32,
    pub safety_stock: i32,
    pub open_at: DateTime<Utc>,
    pub close_at: DateTime<Utc>,
    pub questions: Vec<String>,
}

impl NewEvent {
    pub fn for_sale(&self) -> i32 {
        self.total_stock - self.safety_stock
    }

    fn validate(&self) -> anyhow::Result<()> {
        // The rules every consumer applies to event ids (they go into Redis keys).
        schemas::check_id("event id", &self.event_id).map_err(anyhow::Error::msg)?;
        if self.total_stock < 0 || self.safety_stock < 0 || self.safety_stock > self.total_stock {
            bail!("need 0 <= safety stock <= total stock");
        }
        if self.close_at <= self.open_at {
            bail!("close_at must be after open_at");
        }
        Ok(())
    }
}

/// Parses `now`, `+90s`, `+15m`, `+2h`, `-5m` or an RFC 3339 time.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if text == "now" {
        return Ok(now);
    }
    if let Some(rest) = text.strip_prefix('+').map(|r| (1, r)).or(text.strip_prefix('-').map(|r| (-1, r))) {
        let (sign, rest) = rest;
        let (number, unit) = rest.split_at(rest.len().saturating_sub(1));
        let n: i64 = number.parse().with_context(|| format!("bad relative time {text}"))?;
        let secs = match unit {
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            _ => bail!("bad unit in {text} (s, m, h, d)"),
        };
        return Ok(now + chrono::Duration::seconds(sign * secs));
    }
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("bad time {text}: use now, +10m or RFC 3339"))?
        .with_timezone(&Utc))
}

/// Creates the event; returns how many members are eligible.
pub async fn create(settings: &CliSettings, event: &NewEvent) -> anyhow::Result<usize> {
    event.validate()?;
    let pool = platform::db::pool(&settings.database)?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let questions = serde_json::to_value(&event.questions)?;
    let inserted = tx
        .execute(
            "INSERT INTO events (event_id, name, product_id, total_stock, safety_stock, open_at, close_at, questions, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open') ON CONFLICT (event_id) DO NOTHING",
            &[&event.event_id, &event.name, &event.product_id, &event.total_stock, &event.safety_stock,
              &event.open_at, &event.close_at, &questions],
        )
        .await?;
    if inserted == 0 {
        bail!("event {} already exists", event.event_id);
    }
    tx.execute(
        "INSERT INTO stock_ledger (event_id, total, safety_stock) VALUES ($1, $2, $3)",
        &[&event.event_id, &event.total_stock, &event.safety_stock],
    )
    .await?;
    let eligible: Vec<String> = tx
        .query("SELECT DISTINCT member_id FROM purchases WHERE product_id = $1", &[&event.product_id])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();

    let mut redis = platform::redis::connect(&settings.redis).await?;
    load_redis(&mut redis, event, &eligible).await?;
    // PostgreSQL last: a failure above leaves no event row behind to confuse a retry.
    tx.commit().await?;
    Ok(eligible.len())
}

/// Writes the event's Redis keys (see `platform::event_keys::write_event`).
async fn load_redis(
    redis: &mut redis::aio::ConnectionManager,
    event: &NewEvent,
    eligible: &[String],
) -> anyhow::Result<()> {
    let meta = EventMeta {
        event_id: event.event_id.clone(),
        open_at_ms: event.open_at.timestamp_millis(),
        close_at_ms: event.close_at.timestamp_millis(),
        for_sale: i64::from(event.for_sale()),
        questions: event.questions.clone(),
        status: if event.for_sale() > 0 { EventStatus::Open } else { EventStatus::SoldOut },
    };
    if !write_event(redis, &meta, eligible).await? {
        bail!("event {} already has Redis keys: refusing to overwrite a live event", event.event_id);
    }
    Ok(())
}

/// An event's state across PostgreSQL and Redis.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub event_id: String,
    pub name: String,
    pub status_db: String,
    pub status_redis: Option<String>,
    pub total: i32,
    pub safety_stock: i32,
    pub for_sale: i32,
    pub ledger_issued: i32,
    pub ledger_returned: i32,
    pub redis_stock: Option<i64>,
    pub redis_winners: i64,
    pub open_at: DateTime<Utc>,
    pub close_at: DateTime<Utc>,
    pub entries_by_status: HashMap<String, i64>,
}

/// Reads the event's state.
pub async fn show(settings: &CliSettings, event_id: &str) -> anyhow::Result<EventView> {
    let pool = platform::db::pool(&settings.database)?;
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT e.name, e.status, e.total_stock, e.safety_stock, e.open_at, e.close_at,
                    COALESCE(l.issued, 0), COALESCE(l.returned, 0)
             FROM events e LEFT JOIN stock_ledger l USING (event_id) WHERE e.event_id = $1",
            &[&event_id],
        )
        .await?
        .with_context(|| format!("no event {event_id}"))?;
    let entries_by_status = client
        .query("SELECT status, count(*) FROM event_entries WHERE event_id = $1 GROUP BY status", &[&event_id])
        .await?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    let mut redis = platform::redis::connect(&settings.redis).await?;
    let keys = EventKeys::new(event_id);
    let meta = EventMeta::load(&mut redis, event_id).await?;
    let redis_stock: Option<i64> = redis.get(&keys.stock).await?;
    let winners: i64 = redis.hlen(&keys.winners).await?;
    let (total, safety): (i32, i32) = (row.get(2), row.get(3));
    Ok(EventView {
        event_id: event_id.to_string(),
        name: row.get(0),
        status_db: row.get(1),
        status_redis: meta.map(|m| m.status.as_str().to_string()),
        total,
        safety_stock: safety,
        for_sale: total - safety,
        ledger_issued: row.get(6),
        ledger_returned: row.get(7),
        redis_stock,
        redis_winners: winners,
        open_at: row.get(4),
        close_at: row.get(5),
        entries_by_status,
    })
}

/// Closes the event now: every ingest instance answers 410 from then on.
pub async fn close(settings: &CliSettings, event_id: &str) -> anyhow::Result<()> {
    let pool = platform::db::pool(&settings.database)?;
    let client = pool.get().await?;
    let updated = client
        .execute("UPDATE events SET status = 'closed', closed_at = now() WHERE event_id = $1", &[&event_id])
        .await?;
    if updated == 0 {
        bail!("no event {event_id}");
    }
    let mut redis = platform::redis::connect(&settings.redis).await?;
    let keys = EventKeys::new(event_id);
    let change = serde_json::to_string(&StateChange { event_id: event_id.into(), status: EventStatus::Closed })?;
    let _: () = redis::pipe()
        .atomic()
        .hset(&keys.meta, "status", EventStatus::Closed.as_str())
        .publish(STATE_CHANNEL, change)
        .query_async(&mut redis)
        .await?;
    Ok(())
}

/// Waits until `check` holds or `timeout` passes (for scripts and tests).
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute_times_parse() {
        let now = Utc::now();
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(parse_time("+90s", now).unwrap(), now + chrono::Duration::seconds(90));
        assert_eq!(parse_time("-5m", now).unwrap(), now - chrono::Duration::minutes(5));
        assert_eq!(parse_time("+2h", now).unwrap(), now + chrono::Duration::hours(2));
        assert!(parse_time("2026-11-25T10:00:00Z", now).is_ok());
        assert!(parse_time("+5y", now).is_err());
        assert!(parse_time("tomorrow", now).is_err());
    }
}
