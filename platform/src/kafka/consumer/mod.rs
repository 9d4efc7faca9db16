//! The consumer loop every group runs: poll a batch, hand it to the
//! service's handler, publish what the handler produced (and dead letters),
//! then commit the input offsets — never before the work is done.
//!
//! Two delivery modes:
//! - [`Delivery::AtLeastOnce`]: outputs are sent and acknowledged, then the
//!   offsets are committed. A crash in between replays the batch, so
//!   handlers are idempotent (upserts keyed by entry id).
//! - [`Delivery::Transactional`]: outputs and input offsets commit together
//!   in one Kafka transaction (the stock stage). On an abort, the consumer is
//!   rewound to the committed offsets and the batch runs again; the
//!   handler's side effects (the Redis decision script) give the same answer
//!   again.
//!
//! The loop is one task: it does not poll while a batch is in work, so a
//! rebalance never runs while a transaction is open or offsets are in flight,
//! and librdkafka's bounded prefetch queue is the only buffer (backpressure).
//! A rebalance can run while a batch is being gathered (several polls): the
//! records of partitions revoked then are dropped from the batch.
//! Order: per partition, always offset order. Across partitions, as fetched
//! ([`Order::Arrival`]) or by record timestamp ([`Order::Timestamp`], see
//! [`merge`]); a handler that needs more (per key) keeps it itself.
//!
//! By job:
//! - [`record`]: the record, the handler trait, what a handler returns.
//! - [`gather`]: gathering a batch; rebalances and revoked partitions.
//! - [`merge`]: the timestamp order across partitions.
//! - [`at_least_once`]: send, acknowledge, then commit.
//! - [`transactional`]: outputs and offsets in one transaction; abort and rewind.
//! - [`dead_letter`]: the dead-letter records and their headers.
//! - [`events`]: the loop's operational events (one `emit()` logs and counts).

mod at_least_once;
pub mod dead_letter;
pub mod events;
mod gather;
mod merge;
pub mod record;
mod transactional;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BlockingRetryable;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{info_span, Instrument};

use self::events::{
    BatchFinished, BatchProcessed, BatchRefused, BatchRetried, DrainAbandoned, LoopStarted, LoopStopped,
    TransactionInitRetried,
};
use super::base_config;
use super::producer::{idempotent_config, RecordSender};
use crate::settings::{GroupProtocol, KafkaSettings};

pub use gather::LoopContext;
pub use merge::Order;
pub use record::{BatchHandler, BatchOutcome, DeadLetter, HandlerError, Record};

/// How outputs and offsets are committed.
#[derive(Debug, Clone)]
pub enum Delivery {
    AtLeastOnce,
    /// With a stable, unique `transactional.id` for this instance.
    Transactional {
        transactional_id: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("kafka client error: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the transactional producer is fenced or failed fatally: {0}")]
    Fatal(String),
    /// The broker refused an output or dead letter for good (see
    /// [`crate::kafka::producer::is_refused_for_good`]): the batch is not
    /// committed, and trying it again would be refused again, so the loop
    /// stops with the cause instead of retrying it forever.
    #[error("the broker refused a record for {topic} for good; an operator must act")]
    Refused {
        topic: String,
        #[source]
        error: KafkaError,
    },
}

impl ConsumerError {
    /// Whether a new loop (a new consumer and producer) may get past this
    /// error; a refused record is refused again.
    pub fn is_rebuildable(&self) -> bool {
        !matches!(self, ConsumerError::Refused { .. })
    }
}

/// A consumer group member with its producer.
pub struct ConsumerLoop {
    group: String,
    consumer: Arc<StreamConsumer<LoopContext>>,
    /// Sends the outputs and dead letters (transactional or not).
    sender: RecordSender,
    delivery: Delivery,
    settings: KafkaSettings,
    /// The order the handler sees records in, and the records held for it.
    order: Order,
    held: std::sync::Mutex<merge::Held>,
}

