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

fn reader(kafka: &KafkaSettings, group: &str) -> anyhow::Result<StreamConsumer> {
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
    let consumer = reader(kafka, &group)?;
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
}

/// Produces the dead letters of `source_topic` not replayed before back to
/// it, and commits the replay group's offsets after each acknowledged batch.
pub async fn replay(kafka: &KafkaSettings, source_topic: &str, max: usize) -> anyhow::Result<Replayed> {
    let consumer = reader(kafka, &kafka.group(&format!("firstcome-dlq-replay-{}", source_topic.trim_start_matches(&kafka.topic_prefix))))?;
    consumer.subscribe(&[&Topics::dlq(source_topic)])?;
    let producer: FutureProducer = idempotent_config(kafka, "firstcome-dlq-replay").create()?;
    let mut replayed = Replayed::default();
    while replayed.replayed < max {
        let Ok(message) = tokio::time::timeout(IDLE, consumer.recv()).await else { break };
        let message = message?;
        let mut headers = OwnedHeaders::new();
        if let Some(source) = message.headers() {
            for h in source.iter().filter(|h| !h.key.starts_with("dlq-")) {
                headers = headers.insert(Header { key: h.key, value: h.value });
            }
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(source_topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
        // Acknowledged: this dead letter is done.
        consumer.commit_message(&message, CommitMode::Sync)?;
        replayed.replayed += 1;
    }
    Ok(replayed)
}
