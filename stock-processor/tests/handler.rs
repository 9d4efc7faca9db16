//! The batch handler on hand-made records (real Redis and registry, no
//! Kafka): dead letters, batch order, correlation, and the same answers when
//! an aborted batch runs again.

mod common;

use std::time::Duration;

use common::EventSetup;
use platform::event_keys::EventKeys;
use platform::kafka::{BatchHandler, Record, RecordContext};
use platform::settings::RegistrySettings;
use rdkafka::message::{Message, OwnedMessage, Timestamp};
use schemas::{ClientInfo, Codec, Outcome, StockDecision, StockRelease, SurveySubmitted, Topics};
use stock_processor::StockHandler;

struct Batch {
    topics: Topics,
    codec: Codec,
    records: Vec<Record>,
    /// When ingest accepted the batch's entries.
    accepted_at: i64,
}

/// The codec, with the topics' schemas registered first as `firstcome schemas
/// register` does (services and their codecs only look schemas up).
async fn registered_codec(topics: &Topics) -> Codec {
    let registry = RegistrySettings::default();
    let admin = schemas::RegistryAdmin::new(&registry.url, Duration::from_secs(30)).expect("registry admin");
    admin.register_all(topics).await.expect("schemas registered");
    registry.codec().expect("codec")
}

impl Batch {
    fn new(topics: Topics, codec: Codec) -> Self {
        Self { topics, codec, records: Vec::new(), accepted_at: schemas::now_millis() }
    }

    fn push(&mut self, topic: &str, key: &str, payload: Vec<u8>, correlation_id: &str) {
        self.push_to(topic, 0, key, payload, correlation_id);
    }

    /// A record of `partition`, at the next offset of that partition in this batch.
    fn push_to(&mut self, topic: &str, partition: i32, key: &str, payload: Vec<u8>, correlation_id: &str) {
        let context = RecordContext::new_root(correlation_id, None);
        let offset = self.records.iter().filter(|r| r.message.partition() == partition).count() as i64;
        let message = OwnedMessage::new(
            Some(payload),
            Some(key.as_bytes().to_vec()),
            topic.to_string(),
            Timestamp::NotAvailable,
            partition,
            offset,
            Some(context.to_headers()),
        );
        self.records.push(Record { message, context });
    }

    async fn entry(&mut self, event_id: &str, user_id: &str) -> String {
        let entry_id = common::new_entry_id();
        self.entry_with(event_id, &entry_id, user_id).await;
        entry_id
    }

    /// An entry with exactly these ids (possibly malformed ones).
    async fn entry_with(&mut self, event_id: &str, entry_id: &str, user_id: &str) {
        self.entry_on(0, event_id, entry_id, user_id, self.accepted_at).await;
    }

    /// An entry on `partition`, accepted at `accepted_at`.
    async fn entry_on(&mut self, partition: i32, event_id: &str, entry_id: &str, user_id: &str, accepted_at: i64) {
        let entry = SurveySubmitted {
            event_id: event_id.into(),
            entry_id: entry_id.into(),
            user_id: user_id.into(),
            answers: vec![],
            submitted_at: accepted_at - 1,
            accepted_at,
            client: ClientInfo { channel: "web".into(), user_agent: None },
            ticket: 0,
        };
        let payload = self.codec.encode(&self.topics.survey_submitted, &entry).await.expect("encode");
        let topic = self.topics.survey_submitted.clone();
        self.push_to(&topic, partition, user_id, payload, &format!("corr-{entry_id}"));
    }
}

fn handler(topics: &Topics, codec: Codec, store: stock_processor::StockStore) -> StockHandler {
    StockHandler::new(store, codec, topics.clone(), "stock-test".into())
}

