//! Gathering a batch over several polls, and the rebalances that can run
//! meanwhile: records of a partition revoked while its batch was gathered
//! belong to the partition's new owner and are dropped.

use std::ffi::CString;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::ClientContext;

use super::events::{PartitionsStalled, PollFailed, RebalanceDone, RebalanceStarted, RevokedRecordsDropped};
use super::merge::{Held, Order, PartitionKey};
use super::record::Record;
use super::ConsumerLoop;

/// Records held for the timestamp order: at most this many batches' worth
/// (and at least [`HOLD_MIN`]); past it, what is held is handed over without
/// waiting for lagging partitions (bounded memory).
const HOLD_BATCHES: usize = 40;
const HOLD_MIN: usize = 10_000;

/// Logs rebalances and remembers revoked partitions: a batch is gathered
/// over several polls, and records of a partition revoked meanwhile belong to
/// its new owner (who starts from the committed offset), so they are dropped
/// from the batch instead of being processed twice.
pub struct LoopContext {
    pub(super) group: String,
    pub(super) revoked: std::sync::Mutex<Vec<(String, i32)>>,
    /// Records of the batch in work and records held for the timestamp
    /// order, per partition (received, not committed yet), for the lag gauge
    /// (`crate::metrics::record_lag`).
    pub(super) in_work: std::sync::Mutex<std::collections::HashMap<(String, i32), u64>>,
}

impl LoopContext {
    pub(super) fn new(group: &str) -> Self {
        Self { group: group.to_string(), revoked: Default::default(), in_work: Default::default() }
    }

