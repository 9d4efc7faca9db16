//! Test helpers: every test gets its own topics (random prefix) and database
//! (`testkit`), event id (so fresh Redis keys) and port; the real local stack
//! does the rest.

use std::sync::Mutex;
use std::time::Duration;

use ingest::{Application, Settings};
use platform::event_keys::{write_event, EventKeys, EventMeta, EventStatus};
use platform::kafka::RecordContext;
use platform::redis::Connection as ConnectionManager;
use platform::settings::HttpSettings;
use rdkafka::Message;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const QUESTIONS: [&str; 2] = ["q1", "q2"];
/// Every wait in these tests ends by itself.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Settings isolated for one test (a `testkit::TestEnv`: own topic prefix,
/// topics, database), on port 0.
pub async fn isolated_settings() -> Settings {
    platform::telemetry::init("ingest-tests", &Default::default());
    let env = testkit::TestEnv::new().await;
    let mut settings = Settings {
        http: HttpSettings::on_port(0),
        ops: HttpSettings::on_port(0),
        kafka: env.kafka.clone(),
        registry: env.registry.clone(),
        redis: env.redis.clone(),
        database: env.database.clone(),
        ..Default::default()
    };
    // A short delivery timeout keeps the resume window (timeout + 1 s) short,
    // yet long enough for a first produce to a new topic on a busy machine.
    settings.kafka.delivery_timeout_ms = 2_500;
    // Tests poll as fast as they like; the member rate has its own test.
    settings.limits.member_requests_per_sec = 1_000;
    settings.limits.member_burst = 1_000;
    // Tests refuse on purpose from one address; the address budget has its own tests.
    settings.limits.address_refusal_burst = 100_000;
    settings
}

/// A running ingest; stopped when dropped.
pub struct TestApp {
    pub base_url: String,
    /// The internal ops listener (`/healthz`, `/metrics`).
    pub ops_url: String,
    pub settings: Settings,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), ingest::Error>>>,
}

impl TestApp {
    pub async fn spawn(settings: Settings) -> Self {
        let app = Application::build(settings.clone()).await.expect("ingest builds");
        let base_url = app.base_url();
        let ops_url = app.ops_url();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let http = reqwest::Client::builder().no_proxy().timeout(DEADLINE).build().expect("http client");
        Self { base_url, ops_url, settings, http, shutdown, handle: Some(handle) }
    }

    pub fn token(&self, member: &str) -> String {
        ingest::auth::mint_with_issuer(
            &self.settings.auth.token_secret,
            &self.settings.auth.issuer,
            member,
            Duration::from_secs(600),
        )
        .expect("token minted")
    }

    /// `GET /api/entries/{entry_id}` as `member`.
    pub async fn status_of(&self, entry_id: &str, member: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/api/entries/{entry_id}", self.base_url))
            .bearer_auth(self.token(member))
            .send()
            .await
            .expect("request sent")
    }

    /// The ops listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.ops_url)).send().await.unwrap().text().await.unwrap()
    }

    pub fn entries_url(&self, event_id: &str) -> String {
        format!("{}/api/events/{event_id}/entries", self.base_url)
    }

    /// Submits valid answers for `member`.
    pub async fn enter(&self, event_id: &str, member: &str) -> reqwest::Response {
        self.http
            .post(self.entries_url(event_id))
            .bearer_auth(self.token(member))
            .json(&valid_body())
            .send()
            .await
            .expect("request sent")
    }

    /// Stops the app and waits for it (the shutdown path is part of the test).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            let result = tokio::time::timeout(DEADLINE, handle).await.expect("stops in time");
            result.expect("task joined").expect("run_until_stopped ok");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn valid_body() -> Value {
    json!({ "answers": { "q1": "5", "q2": "more beans" }, "client": { "channel": "web" } })
}

pub async fn redis(settings: &Settings) -> ConnectionManager {
    platform::redis::connect(
        &settings.redis.for_principal(platform::settings::Environment::Local, platform::settings::Principal::ADMIN),
    )
    .await
    .expect("redis")
}

/// What the CLI's `event create` writes: meta, stock, eligibility.
pub struct EventSpec {
    pub open_at_ms: i64,
    pub close_at_ms: i64,
    pub stock: i64,
    pub status: EventStatus,
    pub eligible: Vec<String>,
}

