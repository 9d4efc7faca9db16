//! [`TestEnv`]: one test's slice of the shared stack.

use std::time::Duration;

use deadpool_postgres::Pool;
use platform::kafka::admin::{create_topics, pipeline_topics, Layout};
use platform::settings::{
    DatabaseSettings, Environment, KafkaSettings, MemberPrimarySettings, Principal, RedisSettings, RegistrySettings,
    ReplicaSettings,
};
use rdkafka::message::OwnedMessage;
use schemas::{Codec, Event, RegistryAdmin, Topics};
use serde::Deserialize;
use uuid::Uuid;

use crate::kafka::{self, CommittedReader, Lag};

/// Partitions of every event topic a [`TestEnv`] creates (unless told):
/// enough to spread keys, few enough to create fast.
pub const PARTITIONS: i32 = 3;

/// Connections per pool: a test opens several pools against one shared
/// server (its own, and one per service it runs), and tests run in parallel.
const MAX_CONNECTIONS: usize = 8;
/// One registry call's deadline while setting a test up (a service's is 5 s);
/// registration is retried for four times as long.
const REGISTRY_SETUP_TIMEOUT: Duration = Duration::from_secs(15);

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
    /// The test's own database, migrated (unless built without one). It
    /// names no role: each service logs in as its own (`Principal`, granted
    /// by `migrations/grants.sql` like every database), so every test runs
    /// with the services' real privileges. The test's own queries use
    /// [`pool`](Self::pool) or [`admin_database`](Self::admin_database).
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    /// The shop's member database as the services read it: the local
    /// standby, in this test's own schema `t_<id>` (created with the
    /// database; empty without one).
    pub replica: ReplicaSettings,
    /// The member primary, same schema: seed members here (the shop's
    /// side), then [`members_replayed`](TestEnv::members_replayed).
    pub member_primary: MemberPrimarySettings,
    pool: Option<Pool>,
}

/// How a [`TestEnv`] is built: [`TestEnv::new`] takes the defaults.
#[derive(Debug, Clone)]
pub struct TestEnvBuilder {
    partitions: i32,
    database: bool,
}

impl Default for TestEnvBuilder {
    fn default() -> Self {
        Self { partitions: PARTITIONS, database: true }
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

    /// Creates the topics, registers the schemas, creates and migrates the
    /// database. Panics when the stack is not up: tests cannot run without it.
    pub async fn build(self) -> TestEnv {
        let id = Uuid::new_v4().simple().to_string();
        let prefix = format!("t-{}.", &id[..12]);
        let stack = StackSettings::load();
        let kafka = KafkaSettings { topic_prefix: prefix.clone(), ..stack.kafka };
        let registry = stack.registry;

        let layout = Layout { partitions: self.partitions, dlq_partitions: 1, replication: 1 };
        let admin = kafka_admin(&kafka);
        create_topics(&admin, &pipeline_topics(&kafka.topics(), layout))
            .await
            .unwrap_or_else(|e| panic!("topics {prefix}* created (is the stack up?): {e}"));
        // Each service may do on this test's topics what it may do on the real ones.
        let acls = platform::kafka::acl::pipeline_acls(&prefix);
        platform::kafka::acl::create_acls(&admin, &acls)
            .await
            .unwrap_or_else(|e| panic!("ACLs of {prefix}* created: {e}"));
        platform::kafka::acl::wait_until_described(&admin, &acls, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("ACLs of {prefix}* in effect: {e}"));
        // As `firstcome schemas register` does: every subject with its compatibility rule.
        // A generous deadline and retries while the registry is merely slow or
        // unreachable: on a cold two-core machine under a full test run its
        // answers can take longer than a service's request timeout. Retrying is
        // safe (registering the same schema again returns its id).
        let admin = RegistryAdmin::new(&registry.url, REGISTRY_SETUP_TIMEOUT).expect("registry admin");
        let last_error = std::sync::Mutex::new(String::new());
        let (admin, topics, last) = (&admin, &kafka.topics(), &last_error);
        let registered =
            platform::wait::poll_until(REGISTRY_SETUP_TIMEOUT * 4, Duration::from_secs(1), || async move {
                match admin.register_all(topics).await {
                    Ok(_) => true,
                    Err(error @ schemas::CodecError::Unavailable(_)) => {
                        *last.lock().unwrap_or_else(|e| e.into_inner()) = error.to_string();
                        false
                    }
                    Err(error) => panic!("schemas registered: {error}"),
                }
            })
            .await;
        assert!(registered, "schemas registered: {}", last_error.lock().unwrap_or_else(|e| e.into_inner()));

        let server = DatabaseSettings { max_connections: MAX_CONNECTIONS, ..stack.database }.without_credentials();
        let admin = server.for_principal(Environment::Local, Principal::ADMIN);
        let (database, pool) = if self.database {
            let name = format!("t_{id}");
            platform::db::create_database(&admin, &name)
                .await
                .unwrap_or_else(|e| panic!("database {name} created: {e}"));
            let database = server.with_database(&name);
            // Migrated as the owner, which applies the same grants as everywhere.
            let pool = platform::db::pool(&admin.with_database(&name)).expect("pool");
            platform::db::migrate(&pool).await.unwrap_or_else(|e| panic!("database {name} migrated: {e}"));
            (database, Some(pool))
        } else {
            (server, None)
        };
        let schema = if self.database { format!("t_{id}") } else { String::new() };
        let replica = ReplicaSettings { schema: schema.clone(), ..stack.replica };
        let member_primary = MemberPrimarySettings { schema, ..stack.member_primary };
        if self.database {
            let primary = platform::member_db::primary_pool(&member_primary).expect("member primary pool");
            platform::member_db::prepare(&primary, &member_primary.schema).await.unwrap_or_else(|e| {
                panic!("member schema t_{id} created on the member primary (is the stack up?): {e}")
            });
        }
        TestEnv { id, prefix, kafka, registry, database, redis: stack.redis, replica, member_primary, pool }
    }
}

/// Where the stack is: the defaults, overridden by the variables `stack/bin/stack env`
/// prints (`FIRSTCOME_KAFKA__BROKERS`, …), so tests follow a stack on moved ports
/// (`FIRSTCOME_STACK_PORT_OFFSET`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StackSettings {
    kafka: KafkaSettings,
    registry: RegistrySettings,
    database: DatabaseSettings,
    redis: RedisSettings,
    replica: ReplicaSettings,
    member_primary: MemberPrimarySettings,
}

