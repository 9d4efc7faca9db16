//! Reading what the code under test wrote to Kafka, and how far a consumer
//! group has committed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use platform::kafka::LogReader;
use platform::settings::KafkaSettings;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use schemas::{Codec, Event};
use uuid::Uuid;

/// The longest a read of a topic may take (an open transaction holds the
/// end of a `read_committed` read back until it ends).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Every committed record of `topics` (all partitions), from the beginning
/// to the high watermarks taken when the read starts. Exact once the writer
/// is known to be done (its outbox drained, its group committed): then the
/// watermarks include all it wrote.
pub async fn read_log(kafka: &KafkaSettings, topics: &[&str]) -> Vec<OwnedMessage> {
    let read = async {
        let client_id = format!("testkit-{}", Uuid::new_v4().simple());
        let mut reader =
            LogReader::open(&crate::kafka_admin(kafka), &client_id, topics).await.expect("log reader opens");
        let mut records = Vec::new();
        while let Some(record) = reader.next().await.expect("log read") {
            records.push(record);
        }
        records
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| panic!("{topics:?} not read to their watermarks within {READ_TIMEOUT:?}"))
}

/// [`read_log`] of one topic, decoded as `E`.
pub async fn read_events<E: Event>(kafka: &KafkaSettings, codec: &Codec, topic: &str) -> Vec<E> {
    let mut events = Vec::new();
    for record in read_log(kafka, &[topic]).await {
        let event = codec.decode(record.payload()).await.unwrap_or_else(|e| {
            panic!("a record of {topic} at {}/{} decodes: {e}", record.partition(), record.offset())
        });
        events.push(event);
    }
    events
}

/// Committed records of some topics as they arrive, from their beginning:
/// for a test that waits for N records a stage is about to write. Reads by
/// assignment (no group to join, nothing committed), like the downstream
/// groups would see them (`read_committed`).
pub struct CommittedReader {
    consumer: StreamConsumer,
}

impl CommittedReader {
    /// Assigns every partition of `topics` from the beginning.
    pub async fn open(kafka: &KafkaSettings, topics: &[&str]) -> Self {
        let consumer: StreamConsumer = platform::kafka::client_config(&crate::kafka_admin(kafka))
            .set("group.id", kafka.group(&format!("testkit-reader-{}", Uuid::new_v4().simple())))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .expect("committed reader");
        let consumer = Arc::new(consumer);
        let assigning = consumer.clone();
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let mut assignment = TopicPartitionList::new();
            for topic in &topics {
                for partition in
                    platform::kafka::lag::partitions(assigning.as_ref(), topic, platform::kafka::lag::CALL_TIMEOUT)
                        .expect("topic metadata")
                {
                    assignment.add_partition_offset(topic, partition, Offset::Beginning).expect("assignment");
                }
            }
            assigning.assign(&assignment).expect("assigned");
        })
        .await
        .expect("assigning task");
        let consumer = Arc::into_inner(consumer).expect("the assigning task let go of the consumer");
        Self { consumer }
    }

    /// The next committed record, or `None` after `wait`.
    pub async fn next(&self, wait: Duration) -> Option<OwnedMessage> {
        match tokio::time::timeout(wait, self.consumer.recv()).await {
            Ok(Ok(message)) => Some(message.detach()),
            Ok(Err(error)) => panic!("committed reader: {error}"),
            Err(_) => None,
        }
    }

    /// The next `count` committed records; panics after `timeout` with how
    /// many came.
    pub async fn take(&self, count: usize, timeout: Duration) -> Vec<OwnedMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut records = Vec::with_capacity(count);
        while records.len() < count {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(record) => records.push(record),
                None => panic!("{} of {count} committed records within {timeout:?}", records.len()),
            }
        }
        records
    }
}

/// Partitions a group has not committed to the end:
/// (topic, partition) → (committed offset, high watermark).
pub type Lag = BTreeMap<(String, i32), (Offset, i64)>;

/// Partitions of `topics` whose committed offset for `group` is short of the
/// high watermark (empty: the group is done with everything written so far).
/// A partition that was never committed lags unless it is empty.
pub async fn group_lag(kafka: &KafkaSettings, group: &str, topics: &[&str]) -> Result<Lag, KafkaError> {
    let partitions = platform::kafka::lag::group_lag(&crate::kafka_admin(kafka), group, topics).await?;
    Ok(partitions
        .into_iter()
        .filter(|p| !p.caught_up())
        .map(|p| ((p.topic, p.partition), (p.committed.map_or(Offset::Invalid, Offset::Offset), p.end)))
        .collect())
}

/// Whether `group` has committed every partition of `topics` to the end
/// (`false` too when that cannot be read right now).
pub async fn caught_up(kafka: &KafkaSettings, group: &str, topics: &[&str]) -> bool {
    group_lag(kafka, group, topics).await.is_ok_and(|lag| lag.is_empty())
}
