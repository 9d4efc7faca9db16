//! The consumer loop every group runs: poll a batch, hand it to the
//! service's handler, publish what the handler produced (and dead letters),
//! then commit the input offsets — never before the work is done.
//!
//! Two delivery modes:
//! - [`Delivery::AtLeastOnce`]: outputs are sent and acknowledged, then the
//!   offsets are committed. A crash in between replays the batch, so handlers
//!   are idempotent (upserts keyed by entry id).
//! - [`Delivery::Transactional`]: outputs and input offsets commit together in
//!   one Kafka transaction (the stock stage). On an abort, the consumer is
//!   rewound to the committed offsets and the batch runs again; the handler's
//!   side effects (the Redis decision script) give the same answer again.
//!
//! The loop is one task: it does not poll while a batch is in work, so a
//! rebalance never runs while a transaction is open or offsets are in flight,
//! and librdkafka's bounded prefetch queue is the only buffer (backpressure).
//! A rebalance can run while a batch is being gathered (several polls): the
//! records of partitions revoked then are dropped from the batch.
//! Ordering caveat: a handler must keep per-key order within a batch itself.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{info_span, Instrument};

use super::base_config;
use super::headers::RecordContext;
use super::producer::{idempotent_config, OutRecord};
use crate::settings::KafkaSettings;

/// One consumed record, owned, with its parsed headers.
#[derive(Debug, Clone)]
pub struct Record {
    pub message: OwnedMessage,
    pub context: RecordContext,
}

impl Record {
    pub fn topic(&self) -> &str {
        self.message.topic()
    }
    pub fn partition(&self) -> i32 {
        self.message.partition()
    }
    pub fn offset(&self) -> i64 {
        self.message.offset()
    }
    pub fn payload(&self) -> Option<&[u8]> {
        self.message.payload()
    }
    pub fn key(&self) -> Option<&str> {
        self.message.key().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The span for work on this record; `entry_id` is filled once decoded.
    pub fn span(&self, group: &str) -> tracing::Span {
        info_span!(
            "record",
            group,
            topic = self.topic(),
            partition = self.partition(),
            offset = self.offset(),
            correlation_id = %self.context.correlation_id,
            trace_id = %self.context.trace_id(),
            entry_id = tracing::field::Empty,
        )
    }
}

/// A record of the batch the handler cannot process, ever (undecodable,
/// fails validation): it goes to `<topic>.dlq` and the partition moves on.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Position of the record in the batch.
    pub index: usize,
    pub reason: String,
}

/// What a handler made of a batch.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Records to publish (in the same transaction in transactional mode).
    pub produce: Vec<OutRecord>,
    pub dead_letters: Vec<DeadLetter>,
    /// Offset metadata committed with the batch's next offset, per
    /// (topic, partition) of the batch; a partition not named here commits
    /// empty metadata. The group coordinator keeps it with the offset (the
    /// broker caps it at `offset.metadata.max.bytes`, 4 KiB by default), so a
    /// stage can record there what it applied up to that offset.
    pub offset_metadata: HashMap<(String, i32), String>,
}

/// The batch could not be processed now (database down, registry down):
/// nothing is committed and the same batch is tried again after a pause.
#[derive(Debug, thiserror::Error)]
#[error("transient failure: {0}")]
pub struct HandlerError(pub String);

impl HandlerError {
    pub fn new(error: impl std::fmt::Display) -> Self {
        Self(error.to_string())
    }
}

/// A service's logic for one batch.
pub trait BatchHandler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        batch: &'a [Record],
    ) -> impl Future<Output = Result<BatchOutcome, HandlerError>> + Send + 'a;
}

/// How outputs and offsets are committed.
#[derive(Debug, Clone)]
pub enum Delivery {
    AtLeastOnce,
    /// With a stable, unique `transactional.id` for this instance.
    Transactional { transactional_id: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("kafka client error: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the transactional producer is fenced or failed fatally: {0}")]
    Fatal(String),
}

