//! Kafka helpers for the tests that run the stage against the real broker.

use std::time::Duration;

use platform::kafka::admin::{create_topics, pipeline_topics, Layout};
use platform::kafka::RecordContext;
use platform::settings::KafkaSettings;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use schemas::{ClientInfo, SurveyAnswer, SurveySubmitted};

/// Creates the deployment's topics (3 partitions) behind `kafka`'s prefix.
pub async fn create_pipeline_topics(kafka: &KafkaSettings) -> Vec<String> {
    let specs = pipeline_topics(&kafka.topics(), Layout { partitions: 3, ..Default::default() });
    create_topics(kafka, &specs).await.expect("topics created");
    specs.into_iter().map(|s| s.name).collect()
}

pub fn entry(event_id: &str, entry_id: &str, user_id: &str, accepted_at: i64) -> SurveySubmitted {
    SurveySubmitted {
        event_id: event_id.into(),
        entry_id: entry_id.into(),
        user_id: user_id.into(),
        answers: vec![SurveyAnswer { question: "q1".into(), answer: "5".into() }],
        submitted_at: accepted_at - 1,
        accepted_at,
        client: ClientInfo { channel: "partner-app".into(), user_agent: None },
    }
}

pub struct Producer {
    inner: FutureProducer,
}

impl Producer {
    pub fn new(kafka: &KafkaSettings) -> Self {
        let inner = ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        Self { inner }
    }

    /// Sends and waits for the acknowledgement; returns (partition, offset).
    pub async fn send(&self, topic: &str, key: &str, payload: &[u8], correlation_id: &str) -> (i32, i64) {
        let headers = RecordContext::new_root(correlation_id, None).to_headers();
        let record = FutureRecord::to(topic).key(key).payload(payload).headers(headers);
        let delivered = self.inner.send(record, Duration::from_secs(10)).await.expect("record acknowledged");
        (delivered.partition, delivered.offset)
    }
}

/// Reads committed records only, as the downstream groups do, from the start.
pub fn committed_reader(kafka: &KafkaSettings, topics: &[&str]) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", kafka.group(&format!("test-reader-{}", uuid::Uuid::new_v4().simple())))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    consumer.subscribe(topics).expect("subscribe");
    consumer
}
