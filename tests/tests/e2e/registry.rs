//! The registry and the Avro wire format, through real Kafka.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use schemas::{ClientInfo, CodecError, Event, RegistryAdmin, SurveyAnswer, SurveySubmitted, Topics};

use crate::helpers::TestEnv;

fn entry(user: &str, n: usize) -> SurveySubmitted {
    SurveySubmitted {
        event_id: "ev-roundtrip".into(),
        entry_id: uuid::Uuid::new_v4().to_string(),
        user_id: user.into(),
        answers: vec![SurveyAnswer { question: "satisfaction".into(), answer: n.to_string() }],
        // Near now: the topic refuses a record stamped a day behind the broker.
        submitted_at: schemas::now_millis() + n as i64,
        accepted_at: schemas::now_millis() + 1 + n as i64,
        client: ClientInfo { channel: "test".into(), user_agent: Some("e2e".into()) },
        ticket: 0,
    }
}

#[tokio::test]
async fn avro_records_round_trip_through_the_registry_and_kafka_keyed_by_member() {
    let env = TestEnv::new().await;
    let codec = env.codec();
    let topic = env.kafka.topics().survey_submitted;
    let producer: FutureProducer = platform::kafka::client_config(&testkit::kafka_admin(&env.kafka))
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");

    // Three records per member, for several members.
    let sent: Vec<SurveySubmitted> = (0..12).map(|n| entry(&format!("member-{}", n % 4), n)).collect();
    for event in &sent {
        let payload = codec.encode(&topic, event).await.expect("encode");
        assert_eq!(payload[0], 0, "Confluent wire format starts with the magic byte");
        producer
            .send(FutureRecord::to(&topic).key(event.key()).payload(&payload), Duration::from_secs(5))
            .await
            .expect("delivered");
    }

    let consumer: StreamConsumer = platform::kafka::client_config(&testkit::kafka_admin(&env.kafka))
        .set("group.id", format!("{}roundtrip", env.prefix))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut received = Vec::new();
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    while received.len() < sent.len() {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("records arrive within 30 s")
            .expect("no consumer error");
        let decoded: SurveySubmitted = codec.decode(message.payload()).await.expect("decode");
        let key = std::str::from_utf8(message.key().expect("keyed")).expect("utf8").to_string();
        assert_eq!(key, decoded.user_id, "records are keyed by member");
        let first = *partition_of.entry(key.clone()).or_insert(message.partition());
        assert_eq!(first, message.partition(), "one member's records share one partition");
        received.push(decoded);
    }
    for event in &sent {
        assert!(received.contains(event), "{} came back equal", event.entry_id);
    }
}

#[tokio::test]
async fn a_record_that_is_not_avro_is_poison_not_a_registry_outage() {
    let env = TestEnv::new().await;
    let codec = env.codec();
    let garbage = b"{\"not\": \"avro\"}".to_vec();
    match codec.decode::<SurveySubmitted>(Some(&garbage)).await {
        Err(CodecError::Poison(_)) => {}
        other => panic!("expected poison, got {other:?}"),
    }
    // A wire-format header pointing at a schema id that does not exist.
    let unknown_id = [0u8, 0x7f, 0xff, 0xff, 0xf0, 2, 4];
    assert!(matches!(codec.decode::<SurveySubmitted>(Some(&unknown_id)).await, Err(CodecError::Poison(_))));
}

/// `user_id` turned from string into int: old records cannot be read.
fn incompatible_schema() -> String {
    SurveySubmitted::SCHEMA.replacen(
        r#"{"name": "user_id", "type": "string""#,
        r#"{"name": "user_id", "type": "int""#,
        1,
    )
}

/// A new optional field with a default: BACKWARD compatible.
fn compatible_schema() -> String {
    SurveySubmitted::SCHEMA.replacen(
        r#"{"name": "submitted_at""#,
        r#"{"name": "campaign", "type": ["null", "string"], "default": null},
    {"name": "submitted_at""#,
        1,
    )
}

#[tokio::test]
async fn an_incompatible_schema_change_is_refused_by_the_registry_and_by_its_check() {
    let env = TestEnv::new().await;
    let incompatible = incompatible_schema();
    assert_ne!(incompatible, SurveySubmitted::SCHEMA, "the edit applied");
    let subject = Topics::value_subject(&env.kafka.topics().survey_submitted);

    // The registry refuses to register it under the BACKWARD rule.
    let admin = RegistryAdmin::new(&env.registry.url, Duration::from_secs(5)).expect("admin");
    let refused = admin.register(&subject, SurveySubmitted::NAME, &incompatible).await;
    assert!(matches!(refused, Err(CodecError::Rejected(_))), "registry accepted an incompatible schema: {refused:?}");

    // The registry's compatibility check (what `firstcome schemas check` asks) refuses it...
    let verdict = admin.check(&subject, SurveySubmitted::NAME, &incompatible).await.expect("check ran");
    assert_eq!(verdict.compatible, Some(false), "{verdict:?}");

    // ...and passes a compatible evolution, which the registry then accepts.
    let verdict = admin.check(&subject, SurveySubmitted::NAME, &compatible_schema()).await.expect("check ran");
    assert_eq!(verdict.compatible, Some(true), "{verdict:?}");
    admin.register(&subject, SurveySubmitted::NAME, &compatible_schema()).await.expect("compatible change registered");
}