/// Logs rebalances and remembers revoked partitions: a batch is gathered
/// over several polls, and records of a partition revoked meanwhile belong to
/// its new owner (who starts from the committed offset), so they are dropped
/// from the batch instead of being processed twice.
pub struct LoopContext {
    group: String,
    revoked: std::sync::Mutex<Vec<(String, i32)>>,
}

impl LoopContext {
    /// The partitions revoked since the last call.
    fn take_revoked(&self) -> Vec<(String, i32)> {
        self.revoked.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default()
    }
}

impl ClientContext for LoopContext {}

impl ConsumerContext for LoopContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        tracing::info!(group = %self.group, ?rebalance, "rebalance starting");
        if let Rebalance::Revoke(partitions) = rebalance {
            if let Ok(mut revoked) = self.revoked.lock() {
                revoked.extend(partitions.elements().iter().map(|e| (e.topic().to_string(), e.partition())));
            }
        }
    }
    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        metrics::counter!("firstcome_rebalances_total", "group" => self.group.clone()).increment(1);
        tracing::info!(group = %self.group, ?rebalance, "rebalance done");
    }
}

/// A consumer group member with its producer.
pub struct ConsumerLoop {
    group: String,
    consumer: Arc<StreamConsumer<LoopContext>>,
    producer: FutureProducer,
    delivery: Delivery,
    settings: KafkaSettings,
}

