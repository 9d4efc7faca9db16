//! A Redis that lost writes the stage already committed to Kafka (AOF
//! everysec, a failover) is caught before anything is decided on it: the
//! marks committed as offset metadata are above Redis' `applied` marks.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::kafka::{entry, Producer};
use common::EventSetup;
use platform::event_keys::EventKeys;
use platform::kafka::{BatchHandler, Record, RecordContext};
use rdkafka::message::{Message, OwnedMessage, Timestamp};
use schemas::{Codec, Outcome, StockDecision};
use stock_processor::marks::{MarkKind, MarkReader};
use stock_processor::rebuild::Rebuilder;
use stock_processor::{Application, Marks, StockHandler, StockStore, StoreError};
use testkit::TestEnv;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_behind_the_committed_marks_is_never_decided_on() {
    let env = TestEnv::builder().without_database().build().await;
    let settings = common::stage_settings(&env);
    let kafka = settings.kafka.clone();
    let topics = kafka.topics();
    let group = settings.group();

    let mut conn = common::redis().await;
    let event_id = common::new_event_id();
    let members: Vec<String> = (1..=5).map(|i| format!("u{i}")).collect();
    EventSetup::open_now(&event_id, 5, &members).create(&mut conn).await;
    let keys = EventKeys::new(&event_id);
    let codec: Codec = settings.registry.codec().expect("codec");

    // Two entries go through the running stage and commit.
    let application = Application::build(settings.clone()).await.expect("application builds");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(application.run_until_stopped(shutdown.clone()));
    let producer = Producer::new(&kafka);
    let mut sent = Vec::new();
    for member in ["u1", "u2"] {
        let entry_id = common::new_entry_id();
        let payload = codec
            .encode(&topics.survey_submitted, &entry(&event_id, &entry_id, member, schemas::now_millis()))
            .await
            .expect("encode");
        sent.push(producer.send(&topics.survey_submitted, member, &payload, &entry_id).await);
    }
    let reader = env.committed_reader(&[&topics.stock_decided]).await;
    let mut decided = HashSet::new();
    for message in reader.take(2, DEADLINE).await {
        let decision: StockDecision = codec.decode(message.payload()).await.expect("decodes");
        assert_eq!(decision.outcome, Outcome::Won);
        decided.insert(decision.entry_id);
    }
    assert_eq!(decided.len(), 2, "one decision per entry");
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), running).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "the application stops cleanly: {stopped:?}");

    // The group's commit carries the marks the scripts raised in Redis.
    let marks = MarkReader::new(&testkit::kafka_admin(&kafka), &group).expect("mark reader");
    let committed = marks.fetch().await.expect("committed marks");
    let expected = committed.expected_for(&event_id);
    let applied = common::hgetall(&mut conn, &keys.applied).await;
    assert!(!expected.is_empty(), "no marks committed");
    for (partition, offset) in &sent {
        let field = stock_processor::marks::field(MarkKind::Survey, *partition);
        assert!(expected.contains(&(field.clone(), offset + 1)), "{field} → {} in {expected:?}", offset + 1);
        assert_eq!(committed.committed_offset(MarkKind::Survey, *partition), Some(offset + 1));
    }
    for (field, offset) in &expected {
        assert_eq!(applied.get(field), Some(&offset.to_string()), "redis and the commit agree on {field}");
    }

    // Redis loses the last write of each mark (the lost second).
    for (field, offset) in &expected {
        let () = redis::cmd("HSET").arg(&keys.applied).arg(field).arg(offset - 1).query_async(&mut conn).await.unwrap();
    }
    let stock_before = common::get_i64(&mut conn, &keys.stock).await;

    // The store: the next batch is answered STALE and nothing is written.
    let store = common::store().await;
    let next = common::new_entry_id();
    let refs = [stock_processor::EntryRef {
        entry_id: &next,
        user_id: "u3",
        accepted_at_ms: schemas::now_millis(),
        ticket: 0,
        hole: false,
    }];
    let answer = store.decide_marked(&event_id, &refs, &Marks { expected: expected.clone(), new: vec![] }).await;
    assert!(matches!(answer, Err(StoreError::Stale { .. })), "{answer:?}");
    assert!(!common::hgetall(&mut conn, &keys.decisions).await.contains_key(&next));

    // The handler: it does not decide on that Redis. Until the event is
    // rebuilt from the log it fails the batch (retried by the loop); once
    // rebuilt, the marks are back and the decision is made on the log's state.
    // The stage's own Redis user (least privilege): what the rebuild runs may
    // not need more (it once used MULTI, which the stock user may not run).
    let stage_redis = settings.clone().with_local_credentials().redis;
    let stage_conn = platform::redis::connect(&stage_redis).await.expect("the stock user's connection");
    let stage_store = StockStore::new(stage_conn.clone());
    let handler = StockHandler::new(stage_store, codec.clone(), topics.clone(), group.clone()).with_stale_guard(
        MarkReader::new(&testkit::kafka_admin(&kafka), &group).expect("mark reader"),
        Rebuilder::new(&testkit::kafka_admin(&kafka), &group, codec.clone(), stage_conn).expect("rebuilder"),
    );
    let (partition, _) = sent[0];
    let at = committed.committed_offset(MarkKind::Survey, partition).expect("committed");
    let payload = codec
        .encode(&topics.survey_submitted, &entry(&event_id, &next, "u3", schemas::now_millis()))
        .await
        .expect("encode");
    let context = RecordContext::new_root("corr-next", None);
    let message = OwnedMessage::new(
        Some(payload),
        Some(b"u3".to_vec()),
        topics.survey_submitted.clone(),
        Timestamp::NotAvailable,
        partition,
        at,
        Some(context.to_headers()),
    );
    let batch = [Record { message, context }];
    let mut decided = 0;
    for _ in 0..2 {
        match handler.handle(&batch).await {
            Err(error) => {
                assert!(error.chain().to_string().contains("rebuild"), "{}", error.chain());
                assert!(
                    !common::hgetall(&mut conn, &keys.decisions).await.contains_key(&next),
                    "decided on a stale redis"
                );
                assert_eq!(common::get_i64(&mut conn, &keys.stock).await, stock_before);
            }
            Ok(outcome) => {
                // Rebuilt: every committed mark is back before the decision.
                let applied = common::hgetall(&mut conn, &keys.applied).await;
                for (field, offset) in &expected {
                    let have: i64 = applied.get(field).and_then(|v| v.parse().ok()).unwrap_or(0);
                    assert!(have >= *offset, "{field}: {have} < {offset} after the rebuild");
                }
                assert_eq!(outcome.produce.len(), 1);
                decided += 1;
            }
        }
    }
    assert!(decided > 0, "the event was never rebuilt and decided on");

    env.delete_topics().await;
}