#[tokio::test]
async fn a_batch_run_twice_gives_the_same_decisions_and_dead_letters() {
    let topics = Topics::with_prefix(&format!("t-{}.", uuid::Uuid::new_v4()));
    let codec = registered_codec(&topics).await;
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
    let at = batch.accepted_at;
    assert_eq!(
        decided,
        vec![
            (first.clone(), Outcome::Won, Some(1), at),
            (second.clone(), Outcome::SoldOut, None, at),
            (third.clone(), Outcome::AlreadyWon, Some(1), at),
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
    let codec = registered_codec(&topics).await;
    let event_id = common::new_event_id();
    let mut batch = Batch::new(topics.clone(), codec);
    batch.entry(&event_id, "u1").await;

    // Nothing listens on port 9: the schema lookup cannot be done.
    let away = Codec::new("http://127.0.0.1:9/apis/ccompat/v7", Duration::from_millis(500)).expect("codec");
    let handler = handler(&topics, away, common::store().await);
    let result = handler.handle(&batch.records).await;
    assert!(result.is_err(), "expected a retriable failure, got {result:?}");
}

async fn decisions(codec: &Codec, outcome: &platform::kafka::BatchOutcome) -> Vec<StockDecision> {
    let mut out = Vec::new();
    for record in &outcome.produce {
        out.push(codec.decode(Some(&record.payload)).await.expect("decodes"));
    }
    out
}

#[tokio::test]
async fn entries_accepted_before_close_but_consumed_after_it_are_decided() {
    // The stage was down across close_at: the backlog ingest accepted in time
    // gets real answers, not CLOSED.
    let topics = Topics::with_prefix(&format!("t-{}.", uuid::Uuid::new_v4()));
    let codec = registered_codec(&topics).await;
    let mut conn = common::redis().await;
    let now = common::redis_now(&mut conn).await;
    let event_id = common::new_event_id();
    let eligible = vec!["u1".to_string(), "u2".to_string()];
    let close_at = now - 60_000;
    EventSetup {
        event_id: &event_id,
        for_sale: 1,
        eligible: &eligible,
        open_at_ms: close_at - 60_000,
        close_at_ms: close_at,
    }
    .create(&mut conn)
    .await;
    let handler = handler(&topics, codec.clone(), common::store().await);

    let mut batch = Batch::new(topics.clone(), codec.clone());
    batch.accepted_at = close_at - 1;
    let first = batch.entry(&event_id, "u1").await;
    let second = batch.entry(&event_id, "u2").await;
    let outcome = handler.handle(&batch.records).await.expect("batch handled");
    let decided = decisions(&codec, &outcome).await;
    let answers: Vec<(String, Outcome, Option<i32>)> =
        decided.iter().map(|d| (d.entry_id.clone(), d.outcome, d.unit_no)).collect();
    assert_eq!(answers, vec![(first, Outcome::Won, Some(1)), (second, Outcome::SoldOut, None)]);
    for decision in &decided {
        assert_eq!(decision.accepted_at, close_at - 1);
        assert!(decision.decided_at >= now, "decided_at is Redis' clock at decision time");
    }
}

#[tokio::test]
async fn ids_the_shared_identity_check_refuses_are_dead_lettered() {
    let topics = Topics::with_prefix(&format!("t-{}.", uuid::Uuid::new_v4()));
    let codec = registered_codec(&topics).await;
    let mut conn = common::redis().await;
    let event_id = common::new_event_id();
    let eligible = vec!["u1".to_string(), "u 1".to_string(), "u|1".to_string()];
    EventSetup::open_now(&event_id, 5, &eligible).create(&mut conn).await;
    let handler = handler(&topics, codec.clone(), common::store().await);

    let mut batch = Batch::new(topics.clone(), codec.clone());
    let upper = common::new_entry_id().to_uppercase();
    batch.entry_with(&event_id, &upper, "u1").await; // 0: non-canonical UUID
    batch.entry_with(&event_id, &common::new_entry_id(), "u 1").await; // 1: white space
    batch.entry_with(&event_id, &common::new_entry_id(), "u|1").await; // 2: the mark separator
    batch.entry_with(&format!("{{{event_id}}}"), &common::new_entry_id(), "u1").await; // 3: braces
    batch.entry_with(&event_id, &common::new_entry_id().replace('-', ""), "u1").await; // 4: unhyphenated
    let good = batch.entry(&event_id, "u1").await; // 5: fine

    let outcome = handler.handle(&batch.records).await.expect("batch handled");
    let mut dead: Vec<usize> = outcome.dead_letters.iter().map(|d| d.index).collect();
    dead.sort();
    assert_eq!(dead, vec![0, 1, 2, 3, 4], "{:?}", outcome.dead_letters);
    let decided = decisions(&codec, &outcome).await;
    assert_eq!(decided.len(), 1);
    assert_eq!((decided[0].entry_id.as_str(), decided[0].outcome), (good.as_str(), Outcome::Won));
    // Nothing refused reached Redis.
    assert_eq!(common::get_i64(&mut conn, &EventKeys::new(&event_id).stock).await, Some(4));
}

impl Batch {
    /// A release of `unit_no` won by `entry_id` of `user_id`.
    async fn release(&mut self, event_id: &str, entry_id: &str, user_id: &str, unit_no: i32) {
        let release = StockRelease {
            event_id: event_id.into(),
            entry_id: entry_id.into(),
            user_id: user_id.into(),
            unit_no,
            reason: "provider refused the phone number".into(),
            released_at: self.accepted_at,
        };
        let payload = self.codec.encode(&self.topics.stock_released, &release).await.expect("encode release");
        let topic = self.topics.stock_released.clone();
        self.push(&topic, user_id, payload, &format!("corr-release-{entry_id}"));
    }
}

#[tokio::test]
async fn a_release_emits_a_won_decision_for_the_next_in_line_again_on_a_rerun() {
    let topics = Topics::with_prefix(&format!("t-{}.", uuid::Uuid::new_v4()));
    let codec = registered_codec(&topics).await;
    let mut conn = common::redis().await;
    let event_id = common::new_event_id();
    let eligible: Vec<String> = ["w", "late", "early"].iter().map(|m| m.to_string()).collect();
    EventSetup::open_now(&event_id, 1, &eligible).create(&mut conn).await;
    let handler = handler(&topics, codec.clone(), common::store().await);
    let now = common::redis_now(&mut conn).await;

    let mut first = Batch::new(topics.clone(), codec.clone());
    first.accepted_at = now - 3_000;
    let won = first.entry(&event_id, "w").await;
    first.accepted_at = now - 1_000;
    let late = first.entry(&event_id, "late").await;
    first.accepted_at = now - 2_000;
    let early = first.entry(&event_id, "early").await;
    let decided = decisions(&codec, &handler.handle(&first.records).await.expect("first batch")).await;
    let outcomes: Vec<Outcome> = decided.iter().map(|d| d.outcome).collect();
    assert_eq!(outcomes, vec![Outcome::Won, Outcome::SoldOut, Outcome::SoldOut]);
    assert_eq!(decided[0].entry_id, won);

    // w's gift failed: the release hands a unit (a new number) to `early`
    // (accepted before `late`: ticketed first by the stage, as the records
    // carry none).
    let mut second = Batch::new(topics.clone(), codec.clone());
    second.release(&event_id, &won, "w", 1).await;
    let outcome = handler.handle(&second.records).await.expect("release batch");
    assert!(outcome.dead_letters.is_empty(), "{:?}", outcome.dead_letters);
    let promoted = decisions(&codec, &outcome).await;
    assert_eq!(promoted.len(), 1);
    let decision = &promoted[0];
    assert_eq!((decision.entry_id.as_str(), decision.user_id.as_str()), (early.as_str(), "early"));
    assert_eq!((decision.outcome, decision.unit_no, decision.ticket), (Outcome::Won, Some(2), 2));
    assert_eq!(decision.accepted_at, now - 2_000, "accepted_at of the promoted entry");
    assert!(decision.decided_at >= now);
    assert_eq!(outcome.produce[0].key, "early");
    assert_eq!(outcome.produce[0].context.correlation_id, format!("corr-release-{won}"), "caused by the release");

    // The transaction aborted: the release runs again and announces the same win, nobody else's.
    let again = decisions(&codec, &handler.handle(&second.records).await.expect("release batch again")).await;
    assert_eq!(again, promoted);
    assert_eq!(common::get_i64(&mut conn, &EventKeys::new(&event_id).stock).await, Some(0));
    let hgetall = common::hgetall(&mut conn, &EventKeys::new(&event_id).decisions).await;
    assert_eq!(hgetall.get(&late).map(String::as_str), Some("SOLD_OUT|"));
}

#[tokio::test]
async fn every_partition_of_a_batch_commits_its_marks_as_metadata() {
    let topics = Topics::with_prefix(&format!("t-{}.", uuid::Uuid::new_v4()));
    let codec = registered_codec(&topics).await;
    let mut conn = common::redis().await;
    let event_id = common::new_event_id();
    EventSetup::open_now(&event_id, 3, &["u1".to_string(), "u2".to_string()]).create(&mut conn).await;
    let handler = handler(&topics, codec.clone(), common::store().await);

    // Offsets 0..=2 of partition 0: two entries and a poison record.
    let mut batch = Batch::new(topics.clone(), codec.clone());
    batch.entry(&event_id, "u1").await;
    batch.entry(&event_id, "u2").await;
    batch.push(&topics.survey_submitted, "u8", b"\x01junk".to_vec(), "corr-poison");
    let outcome = handler.handle(&batch.records).await.expect("batch handled");
    let metadata = outcome.offset_metadata.get(&(topics.survey_submitted.clone(), 0)).expect("partition 0 metadata");
    let marks = stock_processor::marks::PartitionMarks::decode(metadata).expect("readable marks");
    assert_eq!(marks.events, vec![(event_id.clone(), 2)], "1 + the highest offset of the event's records");
    let applied = common::hgetall(&mut conn, &EventKeys::new(&event_id).applied).await;
    assert_eq!(applied.get("s:0").map(String::as_str), Some("2"), "the script raised the same mark");
}

/// First come first served across partitions: a batch concatenates partitions as
/// fetched, and the entry ingest accepted first gets the last unit even when its
/// partition comes second; the decisions still leave in batch order.
#[tokio::test]
async fn the_last_unit_goes_to_the_earliest_accepted_entry_of_the_batch() {
    let topics = Topics::with_prefix(&format!("t-{}.", uuid::Uuid::new_v4()));
    let codec = registered_codec(&topics).await;
    let mut conn = common::redis().await;
    let event_id = common::new_event_id();
    let members: Vec<String> = ["late", "early", "middle"].map(String::from).to_vec();
    EventSetup::open_now(&event_id, 1, &members).create(&mut conn).await;
    let handler = handler(&topics, codec.clone(), common::store().await);

    let now = schemas::now_millis();
    let mut batch = Batch::new(topics.clone(), codec.clone());
    // Partition 0 was fetched first, but its entries came later.
    let late = common::new_entry_id();
    let middle = common::new_entry_id();
    let early = common::new_entry_id();
    batch.entry_on(0, &event_id, &late, "late", now - 100).await;
    batch.entry_on(0, &event_id, &middle, "middle", now - 200).await;
    batch.entry_on(1, &event_id, &early, "early", now - 300).await;
    let outcome = handler.handle(&batch.records).await.expect("batch handled");
    let decided = decisions(&codec, &outcome).await;
    let order: Vec<(&str, Outcome)> = decided.iter().map(|d| (d.entry_id.as_str(), d.outcome)).collect();
    assert_eq!(
        order,
        vec![(late.as_str(), Outcome::SoldOut), (middle.as_str(), Outcome::SoldOut), (early.as_str(), Outcome::Won)],
        "the earliest accepted entry wins; decisions leave in batch order"
    );
}
