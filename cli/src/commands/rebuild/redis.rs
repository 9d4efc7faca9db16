//! `firstcome rebuild redis <event>`: one event's stock state in Redis,
//! rebuilt from the Kafka log (see `stock_processor::rebuild`) and swapped in
//! atomically. Safe while the pipeline runs: the swap refuses when the stock
//! stage decided meanwhile, and the rebuild reads again. It reads the log
//! from `stock_processor::rebuild::WINDOW_MARGIN` before the event's opening
//! (each partition sought by time), not a week of every event; the report
//! says how many records it read and from when.
//!
//! A Redis that lost the event entirely (no `meta`) gets the event's static
//! keys back from PostgreSQL first (`stock_processor::restore`, which the
//! stock stage runs itself on such an event), as `event create` wrote them,
//! and the pre-queue shuffle's seed `event create` recorded.
//! An event PostgreSQL does not know, or whose keys' lifetime is over, is
//! refused.

use anyhow::Context;
use stock_processor::rebuild::{RebuildReport, Rebuilder};
use stock_processor::restore::{Restore, Restorer};

use crate::CliSettings;

/// Rebuilds `event_id`'s stock state from the log; the library entry point.
pub async fn rebuild(settings: &CliSettings, event_id: &str) -> anyhow::Result<RebuildReport> {
    let mut redis = platform::redis::connect(&settings.redis).await.context("Failed to connect to Redis")?;
    let restorer = Restorer::connect(&settings.database, &settings.replica)?;
    match restorer.restore(&mut redis, event_id, schemas::now_millis()).await? {
        Restore::Present => {}
        Restore::Restored { eligible } => {
            tracing::warn!(event_id, eligible, "event meta and eligibility restored from PostgreSQL");
        }
        Restore::Unknown { .. } => {
            anyhow::bail!(
                "no event {event_id} in Redis, and none live in PostgreSQL (unknown, or its create never finished)"
            )
        }
        Restore::Expired { .. } => {
            let grace = platform::event_keys::GRACE_AFTER_CLOSE;
            anyhow::bail!("event {event_id} is over: its Redis keys expired {grace:?} after its close, as they should")
        }
    }
    // The pre-queue shuffle's recorded seed, back in a room that lost it.
    crate::commands::verify::restore_shuffle_seed(settings, &mut redis, event_id).await?;
    let codec = settings.registry.codec().context("Failed to build the registry codec")?;
    let group = settings.kafka.group(stock_processor::GROUP);
    let rebuilder =
        Rebuilder::new(&settings.kafka, &group, codec, redis).context("Failed to create the Kafka clients")?;
    Ok(rebuilder.rebuild_event(event_id).await?)
}
