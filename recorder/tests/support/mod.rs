#![allow(dead_code)] // each test binary uses a part of it

//! Test support: a [`TestStack`] per test (its own topic prefix, database
//! and group), producers of the three input events, and readers of what the
//! recorder wrote (rows, ledger, movements, dead letters, committed offsets).

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::Pool;
use platform::kafka::admin::{create_topics, pipeline_topics, Layout};
use platform::kafka::{EventProducer, OutRecord, RecordContext};
use platform::settings::{DatabaseSettings, HttpSettings, KafkaSettings, RegistrySettings};
use platform::CancellationToken;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use recorder::{Application, Settings};
use schemas::{ClientInfo, DispatchStatus, GiftDispatch, Outcome, StockDecision, SurveyAnswer, SurveySubmitted, Topics};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub const PARTITIONS: i32 = 3;
pub const WAIT: Duration = Duration::from_secs(60);

/// Everything one test owns.
pub struct TestStack {
    pub settings: Settings,
    pub pool: Pool,
    pub producer: EventProducer,
}

impl TestStack {
    /// Fresh topics (3 partitions), a fresh migrated database.
    pub async fn new() -> Self {
        let kafka = KafkaSettings {
            topic_prefix: format!("t-{}.", Uuid::new_v4()),
            // Small batches: records of one entry land in different batches.
            batch_max_records: 7,
            ..Default::default()
        };
        let layout = Layout { partitions: PARTITIONS, ..Default::default() };
        create_topics(&kafka, &pipeline_topics(&kafka.topics(), layout)).await.expect("create topics");

        let name = format!("t_{}", Uuid::new_v4().simple());
        let server = DatabaseSettings::default();
        platform::db::create_database(&server, &name).await.expect("create database");
        let database = server.with_database(&name);
        let pool = platform::db::pool(&database).expect("pool");
        platform::db::migrate(&pool).await.expect("migrate");

        let registry = RegistrySettings::default();
        let producer = EventProducer::new(&kafka, registry.codec().expect("codec"), "recorder-test").expect("producer");
        let settings = Settings {
            kafka,
            registry,
            database,
            http: HttpSettings::on_port(0),
            ..Default::default()
        };
        Self { settings, pool, producer }
    }

    pub fn topics(&self) -> Topics {
        self.settings.kafka.topics()
    }

    /// An `events` row and its ledger (total 10, safety 0).
    pub async fn create_event(&self, event_id: &str) {
        let client = self.pool.get().await.expect("connection");
        client
            .execute(
                "INSERT INTO events (event_id, name, product_id, total_stock, safety_stock, open_at, close_at)
                 VALUES ($1, 'coffee rush', 'p-1', 10, 0, now() - interval '1 hour', now() + interval '1 hour')",
                &[&event_id],
            )
            .await
            .expect("insert event");
        client
            .execute("INSERT INTO stock_ledger (event_id, total, safety_stock) VALUES ($1, 10, 0)", &[&event_id])
            .await
            .expect("insert ledger");
    }

    pub async fn start(&self) -> (u16, CancellationToken, JoinHandle<Result<(), recorder::Error>>) {
        let application = Application::build(self.settings.clone()).await.expect("build");
        let port = application.ops_port();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(application.run_until_stopped(shutdown.clone()));
        (port, shutdown, handle)
    }

    pub async fn send(&self, records: &[Produce]) {
        for record in records {
            let context = RecordContext::new_root(Uuid::new_v4().to_string(), None);
            let result = match record {
                Produce::Entry(e) => self.producer.publish(e, context).await,
                Produce::Decision(d) => self.producer.publish(d, context).await,
                Produce::Dispatch(d) => self.producer.publish(d, context).await,
                Produce::Raw { topic, payload } => {
                    let raw = OutRecord { topic: topic.clone(), key: "poison".into(), payload: payload.clone(), context };
                    self.producer.send(&raw).await
                }
            };
            result.expect("produce");
        }
    }

    /// Waits until the group's committed offsets reach the end of every
    /// partition of the three input topics.
    pub async fn wait_until_committed(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let lag = self.lag().await;
            if lag.is_empty() {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "offsets not committed to the end: {lag:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Partitions whose committed offset is short of the end: (topic, partition) → (committed, end).
    pub async fn lag(&self) -> HashMap<(String, i32), (Offset, i64)> {
        let group = self.settings.kafka.group(recorder::GROUP);
        let brokers = self.settings.kafka.brokers.clone();
        let topics = self.topics();
        let inputs = [topics.survey_submitted, topics.stock_decided, topics.gift_dispatched];
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .create()
                .expect("offset reader");
            let timeout = Duration::from_secs(5);
            let mut wanted = TopicPartitionList::new();
            let mut ends = HashMap::new();
            for topic in &inputs {
                for partition in 0..PARTITIONS {
                    let (_, high) = consumer.fetch_watermarks(topic, partition, timeout).expect("watermarks");
                    ends.insert((topic.clone(), partition), high);
                    wanted.add_partition(topic, partition);
                }
            }
            let committed = consumer.committed_offsets(wanted, timeout).expect("committed offsets");
            let mut lag = HashMap::new();
            for element in committed.elements() {
                let key = (element.topic().to_string(), element.partition());
                let end = ends[&key];
                let done = match element.offset() {
                    Offset::Offset(n) => n >= end,
                    _ => end == 0,
                };
                if !done {
                    lag.insert(key, (element.offset(), end));
                }
            }
            lag
        })
        .await
        .expect("offset reader task")
    }

