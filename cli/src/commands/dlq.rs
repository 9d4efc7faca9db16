//! `firstcome dlq show | replay <topic>`: the operator's side of dead letters.
//!
//! A dead letter keeps the source record's key, bytes and headers plus error
//! headers saying why and where from (Kafka Connect's `__connect.errors.*`,
//! `platform::kafka::consumer::dead_letter::header`; older dead letters carry
//! `dlq-source-*` instead, read as well). `show` lists them; `replay`
//! produces them back to their source topic once the cause is fixed,
//! remembering how far it got in a consumer group of its own so each dead
//! letter is replayed once.
//!
//! A replay trusts nothing in a dead letter but where it says it came from:
//! every consumer group may write the dead-letter topics of its inputs, and
//! the replay writes the source topic as the operator. So each dead letter
//! is checked against the record at its source position (topic, partition,
//! offset): key and bytes must be that record's, and what is replayed is
//! that record as the source topic holds it (key, bytes, headers). A dead
//! letter that names no source, another topic, a position with no committed
//! record, or bytes that differ is refused and reported, never replayed; so
//! is one whose source record retention already deleted (it cannot be
//! checked). A replay can thus only repeat a record that is in the source
//! topic already, which consumers deduplicate on its entry id.
//!
//! Both read the dead-letter topic as a log ([`LogReader`]): every partition
//! by assignment, from the start to the high watermarks taken when the command
//! starts, committed records only. They stop when every partition is read to
//! that snapshot, never after a quiet spell: a fresh consumer group's join or
//! a slow first fetch on a busy cluster cannot make them miss a dead letter,
//! and an open transaction holding a dead letter is waited for.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use platform::kafka::consumer::dead_letter::header as dlq_header;
use platform::kafka::producer::idempotent_config;
use platform::kafka::{lag, LogReader};
use platform::settings::KafkaSettings;
use schemas::Topics;

use lag::CALL_TIMEOUT;

use crate::output::Output;
use crate::reach::Need;
use crate::settings::CliSettings;

/// One dead letter, for people.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterView {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub error: Option<String>,
    /// `topic[partition]@offset` of the source record, as the dead letter says.
    pub source: Option<String>,
    pub group: Option<String>,
    /// Kafka Connect's stage: `VALUE_CONVERTER` (did not decode) or `TASK_PUT`.
    pub stage: Option<String>,
}

impl DeadLetterView {
    pub fn of(message: &OwnedMessage, source_topic: &str) -> Self {
        let headers = message.headers();
        Self {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            error: header(headers, dlq_header::EXCEPTION_MESSAGE).or_else(|| header(headers, dlq_header::ERROR)),
            source: SourcePosition::of(message).map(|s| s.display(source_topic)),
            group: header(headers, dlq_header::CONNECTOR_NAME).or_else(|| header(headers, dlq_header::GROUP)),
            stage: header(headers, dlq_header::STAGE),
        }
    }
}

