//! Test helpers: an isolated slice of the real stack per test (`testkit`:
//! topic prefix, database), an event of the test's own, the provider
//! simulator in-process on port 0, and readers of what the sender wrote.

#![allow(dead_code)]

pub mod scripted;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::Pool;
use platform::kafka::{EventProducer, RecordContext};
use platform::settings::HttpSettings;
use provider_sim::{Faults, Gift};
use schemas::{ClientInfo, Codec, Event, Outcome, StockDecision, SurveyAnswer, SurveySubmitted, Topics};
use sender::Settings;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const GIFT_PRODUCT: &str = "coffee-test";
pub const GIFT_AMOUNT: i64 = 4_500;

pub struct TestEnv {
    /// The test's slice of the stack (prefix, settings, database).
    pub kit: testkit::TestEnv,
    pub pool: Pool,
    pub topics: Topics,
    pub codec: Codec,
    pub producer: EventProducer,
    /// An event of 100 units, open for an hour.
    pub event_id: String,
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with_partitions(testkit::PARTITIONS).await
    }

    /// The same, with `partitions` partitions per topic (1: every record behind the one before).
    pub async fn with_partitions(partitions: i32) -> Self {
        testkit::init_logs("sender-test");
        let kit = testkit::TestEnv::builder().partitions(partitions).build().await;
        let pool = kit.pool().clone();
        let codec = kit.codec();
        let producer = EventProducer::new(&kit.kafka_admin(), codec.clone(), "sender-test-producer").expect("producer");
        let env = Self { topics: kit.topics(), kit, pool, codec, producer, event_id: String::new() };
        let event_id = env.create_event(100, 0, GIFT_AMOUNT as i32).await;
        Self { event_id, ..env }
    }

    /// Sender settings for this environment, calling the provider at `provider_url`.
    pub fn sender_settings(&self, provider_url: &str) -> Settings {
        let mut settings = Settings {
            kafka: self.kit.kafka.clone(),
            registry: self.kit.registry.clone(),
            database: self.kit.database.clone(),
            replica: self.kit.replica.clone(),
            http: HttpSettings::on_port(0),
            ..Settings::default()
        };
        settings.provider.base_url = provider_url.to_string();
        settings.provider.backoff_base_ms = 20;
        settings.provider.backoff_max_ms = 200;
        settings.relay.poll_ms = 20;
        settings
    }

    /// Whether the sender's group has committed `stock-decided` to the end.
    pub async fn caught_up(&self) -> bool {
        self.kit.caught_up(&self.kit.group(sender::GROUP), &[&self.topics.stock_decided]).await
    }

    /// The member on the shop's member primary, replayed by the replica the sender reads.
    pub async fn seed_member(&self, member_id: &str, phone: &str) {
        self.kit.seed_member(member_id, phone).await;
        self.kit.members_replayed().await;
    }

    pub fn decision(&self, user_id: &str, outcome: Outcome, unit_no: Option<i32>) -> StockDecision {
        StockDecision {
            event_id: self.event_id.clone(),
            entry_id: Uuid::new_v4().to_string(),
            user_id: user_id.to_string(),
            outcome,
            unit_no,
            decided_at: schemas::now_millis(),
            accepted_at: schemas::now_millis(),
            ticket: 0,
        }
    }

    /// Another event with `total` units of which `safety` are kept back, and
    /// its gift's face value (0 makes every gift request malformed: 400).
    pub async fn create_event(&self, total: i32, safety: i32, amount: i32) -> String {
        let event_id = format!("ev-{}", Uuid::new_v4().simple());
        self.pool
            .get()
            .await
            .unwrap()
            .execute(
                "INSERT INTO events (event_id, name, product_id, total_stock, safety_stock, open_at, close_at, gift_product, gift_amount)
                 VALUES ($1, 'sender test', 'survey-product', $2, $3, now(), now() + interval '1 hour', $4, $5)",
                &[&event_id, &total, &safety, &GIFT_PRODUCT, &amount],
            )
            .await
            .expect("event row");
        event_id
    }

    /// A WON decision of `event_id` (forged straight into Kafka by the tests).
    pub fn won_in(&self, event_id: &str, user_id: &str, unit_no: i32) -> StockDecision {
        StockDecision { event_id: event_id.to_string(), ..self.decision(user_id, Outcome::Won, Some(unit_no)) }
    }

    /// `entry_id → (event_id, user_id, status)` of every payout claim.
    pub async fn claims(&self) -> HashMap<String, (String, String, String)> {
        let client = self.pool.get().await.unwrap();
        client
            .query("SELECT entry_id, event_id, user_id, status FROM payout_claims", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get::<_, Uuid>(0).to_string(), (row.get(1), row.get(2), row.get(3))))
            .collect()
    }

    /// `entry_id → reason` of every payout refusal.
    pub async fn refusals(&self) -> HashMap<String, String> {
        let client = self.pool.get().await.unwrap();
        client
            .query("SELECT entry_id, reason FROM payout_refusals", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get::<_, Uuid>(0).to_string(), row.get(1)))
            .collect()
    }

    /// The guard's counter of `event_id`.
    pub async fn payout_claimed(&self, event_id: &str) -> i32 {
        let client = self.pool.get().await.unwrap();
        client.query_one("SELECT payout_claimed FROM events WHERE event_id = $1", &[&event_id]).await.unwrap().get(0)
    }

    /// The decisions dead-lettered to `stock-decided.dlq`, once `count` are there.
    pub async fn dead_decisions(&self, count: usize, timeout: Duration) -> Vec<StockDecision> {
        let mut decisions = Vec::new();
        for payload in self.dead_letters(count, timeout).await {
            decisions.push(self.codec.decode::<StockDecision>(Some(&payload)).await.expect("a dead letter decodes"));
        }
        decisions
    }

    /// The raw payloads in `stock-decided.dlq`, once at least `count` are there.
    pub async fn dead_letters(&self, count: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let topic = Topics::dlq(&self.topics.stock_decided);
        let read = Mutex::new(Vec::new());
        let enough = testkit::wait_until(timeout, || async {
            let payloads: Vec<Vec<u8>> = self
                .kit
                .read_log(&topic)
                .await
                .iter()
                .map(|m| rdkafka::Message::payload(m).map(<[u8]>::to_vec).unwrap_or_default())
                .collect();
            let enough = payloads.len() >= count;
            *read.lock().unwrap() = payloads;
            enough
        })
        .await;
        let payloads = read.into_inner().unwrap();
        assert!(enough, "{} of {count} dead letters in {topic} within {timeout:?}", payloads.len());
        payloads
    }

    /// Publishes `decision`; a WON's entry is recorded first, as the
    /// recorder records it from `survey-submitted` (the sender pays only an
    /// entry it finds there: `sender::entries`).
    pub async fn publish(&self, decision: &StockDecision) {
        if decision.outcome == Outcome::Won {
            self.record_entry(decision).await;
        }
        self.publish_unrecorded(decision).await;
    }

    /// Publishes `decision` without recording its entry (a forged WON, or
    /// one the recorder has not caught up with).
    pub async fn publish_unrecorded(&self, decision: &StockDecision) {
        let context = RecordContext::new_root(format!("corr-{}", decision.entry_id), None);
        self.producer.publish(decision, context).await.expect("decision published");
    }

    /// The entry row the recorder writes for `decision`'s entry from its
    /// `SurveySubmitted` (accepted now, within the event's hours).
    pub async fn record_entry(&self, decision: &StockDecision) {
        let entry_id = Uuid::parse_str(&decision.entry_id).expect("a UUID entry id");
        self.pool
            .get()
            .await
            .unwrap()
            .execute(
                "INSERT INTO event_entries (entry_id, event_id, user_id, answers, client_channel, submitted_at, accepted_at)
                 VALUES ($1, $2, $3, '[]'::jsonb, 'web', now(), now())
                 ON CONFLICT (entry_id) DO NOTHING",
                &[&entry_id, &decision.event_id, &decision.user_id],
            )
            .await
            .expect("entry row");
    }

    /// The entry of `decision` produced to `survey-submitted`, as ingest
    /// produces it (the sender never reads it: it moves the watermarks the
    /// sender measures the recorder against).
    pub async fn submit_entry(&self, decision: &StockDecision) {
        let entry = SurveySubmitted {
            event_id: decision.event_id.clone(),
            entry_id: decision.entry_id.clone(),
            user_id: decision.user_id.clone(),
            answers: vec![SurveyAnswer { question: "taste".into(), answer: "5".into() }],
            submitted_at: decision.accepted_at,
            accepted_at: decision.accepted_at,
            ticket: 0,
            client: ClientInfo { channel: "web".into(), user_agent: None },
        };
        let context = RecordContext::new_root(format!("corr-{}", decision.entry_id), None);
        self.producer.publish(&entry, context).await.expect("entry published");
    }

    /// The recorder's group commits `survey-submitted` up to its high
    /// watermarks now, as the recorder does once it has written what it read.
    pub async fn recorder_commits_to_the_end(&self) {
        use rdkafka::consumer::{CommitMode, Consumer};
        use rdkafka::{Offset, TopicPartitionList};
        let kafka = self.kit.kafka_admin();
        let group = self.kit.group(schemas::topology::group::RECORDING);
        let topic = self.topics.survey_submitted.clone();
        tokio::task::spawn_blocking(move || {
            let reader = platform::kafka::lag::group_reader(&kafka, &group, "sender-test-recorder").expect("reader");
            let marks = platform::kafka::lag::watermarks(&reader, &topic, platform::kafka::lag::CALL_TIMEOUT)
                .expect("watermarks");
            let mut offsets = TopicPartitionList::new();
            for (partition, mark) in marks {
                offsets.add_partition_offset(&topic, partition, Offset::Offset(mark.high)).expect("an offset");
            }
            reader.commit(&offsets, CommitMode::Sync).expect("the recorder's offsets committed");
        })
        .await
        .expect("the commit task");
    }

    /// How many records `stock-decided.dlq` holds now.
    pub async fn dead_letter_count(&self) -> usize {
        self.kit.read_log(&Topics::dlq(&self.topics.stock_decided)).await.len()
    }

    /// A record that is not Avro at all.
    pub async fn publish_poison(&self, key: &str, payload: &[u8]) {
        let record = rdkafka::producer::FutureRecord::to(&self.topics.stock_decided).key(key).payload(payload);
        self.producer.inner().send(record, Duration::from_secs(5)).await.map_err(|(e, _)| e).expect("poison sent");
    }

    /// `(entry_id, status, provider_ref, reason, attempts, unit_no)` of every dispatch row.
    pub async fn dispatch_rows(&self) -> Vec<DispatchRow> {
        let client = self.pool.get().await.unwrap();
        client
            .query("SELECT entry_id, status, provider_ref, reason, attempts, unit_no FROM gift_dispatches", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| DispatchRow {
                entry_id: row.get::<_, Uuid>(0).to_string(),
                status: row.get(1),
                provider_ref: row.get(2),
                reason: row.get(3),
                attempts: row.get(4),
                unit_no: row.get(5),
            })
            .collect()
    }

    /// Rows in the outbox: (all, not yet published).
    pub async fn outbox_counts(&self) -> (i64, i64) {
        let client = self.pool.get().await.unwrap();
        let row = client
            .query_one("SELECT count(*), count(*) FILTER (WHERE published_at IS NULL) FROM outbox", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    /// What the sender published to `topic` (through its outbox), once the
    /// outbox has nothing left to publish and `enough` holds for it. Read to
    /// the topic's watermarks, so a duplicate published is seen too.
    pub async fn read_events<E: Event>(&self, topic: &str, timeout: Duration, enough: impl Fn(&[E]) -> bool) -> Vec<E> {
        let read = Mutex::new(Vec::new());
        let done = testkit::wait_until(timeout, || async {
            // Once nothing is left to publish, the topic holds all the sender wrote so far.
            let drained = self.outbox_counts().await.1 == 0;
            let events = self.kit.read_events::<E>(topic).await;
            let done = drained && enough(&events);
            *read.lock().unwrap() = events;
            done
        })
        .await;
        let events = read.into_inner().unwrap();
        assert!(
            done,
            "{topic} not as expected within {timeout:?} (outbox drained and enough): got {} records",
            events.len()
        );
        events
    }

    /// Everything the sender published to `topic`, once its outbox is drained.
    pub async fn published<E: Event>(&self, topic: &str) -> Vec<E> {
        self.read_events(topic, Duration::from_secs(30), |_| true).await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchRow {
    pub entry_id: String,
    pub status: String,
    pub provider_ref: Option<String>,
    pub reason: Option<String>,
    pub attempts: i32,
    pub unit_no: i32,
}

/// The provider simulator on a random port.
pub struct Sim {
    pub url: String,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), provider_sim::Error>>,
}

impl Sim {
    pub async fn start(faults: Faults, seed: u64) -> Self {
        let app = provider_sim::Application::build(provider_sim::Settings::ephemeral(faults, seed))
            .await
            .expect("simulator starts");
        let url = app.base_url();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self { url, shutdown, handle }
    }

    pub async fn gifts(&self) -> Vec<Gift> {
        #[derive(serde::Deserialize)]
        struct List {
            gifts: Vec<Gift>,
            count: usize,
        }
        let list: List = reqwest::get(format!("{}/v1/gifts", self.url)).await.unwrap().json().await.unwrap();
        assert_eq!(list.count, list.gifts.len());
        list.gifts
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.handle).await;
    }
}

/// The sender running in the background.
pub struct RunningSender {
    pub ops_port: u16,
    /// The consumer group, behind the test's prefix.
    group: String,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), sender::Error>>,
}

impl RunningSender {
    /// The sender's `/metrics` text.
    pub async fn metrics(&self) -> String {
        testkit::metrics_text(self.ops_port).await
    }

    /// How many times the sender's group retried a batch (0 before the first).
    pub async fn batch_retries(&self) -> f64 {
        let text = self.metrics().await;
        testkit::metric(&text, "firstcome_batch_retries_total", &[("group", &self.group)]).unwrap_or(0.0)
    }

    pub async fn start(settings: Settings) -> Self {
        let group = settings.kafka.group(sender::GROUP);
        let app = sender::Application::build(settings).await.expect("sender starts");
        let ops_port = app.ops_port();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self { ops_port, group, shutdown, handle }
    }

    /// Stops it and checks it stopped cleanly within 30 s.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(30), self.handle).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "the sender stops cleanly: {stopped:?}");
    }
}

pub fn ids<'a>(items: impl IntoIterator<Item = &'a str>) -> HashSet<String> {
    items.into_iter().map(str::to_string).collect()
}
