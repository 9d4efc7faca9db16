//! Applied marks: how the stage knows Redis is not behind what it committed.
//!
//! Redis (AOF `everysec`) can lose the last second of writes after the stage's
//! Kafka transaction committed the decisions made on them. Deciding again on
//! that older state could hand a unit out twice. So each script call raises,
//! per event, an `applied` mark per input partition (`s:<p>` for
//! `survey-submitted`, `r:<p>` for `stock-released`): the next offset of the
//! event's records it applied. The stage commits the same marks, as offset
//! metadata, with its input offsets in the transaction:
//! `{"v":1,"marks":[["<event_id>",<next_offset>],...]}`, newest first, at most
//! [`PartitionMarks::MAX_EVENTS`] events. Before each batch it reads the
//! group's committed offsets and metadata ([`MarkReader`]) and hands every
//! script call the event's committed marks ([`CommittedMarks::expected_for`]);
//! a script that finds `applied` below one answers STALE and writes nothing.
//!
//! An event that dropped out of a partition's metadata (32 newer events, or
//! the 4 KiB metadata cap) is no longer checked on that partition: the check
//! covers the events in play, which is where a lost second matters.
//!
//! Every read is bounded ([`FETCH_DEADLINE`] for the whole read), timed,
//! and logged when slow or failed ([`crate::events::MarksWaited`]): when the
//! group's coordinator is lost, librdkafka keeps looking for the new one
//! inside the call until its timeout, and a read that took long but
//! succeeded used to say nothing. A read that fails fails the batch, which
//! the consumer loop retries with its backoff, logging each try.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use platform::event_keys::applied_field;

use crate::events::MarksWaited;
use platform::settings::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

/// Which input topic a mark is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MarkKind {
    /// `survey-submitted` (field `s:<partition>`).
    Survey,
    /// `stock-released` (field `r:<partition>`).
    Release,
}

impl MarkKind {
    fn prefix(self) -> char {
        match self {
            MarkKind::Survey => 's',
            MarkKind::Release => 'r',
        }
    }
}

/// The `applied` hash field of a partition.
pub fn field(kind: MarkKind, partition: i32) -> String {
    applied_field(kind.prefix(), partition)
}

/// The marks one partition's committed offset carries: per event, the next
/// offset of its records applied in Redis as of that commit. Newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionMarks {
    pub events: Vec<(String, i64)>,
}

/// The metadata's format version.
const VERSION: u64 = 1;

/// The metadata as written: `v` first, then `[event, next_offset]` pairs.
#[derive(serde::Serialize)]
struct Wire<'a> {
    v: u64,
    marks: Vec<(&'a str, i64)>,
}

impl PartitionMarks {
    /// Events kept per partition.
    pub const MAX_EVENTS: usize = 32;
    /// Kept under the broker's `offset.metadata.max.bytes` (4096 by default):
    /// a commit with more metadata fails.
    pub const MAX_BYTES: usize = 3_900;

    /// The event's mark on this partition.
    pub fn get(&self, event_id: &str) -> Option<i64> {
        self.events.iter().find(|(event, _)| event == event_id).map(|(_, offset)| *offset)
    }

    /// These marks with `newer` ones (this batch's) in front: an event in
    /// both keeps the higher mark, the oldest events beyond the cap go.
    pub fn merged(&self, newer: &[(String, i64)]) -> Self {
        let mut events: Vec<(String, i64)> = Vec::with_capacity(Self::MAX_EVENTS);
        for (event, offset) in newer.iter().chain(&self.events) {
            if let Some((_, known)) = events.iter_mut().find(|(known, _)| known == event) {
                *known = (*known).max(*offset);
            } else if events.len() < Self::MAX_EVENTS {
                events.push((event.clone(), *offset));
            }
        }
        Self { events }
    }

    /// `{"v":1,"marks":[["<event_id>",<next_offset>],...]}`, dropping the
    /// oldest events until it fits [`Self::MAX_BYTES`].
    pub fn encode(&self) -> String {
        let mut events = &self.events[..self.events.len().min(Self::MAX_EVENTS)];
        loop {
            let wire =
                Wire { v: VERSION, marks: events.iter().map(|(event, offset)| (event.as_str(), *offset)).collect() };
            let encoded = serde_json::to_string(&wire).unwrap_or_default();
            if encoded.len() <= Self::MAX_BYTES || events.is_empty() {
                return encoded;
            }
            events = &events[..events.len() - 1];
        }
    }