/// A header's value as text.
pub fn header<H: Headers>(headers: Option<&H>, name: &str) -> Option<String> {
    headers?.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Where a dead letter says its source record is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourcePosition {
    /// `None` on a dead letter that names no topic.
    pub topic: Option<String>,
    pub partition: i32,
    pub offset: i64,
}

impl SourcePosition {
    /// Connect's headers, else the `dlq-source-*` of older dead letters;
    /// `None` when the partition or offset is missing or not a number.
    pub fn of(message: &OwnedMessage) -> Option<Self> {
        let headers = message.headers();
        let either = |new: &str, old: &str| header(headers, new).or_else(|| header(headers, old));
        Some(Self {
            topic: either(dlq_header::TOPIC, dlq_header::OLD_SOURCE_TOPIC),
            partition: either(dlq_header::PARTITION, dlq_header::OLD_SOURCE_PARTITION)?.trim().parse().ok()?,
            offset: either(dlq_header::OFFSET, dlq_header::OLD_SOURCE_OFFSET)?.trim().parse().ok()?,
        })
    }

    fn display(&self, default_topic: &str) -> String {
        format!("{}[{}]@{}", self.topic.as_deref().unwrap_or(default_topic), self.partition, self.offset)
    }
}

/// The dead letters of `source_topic` (at most `max`), in partition order:
/// everything committed to its dead-letter topic when the call starts. Moves
/// no offset.
pub async fn read(kafka: &KafkaSettings, source_topic: &str, max: usize) -> anyhow::Result<Vec<OwnedMessage>> {
    let dlq_topic = Topics::dlq(source_topic);
    let mut reader = LogReader::open(kafka, "firstcome-dlq-show", &[&dlq_topic])
        .await
        .with_context(|| format!("Failed to open {dlq_topic}"))?;
    let mut out = Vec::new();
    while out.len() < max {
        match reader.next().await.with_context(|| format!("Failed to read {dlq_topic}"))? {
            Some(message) => out.push(message),
            None => break,
        }
    }
    Ok(out)
}

/// Lists the dead letters of `source_topic` (without moving any offset).
pub async fn show(kafka: &KafkaSettings, source_topic: &str, max: usize) -> anyhow::Result<Vec<DeadLetterView>> {
    Ok(read(kafka, source_topic, max).await?.iter().map(|message| DeadLetterView::of(message, source_topic)).collect())
}

/// Which dead letters a replay takes, by their own position in the
/// dead-letter topic (the `partition` and `offset` that `show` prints).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter {
    pub partition: Option<i32>,
    /// Inclusive.
    pub from_offset: Option<i64>,
    /// Inclusive.
    pub to_offset: Option<i64>,
}

impl Filter {
    fn selects(&self, partition: i32, offset: i64) -> bool {
        self.partition.is_none_or(|p| p == partition)
            && self.from_offset.is_none_or(|from| offset >= from)
            && self.to_offset.is_none_or(|to| offset <= to)
    }
}

/// How to replay.
#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    /// Replay at most this many dead letters.
    pub max: usize,
    /// Check and report only: nothing is produced and the bookmark stays.
    pub dry_run: bool,
    pub filter: Filter,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self { max: usize::MAX, dry_run: false, filter: Filter::default() }
    }
}

/// Why a dead letter was not replayed: it is not the copy of a committed
/// record of the source topic that it claims to be (or that cannot be told
/// any more).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    #[error("it names no source record (no source topic, partition and offset headers)")]
    NoSource,
    #[error("it names another source topic, {0}")]
    OtherTopic(String),
    #[error("its source partition does not exist")]
    NoSuchPartition,
    #[error("its source offset is past the end of the partition ({end})")]
    PastTheEnd { end: i64 },
    #[error("its source record is gone (retention; the partition now starts at {start}), so it cannot be checked")]
    Gone { start: i64 },
    #[error("no committed record at its source offset (an aborted record or a transaction marker)")]
    NotCommitted,
    #[error("its key is not its source record's")]
    KeyDiffers,
    #[error("its bytes are not its source record's")]
    BytesDiffer,
}

/// A dead letter a replay refused.
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    pub partition: i32,
    pub offset: i64,
    pub source: Option<String>,
    pub reason: String,
    #[serde(skip)]
    pub why: Unverified,
}

/// A dead letter a replay (or a dry run) found good to replay.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub partition: i32,
    pub offset: i64,
    pub source: String,
}

/// What a replay did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Replayed {
    pub dry_run: bool,
    /// Produced to the source topic (a dry run: checked and would be).
    pub replayed: usize,
    /// The same source record dead-lettered by two groups: replayed once.
    pub duplicates: usize,
    /// Past the bookmark but outside the filter: left for a later replay.
    pub skipped: usize,
    pub refused: Vec<Refused>,
    /// The dead letters replayed (a dry run: that would be), in order.
    pub planned: Vec<Planned>,
}

