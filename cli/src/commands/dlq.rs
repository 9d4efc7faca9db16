//! `firstcome dlq show | replay <topic>`: the operator's side of dead letters.
//!
//! A dead letter keeps the source record's key, bytes and headers plus
//! `dlq-*` headers saying why and where from. `show` lists them; `replay`
//! produces them back to their source topic (without the `dlq-*` headers)
//! once the cause is fixed, remembering how far it got in a consumer group of
//! its own so each dead letter is replayed once.

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::Serialize;

use platform::kafka::producer::idempotent_config;
use platform::settings::KafkaSettings;
use schemas::Topics;

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

/// How long the reader waits for one more dead letter before it is done.
const IDLE: Duration = Duration::from_secs(3);

fn show_reader(kafka: &KafkaSettings, group: &str) -> anyhow::Result<StreamConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()?)
}

fn header(headers: Option<&rdkafka::message::BorrowedHeaders>, name: &str) -> Option<String> {
    headers?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Lists the dead letters of `source_topic` (without moving any offset).
pub async fn show(kafka: &KafkaSettings, source_topic: &str, max: usize) -> anyhow::Result<Vec<DeadLetterView>> {
    let group = format!("{}firstcome-dlq-show-{}", kafka.topic_prefix, uuid::Uuid::new_v4());
    let consumer = show_reader(kafka, &group)?;
    consumer.subscribe(&[&Topics::dlq(source_topic)])?;
    let mut out = Vec::new();
    while out.len() < max {
        let Ok(message) = tokio::time::timeout(IDLE, consumer.recv()).await else { break };
        let message = message?;
        let headers = message.headers();
        out.push(DeadLetterView {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            error: header(headers, "dlq-error"),
            source: header(headers, "dlq-source-partition")
                .zip(header(headers, "dlq-source-offset"))
                .map(|(p, o)| format!("{source_topic}[{p}]@{o}")),
            group: header(headers, "dlq-group"),
        });
    }
    Ok(out)
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
/// the next replay, instead of looping), each source record once; the replay
/// group's offsets are committed at the end.
pub async fn replay(kafka: &KafkaSettings, source_topic: &str, max: usize) -> anyhow::Result<Replayed> {
    let dlq_topic = Topics::dlq(source_topic);
    let name = format!("firstcome-dlq-replay-{}", source_topic.trim_start_matches(&kafka.topic_prefix));
    let consumer = std::sync::Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .set("group.id", kafka.group(&name))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .create::<StreamConsumer>()?,
    );
    let ends = end_offsets(&consumer, &dlq_topic).await?;
    consumer.subscribe(&[&dlq_topic])?;
    let producer: FutureProducer = idempotent_config(kafka, "firstcome-dlq-replay").create()?;
    let mut replayed = Replayed::default();
    let mut seen = std::collections::HashSet::new();
    while replayed.replayed < max {
        let Ok(message) = tokio::time::timeout(IDLE, consumer.recv()).await else { break };
        let message = message?;
        if message.offset() >= ends.get(&message.partition()).copied().unwrap_or(0) {
            // Dead-lettered after the replay started: left for the next replay.
            continue;
        }
        let headers = message.headers();
        let source = (
            header(headers, "dlq-source-partition"),
            header(headers, "dlq-source-offset"),
        );
        if source.0.is_some() && !seen.insert(source) {
            replayed.duplicates += 1;
            consumer.store_offset_from_message(&message)?;
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
        consumer.store_offset_from_message(&message)?;
        replayed.replayed += 1;
    }
    let committing = consumer.clone();
    match tokio::task::spawn_blocking(move || committing.commit_consumer_state(CommitMode::Sync)).await? {
        Ok(()) => {}
        // Nothing stored (an empty dead-letter topic) is not a failure.
        Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => return Err(error.into()),
    }
    Ok(replayed)
}

/// The end offset of every partition of `topic` now.
async fn end_offsets(
    consumer: &std::sync::Arc<StreamConsumer>,
    topic: &str,
) -> anyhow::Result<std::collections::HashMap<i32, i64>> {
    let consumer = consumer.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let mut ends = std::collections::HashMap::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                let (_, high) = consumer.fetch_watermarks(&topic, p.id(), timeout)?;
                ends.insert(p.id(), high);
            }
        }
        Ok(ends)
    })
    .await?
}
