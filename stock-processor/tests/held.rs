//! A batch that meets an event held by a rebuild waits for the swap instead
//! of failing at once or deciding on a state about to be replaced; a hold
//! that outlives the wait fails the batch (tried again), with nothing decided.

mod common;

use std::time::{Duration, Instant};

use common::kafka::entry;
use common::EventSetup;
use platform::event_keys::EventKeys;
use platform::kafka::{BatchHandler, Record, RecordContext};
use rdkafka::message::{OwnedMessage, Timestamp};
use schemas::{Codec, Outcome, StockDecision};
use stock_processor::marks::MarkReader;
use stock_processor::rebuild::Rebuilder;
use stock_processor::{StockHandler, StockStore};
use testkit::TestEnv;

/// One entry of `member` as the stage's consumer hands it over.
async fn batch_of(codec: &Codec, topic: &str, event_id: &str, member: &str, offset: i64) -> (String, [Record; 1]) {
    let entry_id = common::new_entry_id();
    let payload =
        codec.encode(topic, &entry(event_id, &entry_id, member, schemas::now_millis())).await.expect("encode");
    let context = RecordContext::new_root("corr-held", None);
    let message = OwnedMessage::new(
        Some(payload),
        Some(member.as_bytes().to_vec()),
        topic.to_string(),
        Timestamp::NotAvailable,
        0,
        offset,
        Some(context.to_headers()),
    );
    (entry_id, [Record { message, context }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_waits_for_a_rebuilds_hold_and_fails_when_it_outlives_the_wait() {
    let env = TestEnv::builder().without_database().build().await;
    let settings = common::stage_settings(&env);
    let (kafka, group) = (settings.kafka.clone(), settings.group());
    let topics = kafka.topics();
    let codec: Codec = settings.registry.codec().expect("codec");
    let mut conn = common::redis().await;
    let event_id = common::new_event_id();
    let members: Vec<String> = (1..=3).map(|i| format!("h{i}")).collect();
    EventSetup::open_now(&event_id, 3, &members).create(&mut conn).await;
    let keys = EventKeys::new(&event_id);

    // The stage as it runs: its own Redis user, its stale guard.
    let stage_conn =
        platform::redis::connect(&settings.clone().with_local_credentials().redis).await.expect("stock user");
    let admin = testkit::kafka_admin(&kafka);
    let handler = StockHandler::new(StockStore::new(stage_conn.clone()), codec.clone(), topics.clone(), group.clone())
        .with_stale_guard(
            MarkReader::new(&admin, &group).expect("mark reader"),
            Rebuilder::new(&admin, &group, codec.clone(), stage_conn).expect("rebuilder"),
        );
    let rebuilder = Rebuilder::new(&admin, &group, codec.clone(), conn.clone()).expect("rebuilder");

    // A hold let go of 400 ms later: the batch waits, then decides.
    let hold = rebuilder.try_hold(&event_id).await.expect("hold").expect("nobody holds it");
    let (entry_id, batch) = batch_of(&codec, &topics.survey_submitted, &event_id, "h1", 0).await;
    let letting_go = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let held = common::hgetall(&mut conn, &EventKeys::new(&event_id).decisions).await;
        rebuilder.let_go(&hold).await.expect("let go");
        (held, conn, rebuilder, event_id)
    });
    let started = Instant::now();
    let outcome = handler.handle(&batch).await.expect("decided once the hold is gone");
    let waited = started.elapsed();
    let (held, mut conn, rebuilder, event_id) = letting_go.await.expect("task");
    assert!(held.is_empty(), "decided while the event was held: {held:?}");
    assert!(waited >= Duration::from_millis(400), "did not wait for the hold: {waited:?}");
    assert_eq!(outcome.produce.len(), 1);
    let decided: StockDecision = codec.decode(Some(outcome.produce[0].payload.as_slice())).await.expect("decodes");
    assert_eq!((decided.entry_id.as_str(), decided.outcome), (entry_id.as_str(), Outcome::Won));

    // A hold that outlives the wait: the batch fails, nothing is decided.
    let _hold = rebuilder.try_hold(&event_id).await.expect("hold").expect("nobody holds it");
    let (entry_id, batch) = batch_of(&codec, &topics.survey_submitted, &event_id, "h2", 1).await;
    let error = handler.handle(&batch).await.expect_err("a held event is not decided");
    assert!(error.chain().to_string().contains("rebuild holds"), "{}", error.chain());
    assert!(!common::hgetall(&mut conn, &keys.decisions).await.contains_key(&entry_id));
    let () = redis::cmd("DEL").arg(&keys.all()[..]).query_async(&mut conn).await.expect("DEL");
    env.delete_topics().await;
}