    /// `None` for empty, foreign or unreadable metadata (nothing to expect).
    pub fn decode(metadata: &str) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_str(metadata).ok()?;
        if value.get("v")?.as_u64()? != VERSION {
            return None;
        }
        let events = value
            .get("marks")?
            .as_array()?
            .iter()
            .map(|mark| {
                let [event, offset] = mark.as_array()?.as_slice() else { return None };
                Some((event.as_str()?.to_string(), offset.as_i64()?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self { events })
    }
}

/// What one partition's group commit holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Committed {
    offset: Option<i64>,
    marks: PartitionMarks,
}

/// The stock group's committed offsets and marks, per input partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommittedMarks {
    partitions: BTreeMap<(MarkKind, i32), Committed>,
}

impl CommittedMarks {
    /// Records what a partition's commit holds (the reader's and tests' way in).
    pub fn insert(&mut self, kind: MarkKind, partition: i32, offset: Option<i64>, marks: PartitionMarks) {
        self.partitions.insert((kind, partition), Committed { offset, marks });
    }

    /// The event's committed marks, `applied` field → next offset: what
    /// Redis must have applied at least.
    pub fn expected_for(&self, event_id: &str) -> Vec<(String, i64)> {
        self.partitions
            .iter()
            .filter_map(|((kind, partition), committed)| {
                committed.marks.get(event_id).map(|offset| (field(*kind, *partition), offset))
            })
            .collect()
    }

    /// The group's committed offset of a partition; `None` when nothing was committed.
    pub fn committed_offset(&self, kind: MarkKind, partition: i32) -> Option<i64> {
        self.partitions.get(&(kind, partition)).and_then(|committed| committed.offset)
    }

    /// The committed marks of a partition (empty when none).
    pub fn marks(&self, kind: MarkKind, partition: i32) -> PartitionMarks {
        self.partitions.get(&(kind, partition)).map(|c| c.marks.clone()).unwrap_or_default()
    }

    /// The metadata to commit for a partition: its committed marks merged
    /// with `newer` (this batch's marks on it, event → next offset).
    pub fn metadata_for(&self, kind: MarkKind, partition: i32, newer: &[(String, i64)]) -> String {
        self.marks(kind, partition).merged(newer).encode()
    }

    /// Every partition read, with its committed offset.
    pub fn partitions(&self) -> impl Iterator<Item = (MarkKind, i32, Option<i64>)> + '_ {
        self.partitions.iter().map(|((kind, partition), c)| (*kind, *partition, c.offset))
    }
}

/// How long the partition lists of the input topics are trusted.
const PARTITIONS_REFRESH: Duration = Duration::from_secs(30);
/// Bound of one whole read (partition lists when due, then the committed
/// offsets): a read that normally takes milliseconds, kept well below the
/// transaction timeout, so a lost coordinator shows up as a failed, logged
/// read every few seconds instead of one long silent one.
pub const FETCH_DEADLINE: Duration = Duration::from_secs(5);
/// The blocking call is given [`FETCH_DEADLINE`]; the async side stops
/// waiting for it this much later, should librdkafka overrun its timeout.
const FETCH_GRACE: Duration = Duration::from_millis(500);

/// What a read of the marks was waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarksStep {
    /// The partition lists of the input topics (topic metadata).
    Partitions,
    /// The group's committed offsets and metadata (from its coordinator).
    CommittedOffsets,
}

impl MarksStep {
    pub fn as_str(self) -> &'static str {
        match self {
            MarksStep::Partitions => "partitions",
            MarksStep::CommittedOffsets => "committed_offsets",
        }
    }
}

/// The input partitions as last fetched, and when.
type CachedPartitions = (Instant, Vec<(MarkKind, i32)>);

/// Reads the stock group's committed offsets and metadata. A client of the
/// group that never subscribes, so it never joins nor moves a partition.
/// With `read_committed`, librdkafka asks for stable offsets (KIP-447): a
/// transaction whose offsets are still being written is waited for, not
/// read half-way.
#[derive(Clone)]
pub struct MarkReader {
    consumer: Arc<BaseConsumer>,
    topics: [(MarkKind, String); 2],
    partitions: Arc<Mutex<Option<CachedPartitions>>>,
}

impl std::fmt::Debug for MarkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarkReader").field("topics", &self.topics).finish_non_exhaustive()
    }
}

