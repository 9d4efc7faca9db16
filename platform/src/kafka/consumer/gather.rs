//! Gathering a batch over several polls, and the rebalances that can run
//! meanwhile: records of a partition revoked while its batch was gathered
//! belong to the partition's new owner and are dropped.

use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::ClientContext;

use super::events::{PollFailed, RebalanceDone, RebalanceStarted, RevokedRecordsDropped};
use super::record::Record;
use super::ConsumerLoop;

/// Logs rebalances and remembers revoked partitions: a batch is gathered
/// over several polls, and records of a partition revoked meanwhile belong to
/// its new owner (who starts from the committed offset), so they are dropped
/// from the batch instead of being processed twice.
pub struct LoopContext {
    pub(super) group: String,
    pub(super) revoked: std::sync::Mutex<Vec<(String, i32)>>,
    /// Records of the batch in work per partition (not committed yet), for
    /// the lag gauge (`crate::metrics::record_lag`).
    pub(super) in_work: std::sync::Mutex<std::collections::HashMap<(String, i32), u64>>,
}

impl LoopContext {
    pub(super) fn new(group: &str) -> Self {
        Self { group: group.to_string(), revoked: Default::default(), in_work: Default::default() }
    }

    /// The batch now in work (`None`: committed or given up).
    pub(super) fn set_in_work(&self, batch: Option<&[Record]>) {
        if let Ok(mut in_work) = self.in_work.lock() {
            in_work.clear();
            for record in batch.unwrap_or_default() {
                *in_work.entry((record.topic().to_string(), record.partition())).or_default() += 1;
            }
        }
    }

    /// The partitions revoked since the last call.
    fn take_revoked(&self) -> Vec<(String, i32)> {
        self.revoked.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default()
    }
}

impl ClientContext for LoopContext {
    /// Every `statistics.interval.ms`: the lag gauge of each partition.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let in_work = self.in_work.lock().map(|w| w.clone()).unwrap_or_default();
        crate::metrics::record_lag(&self.group, &statistics, &in_work);
    }
}

impl ConsumerContext for LoopContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        RebalanceStarted { group: &self.group, rebalance }.emit();
        if let Rebalance::Revoke(partitions) = rebalance {
            if let Ok(mut revoked) = self.revoked.lock() {
                revoked.extend(partitions.elements().iter().map(|e| (e.topic().to_string(), e.partition())));
            }
        }
    }
    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        RebalanceDone { group: &self.group, rebalance }.emit();
    }
}

impl ConsumerLoop {
    /// Waits for a first record, then gathers more for at most
    /// `batch_max_wait_ms`; records of partitions revoked meanwhile are dropped.
    pub(super) async fn next_batch(&self) -> Vec<Record> {
        let mut batch = Vec::new();
        let max = self.settings.batch_max_records;
        // The first record: wait as long as it takes.
        loop {
            match self.consumer.recv().await {
                Ok(message) => {
                    self.push(&mut batch, message.detach());
                    break;
                }
                Err(error) => self.log_poll_error(error).await,
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.settings.batch_max_wait_ms);
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => self.push(&mut batch, message.detach()),
                Ok(Err(error)) => self.log_poll_error(error).await,
                Err(_) => break,
            }
        }
        self.drop_revoked(&mut batch);
        batch
    }

    /// Adds a record received just now. A revoke that ran inside that poll
    /// concerns the records gathered before it: they are dropped first, while
    /// this record (and any later one of a partition handed back) is kept.
    fn push(&self, batch: &mut Vec<Record>, message: OwnedMessage) {
        self.drop_revoked(batch);
        batch.push(Record::from(message));
    }

    fn drop_revoked(&self, batch: &mut Vec<Record>) {
        let revoked = self.consumer.context().take_revoked();
        if revoked.is_empty() {
            return;
        }
        let before = batch.len();
        batch.retain(|r| !revoked.iter().any(|(t, p)| t == r.topic() && *p == r.partition()));
        if batch.len() < before {
            RevokedRecordsDropped { group: &self.group, dropped: before - batch.len() }.emit();
        }
    }

    async fn log_poll_error(&self, error: KafkaError) {
        PollFailed { group: &self.group, error: &error }.emit();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
