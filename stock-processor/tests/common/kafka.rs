//! Kafka helpers for the tests that run the stage against the real broker
//! (the topics, prefix and readers come from `testkit`).

use std::time::Duration;

use platform::kafka::RecordContext;
use platform::settings::KafkaSettings;
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::{ClientInfo, SurveyAnswer, SurveySubmitted};

pub fn entry(event_id: &str, entry_id: &str, user_id: &str, accepted_at: i64) -> SurveySubmitted {
    SurveySubmitted {
        event_id: event_id.into(),
        entry_id: entry_id.into(),
        user_id: user_id.into(),
        answers: vec![SurveyAnswer { question: "q1".into(), answer: "5".into() }],
        submitted_at: accepted_at - 1,
        accepted_at,
        client: ClientInfo { channel: "partner-app".into(), user_agent: None },
        ticket: 0,
    }
}

pub struct Producer {
    inner: FutureProducer,
}

impl Producer {
    pub fn new(kafka: &KafkaSettings) -> Self {
        let inner = platform::kafka::client_config(&testkit::kafka_admin(kafka))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        Self { inner }
    }

    /// Sends and waits for the acknowledgement; returns (partition, offset).
    pub async fn send(&self, topic: &str, key: &str, payload: &[u8], correlation_id: &str) -> (i32, i64) {
        self.send_at(topic, key, payload, correlation_id, None).await
    }

    /// [`Self::send`] with the record timestamp set, as ingest sets it (the accept time).
    pub async fn send_at(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        correlation_id: &str,
        timestamp_ms: Option<i64>,
    ) -> (i32, i64) {
        let headers = RecordContext::new_root(correlation_id, None).to_headers();
        let mut record = FutureRecord::to(topic).key(key).payload(payload).headers(headers);
        if let Some(timestamp) = timestamp_ms {
            record = record.timestamp(timestamp);
        }
        let delivered = self.inner.send(record, Duration::from_secs(10)).await.expect("record acknowledged");
        (delivered.partition, delivered.offset)
    }
}
