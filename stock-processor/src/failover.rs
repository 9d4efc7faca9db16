//! After a Redis failover: the stock state of every event the group has
//! committed marks for is checked against those marks, and an event Redis
//! is behind on is rebuilt from the log at once.
//!
//! The stale guard of the handler catches a Redis behind the log before the
//! next batch of an event. An event whose last batches were decided on the
//! old primary, then lost with it, may get no next batch (it sold out on
//! them, or its rush is over): without this check its Redis state would stay
//! behind until an operator ran `firstcome rebuild redis`. A batch decided on
//! the old primary can still commit after the move is seen, so the check
//! runs again every second for [`RECHECK_FOR`].

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use platform::event_keys::EventKeys;
use platform::redis::Connection;
use platform::settings::KafkaSettings;
use schemas::Codec;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::marks::MarkReader;
use crate::rebuild::Rebuilder;

/// How long after a move the check is repeated.
pub const RECHECK_FOR: Duration = Duration::from_secs(15);
const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// Watches the stage's Redis connection for moves to another primary.
pub struct FailoverCheck {
    conn: Connection,
    marks: MarkReader,
    rebuilder: Rebuilder,
}

impl FailoverCheck {
    pub fn new(
        kafka: &KafkaSettings,
        group: &str,
        codec: Codec,
        conn: Connection,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        Ok(Self {
            marks: MarkReader::new(kafka, group)?,
            rebuilder: Rebuilder::new(kafka, group, codec, conn.clone())?,
            conn,
        })
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut moves = self.conn.moves();
        moves.borrow_and_update();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = moves.changed() => if changed.is_err() { return },
            }
            let generation = *moves.borrow_and_update();
            tracing::warn!(
                generation,
                "Redis moved to another primary: checking every event against the committed marks"
            );
            let mut until = Instant::now() + RECHECK_FOR;
            while Instant::now() < until {
                self.check().await;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RECHECK_EVERY) => {}
                    changed = moves.changed() => {
                        if changed.is_err() { return }
                        moves.borrow_and_update();
                        until = Instant::now() + RECHECK_FOR;
                    }
                }
            }
        }
    }

    /// Rebuilds every event whose applied marks in Redis are below the
    /// committed ones. Errors are logged; the next round tries again.
    pub async fn check(&self) -> usize {
        let committed = match self.marks.fetch().await {
            Ok(committed) => committed,
            Err(error) => {
                tracing::warn!(%error, "committed marks not read after a Redis failover");
                return 0;
            }
        };
        let mut events = BTreeSet::new();
        for (kind, partition, _) in committed.partitions() {
            events.extend(committed.marks(kind, partition).events.into_iter().map(|(event, _)| event));
        }
        let mut rebuilt = 0;
        for event_id in events {
            let keys = EventKeys::new(&event_id);
            let mut conn = self.conn.clone();
            let known: Result<bool, _> = redis::cmd("EXISTS").arg(&keys.meta).query_async(&mut conn).await;
            let applied: Result<HashMap<String, i64>, _> =
                redis::cmd("HGETALL").arg(&keys.applied).query_async(&mut conn).await;
            let (known, applied) = match (known, applied) {
                (Ok(known), Ok(applied)) => (known, applied),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(%error, event_id, "Redis not readable after a failover");
                    return rebuilt;
                }
            };
            let behind: Vec<(String, i64, i64)> = committed
                .expected_for(&event_id)
                .into_iter()
                .filter_map(|(field, mark)| {
                    let have = applied.get(&field).copied().unwrap_or(0);
                    (have < mark).then_some((field, have, mark))
                })
                .collect();
            if behind.is_empty() {
                continue;
            }
            if !known {
                // Expired, or lost whole with the old primary: the event's meta and
                // eligibility come from PostgreSQL (`firstcome rebuild redis`).
                tracing::error!(
                    event_id,
                    ?behind,
                    "Redis lost the event in a failover: run `firstcome rebuild redis {event_id}`"
                );
                continue;
            }
            tracing::error!(event_id, ?behind, "Redis is behind the log after a failover: rebuilding the event");
            match self.rebuilder.rebuild_event(&event_id).await {
                Ok(report) => {
                    rebuilt += 1;
                    tracing::warn!(event_id, ?report, "event rebuilt from the log after a Redis failover");
                    metrics::counter!("firstcome_stock_failover_rebuilds_total").increment(1);
                }
                Err(error) => tracing::error!(%error, event_id, "rebuild after a Redis failover failed; trying again"),
            }
        }
        rebuilt
    }
}
