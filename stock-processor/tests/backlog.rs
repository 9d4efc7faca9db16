//! First come first served when the stage starts behind: entries already in the
//! log (a restart, a broker failure, a stage that fell behind) should be decided in
//! the order ingest accepted them, across partitions, not partition after partition.
//!
//! The consumer loop hands a batch over in record-timestamp order across the
//! assigned partitions (`platform::kafka::consumer::merge`, `Order::Timestamp`);
//! before it, a batch was mostly one partition's fetched records and 204 of the
//! first 600 of these 3,000 entries on 3 partitions won (the handler's in-batch
//! sort, `handler::by_event`, cannot reach across batches). The records are
//! stamped with the accept time, as ingest stamps them, and carry the tickets
//! ingest gave them: the stage decides on those, so the winners are exactly
//! the first tickets whatever order the records reach it in.

mod common;

use std::time::Duration;

use common::kafka::{entry, Producer};
use common::EventSetup;
use rdkafka::message::Message;
use schemas::{Codec, Outcome, StockDecision};
use stock_processor::Application;
use testkit::TestEnv;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_is_decided_in_accept_order_across_partitions() {
    testkit::init_logs("stock-processor-test");
    let env = TestEnv::builder().without_database().build().await;
    let settings = common::stage_settings(&env);
    let kafka = settings.kafka.clone();
    let topics = kafka.topics();
    const ENTRIES: usize = 3_000;
    const FOR_SALE: usize = 600;

    let mut conn = common::redis().await;
    let event_id = common::new_event_id();
    let members: Vec<String> = (0..ENTRIES).map(|i| format!("m{i:05}")).collect();
    EventSetup::open_now(&event_id, FOR_SALE as i64, &members).create(&mut conn).await;

    // The backlog, produced in accept order (as ingest would) before the stage runs.
    let codec: Codec = settings.registry.codec().expect("codec");
    let producer = Producer::new(&kafka);
    let accepted_from = schemas::now_millis() - 60_000;
    let mut payloads = Vec::with_capacity(ENTRIES);
    for (i, member) in members.iter().enumerate() {
        let accepted_at = accepted_from + i as i64;
        // The place ingest gave each, in accept order.
        let record = schemas::SurveySubmitted {
            ticket: i as i64 + 1,
            ..entry(&event_id, &common::new_entry_id(), member, accepted_at)
        };
        payloads.push((member, accepted_at, codec.encode(&topics.survey_submitted, &record).await.expect("encode")));
    }
    // Sent together, in order (the idempotent producer keeps each
    // partition's order), stamped with the accept time as ingest stamps them.
    let (producer, topic) = (&producer, topics.survey_submitted.as_str());
    futures::future::join_all(payloads.iter().map(|(member, accepted_at, payload)| {
        producer.send_at(topic, member, payload, "corr-backlog", Some(*accepted_at))
    }))
    .await;

    let application = Application::build(settings).await.expect("application builds");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(application.run_until_stopped(shutdown.clone()));
    let reader = env.committed_reader(&[&topics.stock_decided]).await;
    let mut winners_accepted_at = Vec::new();
    let mut winners_tickets = Vec::new();
    for message in reader.take(ENTRIES, DEADLINE).await {
        let decision: StockDecision = codec.decode(message.payload()).await.expect("decision decodes");
        if decision.outcome == Outcome::Won {
            winners_accepted_at.push(decision.accepted_at);
            winners_tickets.push(decision.ticket);
        }
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), running).await;

    assert_eq!(winners_accepted_at.len(), FOR_SALE, "every unit won once");
    let first_n = winners_accepted_at.iter().filter(|at| **at < accepted_from + FOR_SALE as i64).count();
    assert_eq!(
        first_n, FOR_SALE,
        "the winners are the first {FOR_SALE} accepted entries (fidelity {first_n}/{FOR_SALE})"
    );
    winners_tickets.sort_unstable();
    assert_eq!(winners_tickets, (1..=FOR_SALE as i64).collect::<Vec<_>>(), "the winners hold tickets 1..{FOR_SALE}");
}
