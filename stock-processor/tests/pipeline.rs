//! End to end through the real Kafka and registry: entries produced to a
//! prefixed survey topic come out as committed decisions, poison goes to the DLQ.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::EventSetup;
use platform::event_keys::EventKeys;
use platform::kafka::admin::{create_topics, delete_topics, pipeline_topics, Layout};
use platform::kafka::RecordContext;
use platform::settings::{HttpSettings, KafkaSettings, TelemetrySettings};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use schemas::{ClientInfo, Codec, Outcome, StockDecision, StockRelease, SurveyAnswer, SurveySubmitted, Topics};
use stock_processor::{Application, Settings};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(60);

fn entry(event_id: &str, entry_id: &str, user_id: &str) -> SurveySubmitted {
    let now = schemas::now_millis();
    SurveySubmitted {
        event_id: event_id.into(),
        entry_id: entry_id.into(),
        user_id: user_id.into(),
        answers: vec![SurveyAnswer { question: "q1".into(), answer: "5".into() }],
        submitted_at: now,
        accepted_at: now + 1,
        client: ClientInfo { channel: "partner-app".into(), user_agent: None },
    }
}

struct Producer {
    inner: FutureProducer,
}

impl Producer {
    fn new(kafka: &KafkaSettings) -> Self {
        let inner = ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .expect("producer");
        Self { inner }
    }

    async fn send(&self, topic: &str, key: &str, payload: &[u8], correlation_id: &str) {
        let headers = RecordContext::new_root(correlation_id, None).to_headers();
        let record = FutureRecord::to(topic).key(key).payload(payload).headers(headers);
        self.inner.send(record, Duration::from_secs(10)).await.expect("record acknowledged");
    }
}

/// Reads committed records only, as the downstream groups do.
fn reader(kafka: &KafkaSettings, topics: &[&str]) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", kafka.group("test-reader"))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    consumer.subscribe(topics).expect("subscribe");
    consumer
}

