//! Redis loses an event whole (every key: meta, stock, eligibility, …)
//! while the stage runs. The stage restores it itself — meta and
//! eligibility from PostgreSQL and the member replica, the stock state from
//! the log — and decides on: WON while units remain, the counter right.
//! Before, a loss the committed marks named stalled the event until an
//! operator ran `firstcome rebuild redis`, and one they did not name was
//! decided INELIGIBLE, the accepted members' places lost for good.
//!
//! The real stage (`Application`), Kafka, Redis, PostgreSQL and the member
//! replica of one `TestEnv`; the event is made as `firstcome event create`
//! makes it (the events row, then the Redis keys).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::kafka::{entry, Producer};
use platform::event_keys::{write_event, EventKeys, EventMeta, EventStatus};
use rdkafka::message::Message;
use schemas::{Codec, Outcome, StockDecision};
use stock_processor::Application;
use testkit::CommittedReader;
use testkit::TestEnv;
use tokio_util::sync::CancellationToken;

/// Long enough for a restore and a rebuild (milliseconds) on a loaded
/// machine; a stalled event never gets there.
const DEADLINE: Duration = Duration::from_secs(60);

/// The line's depth `event create` set (`--line-depth`), not the default.
const LINE_DEPTH: i64 = 7;

/// One test's stage, its inputs and its committed decisions.
struct Stage {
    env: TestEnv,
    codec: Codec,
    producer: Producer,
    decisions: CommittedReader,
    product: String,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<Result<(), stock_processor::Error>>,
    ops_port: u16,
}

impl Stage {
    /// The stage running on a fresh `TestEnv`; `eligible` bought the product.
    async fn start(eligible: &[&str]) -> Self {
        let env = TestEnv::builder().build().await;
        let product = format!("product-{}", env.id);
        for member in eligible {
            env.seed_member(member, "010-0000-0000").await;
            env.member_primary_pool()
                .get()
                .await
                .expect("member primary")
                .execute("INSERT INTO purchases (member_id, product_id) VALUES ($1, $2)", &[member, &product])
                .await
                .expect("purchase");
        }
        env.members_replayed().await;
        let settings = common::stage_settings(&env);
        let codec = settings.registry.codec().expect("codec");
        let decisions = env.committed_reader(&[&env.topics().stock_decided]).await;
        let producer = Producer::new(&env.kafka);
        let application = Application::build(settings).await.expect("the stage builds");
        let ops_port = application.ops_port();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(application.run_until_stopped(shutdown.clone()));
        Self { env, codec, producer, decisions, product, shutdown, running, ops_port }
    }

    /// What `firstcome event create` writes: the events row (open), then the
    /// Redis keys with the eligible members read on the replica. The line's
    /// depth is not the default, so a restore that forgets it shows.
    async fn create_event(&self, for_sale: i32) -> String {
        let event_id = common::new_event_id();
        let now = schemas::now_millis();
        let (open_at_ms, close_at_ms) = (now - 60_000, now + 3_600_000);
        self.env
            .pool()
            .get()
            .await
            .expect("database")
            .execute(
                "INSERT INTO events (event_id, name, product_id, total_stock, safety_stock, open_at, close_at, questions, status, line_depth)
                 VALUES ($1, 'lost', $2, $3, 0, to_timestamp($4::bigint / 1000.0), to_timestamp($5::bigint / 1000.0), '[\"q1\"]', 'open', $6)",
                &[&event_id, &self.product, &for_sale, &open_at_ms, &close_at_ms, &(LINE_DEPTH as i32)],
            )
            .await
            .expect("events row");
        let replica = platform::member_db::replica_pool(&self.env.replica).expect("replica pool");
        let eligible = stock_processor::restore::eligible_members(&replica, &self.product).await.expect("eligible");
        let meta = EventMeta {
            event_id: event_id.clone(),
            open_at_ms,
            close_at_ms,
            for_sale: i64::from(for_sale),
            line_depth: LINE_DEPTH,
            questions: vec!["q1".into()],
            status: EventStatus::Open,
        };
        let mut redis = common::redis().await;
        assert!(write_event(&mut redis, &meta, &eligible).await.expect("keys written"));
        event_id
    }

    /// One entry per member, accepted now, in this order.
    async fn enter(&self, event_id: &str, members: &[&str]) -> Vec<String> {
        let topic = self.env.topics().survey_submitted;
        let mut entries = Vec::new();
        for member in members {
            let entry_id = common::new_entry_id();
            let accepted_at = schemas::now_millis();
            let payload =
                self.codec.encode(&topic, &entry(event_id, &entry_id, member, accepted_at)).await.expect("encode");
            self.producer.send_at(&topic, member, &payload, &entry_id, Some(accepted_at)).await;
            entries.push(entry_id);
        }
        entries
    }

    /// The next `count` committed decisions, by entry id.
    async fn decided(&self, count: usize) -> HashMap<String, StockDecision> {
        let mut decided = HashMap::new();
        for message in self.decisions.take(count, DEADLINE).await {
            let decision: StockDecision = self.codec.decode(message.payload()).await.expect("decodes");
            decided.insert(decision.entry_id.clone(), decision);
        }
        decided
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(30), self.running).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "the stage stops cleanly: {stopped:?}");
        self.env.delete_topics().await;
    }
}

