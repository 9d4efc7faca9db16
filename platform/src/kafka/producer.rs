//! The producer: idempotent, `acks=all`, records encoded through the registry.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

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
            ProduceError::Kafka(_) => true,
        }
    }
}

/// Properties of an idempotent, `acks=all` producer.
pub fn idempotent_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = base_config(settings, client_id);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", settings.delivery_timeout_ms.to_string())
        .set("linger.ms", settings.linger_ms.to_string())
        .set("compression.type", "lz4");
    config
}

/// Sends events and raw records; cheap to clone.
#[derive(Clone)]
pub struct EventProducer {
    producer: FutureProducer,
    codec: Codec,
    topics: Topics,
    queue_timeout: Duration,
}

impl EventProducer {
    /// An idempotent producer for `client_id`.
    pub fn new(settings: &KafkaSettings, codec: Codec, client_id: &str) -> Result<Self, KafkaError> {
        let producer: FutureProducer = idempotent_config(settings, client_id).create()?;
        Ok(Self::from_parts(producer, codec, settings))
    }

    /// Wraps an existing producer (e.g. a transactional one).
    pub fn from_parts(producer: FutureProducer, codec: Codec, settings: &KafkaSettings) -> Self {
        Self {
            producer,
            codec,
            topics: settings.topics(),
            queue_timeout: settings.delivery_timeout(),
        }
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    pub fn inner(&self) -> &FutureProducer {
        &self.producer
    }

    /// Encodes `event` for its topic, keyed by member.
    pub async fn encode<E: Event>(&self, event: &E, context: RecordContext) -> Result<OutRecord, ProduceError> {
        let topic = E::topic(&self.topics).to_string();
        let payload = self.codec.encode(&topic, event).await?;
        Ok(OutRecord { topic, key: event.key().to_string(), payload, context })
    }

    /// Sends one record and waits for the broker's acknowledgement. A full
    /// local queue waits (backpressure) up to the delivery timeout.
    pub async fn send(&self, record: &OutRecord) -> Result<Delivery, ProduceError> {
        let future_record = FutureRecord::to(&record.topic)
            .key(&record.key)
            .payload(&record.payload)
            .headers(record.context.to_headers());
        self.producer
            .send(future_record, self.queue_timeout)
            .await
            .map_err(|(error, _)| ProduceError::Kafka(error))
    }

    /// Encodes and sends `event`; returns after the broker acknowledged it.
    pub async fn publish<E: Event>(&self, event: &E, context: RecordContext) -> Result<Delivery, ProduceError> {
        let record = self.encode(event, context).await?;
        self.send(&record).await
    }
}
