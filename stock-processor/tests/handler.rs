//! The batch handler on hand-made records (real Redis and registry, no
//! Kafka): dead letters, batch order, correlation, and the same answers when
//! an aborted batch runs again.

mod common;

use std::time::Duration;

use common::EventSetup;
use platform::event_keys::EventKeys;
use platform::kafka::{BatchHandler, Record, RecordContext};
use platform::settings::RegistrySettings;
use rdkafka::message::{OwnedMessage, Timestamp};
use schemas::{ClientInfo, Codec, Outcome, StockDecision, StockRelease, SurveySubmitted, Topics};
use stock_processor::StockHandler;

struct Batch {
    topics: Topics,
    codec: Codec,
    records: Vec<Record>,
}

impl Batch {
    fn new(topics: Topics, codec: Codec) -> Self {
        Self { topics, codec, records: Vec::new() }
    }

    fn push(&mut self, topic: &str, key: &str, payload: Vec<u8>, correlation_id: &str) {
        let context = RecordContext::new_root(correlation_id, None);
        let offset = self.records.len() as i64;
        let message = OwnedMessage::new(
            Some(payload),
            Some(key.as_bytes().to_vec()),
            topic.to_string(),
            Timestamp::NotAvailable,
            0,
            offset,
            Some(context.to_headers()),
        );
        self.records.push(Record { message, context });
    }

    async fn entry(&mut self, event_id: &str, user_id: &str) -> String {
        let entry_id = common::new_entry_id();
        let entry = SurveySubmitted {
            event_id: event_id.into(),
            entry_id: entry_id.clone(),
            user_id: user_id.into(),
            answers: vec![],
            submitted_at: 1,
            accepted_at: 2,
            client: ClientInfo { channel: "web".into(), user_agent: None },
        };
        let payload = self.codec.encode(&self.topics.survey_submitted, &entry).await.expect("encode");
        let topic = self.topics.survey_submitted.clone();
        self.push(&topic, user_id, payload, &format!("corr-{entry_id}"));
        entry_id
    }
}

fn handler(topics: &Topics, codec: Codec, store: stock_processor::StockStore) -> StockHandler {
    StockHandler::new(store, codec, topics.clone(), "stock-test".into())
}

#[tokio::test]
async fn a_batch_run_twice_gives_the_same_decisions_and_dead_letters() {
    let topics = Topics::with_prefix(&format!("t-{}.", uuid::Uuid::new_v4()));
    let codec = RegistrySettings::default().codec().expect("codec");
    let mut conn = common::redis().await;
    let event_id = common::new_event_id();
    let eligible = vec!["u1".to_string(), "u2".to_string()];
    EventSetup::open_now(&event_id, 1, &eligible).create(&mut conn).await;
    let handler = handler(&topics, codec.clone(), common::store().await);

    let mut batch = Batch::new(topics.clone(), codec.clone());
    let first = batch.entry(&event_id, "u1").await; // 0: WON
    batch.push(&topics.survey_submitted, "u8", b"\x01not avro at all".to_vec(), "corr-poison"); // 1: DLQ
    let second = batch.entry(&event_id, "u2").await; // 2: SOLD_OUT
    let release = StockRelease {
        event_id: common::new_event_id(),
        entry_id: common::new_entry_id(),
        user_id: "u1".into(),
        unit_no: 1,
        reason: "test".into(),
        released_at: 3,
    };
    let payload = codec.encode(&topics.stock_released, &release).await.expect("encode release");
    batch.push(&topics.stock_released, "u1", payload, "corr-release"); // 3: unknown event → DLQ
    let third = batch.entry(&event_id, "u1").await; // 4: ALREADY_WON
    // 5: a valid record of another type on the survey topic → DLQ
    let wrong_type = codec.encode(&topics.stock_released, &release).await.expect("encode");
    batch.push(&topics.survey_submitted, "u1", wrong_type, "corr-wrong-type");

    let decode = |outcome: &platform::kafka::BatchOutcome| {
        let codec = codec.clone();
        let produced = outcome.produce.clone();
        async move {
            let mut out = Vec::new();
            for record in produced {
                let decision: StockDecision = codec.decode(Some(&record.payload)).await.expect("decodes");
                assert_eq!(record.topic, topics_decided(&record.topic));
                assert_eq!(record.key, decision.user_id);
                assert_eq!(record.context.correlation_id, format!("corr-{}", decision.entry_id));
                out.push((decision.entry_id, decision.outcome, decision.unit_no, decision.accepted_at));
            }
            out
        }
    };

    let once = handler.handle(&batch.records).await.expect("batch handled");
    let mut dead: Vec<usize> = once.dead_letters.iter().map(|d| d.index).collect();
    dead.sort();
    assert_eq!(dead, vec![1, 3, 5]);
    let decided = decode(&once).await;
    assert_eq!(
        decided,
        vec![
            (first.clone(), Outcome::Won, Some(1), 2),
            (second.clone(), Outcome::SoldOut, None, 2),
            (third.clone(), Outcome::AlreadyWon, Some(1), 2),
        ]
    );

    // The transaction aborted: the same records come again.
    let twice = handler.handle(&batch.records).await.expect("batch handled again");
    assert_eq!(decode(&twice).await, decided);
    assert_eq!(twice.dead_letters.len(), 3);
    assert_eq!(common::get_i64(&mut conn, &EventKeys::new(&event_id).stock).await, Some(0));
}

fn topics_decided(topic: &str) -> String {
    // Every output goes to the prefixed stock-decided topic.
    assert!(topic.ends_with(Topics::STOCK_DECIDED), "{topic}");
    topic.to_string()
}

#[tokio::test]
async fn a_registry_that_is_away_fails_the_batch_instead_of_dead_lettering() {
    let topics = Topics::with_prefix(&format!("t-{}.", uuid::Uuid::new_v4()));
    let codec = RegistrySettings::default().codec().expect("codec");
    let event_id = common::new_event_id();
    let mut batch = Batch::new(topics.clone(), codec);
    batch.entry(&event_id, "u1").await;

    // Nothing listens on port 9: the schema lookup cannot be done.
    let away = Codec::new("http://127.0.0.1:9/apis/ccompat/v7", Duration::from_millis(500)).expect("codec");
    let handler = handler(&topics, away, common::store().await);
    let result = handler.handle(&batch.records).await;
    assert!(result.is_err(), "expected a retriable failure, got {result:?}");
}