/// Produces the dead letters of `source_topic` not replayed before back to
/// it, each checked against its source record first (see the module).
///
/// Only what was in the dead-letter topic when the replay started is
/// replayed (a record that fails again is dead-lettered anew and waits for
/// the next replay, instead of looping), each source record once. The replay
/// group (never joined: its committed offsets are the replay's bookmark)
/// gets, per partition, the offset after the last dead letter handled
/// (replayed, a duplicate or refused) before the first one the filter left
/// out; dead letters below it are skipped by later replays. A dry run
/// commits nothing.
pub async fn replay(kafka: &KafkaSettings, source_topic: &str, options: ReplayOptions) -> anyhow::Result<Replayed> {
    let dlq_topic = Topics::dlq(source_topic);
    let name = format!("firstcome-dlq-replay-{}", source_topic.trim_start_matches(&kafka.topic_prefix));
    let bookmark = Arc::new(
        platform::kafka::client_config(kafka)
            .set("group.id", kafka.group(&name))
            .set("enable.auto.commit", "false")
            .create::<BaseConsumer>()?,
    );
    let done_before = committed(&bookmark, &dlq_topic).await?;
    let mut reader = LogReader::open(kafka, "firstcome-dlq-replay", &[&dlq_topic])
        .await
        .with_context(|| format!("Failed to open {dlq_topic}"))?;
    let mut sources = SourceReader::new(kafka, source_topic).await?;
    let producer: FutureProducer = idempotent_config(kafka, "firstcome-dlq-replay").create()?;
    let mut replayed = Replayed { dry_run: options.dry_run, ..Default::default() };
    let mut seen = HashSet::new();
    // Partition → the offset after the last dead letter handled (to commit).
    let mut handled: HashMap<i32, i64> = HashMap::new();
    // Partitions where the filter left a dead letter out: the bookmark stays
    // below it.
    let mut gap: HashSet<i32> = HashSet::new();
    while replayed.replayed < options.max {
        let Some(letter) = reader.next().await.with_context(|| format!("Failed to read {dlq_topic}"))? else {
            break;
        };
        let (partition, offset) = (letter.partition(), letter.offset());
        if offset < done_before.get(&partition).copied().unwrap_or(0) {
            continue; // replayed by an earlier run
        }
        if !options.filter.selects(partition, offset) {
            replayed.skipped += 1;
            gap.insert(partition);
            continue;
        }
        let position = SourcePosition::of(&letter);
        match sources.check(&letter, position.as_ref()).await? {
            Err(why) => {
                let refusal = Refused {
                    partition,
                    offset,
                    source: position.map(|s| s.display(source_topic)),
                    reason: why.to_string(),
                    why,
                };
                tracing::warn!(
                    dlq_topic,
                    partition,
                    offset,
                    source = refusal.source.as_deref().unwrap_or("-"),
                    reason = %refusal.reason,
                    "dead letter refused: it does not match its source record"
                );
                replayed.refused.push(refusal);
            }
            Ok(source) => {
                if !seen.insert((source.partition(), source.offset())) {
                    replayed.duplicates += 1;
                } else {
                    if !options.dry_run {
                        publish(&producer, source_topic, &source).await?;
                    }
                    replayed.planned.push(Planned {
                        partition,
                        offset,
                        source: format!("{source_topic}[{}]@{}", source.partition(), source.offset()),
                    });
                    replayed.replayed += 1;
                }
            }
        }
        // Done with (acknowledged, when produced): moves the bookmark unless
        // the filter left an earlier one of this partition out.
        if !gap.contains(&partition) {
            handled.insert(partition, offset + 1);
        }
    }
    if !handled.is_empty() && !options.dry_run {
        let mut offsets = TopicPartitionList::new();
        for (partition, next) in &handled {
            offsets.add_partition_offset(&dlq_topic, *partition, Offset::Offset(*next))?;
        }
        let committing = bookmark.clone();
        tokio::task::spawn_blocking(move || committing.commit(&offsets, CommitMode::Sync))
            .await?
            .context("Failed to commit the replay group's offsets")?;
    }
    Ok(replayed)
}