fn header(message: &impl Message, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entries_through_kafka_get_one_committed_decision_each() {
    if std::env::var("TEST_LOG").is_ok() {
        platform::telemetry::init("stock-processor-test", &TelemetrySettings::default());
    }
    let mut settings = Settings::default();
    settings.kafka.topic_prefix = format!("t-{}.", uuid::Uuid::new_v4());
    settings.http = HttpSettings::on_port(0);
    let kafka = settings.kafka.clone();
    let topics = kafka.topics();
    let specs = pipeline_topics(&topics, Layout { partitions: 3, ..Default::default() });
    create_topics(&kafka, &specs).await.expect("topics created");

    // Three events: one with 3 units, one sold out already, one closed.
    let mut conn = common::redis().await;
    let (main, sold_out, closed) = (common::new_event_id(), common::new_event_id(), common::new_event_id());
    let members: Vec<String> = ["u1", "u2", "u3"].iter().map(|m| m.to_string()).collect();
    EventSetup::open_now(&main, 3, &members).create(&mut conn).await;
    EventSetup::open_now(&sold_out, 0, &["u5".to_string()]).create(&mut conn).await;
    let now = schemas::now_millis();
    EventSetup { event_id: &closed, for_sale: 3, eligible: &["u6".to_string()], open_at_ms: now - 120_000, close_at_ms: now - 1 }
        .create(&mut conn)
        .await;

    // (event, member, expected outcome); u1 enters twice.
    let plan = [
        (&main, "u1", Outcome::Won),
        (&main, "u2", Outcome::Won),
        (&main, "u3", Outcome::Won),
        (&main, "u1", Outcome::AlreadyWon),
        (&main, "u9", Outcome::Ineligible),
        (&sold_out, "u5", Outcome::SoldOut),
        (&closed, "u6", Outcome::Closed),
    ];
    let codec: Codec = settings.registry.codec().expect("codec");
    let producer = Producer::new(&kafka);
    let mut expected: HashMap<String, (String, Outcome, String)> = HashMap::new();
    for (n, (event_id, member, outcome)) in plan.iter().enumerate() {
        let entry_id = common::new_entry_id();
        let payload = codec.encode(&topics.survey_submitted, &entry(event_id, &entry_id, member)).await.expect("encode");
        let correlation = format!("corr-{n}");
        producer.send(&topics.survey_submitted, member, &payload, &correlation).await;
        expected.insert(entry_id, (member.to_string(), *outcome, correlation));
    }
    // Two records no consumer can use: random bytes, and an entry id that is not a UUID.
    let mut poison: Vec<u8> = (0..64).map(|_| rand::random::<u8>()).collect();
    poison[0] = 0xff; // not the Confluent magic byte, whatever the rest
    producer.send(&topics.survey_submitted, "u8", &poison, "corr-poison").await;
    let bad_id = codec.encode(&topics.survey_submitted, &entry(&main, "not-a-uuid", "u7")).await.expect("encode");
    producer.send(&topics.survey_submitted, "u7", &bad_id, "corr-bad-id").await;

    let application = Application::build(settings).await.expect("application builds");
    let ops_port = application.ops_port();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(application.run_until_stopped(shutdown.clone()));

    // Collect committed decisions and dead letters until all are in (or the deadline).
    let dlq = Topics::dlq(&topics.survey_submitted);
    let consumer = reader(&kafka, &[&topics.stock_decided, &dlq]);
    let mut decisions: Vec<(StockDecision, Option<String>)> = Vec::new();
    let mut dead: Vec<(Vec<u8>, Option<String>, Option<String>)> = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while decisions.len() < expected.len() || dead.len() < 2 {
        let message = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => message,
            Ok(Err(error)) => panic!("reader failed: {error}"),
            Err(_) => panic!("deadline: {} decisions, {} dead letters", decisions.len(), dead.len()),
        };
        if message.topic() == topics.stock_decided {
            let decision: StockDecision = codec.decode(message.payload()).await.expect("decision decodes");
            decisions.push((decision, header(&message, "correlation-id")));
        } else {
            dead.push((
                message.payload().unwrap_or_default().to_vec(),
                header(&message, "dlq-error"),
                header(&message, "correlation-id"),
            ));
        }
    }

    // One decision per entry, the right outcomes, the correlation id kept.
    assert_eq!(decisions.len(), expected.len());
    let mut units = Vec::new();
    let mut u1_unit = None;
    let mut u1_won_entry = None;
    for (decision, correlation) in &decisions {
        let (member, outcome, corr) = expected.get(&decision.entry_id).expect("a decision for a produced entry");
        assert_eq!(&decision.user_id, member);
        assert_eq!(correlation.as_ref(), Some(corr), "correlation id kept");
        assert!(decision.decided_at >= decision.accepted_at);
        if member == "u1" {
            assert!(matches!(decision.outcome, Outcome::Won | Outcome::AlreadyWon));
            assert!(u1_unit.is_none() || u1_unit == decision.unit_no, "u1 holds one unit");
            u1_unit = decision.unit_no;
            if decision.outcome == Outcome::Won {
                u1_won_entry = Some(decision.entry_id.clone());
            }
        } else {
            assert_eq!(decision.outcome, *outcome, "{member}");
        }
        if decision.outcome == Outcome::Won {
            units.push(decision.unit_no.expect("a win has a unit"));
        }
    }
    let entries_decided: std::collections::HashSet<&str> = decisions.iter().map(|(d, _)| d.entry_id.as_str()).collect();
    assert_eq!(entries_decided.len(), expected.len(), "an entry was decided twice");
    units.sort();
    assert_eq!(units, vec![1, 2, 3]);
    assert_eq!(
        decisions.iter().filter(|(d, _)| d.outcome == Outcome::AlreadyWon).count(),
        1,
        "u1's second entry"
    );

    // The poison and the bad entry id are in the DLQ with their error, bytes untouched.
    assert!(dead.iter().any(|(bytes, error, corr)| bytes == &poison
        && error.as_deref().is_some_and(|e| !e.is_empty())
        && corr.as_deref() == Some("corr-poison")));
    assert!(dead.iter().any(|(bytes, error, _)| bytes == &bad_id
        && error.as_deref().is_some_and(|e| e.contains("UUID"))));

    // The main event sold out; a release through Kafka brings one unit back.
    let keys = EventKeys::new(&main);
    assert_eq!(common::get_i64(&mut conn, &keys.stock).await, Some(0));
    let release = StockRelease {
        event_id: main.clone(),
        entry_id: u1_won_entry.expect("u1 won"),
        user_id: "u1".into(),
        unit_no: u1_unit.expect("u1 unit"),
        reason: "provider refused the phone number".into(),
        released_at: schemas::now_millis(),
    };
    let payload = codec.encode(&topics.stock_released, &release).await.expect("encode release");
    producer.send(&topics.stock_released, "u1", &payload, "corr-release").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while common::get_i64(&mut conn, &keys.stock).await != Some(1) {
        assert!(tokio::time::Instant::now() < deadline, "the release was not applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(common::meta_status(&mut conn, &main).await.as_deref(), Some("open"));

    // No further decision shows up (no duplicates from redelivery).
    let extra = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await;
    assert!(extra.is_err(), "unexpected extra record");

    // Ops: /healthz sees the real dependencies; /metrics counts decisions.
    let http = reqwest::Client::new();
    let health = http.get(format!("http://127.0.0.1:{ops_port}/healthz")).send().await.expect("healthz");
    assert_eq!(health.status().as_u16(), 200, "{:?}", health.text().await);
    let metrics = http.get(format!("http://127.0.0.1:{ops_port}/metrics")).send().await.expect("metrics");
    let text = metrics.text().await.expect("metrics body");
    assert!(text.contains("firstcome_stock_decisions_total"), "{text}");

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), running).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "the application stops cleanly: {stopped:?}");

    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let _ = delete_topics(&kafka, &names).await;
}
