#![allow(dead_code)] // each test binary uses a part of it

//! Test support: a [`TestStack`] per test (a `testkit::TestEnv`: its own
//! topic prefix, database and group; the recorder's settings on it),
//! producers of the three input events, and readers of what the recorder
//! wrote (rows, ledger, movements; dead letters through `testkit`).

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::Pool;
use platform::kafka::{EventProducer, OutRecord, RecordContext};
use platform::settings::HttpSettings;
use platform::CancellationToken;
use recorder::{Application, Settings};
use schemas::{
    ClientInfo, DispatchStatus, GiftDispatch, Outcome, StockDecision, SurveyAnswer, SurveySubmitted, Topics,
};
use testkit::{Lag, TestEnv};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(60);

/// Everything one test owns.
pub struct TestStack {
    pub kit: TestEnv,
    /// The recorder's settings on the test's slice of the stack.
    pub settings: Settings,
    pub pool: Pool,
    pub producer: EventProducer,
}

impl TestStack {
    /// Fresh topics (3 partitions), a fresh migrated database.
    pub async fn new() -> Self {
        let kit = TestEnv::new().await;
        let mut kafka = kit.kafka.clone();
        // Small batches: records of one entry land in different batches.
        kafka.batch_max_records = 7;
        let producer =
            EventProducer::new(&testkit::kafka_admin(&kafka), kit.codec(), "recorder-test").expect("producer");
        let settings = Settings {
            kafka,
            registry: kit.registry.clone(),
            database: kit.database.clone(),
            http: HttpSettings::on_port(0),
            ..Default::default()
        };
        let pool = kit.pool().clone();
        Self { kit, settings, pool, producer }
    }

    /// The recorder's settings as the operator's (`firstcome rebuild projections`
    /// runs as the database owner and the Kafka admin: it creates a schema).
    pub fn admin_settings(&self) -> Settings {
        Settings {
            database: self.kit.admin_database(),
            kafka: testkit::kafka_admin(&self.settings.kafka),
            ..self.settings.clone()
        }
    }

    pub fn topics(&self) -> Topics {
        self.kit.topics()
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
                    let raw = OutRecord {
                        topic: topic.clone(),
                        key: "poison".into(),
                        payload: payload.clone(),
                        context,
                        timestamp_ms: None,
                    };
                    self.producer.send(&raw).await
                }
            };
            result.expect("produce");
        }
    }

    /// Waits until the group's committed offsets reach the end of every
    /// partition of the three input topics.
    pub async fn wait_until_committed(&self) {
        let committed = testkit::wait_until(WAIT, || async { self.lag().await.is_empty() }).await;
        assert!(committed, "offsets not committed to the end: {:?}", self.lag().await);
    }

    /// The recorder group's partitions of the three input topics whose
    /// committed offset is short of the end.
    pub async fn lag(&self) -> Lag {
        let topics = self.topics();
        let inputs = [topics.survey_submitted.as_str(), topics.stock_decided.as_str(), topics.gift_dispatched.as_str()];
        self.kit.lag(&self.settings.kafka.group(recorder::GROUP), &inputs).await
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
    /// When the member submitted: now, since the topics refuse a record
    /// stamped more than a day behind the broker's clock; the entry, its
    /// decision and its dispatch follow 10, 20 and 30 ms after.
    pub submitted_at: i64,
}

impl Member {
    pub fn new(event_id: &str, name: &str) -> Self {
        Self {
            event_id: event_id.into(),
            entry_id: Uuid::new_v4(),
            user_id: format!("{name}-{}", Uuid::new_v4()),
            submitted_at: schemas::now_millis(),
        }
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
            submitted_at: self.submitted_at,
            accepted_at: self.submitted_at + 10,
            client: ClientInfo { channel: "web".into(), user_agent: None },
            ticket: 0,
        })
    }

    pub fn decision(&self, outcome: Outcome, unit_no: Option<i32>) -> Produce {
        Produce::Decision(StockDecision {
            event_id: self.event_id.clone(),
            entry_id: self.entry_id.to_string(),
            user_id: self.user_id.clone(),
            outcome,
            unit_no,
            decided_at: self.submitted_at + 20,
            accepted_at: self.submitted_at + 10,
            ticket: 0,
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
            dispatched_at: self.submitted_at + 30,
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

/// Waits until `/metrics` shows that the group retried a batch.
pub async fn wait_for_retries(port: u16, group: &str) {
    testkit::wait_for(&format!("a retried batch of {group}"), WAIT, || async {
        let text = testkit::metrics_text(port).await;
        testkit::metric(&text, "firstcome_batch_retries_total", &[("group", group)]).is_some_and(|n| n >= 1.0)
    })
    .await;
}
