//! Test helpers: an isolated slice of the real stack per test (topic prefix,
//! database, event id), the provider simulator in-process on port 0, and
//! bounded waits.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Pool;
use platform::kafka::admin::{create_topics, pipeline_topics, Layout};
use platform::kafka::{EventProducer, RecordContext};
use platform::settings::{DatabaseSettings, HttpSettings, KafkaSettings, RegistrySettings, TelemetrySettings};
use provider_sim::{Faults, Gift};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use schemas::{Codec, Event, Outcome, StockDecision, Topics};
use sender::Settings;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const PARTITIONS: i32 = 3;
pub const GIFT_PRODUCT: &str = "coffee-test";
pub const GIFT_AMOUNT: i64 = 4_500;

/// Logs only when asked (`TEST_LOG=1`): the fmt layer bypasses test capture.
pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        platform::telemetry::init("sender-test", &TelemetrySettings::default());
    }
}

/// Polls `check` every 100 ms until it is true or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub struct TestEnv {
    pub kafka: KafkaSettings,
    pub database: DatabaseSettings,
    pub pool: Pool,
    pub topics: Topics,
    pub codec: Codec,
    pub producer: EventProducer,
    pub event_id: String,
}

impl TestEnv {
    pub async fn new() -> Self {
        init_logs();
        let prefix = format!("t-{}.", Uuid::new_v4());
        let kafka = KafkaSettings { topic_prefix: prefix, ..KafkaSettings::default() };
        let topics = kafka.topics();
        let layout = Layout { partitions: PARTITIONS, ..Layout::default() };
        create_topics(&kafka, &pipeline_topics(&topics, layout)).await.expect("topics created");

        let name = format!("t_{}", Uuid::new_v4().simple());
        let server = DatabaseSettings::default();
        platform::db::create_database(&server, &name).await.expect("database created");
        let database = server.with_database(&name);
        let pool = platform::db::pool(&database).expect("pool");
        platform::db::migrate(&pool).await.expect("migrated");

        let codec = RegistrySettings::default().codec().expect("codec");
        let producer = EventProducer::new(&kafka, codec.clone(), "sender-test-producer").expect("producer");
        let event_id = format!("ev-{}", Uuid::new_v4().simple());
        pool.get()
            .await
            .unwrap()
            .execute(
                "INSERT INTO events (event_id, name, product_id, total_stock, safety_stock, open_at, close_at, gift_product, gift_amount)
                 VALUES ($1, 'sender test', 'survey-product', 100, 0, now(), now() + interval '1 hour', $2, $3)",
                &[&event_id, &GIFT_PRODUCT, &(GIFT_AMOUNT as i32)],
            )
            .await
            .expect("event row");
        Self { kafka, database, pool, topics, codec, producer, event_id }
    }

    /// Sender settings for this environment, calling the provider at `provider_url`.
    pub fn sender_settings(&self, provider_url: &str) -> Settings {
        let mut settings = Settings {
            kafka: self.kafka.clone(),
            database: self.database.clone(),
            http: HttpSettings::on_port(0),
            ..Settings::default()
        };
        settings.provider.base_url = provider_url.to_string();
        settings.provider.backoff_base_ms = 20;
        settings.provider.backoff_max_ms = 200;
        settings.relay.poll_ms = 20;
        settings
    }

    pub async fn seed_member(&self, member_id: &str, phone: &str) {
        self.pool
            .get()
            .await
            .unwrap()
            .execute("INSERT INTO members (member_id, name, phone) VALUES ($1, $1, $2)", &[&member_id, &phone])
            .await
            .expect("member row");
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
        client
            .query_one("SELECT payout_claimed FROM events WHERE event_id = $1", &[&event_id])
            .await
            .unwrap()
            .get(0)
    }

