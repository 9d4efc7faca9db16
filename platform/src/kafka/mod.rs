//! Kafka, the log of record: the producer, the batch consumer loop, record
//! headers, dead letters, and topic administration.

pub mod acl;
pub mod admin;
pub mod consumer;
pub mod headers;
pub mod lag;
pub mod log_reader;
pub mod producer;

pub use consumer::{
    BatchHandler, BatchOutcome, ConsumerError, ConsumerLoop, DeadLetter, Delivery, HandlerError, Order, Record,
};
pub use headers::RecordContext;
pub use log_reader::LogReader;
pub use producer::{encode_event, EventProducer, OutRecord, ProduceError, RawRecord, RecordSender};

use rdkafka::ClientConfig;

use crate::settings::KafkaSettings;

/// Where the brokers are and who the client is (its SASL login), then
/// `kafka.extra`: what every client needs to connect, tests' own clients too.
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers);
    for (key, value) in settings.security_properties() {
        config.set(key, value);
    }
    for (key, value) in settings.extra_properties() {
        config.set(key, value);
    }
    config
}

/// The client properties every firstcome client shares; `client_id` names
/// the client's role unless `kafka.client_id` names them all.
pub(crate) fn base_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = client_config(settings);
    config
        .set("client.id", settings.client_id_for(client_id))
        // Loopback and single-node clusters: fail fast, reconnect quickly.
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.max.ms", "1000")
        .set("topic.metadata.refresh.interval.ms", "10000");
    for (key, value) in settings.extra_properties() {
        config.set(key, value);
    }
    config
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::BaseProducer;

    use super::*;
    use crate::settings::{Environment, Principal};

    /// Every codec a Kafka producer may choose is built in: a partner's batch
    /// in a codec librdkafka lacks is a fetch error no consumer gets past.
    #[test]
    fn librdkafka_decompresses_every_codec_kafka_offers() {
        let native = ClientConfig::new().create_native_config().expect("librdkafka config");
        let features = native.get("builtin.features").expect("builtin.features");
        let features: Vec<&str> = features.split(',').collect();
        for codec in ["gzip", "snappy", "lz4", "zstd"] {
            assert!(features.contains(&codec), "librdkafka lacks {codec}: {features:?}");
        }
    }

    /// librdkafka is built with what a SCRAM login needs (OpenSSL, rdkafka's
    /// `ssl` feature): without it the client refuses the mechanism at creation.
    #[test]
    fn a_scram_client_can_be_created() {
        let settings = KafkaSettings::default().for_principal(Environment::Local, Principal::INGEST);
        let producer: Result<BaseProducer, _> = client_config(&settings).create();
        assert!(producer.is_ok(), "{:?}", producer.err());
    }
}
