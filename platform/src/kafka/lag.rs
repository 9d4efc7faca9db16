//! Where the consumer groups stand: per partition, the log's watermarks and
//! the group's committed offset. One module for every reader of group lag —
//! the operations dashboard, `firstcome groups describe`, the dead-letter
//! replay's bookmark, the lab's chaos suite, the test kit and the sender's
//! check that the recorder has read past a WON's entry (`sender::entries`).
//!
//! The calls are librdkafka's blocking ones: run them on the blocking pool
//! ([`group_lag`] does), never on the async runtime.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::settings::KafkaSettings;

/// How long one metadata, watermark or offset call may take, unless the
/// caller says otherwise (a dashboard would rather show an error sooner).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A partition's low and high watermarks (the first offset still kept, the
/// next offset to be written). Through a `read_committed` consumer the high
/// one is the last stable offset: open transactions end before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Watermarks {
    pub low: i64,
    pub high: i64,
}

impl Watermarks {
    /// Records the partition holds now.
    pub fn records(&self) -> i64 {
        (self.high - self.low).max(0)
    }
}

/// One partition of one group's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    /// The group as the topology names it (without the deployment's prefix).
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// The group's next offset to read; `None` when it never committed.
    pub committed: Option<i64>,
    /// The high watermark.
    pub end: i64,
    /// Records written and not committed by the group.
    pub lag: i64,
}

impl PartitionLag {
    /// `committed` against `end`; a partition never committed lags by all it
    /// ever held (none when it is empty).
    pub fn new(group: &str, topic: &str, partition: i32, committed: Option<i64>, end: i64) -> Self {
        Self {
            group: group.to_string(),
            topic: topic.to_string(),
            partition,
            committed,
            end,
            lag: (end - committed.unwrap_or(0)).max(0),
        }
    }

    /// Whether the group has committed everything written so far.
    pub fn caught_up(&self) -> bool {
        self.lag == 0
    }
}

/// A consumer that reads offsets for `group` (the full name, prefix
/// included) and never joins it nor commits: safe beside the group's members.
pub fn group_reader(settings: &KafkaSettings, group: &str, client_id: &str) -> Result<BaseConsumer, KafkaError> {
    super::client_config(settings)
        .set("client.id", client_id)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
}

/// The partition ids of `topic`; an unknown topic is an error.
pub fn partitions<C: Consumer>(consumer: &C, topic: &str, timeout: Duration) -> Result<Vec<i32>, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut ids = Vec::new();
    for t in metadata.topics() {
        if let Some(error) = t.error() {
            return Err(KafkaError::MetadataFetch(error.into()));
        }
        ids.extend(t.partitions().iter().map(|p| p.id()));
    }
    Ok(ids)
}

/// The watermarks of one partition.
pub fn watermark<C: Consumer>(
    consumer: &C,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<Watermarks, KafkaError> {
    let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
    Ok(Watermarks { low, high })
}

/// The watermarks of every partition of `topic`, by partition.
pub fn watermarks<C: Consumer>(
    consumer: &C,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, Watermarks>, KafkaError> {
    let mut out = BTreeMap::new();
    for partition in partitions(consumer, topic, timeout)? {
        out.insert(partition, watermark(consumer, topic, partition, timeout)?);
    }
    Ok(out)
}

/// The consumer's group's committed offsets on `partitions` of `topic`
/// (`None`: never committed).
pub fn committed<C: Consumer>(
    consumer: &C,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
    timeout: Duration,
) -> Result<BTreeMap<i32, Option<i64>>, KafkaError> {
    let mut wanted = TopicPartitionList::new();
    for partition in partitions {
        wanted.add_partition(topic, partition);
    }
    let committed = consumer.committed_offsets(wanted, timeout)?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(next) => Some(next),
                _ => None,
            };
            (e.partition(), offset)
        })
        .collect())
}