    /// The decisions dead-lettered to `stock-decided.dlq`, until `count` are read.
    pub async fn dead_decisions(&self, count: usize, timeout: Duration) -> Vec<StockDecision> {
        let mut decisions = Vec::new();
        for payload in self.read_raw(&Topics::dlq(&self.topics.stock_decided), count, timeout).await {
            decisions.push(self.codec.decode::<StockDecision>(Some(&payload)).await.expect("a dead letter decodes"));
        }
        decisions
    }

    pub async fn publish(&self, decision: &StockDecision) {
        let context = RecordContext::new_root(format!("corr-{}", decision.entry_id), None);
        self.producer.publish(decision, context).await.expect("decision published");
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

    pub async fn outbox_counts(&self) -> (i64, i64) {
        let client = self.pool.get().await.unwrap();
        let row = client
            .query_one("SELECT count(*), count(*) FILTER (WHERE published_at IS NULL) FROM outbox", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    /// Reads `topic` from the start until `enough` holds for what was read
    /// (then a short grace for stragglers), or fails after `timeout`.
    pub async fn read_events<E: Event>(&self, topic: &str, timeout: Duration, enough: impl Fn(&[E]) -> bool) -> Vec<E> {
        let consumer = self.reader(topic);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = Vec::new();
        let mut grace: Option<tokio::time::Instant> = None;
        loop {
            let now = tokio::time::Instant::now();
            if grace.is_some_and(|g| now >= g) {
                return events;
            }
            assert!(now < deadline, "timed out reading {topic}: got {} records", events.len());
            if let Ok(Ok(message)) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
                let event: E = self.codec.decode(message.payload()).await.expect("decodes");
                events.push(event);
            }
            if grace.is_none() && enough(&events) {
                grace = Some(tokio::time::Instant::now() + Duration::from_millis(1_000));
            }
        }
    }

    /// Raw payloads of `topic` (dead letters), until `count` are read.
    pub async fn read_raw(&self, topic: &str, count: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let consumer = self.reader(topic);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut payloads = Vec::new();
        while payloads.len() < count {
            assert!(tokio::time::Instant::now() < deadline, "timed out reading {topic}: got {}", payloads.len());
            if let Ok(Ok(message)) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
                payloads.push(message.payload().map(<[u8]>::to_vec).unwrap_or_default());
            }
        }
        payloads
    }

    fn reader(&self, topic: &str) -> StreamConsumer {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka.brokers)
            .set("group.id", self.kafka.group(&format!("reader-{}", Uuid::new_v4().simple())))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        consumer.subscribe(&[topic]).expect("subscribed");
        consumer
    }

    /// Whether `group` has committed every partition of `topic` up to its end.
    pub async fn caught_up(&self, group: &str, topic: &str) -> bool {
        let brokers = self.kafka.brokers.clone();
        let group = group.to_string();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = match ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", &group)
                .create()
            {
                Ok(consumer) => consumer,
                Err(_) => return false,
            };
            let mut partitions = TopicPartitionList::new();
            for p in 0..PARTITIONS {
                partitions.add_partition(&topic, p);
            }
            let Ok(committed) = consumer.committed_offsets(partitions, Duration::from_secs(5)) else { return false };
            (0..PARTITIONS).all(|p| {
                let Ok((_, high)) = consumer.fetch_watermarks(&topic, p, Duration::from_secs(5)) else { return false };
                let done = committed
                    .find_partition(&topic, p)
                    .map(|e| match e.offset() {
                        Offset::Offset(o) => o,
                        _ => 0,
                    })
                    .unwrap_or(0);
                done >= high
            })
        })
        .await
        .unwrap_or(false)
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
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), sender::Error>>,
}

impl RunningSender {
    /// The sender's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.ops_port)).await.unwrap().text().await.unwrap()
    }

    pub async fn start(settings: Settings) -> Self {
        let app = sender::Application::build(settings).await.expect("sender starts");
        let ops_port = app.ops_port();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self { ops_port, shutdown, handle }
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
