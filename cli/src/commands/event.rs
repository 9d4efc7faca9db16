//! `firstcome event create | show | close`.
//!
//! `create` writes the event (as `scheduled`) and its ledger to PostgreSQL,
//! then loads the eligible members (bought the product) from the shop's member
//! replica (`replica.url`, a streaming standby) into
//! Redis and sets the event's keys (see `platform::event_keys`), all expiring
//! after close, then marks the event open in PostgreSQL. Run again after a
//! failure, it completes what it started.

use std::collections::HashMap;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::Serialize;

use platform::event_keys::{write_event, EventKeys, EventMeta, EventStatus};

use crate::exit::Usage;
use crate::output::Output;
use crate::reach::Need;
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
///
/// Three steps, in this order so that no failure in between leaves a live
/// event PostgreSQL does not know:
/// 1. PostgreSQL, one transaction: the event row as `scheduled` and its ledger
///    (the payout guard's counter, `events.payout_claimed`, starts at 0 by
///    default). Ingest does not know the event yet.
/// 2. Redis: the event's keys ([`write_event`]); `meta`, written last, is what
///    makes the event live for ingest.
/// 3. PostgreSQL: the row marked open.
///
/// A create that stopped after step 1 or 2 is completed by running it again
/// with the same parameters: a `scheduled` row is taken up (not refused), the
/// Redis keys are written if `meta` is missing, or kept when `meta` describes
/// this same event (step 2 finished, step 3 did not). An event past step 3
/// (open, sold out, closed), a `scheduled` row with other parameters, or a
/// Redis `meta` describing another event is refused.
pub async fn create(settings: &CliSettings, event: &NewEvent) -> anyhow::Result<usize> {
    event.validate()?;
    let pool = platform::db::pool(&settings.database)?;
    let mut client = pool.get().await.context("Failed to connect to PostgreSQL")?;
    schedule(&mut client, event).await?;
    // Eligibility comes from the shop's member replica, never its primary.
    let eligible = super::members::eligible(&settings.replica, &event.product_id).await.with_context(|| {
        format!(
            "Failed to read eligibility on the member replica: event {} stays scheduled, run create again",
            event.event_id
        )
    })?;

    let meta = event.meta();
    let mut redis = platform::redis::connect(&settings.redis).await.with_context(|| {
        format!("Failed to connect to Redis: event {} stays scheduled, run create again", event.event_id)
    })?;
    let written = write_event(&mut redis, &meta, &eligible).await.with_context(|| {
        format!("Failed to write the Redis keys: event {} stays scheduled, run create again", event.event_id)
    })?;
    if !written {
        // `meta` exists: ours, from a run that stopped before step 3, or another event's.
        let live = EventMeta::load(&mut redis, &event.event_id).await?;
        match live {
            Some(live) if same_event(&live, &meta) => {
                tracing::info!(event_id = %event.event_id, "Redis keys already written by an earlier create: completing it");
            }
            _ => bail!(
                "event {} already has Redis keys for other parameters: refusing to overwrite a live event",
                event.event_id
            ),
        }
    }

    let opened = client
        .execute(
            "UPDATE events SET status = $2 WHERE event_id = $1 AND status = 'scheduled'",
            &[&event.event_id, &meta.status.as_str()],
        )
        .await
        .with_context(|| format!("Failed to open event {} in PostgreSQL: run create again", event.event_id))?;
    if opened == 0 {
        // A concurrent create of the same event finished first; nothing left to do.
        tracing::info!(event_id = %event.event_id, "event already opened by a concurrent create");
    }
    Ok(eligible.len())
}

impl NewEvent {
    /// The event as its Redis `meta` describes it.
    fn meta(&self) -> EventMeta {
        EventMeta {
            event_id: self.event_id.clone(),
            open_at_ms: self.open_at.timestamp_millis(),
            close_at_ms: self.close_at.timestamp_millis(),
            for_sale: i64::from(self.for_sale()),
            questions: self.questions.clone(),
            status: if self.for_sale() > 0 { EventStatus::Open } else { EventStatus::SoldOut },
        }
    }

