//! Kafka, the log of record: the producer, the batch consumer loop, record
//! headers, dead letters, and topic administration.

pub mod admin;
pub mod consumer;
pub mod headers;
pub mod log_reader;
pub mod producer;

pub use consumer::{BatchHandler, BatchOutcome, ConsumerError, ConsumerLoop, DeadLetter, Delivery, HandlerError, Record};
pub use headers::RecordContext;
pub use log_reader::LogReader;
pub use producer::{encode_event, EventProducer, OutRecord, ProduceError, RawRecord, RecordSender};

use rdkafka::ClientConfig;

use crate::settings::KafkaSettings;

/// The client properties every firstcome client shares.
pub(crate) fn base_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", client_id)
        // Loopback and single-node clusters: fail fast, reconnect quickly.
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.max.ms", "1000")
        .set("topic.metadata.refresh.interval.ms", "10000");
    for (key, value) in &settings.extra {
        config.set(key, value);
    }
    config
}