impl EventSpec {
    /// Open since a minute, for an hour, 10 units, `eligible` members.
    pub fn open(eligible: &[&str]) -> Self {
        let now = schemas::now_millis();
        Self {
            open_at_ms: now - 60_000,
            close_at_ms: now + 3_600_000,
            stock: 10,
            status: EventStatus::Open,
            eligible: eligible.iter().map(|m| m.to_string()).collect(),
        }
    }
}

/// Writes a fresh event into Redis with the layout every service shares
/// (`platform::event_keys::write_event`, what `firstcome event create` does);
/// returns its id. A test that needs an odd state sets keys afterwards.
pub async fn create_event(conn: &mut ConnectionManager, spec: EventSpec) -> String {
    let event_id = format!("ev-{}", Uuid::new_v4());
    write_spec(conn, &event_id, spec).await;
    event_id
}

/// Writes `spec` under `event_id` (which may be one ingest must refuse).
pub async fn write_spec(conn: &mut ConnectionManager, event_id: &str, spec: EventSpec) {
    let meta = EventMeta {
        event_id: event_id.to_string(),
        open_at_ms: spec.open_at_ms,
        close_at_ms: spec.close_at_ms,
        for_sale: spec.stock,
        line_depth: EventMeta::default_line_depth(spec.stock),
        questions: QUESTIONS.iter().map(|q| q.to_string()).collect(),
        status: spec.status,
    };
    let written = write_event(conn, &meta, &spec.eligible).await.expect("event written");
    assert!(written, "event {event_id} had keys already");
}

/// The row `firstcome event create` writes into PostgreSQL beside the Redis keys.
pub async fn insert_event_row(settings: &Settings, event_id: &str) {
    let db = platform::db::pool(
        &settings.database.for_principal(platform::settings::Environment::Local, platform::settings::Principal::ADMIN),
    )
    .expect("pool");
    let client = db.get().await.expect("db connection");
    client
        .execute(
            "INSERT INTO events (event_id, name, product_id, total_stock, open_at, close_at, questions, status)
             VALUES ($1, 'test', 'p-1', 10, now() - interval '1 minute', now() + interval '1 hour', '[\"q1\",\"q2\"]', 'open')",
            &[&event_id],
        )
        .await
        .expect("event row");
}

pub async fn entered_mark(conn: &mut ConnectionManager, event_id: &str, member: &str) -> Option<String> {
    redis::cmd("HGET").arg(EventKeys::new(event_id).entered).arg(member).query_async(conn).await.expect("HGET entered")
}

/// Reads `topic` from the beginning until the record of `entry_id` shows up.
pub async fn consume_entry(settings: &Settings, entry_id: &str) -> (schemas::SurveySubmitted, RecordContext) {
    let records = consume_entries(settings, entry_id, 1).await;
    records.into_iter().next().expect("one record")
}

/// The records of `entry_id` in `survey-submitted`, once there are
/// `at_least` (read to the watermarks; or fails after [`DEADLINE`]).
pub async fn consume_entries(
    settings: &Settings,
    entry_id: &str,
    at_least: usize,
) -> Vec<(schemas::SurveySubmitted, RecordContext)> {
    let topic = settings.kafka.topics().survey_submitted;
    let codec = settings.registry.codec().expect("codec");
    let found = Mutex::new(Vec::new());
    let enough = testkit::wait_until(DEADLINE, || async {
        let mut records = Vec::new();
        for message in testkit::read_log(&settings.kafka, &[&topic]).await {
            let event: schemas::SurveySubmitted = codec.decode(message.payload()).await.expect("decodes");
            if event.entry_id == entry_id {
                assert_eq!(message.key(), Some(event.user_id.as_bytes()), "keyed by member");
                // The stock stage merges partitions by record timestamp (FCFS).
                assert_eq!(message.timestamp().to_millis(), Some(event.accepted_at), "stamped with the accept time");
                records.push((event, RecordContext::from_headers(message.headers())));
            }
        }
        let enough = records.len() >= at_least;
        *found.lock().unwrap() = records;
        enough
    })
    .await;
    let found = found.into_inner().unwrap();
    assert!(enough, "{} of {at_least} records of entry {entry_id} in {topic} within {DEADLINE:?}", found.len());
    found
}

pub async fn json_of(response: reqwest::Response) -> Value {
    response.json::<Value>().await.expect("JSON body")
}

/// A token signed with a secret ingest does not know.
pub fn forged_token(member: &str) -> String {
    ingest::auth::mint(&SecretString::from("not-the-secret"), member, Duration::from_secs(600)).expect("token")
}

pub fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}
