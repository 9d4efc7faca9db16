//! `firstcome dlq show | replay <topic>`: the operator's side of dead letters.
//!
//! A dead letter keeps the source record's key, bytes and headers plus
//! `dlq-*` headers saying why and where from. `show` lists them; `replay`
//! produces them back to their source topic (without the `dlq-*` headers)
//! once the cause is fixed, remembering how far it got in a consumer group of
//! its own so each dead letter is replayed once.
//!
//! Both read the dead-letter topic as a log ([`LogReader`]): every partition
//! by assignment, from the start to the high watermarks taken when the command
//! starts, committed records only. They stop when every partition is read to
//! that snapshot, never after a quiet spell: a fresh consumer group's join or
//! a slow first fetch on a busy cluster cannot make them miss a dead letter,
//! and an open transaction holding a dead letter is waited for.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

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
    pub source: Option<String>,
    pub group: Option<String>,
}

impl DeadLetterView {
    pub fn of(message: &OwnedMessage, source_topic: &str) -> Self {
        let headers = message.headers();
        Self {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            error: header(headers, "dlq-error"),
            source: header(headers, "dlq-source-partition")
                .zip(header(headers, "dlq-source-offset"))
                .map(|(p, o)| format!("{source_topic}[{p}]@{o}")),
            group: header(headers, "dlq-group"),
        }
    }
}

/// A header's value as text.
pub fn header<H: Headers>(headers: Option<&H>, name: &str) -> Option<String> {
    headers?.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
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

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Replayed {
    pub replayed: usize,
    /// The same source record dead-lettered by two groups: replayed once.
    pub duplicates: usize,
}

/// Produces the dead letters of `source_topic` not replayed before back to
/// it. Only what was in the dead-letter topic when the replay started is
/// replayed (a record that fails again is dead-lettered anew and waits for
/// the next replay, instead of looping), each source record once. The replay
/// group (never joined: its committed offsets are the replay's bookmark) gets
/// the offset after the last dead letter handled on each partition, at the
/// end; dead letters below it are skipped by later replays.
pub async fn replay(kafka: &KafkaSettings, source_topic: &str, max: usize) -> anyhow::Result<Replayed> {
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
    let producer: FutureProducer = idempotent_config(kafka, "firstcome-dlq-replay").create()?;
    let mut replayed = Replayed::default();
    let mut seen = std::collections::HashSet::new();
    // Partition → the offset after the last dead letter handled (to commit).
    let mut handled: HashMap<i32, i64> = HashMap::new();
    while replayed.replayed < max {
        let Some(message) = reader.next().await.with_context(|| format!("Failed to read {dlq_topic}"))? else {
            break;
        };
        if message.offset() < done_before.get(&message.partition()).copied().unwrap_or(0) {
            continue; // replayed by an earlier run
        }
        let headers = message.headers();
        let source = (header(headers, "dlq-source-partition"), header(headers, "dlq-source-offset"));
        if source.0.is_some() && !seen.insert(source) {
            replayed.duplicates += 1;
            handled.insert(message.partition(), message.offset() + 1);
            continue;
        }
        let mut kept = OwnedHeaders::new();
        if let Some(source) = headers {
            for h in source.iter().filter(|h| !h.key.starts_with("dlq-")) {
                kept = kept.insert(Header { key: h.key, value: h.value });
            }
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(source_topic).headers(kept);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
        // Acknowledged: this dead letter is done.
        handled.insert(message.partition(), message.offset() + 1);
        replayed.replayed += 1;
    }
    if !handled.is_empty() {
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
    /// Produce the dead letters not replayed before back to their source topic.
    Replay {
        topic: String,
        #[arg(long, default_value_t = usize::MAX)]
        max: usize,
    },
}

impl DlqCommand {
    pub fn needs(&self) -> &'static [Need] {
        &[Need::Kafka]
    }
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
        DlqCommand::Replay { topic, max } => {
            let topic = format!("{}{topic}", settings.kafka.topic_prefix);
            let done = crate::audit_trail::audited(
                settings,
                crate::audit_trail::Action::new("dlq replay", None, serde_json::json!({ "topic": topic, "max": max })),
                replay(&settings.kafka, &topic, max),
            )
            .await?;
            let json = serde_json::json!({ "topic": topic, "replayed": done.replayed, "duplicates": done.duplicates });
            Ok(Output::new(format!("replayed {} dead letters to {topic}", done.replayed), &json))
        }
    }
}