/// Produces `source` (checked) to the source topic again: its key, bytes and
/// headers as the source topic holds them, on its partition (after the
/// member's earlier records, whatever partitioner wrote it), stamped now
/// (the event topics refuse records stamped more than a day behind, and a
/// replayed record arrives now; consumers judge by the times in its payload).
async fn publish(producer: &FutureProducer, source_topic: &str, source: &OwnedMessage) -> anyhow::Result<()> {
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(source_topic).partition(source.partition());
    if let Some(headers) = source.headers() {
        record = record.headers(headers.clone());
    } else {
        record = record.headers(OwnedHeaders::new());
    }
    if let Some(key) = source.key() {
        record = record.key(key);
    }
    if let Some(payload) = source.payload() {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .with_context(|| format!("Failed to replay a record to {source_topic}"))?;
    Ok(())
}

/// Reads single committed records of the source topic by position.
struct SourceReader {
    kafka: KafkaSettings,
    consumer: Arc<StreamConsumer>,
    topic: String,
    /// Partition → (start, end) of the log, taken once per partition.
    watermarks: HashMap<i32, (i64, i64)>,
    partitions: Vec<i32>,
    /// Partition → the offset last read there.
    last_read: HashMap<i32, i64>,
    /// The record last found: two groups' dead letters of one record come
    /// one after the other.
    last_found: Option<OwnedMessage>,
}

impl SourceReader {
    async fn new(kafka: &KafkaSettings, topic: &str) -> anyhow::Result<Self> {
        let consumer = Arc::new(Self::consumer(kafka)?);
        let asking = consumer.clone();
        let named = topic.to_string();
        let partitions = tokio::task::spawn_blocking(move || lag::partitions(asking.as_ref(), &named, CALL_TIMEOUT))
            .await?
            .with_context(|| format!("Failed to read the partitions of {topic}"))?;
        Ok(Self {
            kafka: kafka.clone(),
            consumer,
            topic: topic.to_string(),
            watermarks: HashMap::new(),
            partitions,
            last_read: HashMap::new(),
            last_found: None,
        })
    }

    fn consumer(kafka: &KafkaSettings) -> anyhow::Result<StreamConsumer> {
        platform::kafka::client_config(kafka)
            .set("client.id", kafka.client_id_for("firstcome-dlq-replay-source"))
            // Required by librdkafka; never joined (assign, not subscribe), nothing committed.
            .set("group.id", kafka.group("firstcome-dlq-replay-source"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A dead letter is only ever made of a committed record.
            .set("isolation.level", "read_committed")
            .create()
            .context("Failed to create the source reader")
    }

    /// The source record `letter` is a copy of, or why it is not.
    async fn check(
        &mut self,
        letter: &OwnedMessage,
        position: Option<&SourcePosition>,
    ) -> anyhow::Result<Result<OwnedMessage, Unverified>> {
        let Some(position) = position else { return Ok(Err(Unverified::NoSource)) };
        match &position.topic {
            None => return Ok(Err(Unverified::NoSource)),
            Some(topic) if *topic != self.topic => return Ok(Err(Unverified::OtherTopic(topic.clone()))),
            Some(_) => {}
        }
        let source = match self.record_at(position.partition, position.offset).await? {
            Ok(source) => source,
            Err(why) => return Ok(Err(why)),
        };
        if source.key() != letter.key() {
            return Ok(Err(Unverified::KeyDiffers));
        }
        if source.payload() != letter.payload() {
            return Ok(Err(Unverified::BytesDiffer));
        }
        Ok(Ok(source))
    }

    /// The committed record at `offset` of `partition`.
    async fn record_at(&mut self, partition: i32, offset: i64) -> anyhow::Result<Result<OwnedMessage, Unverified>> {
        if !self.partitions.contains(&partition) {
            return Ok(Err(Unverified::NoSuchPartition));
        }
        let (start, end) = match self.watermarks.get(&partition) {
            Some(&known) => known,
            None => {
                let consumer = self.consumer.clone();
                let topic = self.topic.clone();
                let marks =
                    tokio::task::spawn_blocking(move || consumer.fetch_watermarks(&topic, partition, CALL_TIMEOUT))
                        .await?
                        .with_context(|| format!("Failed to read the watermarks of {}[{partition}]", self.topic))?;
                self.watermarks.insert(partition, marks);
                marks
            }
        };
        if offset >= end {
            return Ok(Err(Unverified::PastTheEnd { end }));
        }
        if offset < start {
            return Ok(Err(Unverified::Gone { start }));
        }
        if let Some(found) = self.last_found.as_ref().filter(|m| m.partition() == partition && m.offset() == offset) {
            return Ok(Ok(found.clone()));
        }
        // Going back on a partition: a fresh consumer, so no record fetched
        // after the earlier position can pass for the one at this offset
        // (librdkafka drops outdated fetches on a new assignment; this does
        // not depend on it).
        if self.last_read.get(&partition).is_some_and(|&last| offset <= last) {
            self.consumer = Arc::new(Self::consumer(&self.kafka)?);
        }
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&self.topic, partition, Offset::Offset(offset))?;
        self.consumer.assign(&assignment)?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = tokio::time::timeout(left, self.consumer.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "no answer reading {}[{partition}]@{offset} within {CALL_TIMEOUT:?} \
                         (an open transaction there?); nothing after it was replayed",
                        self.topic
                    )
                })?
                .with_context(|| format!("Failed to read {}[{partition}]@{offset}", self.topic))?;
            // A record fetched for an earlier position may still arrive.
            if message.partition() != partition || message.offset() < offset {
                continue;
            }
            self.last_read.insert(partition, message.offset());
            // Under read_committed an aborted record or a transaction marker
            // is never delivered: the next committed one comes instead.
            if message.offset() != offset {
                return Ok(Err(Unverified::NotCommitted));
            }
            let found = message.detach();
            self.last_found = Some(found.clone());
            return Ok(Ok(found));
        }
    }
}

