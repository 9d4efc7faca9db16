//! End to end through the real Kafka and registry: entries produced to a
//! prefixed survey topic come out as committed decisions, poison goes to the DLQ.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::kafka::{entry, Producer};
use common::EventSetup;
use platform::event_keys::EventKeys;
use rdkafka::message::{Headers, Message};
use schemas::{Codec, Outcome, StockDecision, StockRelease, Topics};
use stock_processor::Application;
use testkit::{wait_for, TestEnv};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(60);

fn header(message: &impl Message, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entries_through_kafka_get_one_committed_decision_each() {
    testkit::init_logs("stock-processor-test");
    let env = TestEnv::builder().without_database().build().await;
    let settings = common::stage_settings(&env);
    let kafka = settings.kafka.clone();
    let topics = kafka.topics();

    // Three events: one with 3 units, one sold out already, one closed.
    let mut conn = common::redis().await;
    let (main, sold_out, closed) = (common::new_event_id(), common::new_event_id(), common::new_event_id());
    let members: Vec<String> = ["u1", "u2", "u3"].iter().map(|m| m.to_string()).collect();
    EventSetup::open_now(&main, 3, &members).create(&mut conn).await;
    EventSetup::open_now(&sold_out, 0, &["u5".to_string()]).create(&mut conn).await;
    let now = schemas::now_millis();
    EventSetup {
        event_id: &closed,
        for_sale: 3,
        eligible: &["u6".to_string()],
        open_at_ms: now - 120_000,
        close_at_ms: now - 1,
    }
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
        let record = entry(event_id, &entry_id, member, schemas::now_millis() + 1);
        let payload = codec.encode(&topics.survey_submitted, &record).await.expect("encode");
        let correlation = format!("corr-{n}");
        producer.send(&topics.survey_submitted, member, &payload, &correlation).await;
        expected.insert(entry_id, (member.to_string(), *outcome, correlation));
    }
    // Two records no consumer can use: random bytes, and an entry id that is not a UUID.
    let mut poison: Vec<u8> = (0..64).map(|_| rand::random::<u8>()).collect();
    poison[0] = 0xff; // not the Confluent magic byte, whatever the rest
    producer.send(&topics.survey_submitted, "u8", &poison, "corr-poison").await;
    let bad_id = codec
        .encode(&topics.survey_submitted, &entry(&main, "not-a-uuid", "u7", schemas::now_millis() + 1))
        .await
        .expect("encode");
    producer.send(&topics.survey_submitted, "u7", &bad_id, "corr-bad-id").await;

    let application = Application::build(settings).await.expect("application builds");
    let ops_port = application.ops_port();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(application.run_until_stopped(shutdown.clone()));

    // The committed decisions and dead letters: one per entry, two poison.
    let dlq = Topics::dlq(&topics.survey_submitted);
    let reader = env.committed_reader(&[&topics.stock_decided, &dlq]).await;
    let mut decisions: Vec<(StockDecision, Option<String>)> = Vec::new();
    let mut dead: Vec<(Vec<u8>, Option<String>, Option<String>)> = Vec::new();
    for message in reader.take(expected.len() + 2, DEADLINE).await {
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
    assert_eq!(dead.len(), 2, "two dead letters");

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
    assert_eq!(decisions.iter().filter(|(d, _)| d.outcome == Outcome::AlreadyWon).count(), 1, "u1's second entry");

    // The poison and the bad entry id are in the DLQ with their error, bytes untouched.
    assert!(dead.iter().any(|(bytes, error, corr)| bytes == &poison
        && error.as_deref().is_some_and(|e| !e.is_empty())
        && corr.as_deref() == Some("corr-poison")));
    assert!(dead
        .iter()
        .any(|(bytes, error, _)| bytes == &bad_id && error.as_deref().is_some_and(|e| e.contains("UUID"))));

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
    wait_for("the release applied", DEADLINE, || {
        let (mut conn, stock) = (conn.clone(), keys.stock.clone());
        async move { common::get_i64(&mut conn, &stock).await == Some(1) }
    })
    .await;
    assert_eq!(common::meta_status(&mut conn, &main).await.as_deref(), Some("open"));

    // Once the stage has committed every input, the log holds exactly one
    // decision per entry (no duplicates from redelivery).
    let group = env.group(stock_processor::GROUP);
    let inputs = [topics.survey_submitted.as_str(), topics.stock_released.as_str()];
    wait_for("the stage committed its inputs", DEADLINE, || env.caught_up(&group, &inputs)).await;
    assert_eq!(env.read_log(&topics.stock_decided).await.len(), expected.len(), "a decision was written twice");

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

    env.delete_topics().await;
}