/// Pause between tries of a batch that failed transiently.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Blocking Kafka calls (commit, transactions) wait at most this long; so
/// does a send waiting for room in the producer's local queue.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a starting loop keeps asking for its transactional producer id.
/// A broker restart moves the transaction coordinator and loads its log
/// (seconds, more on a busy machine); an instance restarted meanwhile must
/// wait it out, not exit: one that exits is a stage short until someone
/// restarts it.
const INIT_TRANSACTIONS_WITHIN: Duration = Duration::from_secs(120);
/// Pause between two tries of `init_transactions`.
const INIT_TRANSACTIONS_PAUSE: Duration = Duration::from_millis(500);

/// `init_transactions`, tried again while it fails with an error that is not
/// fatal (a coordinator not there yet: "Not coordinator", "Coordinator load
/// in progress", a timeout), for up to [`INIT_TRANSACTIONS_WITHIN`]. A fatal
/// error (this id fenced, a broker too old) ends it at once. Blocking (backon's
/// blocking retry): the loop is built off the async workers (`platform::service`).
fn init_transactions(
    producer: &FutureProducer,
    group: &str,
    transactional_id: &str,
    call: Duration,
) -> KafkaResult<()> {
    let give_up = Instant::now() + INIT_TRANSACTIONS_WITHIN;
    let mut tries = 0u32;
    let backoff = backon::ConstantBuilder::default().with_delay(INIT_TRANSACTIONS_PAUSE).without_max_times();
    (|| producer.init_transactions(call))
        .retry(backoff)
        .sleep(backon::StdSleeper)
        .when(|error| matches!(error, KafkaError::Transaction(error) if !error.is_fatal()) && Instant::now() < give_up)
        .notify(|error, pause| {
            // The tries that failed so far, this one included.
            tries += 1;
            if let KafkaError::Transaction(error) = error {
                TransactionInitRetried { group, transactional_id, tries, error, pause }.emit();
            }
        })
        .call()
}

impl ConsumerLoop {
    /// Joins `group` on `topics` (created beforehand: auto-create is off).
    pub fn new(
        settings: &KafkaSettings,
        group: &str,
        topics: &[&str],
        delivery: Delivery,
        order: Order,
    ) -> Result<Self, ConsumerError> {
        // A stable client id (the group's name), not one per start: a hosted
        // cluster's quotas and request logs go by it.
        let mut config = base_config(settings, group);
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Never see records of aborted transactions.
            .set("isolation.level", "read_committed")
            .set("max.poll.interval.ms", settings.max_poll_interval_ms.to_string())
            // Bounded prefetch: the only buffer between the broker and the handler.
            .set("queued.max.messages.kbytes", "16384")
            // Partition statistics for the lag gauge (`LoopContext::stats`).
            .set("statistics.interval.ms", crate::metrics::LAG_INTERVAL_MS.to_string());
        match settings.group_protocol {
            GroupProtocol::Classic => {
                config
                    .set("partition.assignment.strategy", "cooperative-sticky")
                    .set("session.timeout.ms", settings.session_timeout_ms.to_string())
                    .set("heartbeat.interval.ms", (settings.session_timeout_ms / 4).to_string());
            }
            // The broker owns the assignment, the session and the heartbeat
            // (librdkafka refuses the three properties with this protocol).
            GroupProtocol::Consumer => {
                config.set("group.protocol", "consumer");
            }
        }
        if let Some(instance) = &settings.group_instance_id {
            config.set("group.instance.id", instance);
        }
        let consumer: StreamConsumer<LoopContext> = config.create_with_context(LoopContext::new(group))?;
        consumer.subscribe(topics)?;

        let producer: FutureProducer = match &delivery {
            Delivery::AtLeastOnce => idempotent_config(settings, &format!("{group}-out")).create()?,
            Delivery::Transactional { transactional_id } => {
                let producer: FutureProducer = idempotent_config(settings, transactional_id)
                    .set("transactional.id", transactional_id)
                    .set("transaction.timeout.ms", settings.transaction_timeout_ms.to_string())
                    .create()?;
                init_transactions(
                    &producer,
                    group,
                    transactional_id,
                    Duration::from_millis(settings.transaction_timeout_ms),
                )?;
                producer
            }
        };
        Ok(Self {
            group: group.to_string(),
            consumer: Arc::new(consumer),
            sender: RecordSender::new(producer, CALL_TIMEOUT),
            delivery,
            settings: settings.clone(),
            order,
            held: Default::default(),
        })
    }

