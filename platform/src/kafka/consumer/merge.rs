//! Timestamp order across partitions, for a group whose handler must see
//! records in the order they happened (the stock stage: first come, first
//! served). Without it a batch is whatever the client fetched, mostly one
//! partition after another, so a stage that starts behind (a restart, a
//! broker failure) decides a backlog partition by partition.
//!
//! Records are held per partition, in offset order (so every batch still
//! commits a contiguous prefix of each partition), and handed over smallest
//! record timestamp first. A record is held back while a partition that may
//! still deliver an older one has nothing held: it is behind its high
//! watermark (the client learns it with every fetch response) or has not been
//! fetched yet. This is Kafka Streams' rule for `max.task.idle.ms`, and as
//! there the wait is bounded ([`Order::Timestamp`]): a partition that stays
//! behind without delivering (its leader is gone; an open transaction holds
//! its stable offset back) is left out until it delivers again.
//!
//! Producers stamp the record timestamp with the event's own time (ingest:
//! the accept time, see `schemas::Event::timestamp_ms`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use rdkafka::message::Message;

use super::record::Record;

/// The order in which a group's handler sees records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// As fetched (per partition in offset order; partitions interleaved as
    /// the client delivers them).
    Arrival,
    /// Smallest record timestamp first across the assigned partitions; a
    /// record waits at most `max_idle` for a lagging partition.
    Timestamp { max_idle: Duration },
}

/// A partition: topic and number.
pub(super) type PartitionKey = (String, i32);

/// Records received but not handed over yet, per partition.
#[derive(Debug, Default)]
pub(super) struct Held {
    queues: BTreeMap<PartitionKey, VecDeque<Record>>,
    len: usize,
    /// The offset after the last record received, per partition.
    next: HashMap<PartitionKey, i64>,
    /// Partitions that stayed behind a whole `max_idle` without delivering:
    /// not waited for until they deliver again.
    stalled: HashSet<PartitionKey>,
}

fn key_of(record: &Record) -> PartitionKey {
    (record.topic().to_string(), record.partition())
}

/// The record's timestamp; one without goes first (nothing to order it by).
fn timestamp_of(record: &Record) -> i64 {
    record.message.timestamp().to_millis().unwrap_or(i64::MIN)
}

impl Held {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of records held per partition.
    pub fn counts(&self) -> Vec<(PartitionKey, usize)> {
        self.queues.iter().map(|(key, queue)| (key.clone(), queue.len())).collect()
    }

    pub fn push(&mut self, record: Record) {
        let key = key_of(&record);
        self.next.insert(key.clone(), record.offset() + 1);
        self.stalled.remove(&key);
        self.queues.entry(key).or_default().push_back(record);
        self.len += 1;
    }

    /// The offset after the last record received from `key` (none since it
    /// was assigned or the consumer was rewound: `None`).
    pub fn next_offset(&self, key: &PartitionKey) -> Option<i64> {
        self.next.get(key).copied()
    }

    /// Drops what is known of `partitions` (revoked: their records belong to
    /// the new owner); returns the number of records dropped.
    pub fn forget(&mut self, partitions: &[PartitionKey]) -> usize {
        let mut dropped = 0;
        for key in partitions {
            dropped += self.queues.remove(key).map_or(0, |queue| queue.len());
            self.next.remove(key);
            self.stalled.remove(key);
        }
        self.len -= dropped;
        dropped
    }

    /// Drops everything (the consumer was rewound: the records come again).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Of the `lagging` partitions (more to fetch), those the merge waits
    /// for: nothing held, not stalled.
    pub fn waiting_for(&self, lagging: &[PartitionKey]) -> Vec<PartitionKey> {
        lagging.iter().filter(|key| !self.stalled.contains(*key) && !self.has_held(key)).cloned().collect()
    }

    /// `partitions` stayed behind without delivering for a whole `max_idle`.
    pub fn stall(&mut self, partitions: &[PartitionKey]) {
        self.stalled.extend(partitions.iter().cloned());
    }

    fn has_held(&self, key: &PartitionKey) -> bool {
        self.queues.get(key).is_some_and(|queue| !queue.is_empty())
    }

