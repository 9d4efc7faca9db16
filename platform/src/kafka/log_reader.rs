//! Reading a topic as a log: every partition by assignment (no consumer
//! group, nothing committed), from the beginning (or from the first record
//! stamped at or after a time, [`LogReader::open_since`]) to the high
//! watermarks taken when the read starts, committed records only.
//!
//! Used wherever a store is rebuilt from Kafka or an operator lists what a
//! topic holds: the read ends when the snapshot is read, never after an idle
//! timeout (a busy or slow cluster returns everything, a quiet one returns at
//! once). Under `read_committed` aborted records and transaction markers take
//! offsets that are never delivered, so "done" is judged on the consumer's
//! position, not on the last record seen.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use super::base_config;
use crate::settings::KafkaSettings;

/// How long a metadata or watermark call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often positions are checked while no record arrives (an open
/// transaction holds the last stable offset below the high watermark).
const POSITION_CHECK: Duration = Duration::from_millis(200);

/// A read of whole topics up to a snapshot of their high watermarks.
pub struct LogReader {
    consumer: Arc<StreamConsumer>,
    /// Partitions not read to their snapshot yet → the snapshot's high watermark.
    remaining: HashMap<(String, i32), i64>,
}

impl LogReader {
    /// Takes the high watermarks of every partition of `topics` and assigns
    /// them all from the beginning.
    pub async fn open(settings: &KafkaSettings, client_id: &str, topics: &[&str]) -> Result<Self, KafkaError> {
        Self::open_from(settings, client_id, topics, None).await
    }

    /// As [`LogReader::open`], but each partition from its first record
    /// stamped at or after `since_ms` (the broker's time index,
    /// `offsets_for_times`); a partition with no such record is not read.
    /// Every record after that start is read, whatever its stamp (the
    /// caller keeps what it is looking for).
    /// For reading what one event wrote: its records are stamped no earlier
    /// than it opened (the topics take producer timestamps within bounds,
    /// `schemas::topology::LogPolicy`), so the days of older events before
    /// it are skipped, not scanned.
    pub async fn open_since(
        settings: &KafkaSettings,
        client_id: &str,
        topics: &[&str],
        since_ms: i64,
    ) -> Result<Self, KafkaError> {
        Self::open_from(settings, client_id, topics, Some(since_ms)).await
    }

    async fn open_from(
        settings: &KafkaSettings,
        client_id: &str,
        topics: &[&str],
        since_ms: Option<i64>,
    ) -> Result<Self, KafkaError> {
        let consumer: StreamConsumer = base_config(settings, client_id)
            // A group id is required by librdkafka even without a group; it
            // is never joined (assign, not subscribe) and nothing is committed.
            .set("group.id", format!("{client_id}-reader"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // No partition-EOF events: librdkafka logs each as an error; the
            // position check below sees the end just as well.
            .set("isolation.level", "read_committed")
            .create()?;
        let consumer = Arc::new(consumer);
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let assigning = consumer.clone();
        let remaining = tokio::task::spawn_blocking(move || snapshot_and_assign(&assigning, &topics, since_ms))
            .await
            .map_err(|_| KafkaError::Canceled)??;
        Ok(Self { consumer, remaining })
    }

    /// The next committed record of the snapshot; `None` once every partition
    /// is read to its snapshot watermark. Records past the snapshot are not
    /// returned.
    pub async fn next(&mut self) -> Result<Option<OwnedMessage>, KafkaError> {
        loop {
            if self.remaining.is_empty() {
                return Ok(None);
            }
            match tokio::time::timeout(POSITION_CHECK, self.consumer.recv()).await {
                Ok(Ok(message)) => {
                    let key = (message.topic().to_string(), message.partition());
                    let Some(&high) = self.remaining.get(&key) else { continue };
                    if message.offset() >= high {
                        self.remaining.remove(&key);
                        continue;
                    }
                    if message.offset() + 1 >= high {
                        self.remaining.remove(&key);
                    }
                    return Ok(Some(message.detach()));
                }
                Ok(Err(KafkaError::PartitionEOF(_))) | Err(_) => self.drop_finished()?,
                Ok(Err(error)) => return Err(error),
            }
        }
    }

    /// Removes the partitions whose position reached their snapshot.
    fn drop_finished(&mut self) -> Result<(), KafkaError> {
        let positions = self.consumer.position()?;
        for element in positions.elements() {
            if let Offset::Offset(next) = element.offset() {
                let key = (element.topic().to_string(), element.partition());
                if self.remaining.get(&key).is_some_and(|&high| next >= high) {
                    self.remaining.remove(&key);
                }
            }
        }
        Ok(())
    }
}

/// High watermarks of every partition, then an assignment of the non-empty
/// ones from their beginning, or from their first record stamped at or
/// after `since_ms`.
fn snapshot_and_assign(
    consumer: &StreamConsumer,
    topics: &[String],
    since_ms: Option<i64>,
) -> Result<HashMap<(String, i32), i64>, KafkaError> {
    let mut remaining = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), CALL_TIMEOUT)?;
        for t in metadata.topics() {
            if let Some(error) = t.error() {
                return Err(KafkaError::MetadataFetch(error.into()));
            }
            for p in t.partitions() {
                let (low, high) = consumer.fetch_watermarks(topic, p.id(), CALL_TIMEOUT)?;
                if high > low {
                    remaining.insert((topic.clone(), p.id()), high);
                    assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
                }
            }
        }
    }
    // Nothing to seek in empty topics (and librdkafka refuses an empty
    // `offsets_for_times` query as an invalid argument).
    if let Some(since) = since_ms.filter(|_| assignment.count() > 0) {
        assignment = start_at_time(consumer, &assignment, since, &mut remaining)?;
    }
    consumer.assign(&assignment)?;
    Ok(remaining)
}

/// Each partition of `assignment` from its first record stamped at or after
/// `since`; partitions with none are dropped from the read.
fn start_at_time(
    consumer: &StreamConsumer,
    assignment: &TopicPartitionList,
    since: i64,
    remaining: &mut HashMap<(String, i32), i64>,
) -> Result<TopicPartitionList, KafkaError> {
    let mut query = TopicPartitionList::with_capacity(assignment.count());
    for element in assignment.elements() {
        query.add_partition_offset(element.topic(), element.partition(), Offset::Offset(since))?;
    }
    let found = consumer.offsets_for_times(query, CALL_TIMEOUT)?;
    let mut starts = TopicPartitionList::with_capacity(found.count());
    for element in found.elements() {
        let key = (element.topic().to_string(), element.partition());
        match element.offset() {
            Offset::Offset(offset) if remaining.get(&key).is_some_and(|&high| offset < high) => {
                starts.add_partition_offset(element.topic(), element.partition(), Offset::Offset(offset))?;
            }
            // No record that recent (End / -1), or only past the snapshot.
            _ => {
                remaining.remove(&key);
            }
        }
    }
    Ok(starts)
}