/// The replay group's committed offset on every partition of `topic` that has one.
async fn committed(consumer: &Arc<BaseConsumer>, topic: &str) -> anyhow::Result<HashMap<i32, i64>> {
    let consumer = consumer.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let partitions = lag::partitions(consumer.as_ref(), &topic, CALL_TIMEOUT)?;
        let committed = lag::committed(consumer.as_ref(), &topic, partitions, CALL_TIMEOUT)?;
        Ok(committed.into_iter().filter_map(|(partition, next)| next.map(|next| (partition, next))).collect())
    })
    .await?
}

/// `firstcome dlq …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqCommand {
    /// List the dead letters of a source topic (e.g. survey-submitted).
    Show {
        topic: String,
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Produce the dead letters not replayed before back to their source topic,
    /// each checked against its source record first (a mismatch is refused, exit 1).
    Replay {
        topic: String,
        #[arg(long, default_value_t = usize::MAX)]
        max: usize,
        /// Check and list what would be replayed; produce nothing, move no bookmark.
        #[arg(long)]
        dry_run: bool,
        /// Only dead letters of this partition of the dead-letter topic (as `show` prints it).
        #[arg(long)]
        partition: Option<i32>,
        /// Only dead letters at or after this offset of `--partition`.
        #[arg(long, requires = "partition")]
        from_offset: Option<i64>,
        /// Only dead letters at or before this offset of `--partition`.
        #[arg(long, requires = "partition")]
        to_offset: Option<i64>,
    },
}

impl DlqCommand {
    pub fn needs(&self) -> &'static [Need] {
        &[Need::Kafka]
    }
}

/// The replay's report for people: the counts, then each refusal (and, dry,
/// each dead letter that would be replayed).
pub fn replay_text(topic: &str, done: &Replayed) -> String {
    use std::fmt::Write;
    let verb = if done.dry_run { "dry run: would replay" } else { "replayed" };
    let mut out = format!(
        "{verb} {} dead letters to {topic} ({} duplicates, {} refused, {} outside the filter)\n",
        done.replayed,
        done.duplicates,
        done.refused.len(),
        done.skipped
    );
    if done.dry_run {
        for p in &done.planned {
            let _ = writeln!(out, "  replay {}[{}]@{} → {}", Topics::dlq(topic), p.partition, p.offset, p.source);
        }
    }
    for r in &done.refused {
        let source = r.source.as_deref().unwrap_or("no source");
        let _ =
            writeln!(out, "  REFUSED {}[{}]@{} ({source}): {}", Topics::dlq(topic), r.partition, r.offset, r.reason);
    }
    out
}