    /// What differs between this event and a stored one (empty: the same).
    /// Times are compared to the microsecond, PostgreSQL's precision.
    fn differences(&self, stored: &NewEvent) -> Vec<String> {
        let mut out = Vec::new();
        let mut differs = |what: &str, given: String, kept: String| {
            if given != kept {
                out.push(format!("{what}: given {given}, stored {kept}"));
            }
        };
        differs("name", self.name.clone(), stored.name.clone());
        differs("product", self.product_id.clone(), stored.product_id.clone());
        differs("total stock", self.total_stock.to_string(), stored.total_stock.to_string());
        differs("safety stock", self.safety_stock.to_string(), stored.safety_stock.to_string());
        let micros =
            |t: &DateTime<Utc>| DateTime::<Utc>::from_timestamp_micros(t.timestamp_micros()).unwrap_or(*t).to_rfc3339();
        differs("open_at", micros(&self.open_at), micros(&stored.open_at));
        differs("close_at", micros(&self.close_at), micros(&stored.close_at));
        differs("questions", self.questions.join(","), stored.questions.join(","));
        out
    }
}

/// Whether two metas describe the same event's static facts (its status
/// moves on by itself).
fn same_event(a: &EventMeta, b: &EventMeta) -> bool {
    a.event_id == b.event_id
        && a.open_at_ms == b.open_at_ms
        && a.close_at_ms == b.close_at_ms
        && a.for_sale == b.for_sale
        && a.questions == b.questions
}

/// Step 1: the `scheduled` event row and its ledger, or the `scheduled` row an
/// earlier create left with the same parameters.
async fn schedule(client: &mut deadpool_postgres::Client, event: &NewEvent) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    let questions = serde_json::to_value(&event.questions)?;
    let inserted = tx
        .execute(
            "INSERT INTO events (event_id, name, product_id, total_stock, safety_stock, open_at, close_at, questions, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'scheduled') ON CONFLICT (event_id) DO NOTHING",
            &[&event.event_id, &event.name, &event.product_id, &event.total_stock, &event.safety_stock,
              &event.open_at, &event.close_at, &questions],
        )
        .await
        .context("Failed to insert the event row")?;
    if inserted == 0 {
        let row = tx
            .query_one(
                "SELECT name, product_id, total_stock, safety_stock, open_at, close_at, questions, status
                 FROM events WHERE event_id = $1 FOR UPDATE",
                &[&event.event_id],
            )
            .await?;
        let status: String = row.get(7);
        if status != "scheduled" {
            bail!("event {} already exists ({status})", event.event_id);
        }
        let stored = NewEvent {
            event_id: event.event_id.clone(),
            name: row.get(0),
            product_id: row.get(1),
            total_stock: row.get(2),
            safety_stock: row.get(3),
            open_at: row.get(4),
            close_at: row.get(5),
            questions: serde_json::from_value(row.get(6)).unwrap_or_default(),
        };
        let differences = event.differences(&stored);
        if !differences.is_empty() {
            bail!(
                "event {} was half-created with other parameters ({}): create it again with the stored ones to complete it",
                event.event_id,
                differences.join("; ")
            );
        }
        tracing::info!(event_id = %event.event_id, "completing a create that stopped half-way");
    }
    // The ledger is written in the same transaction as the row; ON CONFLICT
    // keeps a resumed create idempotent.
    tx.execute(
        "INSERT INTO stock_ledger (event_id, total, safety_stock) VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING",
        &[&event.event_id, &event.total_stock, &event.safety_stock],
    )
    .await
    .context("Failed to insert the ledger")?;
    tx.commit().await.context("Failed to commit the scheduled event")?;
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

/// Closes the event now: every ingest instance answers 410 from then on
/// (`ingest::operations::close_event`, the same code as the dashboard's button).
pub async fn close(settings: &CliSettings, event_id: &str) -> anyhow::Result<()> {
    let pool = platform::db::pool(&settings.database)?;
    let mut redis = platform::redis::connect(&settings.redis).await?;
    ingest::operations::close_event(&pool, &mut redis, event_id).await?;
    Ok(())
}

/// Waits until `check` holds or `timeout` passes (the one polling loop,
/// shared with the tests' `testkit`).
pub use platform::wait::wait_until;

