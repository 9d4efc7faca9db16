//! The producer: idempotent, `acks=all`, records encoded through the registry.
//!
//! One home for putting a record on Kafka: [`RecordSender`] sends records
//! already encoded ([`OutRecord`]) or raw bytes with their own headers
//! ([`RawRecord`], the dead letters); [`encode_event`] turns an event into an
//! [`OutRecord`]. [`EventProducer`] is both, over an idempotent producer of
//! its own; the consumer loop uses a [`RecordSender`] over its (possibly
//! transactional) producer.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use schemas::{Codec, CodecError, Event, Topics};

use super::base_config;
use super::headers::RecordContext;
use crate::settings::KafkaSettings;

/// A record ready to send: encoded payload, key, headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutRecord {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub context: RecordContext,
    /// The record timestamp (ms): when the event happened. `None`: the
    /// producer's clock at send (the outbox's stored records).
    pub timestamp_ms: Option<i64>,
}

/// A record as bytes, with headers of its own: a dead letter carries the
/// source record's key and value untouched (either may be absent).
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: OwnedHeaders,
    /// The record timestamp (ms); `None`: the producer's clock at send. A
    /// dead letter keeps its source record's.
    pub timestamp_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Encode(#[from] CodecError),
    #[error("kafka did not acknowledge the record: {0}")]
    Kafka(#[from] KafkaError),
}

impl ProduceError {
    /// Whether the same send may succeed later (broker or registry back).
    pub fn is_retriable(&self) -> bool {
        match self {
            ProduceError::Encode(e) => e.is_retriable(),
            ProduceError::Kafka(e) => !is_refused_for_good(e),
        }
    }
}

/// Whether the broker (or librdkafka before it) refused the record for
/// good: sent again, the same record is refused again until an operator
/// acts (an ACL, a topic's limits, the producer's clock), so retrying it
/// only hides the cause. librdkafka retries what may pass later (a broker
/// away, a leader moving, a full queue, a timeout) before the send returns;
/// what it returns with one of these codes it did not retry.
///
/// - the record: too large (`MessageSizeTooLarge`, `MessageBatchTooLarge`),
///   its timestamp outside the topic's bounds (`InvalidTimestamp`), or
///   refused by the broker's checks (`InvalidRecord`, `PolicyViolation`,
///   `UnsupportedForMessageFormat`, `InvalidMessage`);
/// - the producer: not authorized (`TopicAuthorizationFailed`,
///   `ClusterAuthorizationFailed`, `TransactionalIdAuthorizationFailed`),
///   or configured so the broker cannot take it (`InvalidRequiredAcks`,
///   `InvalidTopic`).
pub fn is_refused_for_good(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::MessageSizeTooLarge
                | Code::MessageBatchTooLarge
                | Code::InvalidTimestamp
                | Code::InvalidRecord
                | Code::PolicyViolation
                | Code::UnsupportedForMessageFormat
                | Code::InvalidMessage
                | Code::TopicAuthorizationFailed
                | Code::ClusterAuthorizationFailed
                | Code::TransactionalIdAuthorizationFailed
                | Code::InvalidRequiredAcks
                | Code::InvalidTopic
        )
    )
}

/// The partitioner of every firstcome producer: the Java client's. A keyed
/// record goes to `toPositive(murmur2(key)) % partitions`, as Kafka's own
/// producer (and Kafka Streams, Connect, the Java serdes' users) places it,
/// so a partner producing `SurveySubmitted` for a member lands on the same
/// partition as ingest does; librdkafka's default (`consistent_random`,
/// CRC32) would split one member's records over two partitions and lose
/// their order. An unkeyed record goes to a random partition.
pub const PARTITIONER: &str = "murmur2_random";

/// Properties of an idempotent, `acks=all` producer.
pub fn idempotent_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = base_config(settings, client_id);
    config
        .set("partitioner", PARTITIONER)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", settings.delivery_timeout_ms.to_string())
        .set("linger.ms", settings.linger_ms.to_string())
        .set("compression.type", "lz4");
    config
}

/// Encodes `event` for its topic (behind the deployment's prefix in
/// `topics`), keyed by member, with `context` as its headers.
pub async fn encode_event<E: Event>(
    codec: &Codec,
    topics: &Topics,
    event: &E,
    context: RecordContext,
) -> Result<OutRecord, CodecError> {
    let topic = E::topic(topics).to_string();
    let payload = codec.encode(&topic, event).await?;
    Ok(OutRecord { topic, key: event.key().to_string(), payload, context, timestamp_ms: Some(event.occurred_at_ms()) })
}

/// Sends records already encoded and waits for the broker's
/// acknowledgement; cheap to clone. A full local queue waits (backpressure)
/// up to `queue_timeout`.
#[derive(Clone)]
pub struct RecordSender {
    producer: FutureProducer,
    queue_timeout: Duration,
}

impl RecordSender {
    pub fn new(producer: FutureProducer, queue_timeout: Duration) -> Self {
        Self { producer, queue_timeout }
    }

    pub fn inner(&self) -> &FutureProducer {
        &self.producer
    }