impl MarkReader {
    /// A reader for `group` on the deployment's survey and release topics.
    /// Creating the client does not connect; the first fetch does.
    pub fn new(kafka: &KafkaSettings, group: &str) -> Result<Self, KafkaError> {
        let mut config = platform::kafka::client_config(kafka);
        config.set("client.id", format!("{group}-marks")).set("reconnect.backoff.max.ms", "1000");
        let consumer: BaseConsumer = config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .create()?;
        let topics = kafka.topics();
        Ok(Self {
            consumer: Arc::new(consumer),
            topics: [(MarkKind::Survey, topics.survey_submitted), (MarkKind::Release, topics.stock_released)],
            partitions: Arc::new(Mutex::new(None)),
        })
    }

    /// The committed offsets and marks of every partition of both input
    /// topics, within [`FETCH_DEADLINE`] (else `OperationTimedOut`); each
    /// read is timed and counted, a slow or failed one logged. The
    /// librdkafka calls block, so they run off the async workers.
    pub async fn fetch(&self) -> Result<CommittedMarks, KafkaError> {
        let started = Instant::now();
        let deadline = started + FETCH_DEADLINE;
        let reader = self.clone();
        let read = tokio::task::spawn_blocking(move || reader.fetch_blocking(deadline));
        let result = match tokio::time::timeout(FETCH_DEADLINE + FETCH_GRACE, read).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err((MarksStep::CommittedOffsets, KafkaError::Canceled)),
            // Overran its own timeout: the thread finishes on its own, unawaited.
            Err(_) => Err((MarksStep::CommittedOffsets, timed_out(MarksStep::CommittedOffsets))),
        };
        let waited = started.elapsed();
        match result {
            Ok(marks) => {
                MarksWaited { waited_for: None, waited, error: None }.emit();
                Ok(marks)
            }
            Err((step, error)) => {
                MarksWaited { waited_for: Some(step), waited, error: Some(&error) }.emit();
                Err(error)
            }
        }
    }

    fn fetch_blocking(&self, deadline: Instant) -> Result<CommittedMarks, (MarksStep, KafkaError)> {
        let partitions = self.partitions(deadline).map_err(|e| (MarksStep::Partitions, e))?;
        let mut wanted = TopicPartitionList::with_capacity(partitions.len());
        for (kind, partition) in &partitions {
            wanted.add_partition(self.topic(*kind), *partition);
        }
        let step = MarksStep::CommittedOffsets;
        let committed = self.consumer.committed_offsets(wanted, left(deadline, step)?).map_err(|e| (step, e))?;
        let mut marks = CommittedMarks::default();
        for (kind, partition) in partitions {
            let Some(element) = committed.find_partition(self.topic(kind), partition) else { continue };
            let offset = match element.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            };
            let partition_marks = PartitionMarks::decode(element.metadata()).unwrap_or_default();
            marks.insert(kind, partition, offset, partition_marks);
        }
        Ok(marks)
    }

    fn topic(&self, kind: MarkKind) -> &str {
        self.topics.iter().find(|(k, _)| *k == kind).map(|(_, topic)| topic.as_str()).unwrap_or_default()
    }

    /// The partitions of both topics, refreshed every [`PARTITIONS_REFRESH`]
    /// (partitions can be added).
    fn partitions(&self, deadline: Instant) -> Result<Vec<(MarkKind, i32)>, KafkaError> {
        if let Ok(cached) = self.partitions.lock() {
            if let Some((at, partitions)) = cached.as_ref() {
                if at.elapsed() < PARTITIONS_REFRESH {
                    return Ok(partitions.clone());
                }
            }
        }
        let mut partitions = Vec::new();
        for (kind, topic) in &self.topics {
            let timeout = left(deadline, MarksStep::Partitions).map_err(|(_, e)| e)?;
            let metadata = self.consumer.fetch_metadata(Some(topic), timeout)?;
            for found in metadata.topics() {
                if let Some(error) = found.error() {
                    return Err(KafkaError::MetadataFetch(error.into()));
                }
                partitions.extend(found.partitions().iter().map(|p| (*kind, p.id())));
            }
        }
        if let Ok(mut cached) = self.partitions.lock() {
            *cached = Some((Instant::now(), partitions.clone()));
        }
        Ok(partitions)
    }
}