async fn delete_every_key(event_id: &str) {
    let mut redis = common::redis().await;
    let keys = EventKeys::new(event_id);
    let () = redis::cmd("DEL").arg(&keys.all()[..]).query_async(&mut redis).await.expect("DEL");
    let left: i64 = redis::cmd("EXISTS").arg(&keys.all()[..]).query_async(&mut redis).await.expect("EXISTS");
    assert_eq!(left, 0, "every key of the event is gone");
}

fn outcomes(decided: &HashMap<String, StockDecision>, entries: &[String]) -> Vec<(Outcome, Option<i32>)> {
    entries.iter().map(|e| decided.get(e).map(|d| (d.outcome, d.unit_no)).expect("decided")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_redis_lost_whole_after_committed_decisions_is_restored_and_decided_on() {
    let stage = Stage::start(&["m1", "m2", "m3", "m4", "m5"]).await;
    let event_id = stage.create_event(4).await;

    // Two winners, decided and committed with the event's marks.
    let first = stage.enter(&event_id, &["m1", "m2"]).await;
    let decided = stage.decided(2).await;
    assert!(outcomes(&decided, &first).iter().all(|(o, _)| *o == Outcome::Won), "{decided:?}");

    // Redis loses the event whole; the committed marks still name it.
    delete_every_key(&event_id).await;

    // Two units are left for three newcomers; m1 comes again.
    let next = stage.enter(&event_id, &["m3", "m4", "m5", "m1"]).await;
    let decided = stage.decided(4).await;
    let answers = outcomes(&decided, &next);
    assert!(!answers.iter().any(|(o, _)| *o == Outcome::Ineligible), "a lost event is not an unknown one: {answers:?}");
    let won: Vec<i32> = answers[..3].iter().filter(|(o, _)| *o == Outcome::Won).filter_map(|(_, unit)| *unit).collect();
    assert_eq!(won.len(), 2, "WON while units remain: {answers:?}");
    assert!(won.iter().all(|unit| *unit > 2), "units 1 and 2 are held (rebuilt from the log): {answers:?}");
    assert_eq!(answers.iter().filter(|(o, _)| *o == Outcome::SoldOut).count(), 1, "{answers:?}");
    assert_eq!(answers[3].0, Outcome::AlreadyWon, "the winners came back from the log: {answers:?}");

    let mut redis = common::redis().await;
    let keys = EventKeys::new(&event_id);
    assert_eq!(common::get_i64(&mut redis, &keys.stock).await, Some(0), "the counter: 4 for sale, 4 held");
    let meta = EventMeta::load(&mut redis, &event_id).await.expect("meta").expect("meta restored");
    // Every unit is held, yet the line still admits: sold out means the
    // tickets reached the units plus the line's depth (prelude.lua).
    assert_eq!((meta.for_sale, meta.status), (4, EventStatus::Open));
    // Admission stops where the operator set it, not at the default's.
    assert_eq!(meta.line_depth, LINE_DEPTH, "the line's depth restored from the events row");
    let ttl: i64 = redis::cmd("PTTL").arg(&keys.meta).query_async(&mut redis).await.expect("PTTL");
    assert!(ttl > 0, "the restored keys expire as event create's do");

    // The restore is counted.
    let metrics = testkit::metrics_text(stage.ops_port).await;
    let restored = testkit::metric(&metrics, "firstcome_stock_events_lost_total", &[("result", "restored")]);
    assert!(restored.is_some_and(|n| n >= 1.0), "{metrics}");

    // The same loss of an event PostgreSQL no longer has: decided as unknown
    // (INELIGIBLE), once, without stalling the partition or looping.
    stage
        .env
        .pool()
        .get()
        .await
        .expect("db")
        .execute("DELETE FROM events WHERE event_id = $1", &[&event_id])
        .await
        .expect("deleted");
    delete_every_key(&event_id).await;
    let late = stage.enter(&event_id, &["m2"]).await;
    let decided = stage.decided(1).await;
    assert_eq!(outcomes(&decided, &late), [(Outcome::Ineligible, None)]);
    let left: i64 = redis::cmd("EXISTS").arg(&keys.all()[..]).query_async(&mut redis).await.expect("EXISTS");
    assert_eq!(left, 0, "nothing written for an unknown event");

    stage.stop().await;
}

/// Redis lost the event before any decision of it was committed: no mark
/// names it, PostgreSQL does. Its entries are not INELIGIBLE; a junk event
/// id (a hostile producer's) still is, with nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_redis_lost_before_any_decision_is_restored_from_postgresql() {
    let stage = Stage::start(&["n1", "n2"]).await;
    let event_id = stage.create_event(1).await;
    delete_every_key(&event_id).await;

    let entries = stage.enter(&event_id, &["n1", "n2"]).await;
    let junk = format!("junk-{}", uuid::Uuid::new_v4().simple());
    let junk_entries = stage.enter(&junk, &["n1", "n1"]).await;
    let decided = stage.decided(4).await;
    assert_eq!(outcomes(&decided, &entries), [(Outcome::Won, Some(1)), (Outcome::SoldOut, None)]);
    assert_eq!(outcomes(&decided, &junk_entries), [(Outcome::Ineligible, None), (Outcome::Ineligible, None)]);

    let mut redis = common::redis().await;
    assert_eq!(common::get_i64(&mut redis, &EventKeys::new(&event_id).stock).await, Some(0));
    let junk_keys = EventKeys::new(&junk);
    let left: i64 = redis::cmd("EXISTS").arg(&junk_keys.all()[..]).query_async(&mut redis).await.expect("EXISTS");
    assert_eq!(left, 0, "nothing written for a junk event");

    stage.stop().await;
}