    /// The batch now in work (empty: committed or given up) and the records
    /// held besides it.
    pub(super) fn set_in_work(&self, batch: &[Record], held: Vec<(PartitionKey, usize)>) {
        if let Ok(mut in_work) = self.in_work.lock() {
            in_work.clear();
            for record in batch {
                *in_work.entry((record.topic().to_string(), record.partition())).or_default() += 1;
            }
            for (key, count) in held {
                *in_work.entry(key).or_default() += count as u64;
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
    /// The next batch for the handler, in the group's [`Order`].
    pub(super) async fn next_batch(&self) -> Vec<Record> {
        match self.order {
            Order::Arrival => self.next_batch_as_fetched().await,
            Order::Timestamp { max_idle } => self.next_batch_by_timestamp(max_idle).await,
        }
    }

    /// Waits for a first record, then gathers more for at most
    /// `batch_max_wait_ms`; records of partitions revoked meanwhile are dropped.
    async fn next_batch_as_fetched(&self) -> Vec<Record> {
        let mut batch = Vec::new();
        let max = self.settings.batch_max_records;
        // The first record: wait as long as it takes.
        batch.push(self.first_record().await);
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

    /// Gathers as [`Self::next_batch_as_fetched`] does, into the held
    /// records ([`Held`]); then, while a lagging partition has nothing held,
    /// polls on for at most `max_idle` (and stalls it past that); then hands
    /// over the oldest held records. Records not handed over stay held for
    /// the next batch.
    async fn next_batch_by_timestamp(&self, max_idle: Duration) -> Vec<Record> {
        let max = self.settings.batch_max_records;
        let cap = max.saturating_mul(HOLD_BATCHES).max(HOLD_MIN);
        if self.held(|held| held.is_empty()) {
            let first = self.first_record().await;
            self.hold(first);
        }
        let started = tokio::time::Instant::now();
        let gathered = started + Duration::from_millis(self.settings.batch_max_wait_ms);
        while self.held(|held| held.len()) < max {
            match tokio::time::timeout_at(gathered, self.consumer.recv()).await {
                Ok(Ok(message)) => self.hold(message.detach()),
                Ok(Err(error)) => self.log_poll_error(error).await,
                Err(_) => break,
            }
        }
        let idle_until = started + max_idle;
        loop {
            self.forget_revoked();
            let lagging = self.lagging();
            let mut waiting = self.held(|held| held.waiting_for(&lagging));
            if waiting.is_empty() {
                return self.held(|held| held.take(max, &lagging));
            }
            // Poll until each partition waited for delivered (then look at the
            // watermarks again), memory is full, or the idle time is over.
            while !waiting.is_empty() {
                if self.held(|held| held.len()) >= cap {
                    // Bounded memory: hand over in timestamp order what is held.
                    return self.held(|held| held.take(max, &[]));
                }
                match tokio::time::timeout_at(idle_until, self.consumer.recv()).await {
                    Ok(Ok(message)) => {
                        waiting
                            .retain(|(topic, partition)| topic != message.topic() || *partition != message.partition());
                        self.hold(message.detach());
                    }
                    Ok(Err(error)) => self.log_poll_error(error).await,
                    Err(_) => {
                        PartitionsStalled { group: &self.group, partitions: &waiting, max_idle }.emit();
                        return self.held(|held| {
                            held.stall(&waiting);
                            held.take(max, &lagging)
                        });
                    }
                }
            }
        }
    }

    /// The first record of a batch: waits as long as it takes.
    async fn first_record(&self) -> Record {
        loop {
            match self.consumer.recv().await {
                Ok(message) => {
                    self.forget_revoked();
                    return Record::from(message.detach());
                }
                Err(error) => self.log_poll_error(error).await,
            }
        }
    }

    /// Adds a record received just now. A revoke that ran inside that poll
    /// concerns the records gathered before it: they are dropped first, while
    /// this record (and any later one of a partition handed back) is kept.
    fn push(&self, batch: &mut Vec<Record>, message: OwnedMessage) {
        self.drop_revoked(batch);
        batch.push(Record::from(message));
    }

    /// [`Self::push`] into the held records.
    fn hold(&self, record: impl Into<Record>) {
        self.forget_revoked();
        let record = record.into();
        self.held(|held| held.push(record));
    }

    fn drop_revoked(&self, batch: &mut Vec<Record>) {
        let revoked = self.consumer.context().take_revoked();
        if revoked.is_empty() {
            return;
        }
        let before = batch.len();
        batch.retain(|r| !revoked.iter().any(|(t, p)| t == r.topic() && *p == r.partition()));
        let dropped = before - batch.len() + self.held(|held| held.forget(&revoked));
        if dropped > 0 {
            RevokedRecordsDropped { group: &self.group, dropped }.emit();
        }
    }

    fn forget_revoked(&self) {
        self.drop_revoked(&mut Vec::new());
    }

    /// Runs `f` on the held records (the loop is one task: never contended).
    pub(super) fn held<T>(&self, f: impl FnOnce(&mut Held) -> T) -> T {
        let mut held = self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut held)
    }

    /// The assigned partitions that may deliver more now: behind the high
    /// watermark of the client's last fetch response, or not fetched yet. A
    /// partition nothing was received from since it was assigned counts as
    /// behind unless it is empty; if it was in fact read to its end before,
    /// one `max_idle` stalls it.
    fn lagging(&self) -> Vec<PartitionKey> {
        let Ok(assignment) = self.consumer.assignment() else { return Vec::new() };
        assignment
            .elements()
            .iter()
            .filter_map(|element| {
                let key = (element.topic().to_string(), element.partition());
                let behind = match cached_watermarks(&self.consumer, element.topic(), element.partition()) {
                    None => true,
                    Some((low, high)) => {
                        self.held(|held| held.next_offset(&key)).map_or(low < high, |next| next < high)
                    }
                };
                behind.then_some(key)
            })
            .collect()
    }

    async fn log_poll_error(&self, error: KafkaError) {
        PollFailed { group: &self.group, error: &error }.emit();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The low and high watermarks of a partition as the client learnt them from
/// its last fetch response: no broker call (librdkafka's
/// `rd_kafka_get_watermark_offsets`, which rust-rdkafka does not wrap).
/// `None` before the partition's first fetch.
fn cached_watermarks(consumer: &StreamConsumer<LoopContext>, topic: &str, partition: i32) -> Option<(i64, i64)> {
    let topic = CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client handle lives as long as `consumer`; the call reads
    // the partition's cached offsets into the two locals under its own lock.
    let error = unsafe {
        rd::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (error == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some((low, high))
}