    /// Every record of `topic` (all partitions), read from the beginning.
    pub async fn read_all(&self, topic: String) -> Vec<rdkafka::message::OwnedMessage> {
        let brokers = self.settings.kafka.brokers.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", format!("reader-{}", Uuid::new_v4()))
                .set("enable.auto.commit", "false")
                .create()
                .expect("reader");
            let timeout = Duration::from_secs(5);
            let mut assignment = TopicPartitionList::new();
            let mut expected = 0;
            let metadata = consumer.fetch_metadata(Some(&topic), timeout).expect("metadata");
            for partition in metadata.topics()[0].partitions() {
                let (low, high) = consumer.fetch_watermarks(&topic, partition.id(), timeout).expect("watermarks");
                expected += high - low;
                assignment.add_partition_offset(&topic, partition.id(), Offset::Beginning).expect("assign");
            }
            consumer.assign(&assignment).expect("assign");
            let mut out = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while (out.len() as i64) < expected && std::time::Instant::now() < deadline {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                    out.push(message.detach());
                }
            }
            out
        })
        .await
        .expect("reader task")
    }
}

#[derive(Clone)]
pub enum Produce {
    Entry(SurveySubmitted),
    Decision(StockDecision),
    Dispatch(GiftDispatch),
    Raw { topic: String, payload: Vec<u8> },
}

/// One member's entry in the test: ids and the records about it.
pub struct Member {
    pub event_id: String,
    pub entry_id: Uuid,
    pub user_id: String,
}

impl Member {
    pub fn new(event_id: &str, name: &str) -> Self {
        Self { event_id: event_id.into(), entry_id: Uuid::new_v4(), user_id: format!("{name}-{}", Uuid::new_v4()) }
    }

    pub fn entry(&self) -> Produce {
        Produce::Entry(SurveySubmitted {
            event_id: self.event_id.clone(),
            entry_id: self.entry_id.to_string(),
            user_id: self.user_id.clone(),
            answers: vec![
                SurveyAnswer { question: "taste".into(), answer: "5".into() },
                SurveyAnswer { question: "again".into(), answer: "yes".into() },
            ],
            submitted_at: 1_700_000_000_000,
            accepted_at: 1_700_000_000_010,
            client: ClientInfo { channel: "web".into(), user_agent: None },
        })
    }

    pub fn decision(&self, outcome: Outcome, unit_no: Option<i32>) -> Produce {
        Produce::Decision(StockDecision {
            event_id: self.event_id.clone(),
            entry_id: self.entry_id.to_string(),
            user_id: self.user_id.clone(),
            outcome,
            unit_no,
            decided_at: 1_700_000_000_020,
            accepted_at: 1_700_000_000_010,
        })
    }

    pub fn dispatch(&self, status: DispatchStatus) -> Produce {
        Produce::Dispatch(GiftDispatch {
            event_id: self.event_id.clone(),
            entry_id: self.entry_id.to_string(),
            user_id: self.user_id.clone(),
            status,
            provider_ref: (status == DispatchStatus::Sent).then(|| format!("gift-{}", self.entry_id)),
            attempts: 1,
            reason: (status == DispatchStatus::Failed).then(|| "phone unreachable".to_string()),
            dispatched_at: 1_700_000_000_030,
        })
    }
}

/// Each record twice: the duplicates a redelivery makes.
pub fn twice(records: Vec<Produce>) -> Vec<Produce> {
    records.into_iter().flat_map(|r| [r.clone(), r]).collect()
}

pub struct Row {
    pub status: String,
    pub submitted: bool,
    pub outcome: Option<String>,
    pub unit_no: Option<i32>,
    pub dispatch_status: Option<String>,
    pub answers: Option<serde_json::Value>,
}

pub async fn rows(pool: &Pool) -> HashMap<Uuid, Row> {
    let client = pool.get().await.expect("connection");
    client
        .query(
            "SELECT entry_id, status, submitted_at IS NOT NULL, outcome, unit_no, dispatch_status, answers FROM event_entries",
            &[],
        )
        .await
        .expect("select entries")
        .into_iter()
        .map(|r| {
            (
                r.get(0),
                Row {
                    status: r.get(1),
                    submitted: r.get(2),
                    outcome: r.get(3),
                    unit_no: r.get(4),
                    dispatch_status: r.get(5),
                    answers: r.get(6),
                },
            )
        })
        .collect()
}

pub async fn ledger(pool: &Pool, event_id: &str) -> (i32, i32) {
    let client = pool.get().await.expect("connection");
    let row = client
        .query_one("SELECT issued, returned FROM stock_ledger WHERE event_id = $1", &[&event_id])
        .await
        .expect("ledger row");
    (row.get(0), row.get(1))
}

pub async fn movements(pool: &Pool) -> HashMap<(Uuid, String), (String, Option<i32>)> {
    let client = pool.get().await.expect("connection");
    client
        .query("SELECT entry_id, kind, event_id, unit_no FROM stock_movements", &[])
        .await
        .expect("movements")
        .into_iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect()
}


/// The ops server's `/metrics` text.
pub async fn metrics_text(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}

/// Waits until `/metrics` shows that the group retried a batch.
pub async fn wait_for_retries(port: u16, group: &str) {
    let needle = format!("firstcome_batch_retries_total{{group=\"{group}\"}}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !metrics_text(port).await.contains(&needle) {
        assert!(tokio::time::Instant::now() < deadline, "no retried batch for {group}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