pub async fn command(settings: &CliSettings, command: DlqCommand) -> anyhow::Result<Output> {
    match command {
        DlqCommand::Show { topic, max } => {
            let topic = format!("{}{topic}", settings.kafka.topic_prefix);
            let dead = show(&settings.kafka, &topic, max).await?;
            // One dead letter per line (JSON Lines): what `dlq show` has always printed.
            let mut text = String::new();
            for letter in &dead {
                text.push_str(&serde_json::to_string(letter)?);
                text.push('\n');
            }
            Ok(Output::new(text, &dead))
        }
        DlqCommand::Replay { topic, max, dry_run, partition, from_offset, to_offset } => {
            let topic = format!("{}{topic}", settings.kafka.topic_prefix);
            let filter = Filter { partition, from_offset, to_offset };
            let options = ReplayOptions { max, dry_run, filter };
            // A dry run changes nothing: it is not an action to audit.
            let done = if dry_run {
                replay(&settings.kafka, &topic, options).await?
            } else {
                let detail = serde_json::json!({
                    "topic": topic, "max": max, "partition": partition,
                    "from_offset": from_offset, "to_offset": to_offset,
                });
                crate::audit_trail::audited(
                    settings,
                    crate::audit_trail::Action::new("dlq replay", None, detail),
                    replay(&settings.kafka, &topic, options),
                )
                .await?
            };
            let mut json = serde_json::to_value(&done)?;
            json["topic"] = serde_json::Value::String(topic.clone());
            let refused = done.refused.len();
            Ok(Output::new(replay_text(&topic, &done), &json).failed_if(
                refused > 0,
                format!("{refused} dead letters refused: they do not match their source record (listed above)"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, Timestamp};

    use super::*;

    fn letter(headers: &[(&str, &str)]) -> OwnedMessage {
        let headers = headers
            .iter()
            .fold(OwnedHeaders::new(), |all, (key, value)| all.insert(Header { key, value: Some(value.as_bytes()) }));
        OwnedMessage::new(None, None, "t.dlq".into(), Timestamp::NotAvailable, 0, 0, Some(headers))
    }

    #[test]
    fn a_dead_letter_names_its_source_in_connects_headers_or_in_the_older_ones() {
        let connect = letter(&[(dlq_header::TOPIC, "t"), (dlq_header::PARTITION, "2"), (dlq_header::OFFSET, "9")]);
        let older = letter(&[
            (dlq_header::OLD_SOURCE_TOPIC, "t"),
            (dlq_header::OLD_SOURCE_PARTITION, "2"),
            (dlq_header::OLD_SOURCE_OFFSET, "9"),
        ]);
        let expected = SourcePosition { topic: Some("t".into()), partition: 2, offset: 9 };
        assert_eq!(SourcePosition::of(&connect), Some(expected.clone()));
        assert_eq!(SourcePosition::of(&older), Some(expected));
        assert_eq!(SourcePosition::of(&letter(&[(dlq_header::PARTITION, "2")])), None, "no offset");
        assert_eq!(SourcePosition::of(&letter(&[(dlq_header::PARTITION, "x"), (dlq_header::OFFSET, "1")])), None);
    }

    #[test]
    fn a_filter_selects_by_the_dead_letters_own_partition_and_offsets_inclusive() {
        let all = Filter::default();
        assert!(all.selects(3, 0));
        let range = Filter { partition: Some(1), from_offset: Some(5), to_offset: Some(7) };
        assert!(!range.selects(0, 6), "another partition");
        assert!(!range.selects(1, 4));
        assert!(range.selects(1, 5) && range.selects(1, 7));
        assert!(!range.selects(1, 8));
    }
}
