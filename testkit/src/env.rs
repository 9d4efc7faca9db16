//! [`TestEnv`]: one test's slice of the shared stack.

use std::time::Duration;

use deadpool_postgres::Pool;
use platform::kafka::admin::{create_topics, pipeline_topics, Layout};
use platform::settings::{DatabaseSettings, KafkaSettings, RedisSettings, RegistrySettings};
use rdkafka::message::OwnedMessage;
use redis::aio::ConnectionManager;
use schemas::{Codec, Event, RegistryAdmin, Topics};
use uuid::Uuid;

use crate::kafka::{self, CommittedReader, Lag};

/// Partitions of every event topic a [`TestEnv`] creates (unless told):
/// enough to spread keys, few enough to create fast.
pub const PARTITIONS: i32 = 3;

/// Connections per pool: a test opens several pools against one shared
/// server (its own, and one per service it runs), and tests run in parallel.
const MAX_CONNECTIONS: usize = 8;

/// One test's slice of the real stack. Nothing is shared with another test:
/// topics and consumer groups carry [`prefix`](Self::prefix), the database
/// is new; Redis is shared, so a test keeps its keys apart by using fresh
/// event ids.
///
/// The settings are plain values: change them (say
/// `env.kafka.batch_max_records`) before handing them to a service.
pub struct TestEnv {
    /// Unique per test (hex); every name below is derived from it.
    pub id: String,
    /// `t-<12 hex>.`: the topics' and consumer groups' prefix.
    pub prefix: String,
    pub kafka: KafkaSettings,
    pub registry: RegistrySettings,
    /// The test's own database, migrated (unless built without one).
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pool: Option<Pool>,
}

/// How a [`TestEnv`] is built: [`TestEnv::new`] takes the defaults.
#[derive(Debug, Clone)]
pub struct TestEnvBuilder {
    partitions: i32,
    database: bool,
    register_schemas: bool,
}

impl Default for TestEnvBuilder {
    fn default() -> Self {
        Self { partitions: PARTITIONS, database: true, register_schemas: true }
    }
}

impl TestEnvBuilder {
    /// Partitions of the event topics (dead-letter topics get one).
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions;
        self
    }

    /// No database: for tests of Kafka and Redis only.
    pub fn without_database(mut self) -> Self {
        self.database = false;
        self
    }

    /// Leave the schemas unregistered (the producers' codec registers a
    /// schema on first use; `firstcome schemas register` sets compatibility).
    pub fn without_schemas(mut self) -> Self {
        self.register_schemas = false;
        self
    }

    /// Creates the topics, registers the schemas, creates and migrates the
    /// database. Panics when the stack is not up: tests cannot run without it.
    pub async fn build(self) -> TestEnv {
        let id = Uuid::new_v4().simple().to_string();
        let prefix = format!("t-{}.", &id[..12]);
        let kafka = KafkaSettings { topic_prefix: prefix.clone(), ..Default::default() };
        let registry = RegistrySettings::default();

        let layout = Layout { partitions: self.partitions, dlq_partitions: 1, replication: 1 };
        create_topics(&kafka, &pipeline_topics(&kafka.topics(), layout))
            .await
            .unwrap_or_else(|e| panic!("topics {prefix}* created (is the stack up?): {e}"));
        if self.register_schemas {
            let admin = RegistryAdmin::new(&registry.url, Duration::from_millis(registry.timeout_ms)).expect("registry admin");
            admin.register_all(&kafka.topics()).await.unwrap_or_else(|e| panic!("schemas registered: {e}"));
        }

        let server = DatabaseSettings { max_connections: MAX_CONNECTIONS, ..Default::default() };
        let (database, pool) = if self.database {
            let name = format!("t_{id}");
            platform::db::create_database(&server, &name).await.unwrap_or_else(|e| panic!("database {name} created: {e}"));
            let database = server.with_database(&name);
            let pool = platform::db::pool(&database).expect("pool");
            platform::db::migrate(&pool).await.unwrap_or_else(|e| panic!("database {name} migrated: {e}"));
            (database, Some(pool))
        } else {
            (server, None)
        };
        TestEnv { id, prefix, kafka, registry, database, redis: RedisSettings::default(), pool }
    }
}

impl TestEnv {
    /// Topics with [`PARTITIONS`] partitions, schemas registered, a fresh
    /// migrated database.
    pub async fn new() -> Self {
        Self::builder().build().await
    }

    pub fn builder() -> TestEnvBuilder {
        TestEnvBuilder::default()
    }

    /// The topic names behind this test's prefix.
    pub fn topics(&self) -> Topics {
        self.kafka.topics()
    }

    /// A consumer group name behind this test's prefix.
    pub fn group(&self, name: &str) -> String {
        self.kafka.group(name)
    }

    pub fn codec(&self) -> Codec {
        self.registry.codec().expect("codec")
    }

    /// A pool on the test's database. Panics if built without one.
    pub fn pool(&self) -> &Pool {
        self.pool.as_ref().expect("this TestEnv was built without a database")
    }

    /// A connection to the (shared) Redis.
    pub async fn redis(&self) -> ConnectionManager {
        platform::redis::connect(&self.redis).await.expect("redis is up")
    }

    /// Every committed record of `topic` up to its high watermarks now.
    pub async fn read_log(&self, topic: &str) -> Vec<OwnedMessage> {
        kafka::read_log(&self.kafka, &[topic]).await
    }

    /// Every committed event of `topic` up to its high watermarks now, decoded.
    pub async fn read_events<E: Event>(&self, topic: &str) -> Vec<E> {
        kafka::read_events(&self.kafka, &self.codec(), topic).await
    }

    /// A reader of the committed records of `topics`, from their beginning.
    pub async fn committed_reader(&self, topics: &[&str]) -> CommittedReader {
        CommittedReader::open(&self.kafka, topics).await
    }

    /// Partitions of `topics` that `group` has not committed to the end.
    pub async fn lag(&self, group: &str, topics: &[&str]) -> Lag {
        kafka::group_lag(&self.kafka, group, topics).await.expect("committed offsets and watermarks read")
    }

    /// Whether `group` has committed every partition of `topics` to the end.
    pub async fn caught_up(&self, group: &str, topics: &[&str]) -> bool {
        kafka::caught_up(&self.kafka, group, topics).await
    }
}