    /// Runs until `shutdown` is cancelled: the batch in work is finished and
    /// committed first, or abandoned once `kafka.drain_timeout_ms` has passed
    /// since the cancellation (see [`ConsumerLoop::run_batches`]). Returns an
    /// error only when the loop cannot go on (the caller rebuilds it).
    pub async fn run<H: BatchHandler>(self, handler: &H, shutdown: CancellationToken) -> Result<(), ConsumerError> {
        LoopStarted { group: &self.group, delivery: &self.delivery }.emit();
        let result = self.run_batches(handler, &shutdown).await;
        self.close().await;
        result
    }

    /// The drain deadline: once `shutdown` is cancelled, the batch in work
    /// has `drain_timeout_ms` (validated below the session timeout, so the
    /// group never evicts a member that is still draining) to be handled,
    /// published and committed. Past it, the batch is abandoned: its future
    /// is dropped and nothing of it is committed, so it replays after the
    /// restart (or on the partitions' new owner). What it did meanwhile is
    /// redone harmlessly, since every handler is idempotent per entry: a
    /// dropped database transaction rolls back, outputs acknowledged before
    /// the commit arrive again and are deduplicated downstream, and an open
    /// Kafka transaction is aborted (by the broker after its timeout, or at
    /// once by the restarted instance's `init_transactions`). A blocking
    /// commit already handed to librdkafka may still complete; either way
    /// the batch is committed whole or not at all.
    async fn run_batches<H: BatchHandler>(
        &self,
        handler: &H,
        shutdown: &CancellationToken,
    ) -> Result<(), ConsumerError> {
        loop {
            let batch = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                batch = self.next_batch() => batch,
            };
            if batch.is_empty() {
                continue;
            }
            let drain = async {
                shutdown.cancelled().await;
                tokio::time::sleep(self.settings.drain_timeout()).await;
            };
            tokio::select! {
                biased;
                carry_on = self.process(handler, &batch, shutdown) => {
                    if !carry_on? {
                        return Ok(());
                    }
                }
                _ = drain => {
                    DrainAbandoned { group: &self.group, records: batch.len(), drain_timeout: self.settings.drain_timeout() }.emit();
                    return Ok(());
                }
            }
        }
    }

    /// Handles, publishes and commits one batch. `false` when shut down
    /// before the batch could be handled (nothing committed, it replays).
    async fn process<H: BatchHandler>(
        &self,
        handler: &H,
        batch: &[Record],
        shutdown: &CancellationToken,
    ) -> Result<bool, ConsumerError> {
        let span = info_span!("batch", group = %self.group, size = batch.len());
        let started = Instant::now();
        self.consumer.context().set_in_work(batch, self.held(|held| held.counts()));
        let result = self.process_batch(handler, batch, shutdown, span, started).await;
        self.consumer.context().set_in_work(&[], self.held(|held| held.counts()));
        result
    }

    async fn process_batch<H: BatchHandler>(
        &self,
        handler: &H,
        batch: &[Record],
        shutdown: &CancellationToken,
        span: tracing::Span,
        started: Instant,
    ) -> Result<bool, ConsumerError> {
        let Some(outcome) = self.handle_with_retries(handler, batch, shutdown).instrument(span.clone()).await else {
            return Ok(false);
        };
        BatchProcessed { group: &self.group, records: batch.len(), dead_letters: outcome.dead_letters.len() }.emit();
        self.finish(batch, outcome, std::any::type_name::<H>(), shutdown).instrument(span).await?;
        BatchFinished { group: &self.group, elapsed: started.elapsed() }.emit();
        Ok(true)
    }

    async fn handle_with_retries<H: BatchHandler>(
        &self,
        handler: &H,
        batch: &[Record],
        shutdown: &CancellationToken,
    ) -> Option<BatchOutcome> {
        let retried = crate::retry::until_stopped(
            crate::retry::doubling(RETRY_BACKOFF_MIN, RETRY_BACKOFF_MAX),
            shutdown,
            || handler.handle(batch),
            |error| !error.is_poison(),
            |error, retry_in| BatchRetried { group: &self.group, error, retry_in }.emit(),
        )
        .await?;
        match retried {
            Ok(outcome) => Some(outcome),
            Err(error) => {
                // The whole batch refused for good: dead-letter every record, move on.
                BatchRefused { group: &self.group, records: batch.len(), error: &error }.emit();
                let dead_letters = (0..batch.len()).map(|index| DeadLetter::new(index, &error)).collect();
                Some(BatchOutcome { dead_letters, ..Default::default() })
            }
        }
    }

    /// Publishes outputs and dead letters, then commits the input offsets.
    /// `handler` (the handler's type) is named in the dead letters.
    async fn finish(
        &self,
        batch: &[Record],
        outcome: BatchOutcome,
        handler: &str,
        shutdown: &CancellationToken,
    ) -> Result<(), ConsumerError> {
        dead_letter::log_dead_letters(&self.group, batch, &outcome.dead_letters);
        let offsets = next_offsets(batch, &outcome.offset_metadata)?;
        let reporter = dead_letter::Reporter { group: &self.group, settings: &self.settings, handler };
        let dead_letters = dead_letter::dead_letter_records(reporter, batch, &outcome.dead_letters);
        match &self.delivery {
            Delivery::AtLeastOnce => {
                self.commit_at_least_once(&outcome.produce, &dead_letters, offsets, shutdown).await
            }
            Delivery::Transactional { .. } => self.commit_transaction(&outcome.produce, &dead_letters, offsets).await,
        }
    }

    /// Leaves the group and closes the clients; bounded, since closing can
    /// hang when the broker is gone. librdkafka's close blocks, so the last
    /// handles are dropped on a blocking thread, not an async worker.
    async fn close(self) {
        let Self { group, consumer, sender, settings, .. } = self;
        // A plain thread, not spawn_blocking: if the close hangs (broker gone),
        // the runtime does not wait for it when the process exits.
        let (done, closed) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            consumer.unsubscribe();
            drop(consumer);
            drop(sender);
            let _ = done.send(());
        });
        let timed_out = tokio::time::timeout(Duration::from_millis(settings.session_timeout_ms), closed).await.is_err();
        LoopStopped { group: &group, timed_out }.emit();
    }
}

