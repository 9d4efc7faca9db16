//! Test helpers against the real local Redis (and Kafka, in the pipeline test).
//! Every test uses a fresh event id, so its Redis keys are its own.

#![allow(dead_code)]

pub mod kafka;

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use platform::event_keys::{write_event, EventKeys, EventMeta, EventStatus, StateChange, STATE_CHANNEL};
use platform::redis::Connection as ConnectionManager;
use stock_processor::StockStore;
use tokio::sync::mpsc;

pub async fn redis() -> ConnectionManager {
    platform::redis::connect(&testkit::redis_admin()).await.expect("local redis is up")
}

pub async fn store() -> StockStore {
    let store = StockStore::new(redis().await);
    store.load().await.expect("scripts load");
    store
}

/// The stage's settings on a test's slice of the stack (ops on a free port).
pub fn stage_settings(env: &testkit::TestEnv) -> stock_processor::Settings {
    stock_processor::Settings {
        kafka: env.kafka.clone(),
        registry: env.registry.clone(),
        redis: env.redis.clone(),
        database: env.database.clone(),
        replica: env.replica.clone(),
        http: platform::settings::HttpSettings::on_port(0),
        ..Default::default()
    }
}

pub fn new_event_id() -> String {
    format!("t-{}", uuid::Uuid::new_v4().simple())
}

pub fn new_entry_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Redis' clock (ms), the one the scripts judge on.
pub async fn redis_now(conn: &mut ConnectionManager) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await.expect("TIME");
    secs * 1000 + micros / 1000
}

/// What `firstcome event create` leaves in Redis (written by platform's
/// `write_event`, the real layout): meta (open now, closing in an hour unless
/// told), the stock counter and the eligible set. Odd states (an operator's
/// close, ...) are set on top afterwards.
pub struct EventSetup<'a> {
    pub event_id: &'a str,
    pub for_sale: i64,
    pub eligible: &'a [String],
    pub open_at_ms: i64,
    pub close_at_ms: i64,
}

impl<'a> EventSetup<'a> {
    pub fn open_now(event_id: &'a str, for_sale: i64, eligible: &'a [String]) -> Self {
        let now = schemas::now_millis();
        Self { event_id, for_sale, eligible, open_at_ms: now - 60_000, close_at_ms: now + 3_600_000 }
    }

    pub async fn create(&self, conn: &mut ConnectionManager) {
        let meta = EventMeta {
            event_id: self.event_id.to_string(),
            open_at_ms: self.open_at_ms,
            close_at_ms: self.close_at_ms,
            for_sale: self.for_sale,
            line_depth: EventMeta::default_line_depth(self.for_sale),
            questions: vec!["q1".into()],
            status: EventStatus::Open,
        };
        let written = write_event(conn, &meta, self.eligible).await.expect("event keys written");
        assert!(written, "event {} already had keys", self.event_id);
    }
}

pub async fn get_i64(conn: &mut ConnectionManager, key: &str) -> Option<i64> {
    redis::cmd("GET").arg(key).query_async(conn).await.expect("GET")
}

pub async fn meta_status(conn: &mut ConnectionManager, event_id: &str) -> Option<String> {
    redis::cmd("HGET").arg(EventKeys::new(event_id).meta).arg("status").query_async(conn).await.expect("HGET")
}

pub async fn hgetall(conn: &mut ConnectionManager, key: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL").arg(key).query_async(conn).await.expect("HGETALL")
}

/// State changes of one event, as ingest would hear them.
pub struct StateChanges {
    rx: mpsc::UnboundedReceiver<StateChange>,
    task: tokio::task::JoinHandle<()>,
}

impl StateChanges {
    /// Subscribes before returning, so nothing published afterwards is missed.
    pub async fn subscribe(event_id: &str) -> Self {
        let client = platform::redis::client(&testkit::redis_admin()).expect("client");
        let mut pubsub = client.get_async_pubsub().await.expect("pubsub connection");
        pubsub.subscribe(STATE_CHANNEL).await.expect("subscribe");
        let (tx, rx) = mpsc::unbounded_channel();
        let event_id = event_id.to_string();
        let task = tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let Ok(payload) = message.get_payload::<String>() else { continue };
                // Other tests publish on the same channel: keep ours only.
                if let Ok(change) = serde_json::from_str::<StateChange>(&payload) {
                    if change.event_id == event_id && tx.send(change).is_err() {
                        return;
                    }
                }
            }
        });
        Self { rx, task }
    }

    /// The next change, or `None` after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<EventStatus> {
        tokio::time::timeout(wait, self.rx.recv()).await.ok().flatten().map(|c| c.status)
    }

    /// Every change that arrives within `wait`.
    pub async fn drain(&mut self, wait: Duration) -> Vec<EventStatus> {
        let mut out = Vec::new();
        while let Some(status) = self.next(wait).await {
            out.push(status);
        }
        out
    }
}

impl Drop for StateChanges {
    fn drop(&mut self) {
        self.task.abort();
    }
}