/// Pause between tries of a batch that failed transiently.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Blocking Kafka calls (commit, transactions) wait at most this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl ConsumerLoop {
    /// Joins `group` on `topics` (created beforehand: auto-create is off).
    pub fn new(
        settings: &KafkaSettings,
        group: &str,
        topics: &[&str],
        delivery: Delivery,
    ) -> Result<Self, ConsumerError> {
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let consumer: StreamConsumer<LoopContext> = base_config(settings, &format!("{group}-{instance}"))
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Never see records of aborted transactions.
            .set("isolation.level", "read_committed")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", settings.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", (settings.session_timeout_ms / 4).to_string())
            .set("max.poll.interval.ms", settings.max_poll_interval_ms.to_string())
            // Bounded prefetch: the only buffer between the broker and the handler.
            .set("queued.max.messages.kbytes", "16384")
            .create_with_context(LoopContext { group: group.to_string(), revoked: Default::default() })?;
        consumer.subscribe(topics)?;

        let producer: FutureProducer = match &delivery {
            Delivery::AtLeastOnce => idempotent_config(settings, &format!("{group}-{instance}-out")).create()?,
            Delivery::Transactional { transactional_id } => {
                let producer: FutureProducer = idempotent_config(settings, transactional_id)
                    .set("transactional.id", transactional_id)
                    .set("transaction.timeout.ms", settings.transaction_timeout_ms.to_string())
                    .create()?;
                producer.init_transactions(Duration::from_millis(settings.transaction_timeout_ms))?;
                producer
            }
        };
        Ok(Self {
            group: group.to_string(),
            consumer: Arc::new(consumer),
            producer,
            delivery,
            settings: settings.clone(),
        })
    }

    /// Runs until `shutdown` is cancelled: the batch in work is finished and
    /// committed first. Returns an error only when the loop cannot go on
    /// (the caller rebuilds it).
    pub async fn run<H: BatchHandler>(self, handler: &H, shutdown: CancellationToken) -> Result<(), ConsumerError> {
        tracing::info!(group = %self.group, mode = ?self.delivery, "consumer loop started");
        let result = self.run_batches(handler, &shutdown).await;
        self.close().await;
        result
    }

    async fn run_batches<H: BatchHandler>(&self, handler: &H, shutdown: &CancellationToken) -> Result<(), ConsumerError> {
        loop {
            let batch = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                batch = self.next_batch() => batch,
            };
            if batch.is_empty() {
                continue;
            }
            let span = info_span!("batch", group = %self.group, size = batch.len());
            let started = Instant::now();
            let Some(outcome) = self.handle_with_retries(handler, &batch, shutdown).instrument(span.clone()).await else {
                // Shut down before the batch could be handled: nothing committed, it replays.
                return Ok(());
            };
            self.record_metrics(&batch, &outcome);
            self.finish(&batch, outcome, shutdown).instrument(span).await?;
            metrics::histogram!("firstcome_batch_seconds", "group" => self.group.clone())
                .record(started.elapsed().as_secs_f64());
        }
    }

    /// Waits for a first record, then gathers more for at most
    /// `batch_max_wait_ms`; records of partitions revoked meanwhile are dropped.
    async fn next_batch(&self) -> Vec<Record> {
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
        batch.push(to_record(message));
    }

    fn drop_revoked(&self, batch: &mut Vec<Record>) {
        let revoked = self.consumer.context().take_revoked();
        if revoked.is_empty() {
            return;
        }
        let before = batch.len();
        batch.retain(|r| !revoked.iter().any(|(t, p)| t == r.topic() && *p == r.partition()));
        if batch.len() < before {
            tracing::info!(group = %self.group, dropped = before - batch.len(), "dropped records of revoked partitions");
        }
    }

    async fn log_poll_error(&self, error: KafkaError) {
        tracing::warn!(group = %self.group, %error, "poll error");
        metrics::counter!("firstcome_poll_errors_total", "group" => self.group.clone()).increment(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    async fn handle_with_retries<H: BatchHandler>(
        &self,
        handler: &H,
        batch: &[Record],
        shutdown: &CancellationToken,
    ) -> Option<BatchOutcome> {
        let mut backoff = RETRY_BACKOFF_MIN;
        loop {
            match handler.handle(batch).await {
                Ok(outcome) => return Some(outcome),
                Err(error) => {
                    tracing::warn!(group = %self.group, %error, retry_in_ms = backoff.as_millis() as u64, "batch failed, will retry");
                    metrics::counter!("firstcome_batch_retries_total", "group" => self.group.clone()).increment(1);
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
            }
        }
    }

    fn record_metrics(&self, batch: &[Record], outcome: &BatchOutcome) {
        let dead = outcome.dead_letters.len() as u64;
        metrics::counter!("firstcome_records_total", "group" => self.group.clone(), "result" => "ok")
            .increment(batch.len() as u64 - dead.min(batch.len() as u64));
        if dead > 0 {
            metrics::counter!("firstcome_records_total", "group" => self.group.clone(), "result" => "dead_letter")
                .increment(dead);
        }
    }

    /// Publishes outputs and dead letters, then commits the input offsets.
    async fn finish(&self, batch: &[Record], outcome: BatchOutcome, shutdown: &CancellationToken) -> Result<(), ConsumerError> {
        let mut records = outcome.produce;
        for dead in &outcome.dead_letters {
            if let Some(record) = batch.get(dead.index) {
                tracing::warn!(
                    group = %self.group, topic = record.topic(), partition = record.partition(),
                    offset = record.offset(), reason = %dead.reason, "dead-lettering record"
                );
            }
        }
        let offsets = next_offsets(batch, &outcome.offset_metadata)?;
        match &self.delivery {
            Delivery::AtLeastOnce => {
                let dead_letters = dead_letter_records(&self.group, batch, &outcome.dead_letters);
                if self.send_until_acknowledged(&records, &dead_letters, shutdown).await {
                    self.commit(offsets).await;
                }
                Ok(())
            }
            Delivery::Transactional { .. } => {
                records.shrink_to_fit();
                let dead_letters = dead_letter_records(&self.group, batch, &outcome.dead_letters);
                self.commit_transaction(&records, &dead_letters, offsets).await
            }
        }
    }

    /// At-least-once: every output must be acknowledged before the offsets
    /// move. Failures are retried (the records are idempotent downstream).
    /// `false` when shutting down with outputs unacknowledged: the caller must
    /// not commit, so the batch replays after the restart.
    async fn send_until_acknowledged(&self, records: &[OutRecord], dead: &[DeadLetterRecord], shutdown: &CancellationToken) -> bool {
        let mut backoff = RETRY_BACKOFF_MIN;
        let mut pending: Vec<usize> = (0..records.len() + dead.len()).collect();
        while !pending.is_empty() {
            let sends = pending.iter().map(|&i| async move {
                let result = if i < records.len() {
                    send_out(&self.producer, &records[i]).await
                } else {
                    send_dead(&self.producer, &dead[i - records.len()]).await
                };
                (i, result)
            });
            let results = futures::future::join_all(sends).await;
            pending = results
                .into_iter()
                .filter_map(|(i, result)| match result {
                    Ok(()) => None,
                    Err(error) => {
                        tracing::warn!(group = %self.group, %error, "output not acknowledged, retrying");
                        Some(i)
                    }
                })
                .collect();
            if !pending.is_empty() {
                if shutdown.is_cancelled() && backoff >= RETRY_BACKOFF_MAX {
                    // Give up without committing: the batch replays after restart.
                    tracing::error!(group = %self.group, "shutting down with unacknowledged outputs; batch will replay");
                    return false;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
        }
        true
    }

    /// Synchronous commit of the batch's next offsets. A failed commit (e.g.
    /// partitions revoked meanwhile) is logged: the records replay elsewhere.
    async fn commit(&self, offsets: TopicPartitionList) {
        let consumer = self.consumer.clone();
        let result = tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                metrics::counter!("firstcome_commit_failures_total", "group" => self.group.clone()).increment(1);
                tracing::warn!(group = %self.group, %error, "offset commit failed; records will be redelivered");
            }
            Err(error) => tracing::error!(%error, "commit task panicked"),
        }
    }

    /// Transactional: outputs, dead letters and input offsets in one transaction.
    async fn commit_transaction(
        &self,
        records: &[OutRecord],
        dead: &[DeadLetterRecord],
        offsets: TopicPartitionList,
    ) -> Result<(), ConsumerError> {
        let result = self.try_transaction(records, dead, offsets).await;
        match result {
            Ok(()) => Ok(()),
            Err(error) => {
                metrics::counter!("firstcome_transaction_aborts_total", "group" => self.group.clone()).increment(1);
                let fatal = matches!(
                    error.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::Fenced) | Some(RDKafkaErrorCode::ProducerFenced)
                        | Some(RDKafkaErrorCode::InvalidProducerEpoch)
                ) || is_fatal(&error);
                if fatal {
                    return Err(ConsumerError::Fatal(error.to_string()));
                }
                tracing::warn!(group = %self.group, %error, "transaction failed; aborting and rewinding");
                let producer = self.producer.clone();
                blocking(move || producer.abort_transaction(CALL_TIMEOUT))
                    .await
                    .map_err(|e| ConsumerError::Fatal(format!("abort failed: {e}")))?;
                self.rewind().await
            }
        }
    }

    async fn try_transaction(&self, records: &[OutRecord], dead: &[DeadLetterRecord], offsets: TopicPartitionList) -> KafkaResult<()> {
        let producer = self.producer.clone();
        blocking(move || producer.begin_transaction()).await?;
        let sends = records
            .iter()
            .map(|r| send_out(&self.producer, r))
            .chain(dead.iter().map(|d| Box::pin(send_dead(&self.producer, d)) as _));
        for result in futures::future::join_all(sends).await {
            result?;
        }
        // No metadata means the consumer is not (yet) in the group: abort and retry.
        let metadata = self
            .consumer
            .group_metadata()
            .ok_or(KafkaError::MetadataFetch(RDKafkaErrorCode::InvalidGroupId))?;
        let producer = self.producer.clone();
        blocking(move || {
            producer.send_offsets_to_transaction(&offsets, &metadata, CALL_TIMEOUT)?;
            producer.commit_transaction(CALL_TIMEOUT)
        })
        .await
    }

    /// After an abort: seek every assigned partition back to its committed
    /// offset so the aborted batch is consumed again.
    async fn rewind(&self) -> Result<(), ConsumerError> {
        let consumer = self.consumer.clone();
        blocking(move || {
            let committed = consumer.committed(CALL_TIMEOUT)?;
            let mut positions = TopicPartitionList::with_capacity(committed.count());
            for element in committed.elements() {
                // Nothing committed yet: the start of the partition (auto.offset.reset).
                let offset = match element.offset() {
                    Offset::Invalid => Offset::Beginning,
                    offset => offset,
                };
                positions.add_partition_offset(element.topic(), element.partition(), offset)?;
            }
            consumer.seek_partitions(positions, CALL_TIMEOUT)?;
            Ok(())
        })
        .await
        .map_err(ConsumerError::from)
    }

    /// Leaves the group and closes the clients; bounded, since closing can
    /// hang when the broker is gone. librdkafka's close blocks, so the last
    /// handles are dropped on a blocking thread, not an async worker.
    async fn close(self) {
        let Self { group, consumer, producer, settings, .. } = self;
        // A plain thread, not spawn_blocking: if the close hangs (broker gone),
        // the runtime does not wait for it when the process exits.
        let (done, closed) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            consumer.unsubscribe();
            drop(consumer);
            drop(producer);
            let _ = done.send(());
        });
        if tokio::time::timeout(Duration::from_millis(settings.session_timeout_ms), closed).await.is_err() {
            tracing::warn!(%group, "leaving the group timed out");
        }
        tracing::info!(%group, "consumer loop stopped");
    }
}

