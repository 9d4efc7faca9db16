//! The figures of one event, as the dashboard shows them, read from where
//! each is true:
//!
//! | figure | from |
//! | --- | --- |
//! | stock remaining, status, for sale | Redis (`fc:{ev}:stock`, `meta`): what the stock stage decides on |
//! | stock decisions made | Redis (`fc:{ev}:decisions`, HLEN) |
//! | entries by status, decisions by outcome | PostgreSQL `event_entries` (the recorder's projection) |
//! | dispatch: sent, failed | PostgreSQL `gift_dispatches` |
//! | dispatch: unknown | payout claims not settled: the provider's answer is not known yet (in flight, being retried or looked up) |
//! | dispatch: retrying | of those, claimed more than [`RETRYING_AFTER`] ago (past a first call: retried) |
//! | dispatch: awaiting | WON entries recorded without a claim yet |
//! | dispatch: parked | gifts the sender set aside because the provider's answers settle nothing (docs/provider.md) |
//! | answers by outcome | this instance's entry route ([`super::tally::Tally`]) |
//! | consumer lag | Kafka: each group's committed offset against the high watermark, per partition |
//! | dead letters | Kafka: records in each `<topic>.dlq` (high − low watermark) |
//! | the waiting line | Redis (`crate::waiting_room::line_state`) |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use platform::event_keys::{EventKeys, EventMeta};
use platform::kafka::lag;
use platform::settings::KafkaSettings;
use rdkafka::consumer::BaseConsumer;
use serde::Serialize;

use crate::waiting_room::{line_state, LineState};

/// A claim older than this has been through at least one provider call.
pub const RETRYING_AFTER: Duration = Duration::from_secs(5);
/// How long one Kafka metadata/offset call may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Serialize, Default)]
pub struct Snapshot {
    pub event_id: String,
    pub at_ms: i64,
    pub status: String,
    pub open_at_ms: i64,
    pub close_at_ms: i64,
    pub for_sale: i64,
    pub stock_remaining: i64,
    pub decisions_made: i64,
    /// `event_entries` rows by status (pending, won, lost, sent, failed).
    pub entries: BTreeMap<String, i64>,
    /// Recorded decisions by outcome (WON, SOLD_OUT, …).
    pub decisions: BTreeMap<String, i64>,
    pub dispatch: Dispatch,
    /// This instance's answers to entry requests, by outcome, since it started.
    pub answers: BTreeMap<&'static str, u64>,
    /// Answers per second by outcome since the previous snapshot of this stream.
    pub answers_per_sec: BTreeMap<&'static str, f64>,
    pub lag: Vec<PartitionLag>,
    pub dead_letters: BTreeMap<String, i64>,
    pub line: LineState,
    /// Figures that could not be read this time (the rest is still shown).
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct Dispatch {
    pub sent: i64,
    pub failed: i64,
    pub unknown: i64,
    pub retrying: i64,
    pub awaiting: i64,
    pub parked: i64,
}

/// One partition of one group's input (`platform::kafka::lag`).
pub use platform::kafka::lag::PartitionLag;

/// Reads Kafka offsets with one long-lived consumer per group (no group is
/// joined: committed offsets and watermarks only).
pub struct KafkaFigures {
    settings: KafkaSettings,
    consumers: Vec<(String, String, Arc<BaseConsumer>)>,
}

impl KafkaFigures {
    pub fn new(settings: &KafkaSettings) -> Result<Self, rdkafka::error::KafkaError> {
        let mut consumers = Vec::new();
        for group in
            [schemas::topology::group::STOCK, schemas::topology::group::RECORDING, schemas::topology::group::DISPATCH]
        {
            let full = settings.group(group);
            let consumer = lag::group_reader(settings, &full, "ingest-dashboard")?;
            consumers.push((group.to_string(), full, Arc::new(consumer)));
        }
        Ok(Self { settings: settings.clone(), consumers })
    }