/// `firstcome event …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum EventCommand {
    /// Create an event and load its eligible members into Redis.
    Create {
        /// Event id (default: a new UUID).
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "Survey reward: ₩10,000 coffee")]
        name: String,
        #[arg(long, default_value = "coffee-beans-1kg")]
        product: String,
        #[arg(long)]
        total: i32,
        #[arg(long, default_value_t = 0)]
        safety: i32,
        /// now, +10m, or RFC 3339
        #[arg(long, default_value = "now")]
        open_at: String,
        #[arg(long, default_value = "+1h")]
        close_at: String,
        /// Required question ids, comma separated.
        #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_QUESTIONS.map(String::from))]
        questions: Vec<String>,
    },
    /// Show an event across PostgreSQL and Redis.
    Show { event_id: String },
    /// Close an event now.
    Close { event_id: String },
}

impl EventCommand {
    pub fn needs(&self) -> &'static [Need] {
        match self {
            EventCommand::Create { .. } => &[Need::Database, Need::Replica, Need::Redis],
            EventCommand::Show { .. } | EventCommand::Close { .. } => &[Need::Database, Need::Redis],
        }
    }
}

pub async fn command(settings: &CliSettings, command: EventCommand) -> anyhow::Result<Output> {
    match command {
        EventCommand::Create { id, name, product, total, safety, open_at, close_at, questions } => {
            let now = Utc::now();
            let time = |text: &str| parse_time(text, now).map_err(|e| Usage(format!("{e:#}")));
            let new = NewEvent {
                event_id: id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                name,
                product_id: product,
                total_stock: total,
                safety_stock: safety,
                open_at: time(&open_at)?,
                close_at: time(&close_at)?,
                questions,
            };
            let eligible = create(settings, &new).await?;
            let text =
                format!("event {} created: {} for sale, {eligible} eligible members", new.event_id, new.for_sale());
            let json =
                serde_json::json!({ "event_id": new.event_id, "for_sale": new.for_sale(), "eligible": eligible });
            Ok(Output::new(text, &json))
        }
        EventCommand::Show { event_id } => {
            let view = show(settings, &event_id).await?;
            Ok(Output::new(serde_json::to_string_pretty(&view)?, &view))
        }
        EventCommand::Close { event_id } => {
            close(settings, &event_id).await?;
            Ok(Output::new(
                format!("event {event_id} closed"),
                &serde_json::json!({ "event_id": event_id, "closed": true }),
            ))
        }
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

    fn sample() -> NewEvent {
        let open_at = DateTime::parse_from_rfc3339("2026-11-25T10:00:00.123456789Z").unwrap().with_timezone(&Utc);
        NewEvent {
            event_id: "ev-1".into(),
            name: "coffee".into(),
            product_id: "beans".into(),
            total_stock: 10,
            safety_stock: 2,
            open_at,
            close_at: open_at + chrono::Duration::hours(1),
            questions: vec!["q1".into()],
        }
    }

    #[test]
    fn a_stored_event_with_the_same_parameters_differs_in_nothing_even_below_a_microsecond() {
        let given = sample();
        let mut stored = sample();
        // PostgreSQL keeps microseconds: the nanoseconds are gone on the way back.
        stored.open_at = DateTime::<Utc>::from_timestamp_micros(given.open_at.timestamp_micros()).unwrap();
        assert!(given.differences(&stored).is_empty(), "{:?}", given.differences(&stored));
    }

    #[test]
    fn a_stored_event_with_other_stock_or_times_is_named_in_the_differences() {
        let given = sample();
        let mut stored = sample();
        stored.total_stock = 11;
        stored.close_at += chrono::Duration::minutes(1);
        let differences = given.differences(&stored);
        assert_eq!(differences.len(), 2, "{differences:?}");
        assert!(differences[0].starts_with("total stock"));
        assert!(differences[1].starts_with("close_at"));
    }

    #[test]
    fn metas_of_the_same_event_match_whatever_their_status() {
        let meta = sample().meta();
        let sold_out = EventMeta { status: EventStatus::SoldOut, ..meta.clone() };
        assert!(same_event(&meta, &sold_out));
        let other = EventMeta { for_sale: 9, ..meta.clone() };
        assert!(!same_event(&meta, &other));
    }
}