fn is_fatal(error: &KafkaError) -> bool {
    match error {
        KafkaError::Transaction(e) => e.is_fatal(),
        _ => false,
    }
}

/// Runs a blocking librdkafka call off the async workers.
async fn blocking<T: Send + 'static>(call: impl FnOnce() -> KafkaResult<T> + Send + 'static) -> KafkaResult<T> {
    tokio::task::spawn_blocking(call)
        .await
        .unwrap_or_else(|_| Err(KafkaError::Canceled))
}

fn to_record(message: OwnedMessage) -> Record {
    let context = RecordContext::from_headers(message.headers());
    Record { message, context }
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

/// A dead letter: the source bytes and key, with error headers.
pub struct DeadLetterRecord {
    topic: String,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: OwnedHeaders,
}

fn dead_letter_records(group: &str, batch: &[Record], dead: &[DeadLetter]) -> Vec<DeadLetterRecord> {
    dead.iter()
        .filter_map(|d| batch.get(d.index).map(|record| (d, record)))
        .map(|(d, record)| {
            let partition = record.partition().to_string();
            let offset = record.offset().to_string();
            let failed_at = chrono::Utc::now().to_rfc3339();
            let extra = [
                ("dlq-error", d.reason.as_str()),
                ("dlq-source-topic", record.topic()),
                ("dlq-source-partition", partition.as_str()),
                ("dlq-source-offset", offset.as_str()),
                ("dlq-group", group),
                ("dlq-failed-at", failed_at.as_str()),
            ];
            let headers = extra.iter().fold(record.context.to_headers(), |headers, (key, value)| {
                headers.insert(Header { key, value: Some(value.as_bytes()) })
            });
            DeadLetterRecord {
                topic: schemas::Topics::dlq(record.topic()),
                key: record.message.key().map(<[u8]>::to_vec),
                payload: record.payload().map(<[u8]>::to_vec),
                headers,
            }
        })
        .collect()
}

fn send_out<'a>(producer: &'a FutureProducer, record: &'a OutRecord) -> std::pin::Pin<Box<dyn Future<Output = KafkaResult<()>> + Send + 'a>> {
    Box::pin(async move {
        let future_record = FutureRecord::to(&record.topic)
            .key(&record.key)
            .payload(&record.payload)
            .headers(record.context.to_headers());
        producer
            .send(future_record, CALL_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(error, _)| error)
    })
}

async fn send_dead(producer: &FutureProducer, record: &DeadLetterRecord) -> KafkaResult<()> {
    let mut future_record: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(&record.topic).headers(record.headers.clone());
    if let Some(key) = &record.key {
        future_record = future_record.key(key.as_slice());
    }
    if let Some(payload) = &record.payload {
        future_record = future_record.payload(payload.as_slice());
    }
    producer
        .send(future_record, CALL_TIMEOUT)
        .await
        .map(|_| ())
        .map_err(|(error, _)| error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Timestamp;

    fn record(topic: &str, partition: i32, offset: i64) -> Record {
        to_record(OwnedMessage::new(None, None, topic.into(), Timestamp::NotAvailable, partition, offset, None))
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
