//! `firstcome rebuild redis <event>`: one event's stock state in Redis,
//! rebuilt from the Kafka log (see `stock_processor::rebuild`) and swapped in
//! atomically. Safe while the pipeline runs: the swap refuses when the stock
//! stage decided meanwhile, and the rebuild reads again.
//!
//! A Redis that lost the event entirely (no `meta`) gets the event's static
//! keys back from PostgreSQL first (the events row and the eligible members
//! of the purchase replica), as `event create` wrote them.

use anyhow::Context;
use platform::event_keys::{write_event, EventMeta, EventStatus};
use stock_processor::rebuild::{RebuildReport, Rebuilder};

use crate::CliSettings;

/// Rebuilds `event_id`'s stock state and prints what it found.
pub async fn run(settings: &CliSettings, event_id: &str) -> anyhow::Result<()> {
    let report = rebuild(settings, event_id).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Rebuilds `event_id`'s stock state from the log; the library entry point.
pub async fn rebuild(settings: &CliSettings, event_id: &str) -> anyhow::Result<RebuildReport> {
    let mut redis = platform::redis::connect(&settings.redis).await.context("Failed to connect to Redis")?;
    if EventMeta::load(&mut redis, event_id).await?.is_none() {
        restore_static_keys(settings, &mut redis, event_id).await?;
    }
    let codec = settings.registry.codec().context("Failed to build the registry codec")?;
    let group = settings.kafka.group(stock_processor::GROUP);
    let rebuilder = Rebuilder::new(&settings.kafka, &group, codec, redis).context("Failed to create the Kafka clients")?;
    Ok(rebuilder.rebuild_event(event_id).await?)
}

/// Writes meta and the eligibility set from PostgreSQL (the counter is set
/// by the rebuild that follows).
async fn restore_static_keys(
    settings: &CliSettings,
    redis: &mut platform::redis::Connection,
    event_id: &str,
) -> anyhow::Result<()> {
    let pool = platform::db::pool(&settings.database)?;
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT product_id, total_stock - safety_stock, open_at, close_at, questions, status
             FROM events WHERE event_id = $1",
            &[&event_id],
        )
        .await?
        .with_context(|| format!("no event {event_id} in PostgreSQL or Redis"))?;
    let product: String = row.get(0);
    let open_at: chrono::DateTime<chrono::Utc> = row.get(2);
    let close_at: chrono::DateTime<chrono::Utc> = row.get(3);
    let questions: Vec<String> = serde_json::from_value(row.get(4)).context("events.questions is not a list of ids")?;
    let status = match row.get::<_, String>(5).as_str() {
        "closed" => EventStatus::Closed,
        _ => EventStatus::Open,
    };
    let meta = EventMeta {
        event_id: event_id.to_string(),
        open_at_ms: open_at.timestamp_millis(),
        close_at_ms: close_at.timestamp_millis(),
        for_sale: i64::from(row.get::<_, i32>(1)),
        questions,
        status,
    };
    let eligible = crate::commands::members::eligible(&settings.replica, &product).await?;
    write_event(redis, &meta, &eligible).await?;
    tracing::warn!(event_id, eligible = eligible.len(), "event meta and eligibility restored from PostgreSQL");
    Ok(())
}