/// The time left before `deadline` for the next call of `step`; an error
/// when none is left.
fn left(deadline: Instant, step: MarksStep) -> Result<Duration, (MarksStep, KafkaError)> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left),
        _ => Err((step, timed_out(step))),
    }
}

/// librdkafka's own answer to a call past its timeout, for `step`.
fn timed_out(step: MarksStep) -> KafkaError {
    match step {
        MarksStep::Partitions => KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut),
        MarksStep::CommittedOffsets => KafkaError::OffsetFetch(RDKafkaErrorCode::OperationTimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(events: &[(&str, i64)]) -> PartitionMarks {
        PartitionMarks { events: events.iter().map(|(e, o)| (e.to_string(), *o)).collect() }
    }

    #[test]
    fn fields_name_the_topic_and_partition() {
        assert_eq!(field(MarkKind::Survey, 4), "s:4");
        assert_eq!(field(MarkKind::Release, 0), "r:0");
    }

    #[test]
    fn marks_round_trip_through_the_metadata_format() {
        let original = marks(&[("ev-2", 17), ("ev \"1\"", 4)]);
        let encoded = original.encode();
        assert_eq!(encoded, r#"{"v":1,"marks":[["ev-2",17],["ev \"1\"",4]]}"#);
        assert_eq!(PartitionMarks::decode(&encoded), Some(original));
    }

    #[test]
    fn empty_or_foreign_metadata_expects_nothing() {
        for foreign in ["", "x", r#"{"v":2,"marks":[]}"#, r#"{"v":1,"marks":[["ev",true]]}"#, r#"{"v":1}"#] {
            assert_eq!(PartitionMarks::decode(foreign), None, "{foreign}");
        }
        assert_eq!(PartitionMarks::decode(r#"{"v":1,"marks":[]}"#), Some(PartitionMarks::default()));
    }

    #[test]
    fn newer_marks_come_first_and_keep_the_higher_offset() {
        let committed = marks(&[("a", 5), ("b", 9)]);
        let merged = committed.merged(&[("b".into(), 12), ("c".into(), 3)]);
        assert_eq!(merged, marks(&[("b", 12), ("c", 3), ("a", 5)]));
        // A re-run batch never lowers a mark.
        assert_eq!(committed.merged(&[("b".into(), 7)]), marks(&[("b", 9), ("a", 5)]));
    }

    #[test]
    fn only_the_newest_events_are_kept() {
        let many: Vec<(String, i64)> = (0..40).map(|i| (format!("ev-{i}"), i)).collect();
        let merged = PartitionMarks::default().merged(&many);
        assert_eq!(merged.events.len(), PartitionMarks::MAX_EVENTS);
        assert_eq!(merged.events[0], ("ev-0".to_string(), 0));
        // Long ids: the oldest go until the metadata fits the broker's cap.
        let long: Vec<(String, i64)> = (0..32).map(|i| (format!("{i:03}{}", "é".repeat(125)), i)).collect();
        let encoded = PartitionMarks { events: long.clone() }.encode();
        assert!(encoded.len() <= PartitionMarks::MAX_BYTES, "{}", encoded.len());
        let decoded = PartitionMarks::decode(&encoded).unwrap();
        assert_eq!(decoded.events[..], long[..decoded.events.len()]);
    }

    #[test]
    fn the_expected_marks_of_an_event_span_both_topics() {
        let mut committed = CommittedMarks::default();
        committed.insert(MarkKind::Survey, 0, Some(40), marks(&[("a", 40), ("b", 30)]));
        committed.insert(MarkKind::Survey, 1, Some(8), marks(&[("b", 8)]));
        committed.insert(MarkKind::Release, 1, Some(3), marks(&[("a", 3)]));
        committed.insert(MarkKind::Release, 2, None, PartitionMarks::default());
        assert_eq!(committed.expected_for("a"), vec![("s:0".to_string(), 40), ("r:1".to_string(), 3)]);
        assert_eq!(committed.expected_for("b"), vec![("s:0".to_string(), 30), ("s:1".to_string(), 8)]);
        assert!(committed.expected_for("z").is_empty());
        assert_eq!(committed.committed_offset(MarkKind::Survey, 1), Some(8));
        assert_eq!(committed.committed_offset(MarkKind::Release, 2), None);
        assert_eq!(
            committed.metadata_for(MarkKind::Survey, 1, &[("c".into(), 9)]),
            r#"{"v":1,"marks":[["c",9],["b",8]]}"#
        );
    }
}