/// `kafka` as the Kafka administrator (SCRAM user `admin`, a super user):
/// for a test's own clients (topics, ACLs, readers, records it forges),
/// never for a service, which logs in as its own principal when handed
/// settings that name no user.
pub fn kafka_admin(kafka: &KafkaSettings) -> KafkaSettings {
    kafka.for_principal(Environment::Local, Principal::ADMIN)
}

/// The stack's Kafka (`FIRSTCOME_KAFKA__*`) as the administrator: for tests
/// that need Kafka without a [`TestEnv`].
pub fn stack_kafka_admin() -> KafkaSettings {
    kafka_admin(&StackSettings::load().kafka)
}

/// The stack's Redis (`FIRSTCOME_REDIS__*`) as the administrator: for tests
/// that need Redis without a [`TestEnv`].
pub fn redis_admin() -> RedisSettings {
    StackSettings::load().redis.for_principal(Environment::Local, Principal::ADMIN)
}

impl StackSettings {
    fn load() -> Self {
        platform::settings::load().unwrap_or_else(|e| panic!("the stack's settings (FIRSTCOME_*) read: {e}"))
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

    /// The test's database as its owner ([`Principal::ADMIN`], who migrated
    /// it): for a test's own queries and set-up, never for a service.
    pub fn admin_database(&self) -> DatabaseSettings {
        self.database.for_principal(Environment::Local, Principal::ADMIN)
    }

    /// The stack's Redis as the administrator (ACL user `admin`): for a
    /// test's own set-up and checks, never for a service (which logs in as
    /// its own user when handed [`redis`](Self::redis), which names none).
    pub fn redis_admin(&self) -> RedisSettings {
        self.redis.for_principal(Environment::Local, Principal::ADMIN)
    }

    /// This test's Kafka settings as the administrator ([`kafka_admin`]).
    pub fn kafka_admin(&self) -> KafkaSettings {
        kafka_admin(&self.kafka)
    }

    /// This test's Kafka settings as `principal` (its SCRAM user).
    pub fn kafka_as(&self, principal: Principal) -> KafkaSettings {
        self.kafka.for_principal(Environment::Local, principal)
    }

    /// The test's database as `principal` (its local role and password).
    pub fn database_as(&self, principal: Principal) -> DatabaseSettings {
        self.database.for_principal(Environment::Local, principal)
    }

    /// A pool on the test's database, as its owner. Panics if built without one.
    pub fn pool(&self) -> &Pool {
        self.pool.as_ref().expect("this TestEnv was built without a database")
    }

    /// A pool on the member primary, in this test's schema (the shop's side).
    pub fn member_primary_pool(&self) -> Pool {
        platform::member_db::primary_pool(&self.member_primary).expect("member primary pool")
    }

    /// Inserts (or updates) a member and its phone on the member primary.
    /// Call [`members_replayed`](Self::members_replayed) before the services
    /// are expected to see it.
    pub async fn seed_member(&self, member_id: &str, phone: &str) {
        self.member_primary_pool()
            .get()
            .await
            .expect("member primary")
            .execute(
                "INSERT INTO members (member_id, name, phone) VALUES ($1, $1, $2)
                 ON CONFLICT (member_id) DO UPDATE SET phone = EXCLUDED.phone",
                &[&member_id, &phone],
            )
            .await
            .expect("member row");
    }

    /// Waits until the member replica has replayed every write made so far
    /// on the member primary.
    pub async fn members_replayed(&self) {
        let replica = platform::member_db::replica_pool(&self.replica).expect("replica pool");
        platform::member_db::wait_replayed(&self.member_primary_pool(), &replica, Duration::from_secs(60))
            .await
            .expect("the member replica replayed the primary's writes");
    }

    /// Deletes this test's topics (best effort: a test that cleans up after
    /// itself on a long-lived broker; `firstcome-lab cleanup-tests` gets the rest).
    pub async fn delete_topics(&self) {
        let specs = pipeline_topics(&self.topics(), Layout::default());
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let _ = platform::kafka::admin::delete_topics(&kafka_admin(&self.kafka), &names).await;
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