    /// Sends one encoded record with its context as headers, in a `produce`
    /// span that continues the record's trace; with spans exported the
    /// record's `traceparent` is this span's, so the consumer's span is its
    /// child. The time to the broker's acknowledgement is
    /// `firstcome_produce_seconds{topic,result}`.
    pub async fn send(&self, record: &OutRecord) -> Result<Delivery, KafkaError> {
        let span = tracing::info_span!(
            "produce",
            otel.name = %format!("produce {}", record.topic),
            otel.kind = "producer",
            topic = %record.topic,
            correlation_id = %record.context.correlation_id,
            trace_id = tracing::field::Empty,
        );
        let context = match crate::trace_context::continue_trace(&span, record.context.trace().as_ref()) {
            Some(own) => record.context.sent_from(own),
            None => record.context.clone(),
        };
        let mut future_record =
            FutureRecord::to(&record.topic).key(&record.key).payload(&record.payload).headers(context.to_headers());
        if let Some(timestamp) = record.timestamp_ms {
            future_record = future_record.timestamp(timestamp);
        }
        let started = std::time::Instant::now();
        let result = self.deliver(future_record).instrument(span).await;
        Produced { topic: &record.topic, ok: result.is_ok(), elapsed: started.elapsed() }.emit();
        if let Err(error) = &result {
            ProduceRefused::check(&record.topic, error);
        }
        result
    }

    /// Sends bytes as they are, with the record's own headers.
    pub async fn send_raw(&self, record: &RawRecord) -> Result<Delivery, KafkaError> {
        let mut future_record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&record.topic).headers(record.headers.clone());
        if let Some(key) = &record.key {
            future_record = future_record.key(key.as_slice());
        }
        if let Some(payload) = &record.payload {
            future_record = future_record.payload(payload.as_slice());
        }
        if let Some(timestamp) = record.timestamp_ms {
            future_record = future_record.timestamp(timestamp);
        }
        let result = self.deliver(future_record).await;
        if let Err(error) = &result {
            ProduceRefused::check(&record.topic, error);
        }
        result
    }

    async fn deliver<K, P>(&self, record: FutureRecord<'_, K, P>) -> Result<Delivery, KafkaError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        self.producer.send(record, self.queue_timeout).await.map_err(|(error, _)| error)
    }
}

/// One record acknowledged (or not) by the broker.
struct Produced<'a> {
    topic: &'a str,
    ok: bool,
    elapsed: Duration,
}

impl Produced<'_> {
    fn emit(&self) {
        let result = if self.ok { "ok" } else { "error" };
        metrics::histogram!("firstcome_produce_seconds", "topic" => self.topic.to_string(), "result" => result)
            .record(self.elapsed.as_secs_f64());
    }
}

/// The broker refused a record for good ([`is_refused_for_good`]): logged
/// as an error naming what an operator must look at, and counted
/// (`firstcome_produce_refused_total{topic,code}`). Whoever sent it fails
/// fast on it (ingest answers 503; a consumer stage stops with the cause).
struct ProduceRefused<'a> {
    topic: &'a str,
    error: &'a KafkaError,
}

impl ProduceRefused<'_> {
    fn check(topic: &str, error: &KafkaError) {
        if is_refused_for_good(error) {
            ProduceRefused { topic, error }.emit();
        }
    }

    fn emit(&self) {
        let code = self.error.rdkafka_error_code().map(|c| format!("{c:?}")).unwrap_or_default();
        tracing::error!(
            topic = self.topic,
            code = %code,
            error = %crate::error::ErrorChain(self.error),
            "the broker refused the record for good (not retried): check the topic's ACLs, its \
             message size and timestamp limits, and this host's clock"
        );
        metrics::counter!("firstcome_produce_refused_total", "topic" => self.topic.to_string(), "code" => code)
            .increment(1);
    }
}

/// Encodes and sends events; cheap to clone.
#[derive(Clone)]
pub struct EventProducer {
    sender: RecordSender,
    codec: Codec,
    topics: Topics,
}

impl EventProducer {
    /// An idempotent producer for `client_id`.
    pub fn new(settings: &KafkaSettings, codec: Codec, client_id: &str) -> Result<Self, KafkaError> {
        let producer: FutureProducer = idempotent_config(settings, client_id).create()?;
        Ok(Self::from_parts(producer, codec, settings))
    }

    /// Wraps an existing producer (e.g. a transactional one).
    pub fn from_parts(producer: FutureProducer, codec: Codec, settings: &KafkaSettings) -> Self {
        Self { sender: RecordSender::new(producer, settings.delivery_timeout()), codec, topics: settings.topics() }
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    pub fn inner(&self) -> &FutureProducer {
        self.sender.inner()
    }

    /// The sender of encoded records behind this producer.
    pub fn sender(&self) -> &RecordSender {
        &self.sender
    }

    /// Encodes `event` for its topic, keyed by member.
    pub async fn encode<E: Event>(&self, event: &E, context: RecordContext) -> Result<OutRecord, ProduceError> {
        Ok(encode_event(&self.codec, &self.topics, event, context).await?)
    }

    /// Sends one record and waits for the broker's acknowledgement. A full
    /// local queue waits (backpressure) up to the delivery timeout.
    pub async fn send(&self, record: &OutRecord) -> Result<Delivery, ProduceError> {
        Ok(self.sender.send(record).await?)
    }

    /// Encodes and sends `event`; returns after the broker acknowledged it.
    pub async fn publish<E: Event>(&self, event: &E, context: RecordContext) -> Result<Delivery, ProduceError> {
        let record = self.encode(event, context).await?;
        self.send(&record).await
    }
}
