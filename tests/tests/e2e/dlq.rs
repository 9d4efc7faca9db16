//! Dead letters: listed, and replayed once to their source topic.

use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use firstcome_cli::commands::dlq;
use schemas::Topics;

use crate::helpers::TestEnv;

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_once_without_their_error_headers() {
    let env = TestEnv::new().await;
    let source = env.kafka.topics().survey_submitted;
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &env.kafka.brokers).create().expect("producer");
    // The same source record dead-lettered by two groups (both read survey-submitted).
    for group in ["stock", "recording"] {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "correlation-id", value: Some("corr-dlq") })
            .insert(Header { key: "dlq-error", value: Some("registry was down") })
            .insert(Header { key: "dlq-group", value: Some(group) })
            .insert(Header { key: "dlq-source-partition", value: Some("1") })
            .insert(Header { key: "dlq-source-offset", value: Some("42") });
        producer
            .send(
                FutureRecord::to(&Topics::dlq(&source)).key("member-9").payload("source bytes").headers(headers),
                Duration::from_secs(5),
            )
            .await
            .expect("dead letter written");
    }

    let shown = dlq::show(&env.kafka, &source, 10).await.expect("show");
    assert_eq!(shown.len(), 2);
    assert!(shown.iter().all(|d| d.error.as_deref() == Some("registry was down")));
    assert_eq!(shown[0].source.as_deref(), Some(format!("{source}[1]@42").as_str()));

    let first = dlq::replay(&env.kafka, &source, usize::MAX).await.expect("replay");
    assert_eq!((first.replayed, first.duplicates), (1, 1), "one source record, replayed once");
    assert_eq!(dlq::replay(&env.kafka, &source, usize::MAX).await.expect("replay").replayed, 0, "never again");

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.kafka.brokers)
        .set("group.id", format!("{}check", env.prefix))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&source]).expect("subscribe");
    let message = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
        .await
        .expect("replayed record arrives")
        .expect("no error");
    assert_eq!(message.payload(), Some(&b"source bytes"[..]));
    assert_eq!(message.key(), Some(&b"member-9"[..]));
    let headers = message.headers().expect("headers kept");
    assert!(headers.iter().any(|h| h.key == "correlation-id" && h.value == Some(&b"corr-dlq"[..])));
    assert!(headers.iter().all(|h| !h.key.starts_with("dlq-")), "error headers removed");
    let again = tokio::time::timeout(Duration::from_secs(3), consumer.recv()).await;
    assert!(again.is_err(), "exactly one record replayed to the source topic");
}