/// Runs a blocking librdkafka call off the async workers.
async fn blocking<T: Send + 'static>(call: impl FnOnce() -> KafkaResult<T> + Send + 'static) -> KafkaResult<T> {
    tokio::task::spawn_blocking(call).await.unwrap_or_else(|_| Err(KafkaError::Canceled))
}

/// The next offset to read per partition (the highest in the batch + 1),
/// with the handler's metadata for that partition.
fn next_offsets(batch: &[Record], metadata: &HashMap<(String, i32), String>) -> KafkaResult<TopicPartitionList> {
    let mut highest: HashMap<(&str, i32), i64> = HashMap::new();
    for record in batch {
        let entry = highest.entry((record.topic(), record.partition())).or_insert(record.offset());
        *entry = (*entry).max(record.offset());
    }
    let mut list = TopicPartitionList::with_capacity(highest.len());
    for ((topic, partition), offset) in highest {
        list.add_partition_offset(topic, partition, Offset::Offset(offset + 1))?;
        if let Some(metadata) = metadata.get(&(topic.to_string(), partition)) {
            if let Some(mut element) = list.find_partition(topic, partition) {
                element.set_metadata(metadata.as_str());
            }
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedMessage, Timestamp};

    fn record(topic: &str, partition: i32, offset: i64) -> Record {
        Record::from(OwnedMessage::new(None, None, topic.into(), Timestamp::NotAvailable, partition, offset, None))
    }

    #[test]
    fn the_next_offsets_carry_the_metadata_of_their_partition() {
        let batch = [record("a", 0, 4), record("a", 0, 9), record("a", 1, 2), record("b", 0, 0)];
        let metadata = HashMap::from([(("a".to_string(), 0), "marks-a0".to_string())]);
        let list = next_offsets(&batch, &metadata).unwrap();
        let a0 = list.find_partition("a", 0).unwrap();
        assert_eq!((a0.offset(), a0.metadata()), (Offset::Offset(10), "marks-a0"));
        let a1 = list.find_partition("a", 1).unwrap();
        assert_eq!((a1.offset(), a1.metadata()), (Offset::Offset(3), ""));
        assert_eq!(list.find_partition("b", 0).unwrap().offset(), Offset::Offset(1));
    }
}
