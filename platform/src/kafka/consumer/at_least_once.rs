//! At-least-once delivery: every output (and dead letter) is acknowledged
//! by the broker before the input offsets are committed. A crash in between
//! replays the batch, so handlers are idempotent (upserts keyed by entry id).

use backon::BackoffBuilder;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::future_producer::Delivery;
use rdkafka::TopicPartitionList;
use tokio_util::sync::CancellationToken;

use super::events::{CommitFailed, OutputNotAcknowledged, OutputsAbandoned};
use super::{ConsumerError, ConsumerLoop, RETRY_BACKOFF_MAX, RETRY_BACKOFF_MIN};
use crate::kafka::producer::{is_refused_for_good, OutRecord, RawRecord};

impl ConsumerLoop {
    /// Sends the outputs and dead letters until acknowledged, then commits
    /// `offsets`. Nothing is committed when shutting down with outputs
    /// unacknowledged: the batch replays after the restart. A record the
    /// broker refused for good ends the loop with the cause
    /// ([`ConsumerError::Refused`]), nothing committed.
    pub(super) async fn commit_at_least_once(
        &self,
        records: &[OutRecord],
        dead: &[RawRecord],
        offsets: TopicPartitionList,
        shutdown: &CancellationToken,
    ) -> Result<(), ConsumerError> {
        if self.send_until_acknowledged(records, dead, shutdown).await? {
            self.commit(offsets).await;
        }
        Ok(())
    }

    /// Every output must be acknowledged before the offsets move. Failures
    /// are retried (the records are idempotent downstream), except a
    /// refusal for good, which is returned. `false` when shutting down with
    /// outputs unacknowledged: the caller must not commit, so the batch
    /// replays after the restart.
    async fn send_until_acknowledged(
        &self,
        records: &[OutRecord],
        dead: &[RawRecord],
        shutdown: &CancellationToken,
    ) -> Result<bool, ConsumerError> {
        // The doubling waits every retry loop shares (`crate::retry`).
        let mut waits = crate::retry::doubling(RETRY_BACKOFF_MIN, RETRY_BACKOFF_MAX).build();
        let mut pending: Vec<usize> = (0..records.len() + dead.len()).collect();
        while !pending.is_empty() {
            let sends = pending.iter().map(|&i| async move {
                let result: Result<Delivery, _> = if i < records.len() {
                    self.sender.send(&records[i]).await
                } else {
                    self.sender.send_raw(&dead[i - records.len()]).await
                };
                (i, result)
            });
            let results = futures::future::join_all(sends).await;
            let mut failed = Vec::new();
            for (i, result) in results {
                let Err(error) = result else { continue };
                if is_refused_for_good(&error) {
                    let topic = if i < records.len() { &records[i].topic } else { &dead[i - records.len()].topic };
                    return Err(ConsumerError::Refused { topic: topic.clone(), error });
                }
                OutputNotAcknowledged { group: &self.group, error: &error }.emit();
                failed.push(i);
            }
            pending = failed;
            if !pending.is_empty() {
                // `doubling` never runs out: past the maximum it stays there.
                let backoff = waits.next().unwrap_or(RETRY_BACKOFF_MAX);
                if shutdown.is_cancelled() && backoff >= RETRY_BACKOFF_MAX {
                    // Give up without committing: the batch replays after restart.
                    OutputsAbandoned { group: &self.group }.emit();
                    return Ok(false);
                }
                tokio::time::sleep(backoff).await;
            }
        }
        Ok(true)
    }

    /// Synchronous commit of the batch's next offsets. A failed commit (e.g.
    /// partitions revoked meanwhile) is logged: the records replay elsewhere.
    async fn commit(&self, offsets: TopicPartitionList) {
        let consumer = self.consumer.clone();
        let result = tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => CommitFailed { group: &self.group, error: &error }.emit(),
            Err(error) => CommitFailed { group: &self.group, error: &error }.emit(),
        }
    }
}