/// Where the group `consumer` reads for stands on every partition of
/// `topics`; `ends` caches the watermarks of topics already read (several
/// groups read one topic).
pub fn lag_of<C: Consumer>(
    consumer: &C,
    group: &str,
    topics: &[String],
    ends: &mut BTreeMap<String, BTreeMap<i32, Watermarks>>,
    timeout: Duration,
) -> Result<Vec<PartitionLag>, KafkaError> {
    let mut out = Vec::new();
    for topic in topics {
        let marks = match ends.get(topic) {
            Some(marks) => marks.clone(),
            None => {
                let marks = watermarks(consumer, topic, timeout)?;
                ends.insert(topic.clone(), marks.clone());
                marks
            }
        };
        let offsets = committed(consumer, topic, marks.keys().copied(), timeout)?;
        for (partition, mark) in &marks {
            let offset = offsets.get(partition).copied().flatten();
            out.push(PartitionLag::new(group, topic, *partition, offset, mark.high));
        }
    }
    Ok(out)
}

/// Where `group` (the full name, prefix included) stands on every partition
/// of `topics`, read on the blocking pool.
pub async fn group_lag(
    settings: &KafkaSettings,
    group: &str,
    topics: &[&str],
) -> Result<Vec<PartitionLag>, KafkaError> {
    let settings = settings.clone();
    let group = group.to_string();
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let consumer = group_reader(&settings, &group, "firstcome-lag")?;
        lag_of(&consumer, &group, &topics, &mut BTreeMap::new(), CALL_TIMEOUT)
    })
    .await
    .map_err(|_| KafkaError::Canceled)?
}

/// The partitions of `topic` on which the group of `lag` has not committed
/// up to `marks` (offsets taken earlier, typically high watermarks), with how
/// many records it is short on each. Empty when the group has read past every
/// one of them. A partition of `marks` that `lag` does not show counts as
/// short by its whole mark: nothing proves the group read it. A partition
/// the group never committed has read nothing.
pub fn short_of(lag: &[PartitionLag], topic: &str, marks: &BTreeMap<i32, i64>) -> BTreeMap<i32, i64> {
    marks
        .iter()
        .filter_map(|(&partition, &mark)| {
            let committed = lag
                .iter()
                .find(|p| p.topic == topic && p.partition == partition)
                .map(|p| p.committed.unwrap_or(0))
                .unwrap_or(0);
            (committed < mark).then_some((partition, mark - committed))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_never_committed_lags_by_what_it_holds() {
        assert_eq!(PartitionLag::new("stock", "t", 0, None, 7).lag, 7);
        assert!(PartitionLag::new("stock", "t", 0, None, 0).caught_up());
    }

    #[test]
    fn a_group_at_the_end_is_caught_up_and_never_lags_below_zero() {
        assert!(PartitionLag::new("stock", "t", 0, Some(7), 7).caught_up());
        assert_eq!(PartitionLag::new("stock", "t", 0, Some(3), 7).lag, 4);
        // A committed offset past the end (a topic recreated under the group).
        assert_eq!(PartitionLag::new("stock", "t", 0, Some(9), 7).lag, 0);
    }

    #[test]
    fn watermarks_count_the_records_kept() {
        assert_eq!(Watermarks { low: 3, high: 10 }.records(), 7);
        assert_eq!(Watermarks { low: 10, high: 3 }.records(), 0);
    }

    #[test]
    fn a_group_is_short_of_marks_only_where_it_committed_below_them() {
        let lag = vec![
            PartitionLag::new("recording", "t", 0, Some(5), 9),
            PartitionLag::new("recording", "t", 1, None, 0),
            PartitionLag::new("recording", "t", 2, None, 4),
        ];
        let marks = BTreeMap::from([(0, 5), (1, 0), (2, 0)]);
        assert!(short_of(&lag, "t", &marks).is_empty(), "at or past every mark");
        let marks = BTreeMap::from([(0, 7), (1, 0), (2, 3)]);
        assert_eq!(short_of(&lag, "t", &marks), BTreeMap::from([(0, 2), (2, 3)]));
        // Another topic's offsets prove nothing; nor does a partition not shown.
        assert_eq!(short_of(&lag, "u", &BTreeMap::from([(0, 1)])), BTreeMap::from([(0, 1)]));
        assert_eq!(short_of(&lag, "t", &BTreeMap::from([(3, 1)])), BTreeMap::from([(3, 1)]));
    }
}