    /// Lag per group and partition of its inputs, and dead letters per topic
    /// (blocking calls: run on the blocking pool).
    pub fn read(&self) -> Result<(Vec<PartitionLag>, BTreeMap<String, i64>), rdkafka::error::KafkaError> {
        let topics = self.settings.topics();
        let mut lag = Vec::new();
        let Some((_, _, any)) = self.consumers.first() else { return Ok((lag, BTreeMap::new())) };
        // Several groups read one topic: its watermarks are read once.
        let mut ends = BTreeMap::new();
        for (group, _, consumer) in &self.consumers {
            let inputs = schemas::topology::inputs_in(&topics, group);
            lag.extend(lag::lag_of(consumer.as_ref(), group, &inputs, &mut ends, KAFKA_TIMEOUT)?);
        }
        let mut dead = BTreeMap::new();
        for route in schemas::topology::ROUTES {
            let Some(name) = topics.named(route.topic) else { continue };
            let dlq = schemas::Topics::dlq(name);
            let count = match lag::watermarks(any.as_ref(), &dlq, KAFKA_TIMEOUT) {
                Ok(partitions) => partitions.values().map(lag::Watermarks::records).sum(),
                Err(_) => 0,
            };
            dead.insert(dlq, count);
        }
        Ok((lag, dead))
    }
}

/// The Redis figures of the event; `None` when Redis does not know it.
pub async fn redis_figures(
    redis: &mut platform::redis::Connection,
    event_id: &str,
    snapshot: &mut Snapshot,
) -> redis::RedisResult<bool> {
    let Some(meta) = EventMeta::load(redis, event_id).await? else { return Ok(false) };
    let keys = EventKeys::new(event_id);
    let (stock, decisions): (Option<i64>, i64) =
        redis::pipe().cmd("GET").arg(&keys.stock).cmd("HLEN").arg(&keys.decisions).query_async(redis).await?;
    snapshot.status = meta.status.as_str().to_string();
    if snapshot.status != "closed" && snapshot.at_ms >= meta.close_at_ms {
        snapshot.status = "closed".into();
    } else if snapshot.status == "open" && snapshot.at_ms < meta.open_at_ms {
        snapshot.status = "upcoming".into();
    }
    snapshot.open_at_ms = meta.open_at_ms;
    snapshot.close_at_ms = meta.close_at_ms;
    snapshot.for_sale = meta.for_sale;
    snapshot.stock_remaining = stock.unwrap_or(0);
    snapshot.decisions_made = decisions;
    snapshot.line = line_state(redis, event_id).await?;
    Ok(true)
}

/// The PostgreSQL figures of the event.
pub async fn database_figures(
    db: &deadpool_postgres::Pool,
    event_id: &str,
    snapshot: &mut Snapshot,
) -> Result<(), platform::db::DbError> {
    let client = db.get().await?;
    for row in client
        .query(
            "SELECT status, outcome, count(*) FROM event_entries WHERE event_id = $1 GROUP BY status, outcome",
            &[&event_id],
        )
        .await?
    {
        let status: String = row.try_get(0)?;
        let outcome: Option<String> = row.try_get(1)?;
        let n: i64 = row.try_get(2)?;
        *snapshot.entries.entry(status).or_default() += n;
        if let Some(outcome) = outcome {
            *snapshot.decisions.entry(outcome).or_default() += n;
        }
    }
    let row = client
        .query_one(
            // Counts only, through the owner's function (migrations 0007, 0008): ingest's
            // role reads no dispatch or claim row (migrations/grants.sql).
            "SELECT sent, failed, claimed, retrying, awaiting, parked FROM dispatch_figures($1, $2)",
            &[&event_id, &(RETRYING_AFTER.as_secs_f64())],
        )
        .await?;
    snapshot.dispatch = Dispatch {
        sent: row.try_get(0)?,
        failed: row.try_get(1)?,
        unknown: row.try_get(2)?,
        retrying: row.try_get(3)?,
        awaiting: row.try_get(4)?,
        parked: row.try_get(5)?,
    };
    Ok(())
}

/// Recent events for the dashboard's picker (newest first).
pub async fn recent_events(
    db: &deadpool_postgres::Pool,
) -> Result<Vec<(String, String, String)>, platform::db::DbError> {
    let client = db.get().await?;
    let rows = client.query("SELECT event_id, name, status FROM events ORDER BY open_at DESC LIMIT 50", &[]).await?;
    let mut out = Vec::new();
    for row in rows {
        out.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
    }
    Ok(out)
}
