//! Test environment: isolated topics, database and settings per test.

use std::time::Duration;

use platform::kafka::admin::{create_topics, pipeline_topics, Layout};
use platform::settings::{
    DatabaseSettings, KafkaSettings, MemberPrimarySettings, RedisSettings, RegistrySettings, ReplicaSettings,
};

use firstcome_cli::CliSettings;

/// One test's slice of the shared stack.
pub struct TestEnv {
    pub prefix: String,
    pub kafka: KafkaSettings,
    pub registry: RegistrySettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    /// The member replica in this test's schema on the member cluster.
    pub replica: ReplicaSettings,
    /// The member primary, same schema (seed here).
    pub member_primary: MemberPrimarySettings,
}

impl TestEnv {
    /// Fresh topics (3 partitions), a fresh migrated database, schemas registered.
    pub async fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("t-{}.", &id[..12]);
        let kafka = KafkaSettings { topic_prefix: prefix.clone(), ..Default::default() };
        let registry = RegistrySettings::default();
        let base_db = DatabaseSettings::default();
        let db_name = format!("t_{}", &id[..16]);
        platform::db::create_database(&base_db, &db_name).await.expect("create test database");
        let database = DatabaseSettings { max_connections: 8, ..base_db.with_database(&db_name) };
        let pool = platform::db::pool(&database).expect("pool");
        platform::db::migrate(&pool).await.expect("migrate");
        let specs = pipeline_topics(&kafka.topics(), Layout { partitions: 3, dlq_partitions: 1, replication: 1 });
        create_topics(&kafka, &specs).await.expect("create topics");
        let schema = format!("t_{}", &id[..16]);
        let replica = ReplicaSettings { schema: schema.clone(), ..Default::default() };
        let member_primary = MemberPrimarySettings { schema, ..Default::default() };
        let primary = platform::member_db::primary_pool(&member_primary).expect("member primary pool");
        platform::member_db::prepare(&primary, &member_primary.schema).await.expect("member schema");
        let env = Self { prefix, kafka, registry, database, redis: RedisSettings::default(), replica, member_primary };
        firstcome_cli::commands::schemas::register(&env.registry, &env.kafka).await.expect("register schemas");
        env
    }

    pub fn cli(&self) -> CliSettings {
        CliSettings {
            kafka: self.kafka.clone(),
            registry: self.registry.clone(),
            database: self.database.clone(),
            replica: self.replica.clone(),
            member_primary: self.member_primary.clone(),
            redis: self.redis.clone(),
            ..Default::default()
        }
    }

    pub fn codec(&self) -> schemas::Codec {
        self.registry.codec().expect("codec")
    }
}

/// Polls `check` every 100 ms until it holds; false after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    firstcome_cli::commands::event::wait_until(timeout, check).await
}