    /// Up to `max` records, smallest timestamp first (ties: the partition
    /// first in topic/number order), each partition's in offset order. Stops
    /// once a `lagging` partition that is not stalled has nothing held: its
    /// next record may be older than any held.
    pub fn take(&mut self, max: usize, lagging: &[PartitionKey]) -> Vec<Record> {
        let waited_for: Vec<&PartitionKey> = lagging.iter().filter(|key| !self.stalled.contains(*key)).collect();
        let mut taken = Vec::with_capacity(max.min(self.len));
        while taken.len() < max {
            if waited_for.iter().any(|key| !self.has_held(key)) {
                break;
            }
            let Some(oldest) = self
                .queues
                .iter()
                .filter_map(|(key, queue)| queue.front().map(|record| (timestamp_of(record), key)))
                .min_by_key(|(timestamp, _)| *timestamp)
                .map(|(_, key)| key.clone())
            else {
                break;
            };
            let Some(queue) = self.queues.get_mut(&oldest) else { break };
            if let Some(record) = queue.pop_front() {
                taken.push(record);
                self.len -= 1;
            }
            if queue.is_empty() {
                self.queues.remove(&oldest);
            }
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedMessage, Timestamp};

    fn record(partition: i32, offset: i64, at: i64) -> Record {
        Record::from(OwnedMessage::new(None, None, "t".into(), Timestamp::CreateTime(at), partition, offset, None))
    }

    fn key(partition: i32) -> PartitionKey {
        ("t".to_string(), partition)
    }

    fn stamps(records: &[Record]) -> Vec<(i32, i64)> {
        records.iter().map(|r| (r.partition(), timestamp_of(r))).collect()
    }

    /// Three partitions' backlogs, fetched one partition after another.
    fn backlog() -> Held {
        let mut held = Held::default();
        for (partition, times) in [(0, [1, 4, 7]), (1, [2, 5, 8]), (2, [3, 6, 9])] {
            for (offset, at) in times.into_iter().enumerate() {
                held.push(record(partition, offset as i64, at));
            }
        }
        held
    }

    #[test]
    fn partitions_fetched_one_after_another_are_handed_over_oldest_first() {
        let mut held = backlog();
        let taken = held.take(9, &[]);
        assert_eq!(stamps(&taken).into_iter().map(|(_, at)| at).collect::<Vec<_>>(), (1..=9).collect::<Vec<_>>());
        assert!(held.is_empty());
    }

    #[test]
    fn a_lagging_partition_with_nothing_held_stops_the_merge() {
        let mut held = backlog();
        // All three have more on the broker: once partition 0's three records
        // are taken, its next one may be older than 8 or 9.
        let lagging = [key(0), key(1), key(2)];
        let taken = held.take(100, &lagging);
        assert_eq!(stamps(&taken), [(0, 1), (1, 2), (2, 3), (0, 4), (1, 5), (2, 6), (0, 7)]);
        assert_eq!(held.len(), 2);
        assert_eq!(held.waiting_for(&lagging), [key(0)]);
        // A partition with nothing held from the start is waited for at once.
        assert!(held.take(100, &[key(0)]).is_empty());
        // A caught-up partition is not waited for.
        assert_eq!(stamps(&held.take(100, &[key(1)])), [(1, 8)]);
    }

    #[test]
    fn a_stalled_partition_is_not_waited_for_until_it_delivers() {
        let mut held = backlog();
        let lagging = [key(0), key(1), key(2), key(3)];
        assert!(held.take(100, &lagging).is_empty(), "partition 3 has nothing held");
        held.stall(&held.waiting_for(&lagging));
        assert_eq!(held.take(3, &lagging).len(), 3);
        held.push(record(3, 0, 10));
        assert_eq!(held.waiting_for(&lagging), Vec::<PartitionKey>::new(), "partition 3 delivered");
        let rest = held.take(100, &lagging);
        assert_eq!(stamps(&rest).last(), Some(&(0, 7)), "stops where partition 0 runs dry: {:?}", stamps(&rest));
    }

    #[test]
    fn each_partition_keeps_its_offset_order_and_max_is_kept() {
        let mut held = Held::default();
        // Within a partition a later offset may carry an older timestamp (two
        // producers): the partition's order wins, so commits stay contiguous.
        held.push(record(0, 0, 5));
        held.push(record(0, 1, 2));
        held.push(record(1, 0, 3));
        let taken = held.take(2, &[]);
        assert_eq!(taken.iter().map(|r| (r.partition(), r.offset())).collect::<Vec<_>>(), [(1, 0), (0, 0)]);
        assert_eq!(held.take(5, &[]).iter().map(|r| r.offset()).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn forgetting_a_partition_drops_its_records_and_position() {
        let mut held = backlog();
        assert_eq!(held.next_offset(&key(1)), Some(3));
        assert_eq!(held.forget(&[key(1), key(7)]), 3);
        assert_eq!((held.len(), held.next_offset(&key(1))), (6, None));
        assert!(held.take(100, &[]).iter().all(|r| r.partition() != 1));
        held.push(record(2, 3, 10));
        held.clear();
        assert!(held.is_empty() && held.next_offset(&key(2)).is_none());
    }
}
