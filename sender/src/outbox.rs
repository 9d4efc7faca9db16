//! The outbox relay: publishes the rows the dispatch transactions wrote, in
//! id order, and marks them published only after Kafka acknowledged them.
//!
//! `FOR UPDATE SKIP LOCKED` lets several sender instances relay at once
//! without sending the same row concurrently. A crash between the broker's
//! acknowledgement and the commit sends a row again: at-least-once, and the
//! consumers (recorder, stock) are idempotent per entry. Per-key order across
//! instances is not guaranteed; each entry has one outcome record per topic,
//! so no consumer depends on it.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use platform::kafka::{EventProducer, OutRecord, RecordContext};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::events::{OutboxPending, RelayPassFailed, RelayPublished, RelayRowNotAcknowledged};
use crate::settings::RelaySettings;

/// How often published rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub published: usize,
    pub failed: usize,
}

pub struct Relay {
    pool: Pool,
    producer: EventProducer,
    settings: RelaySettings,
    wake: Arc<Notify>,
}

impl Relay {
    pub fn new(pool: Pool, producer: EventProducer, settings: RelaySettings, wake: Arc<Notify>) -> Self {
        Self { pool, producer, settings, wake }
    }

    /// Relays until `stop` is cancelled, then makes one last pass so outcomes
    /// recorded just before shutdown go out now rather than at the next start.
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(poll_ms = self.settings.poll_ms, batch = self.settings.batch, "outbox relay started");
        let poll = Duration::from_millis(self.settings.poll_ms);
        let mut last_prune = tokio::time::Instant::now();
        loop {
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = tokio::time::Instant::now();
                match self.prune().await {
                    Ok(deleted) if deleted > 0 => tracing::info!(deleted, "pruned published outbox rows"),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "outbox prune failed; will retry"),
                }
            }
            let more = match self.publish_batch().await {
                Ok(pass) => pass.failed == 0 && pass.published as i64 >= self.settings.batch,
                Err(error) => {
                    RelayPassFailed { error: &error }.emit();
                    false
                }
            };
            self.report_pending().await;
            if stop.is_cancelled() {
                break;
            }
            if more {
                continue;
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// Publishes up to `batch` unpublished rows in one transaction.
    pub async fn publish_batch(&self) -> Result<Pass, RelayError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                "SELECT id, topic, message_key, payload, headers FROM outbox
                 WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                &[&self.settings.batch],
            )
            .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Pass::default());
        }
        let records: Vec<(i64, OutRecord)> = rows
            .iter()
            .map(|row| {
                let id: i64 = row.get(0);
                let headers: serde_json::Value = row.get(4);
                let context = serde_json::from_value::<RecordContext>(headers).unwrap_or_else(|error| {
                    tracing::warn!(id, %error, "outbox row with unreadable headers; sending with fresh ones");
                    RecordContext::new_root(uuid::Uuid::new_v4().to_string(), None)
                });
                (id, OutRecord { topic: row.get(1), key: row.get(2), payload: row.get(3), context, timestamp_ms: None })
            })
            .collect();
        let sends = records.iter().map(|(id, record)| async move { (*id, self.producer.send(record).await) });
        let mut acked = Vec::with_capacity(records.len());
        let mut failed = 0;
        for (id, result) in futures::future::join_all(sends).await {
            match result {
                Ok(_) => acked.push(id),
                Err(error) => {
                    failed += 1;
                    RelayRowNotAcknowledged { id, error: &error }.emit();
                }
            }
        }
        if !acked.is_empty() {
            tx.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1)", &[&acked]).await?;
        }
        tx.commit().await?;
        RelayPublished { published: acked.len(), failed }.emit();
        Ok(Pass { published: acked.len(), failed })
    }

    /// Deletes rows published longer than `retain_published_secs` ago.
    pub async fn prune(&self) -> Result<u64, RelayError> {
        let client = self.pool.get().await?;
        let deleted = client
            .execute(
                "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1::bigint)",
                &[&self.settings.retain_published_secs],
            )
            .await?;
        Ok(deleted)
    }

    async fn report_pending(&self) {
        let pending = async {
            let client = self.pool.get().await?;
            let row = client.query_one("SELECT count(*) FROM outbox WHERE published_at IS NULL", &[]).await?;
            Ok::<i64, RelayError>(row.get(0))
        };
        match pending.await {
            Ok(count) => OutboxPending { count }.emit(),
            Err(error) => tracing::debug!(%error, "could not count pending outbox rows"),
        }
    }
}
