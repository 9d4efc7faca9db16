//! Before a command runs: can it reach what it needs? Each store is asked
//! once, cheaply (a PostgreSQL `SELECT 1`, a Redis `PING`, Kafka's cluster
//! metadata, the registry's subject list), so that an unreachable one is
//! reported by name and address (exit status 3) rather than as whatever
//! error the command meets first, after a part of its work.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use secrecy::ExposeSecret;

use platform::error::BoxError;

use crate::settings::CliSettings;

/// A store or service a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// firstcome's database (`database.url`).
    Database,
    /// The shop's member replica (`replica.url`).
    Replica,
    /// The shop's member primary (`member_primary.url`).
    MemberPrimary,
    Redis,
    Kafka,
    Registry,
}

/// A store or service that did not answer, named by its address.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach {service} at {address}")]
pub struct Unreachable {
    pub service: &'static str,
    pub address: String,
    #[source]
    pub source: BoxError,
}

/// How long a reachability probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Probes every store of `needs`, in order; the first that does not answer is the error.
pub async fn check(settings: &CliSettings, needs: &[Need]) -> Result<(), Unreachable> {
    for need in needs {
        probe(settings, *need).await?;
    }
    Ok(())
}

/// The name and address of a store, for messages.
pub fn describe(settings: &CliSettings, need: Need) -> (&'static str, String) {
    match need {
        Need::Database => ("PostgreSQL (database.url)", audit::postgres_address(&settings.database)),
        Need::Replica => {
            ("the member replica (replica.url)", audit::postgres_url_address(settings.replica.url.expose_secret()))
        }
        Need::MemberPrimary => (
            "the member primary (member_primary.url)",
            audit::postgres_url_address(settings.member_primary.url.expose_secret()),
        ),
        Need::Redis => ("Redis", audit::redis_address(&settings.redis)),
        Need::Kafka => ("Kafka (kafka.brokers)", settings.kafka.brokers.clone()),
        Need::Registry => ("the schema registry (registry.url)", settings.registry.url.clone()),
    }
}

async fn probe(settings: &CliSettings, need: Need) -> Result<(), Unreachable> {
    let result: Result<(), BoxError> = match need {
        Need::Database => postgres(platform::db::pool(&settings.database)).await,
        Need::Replica => postgres(platform::member_db::replica_pool(&settings.replica)).await,
        Need::MemberPrimary => postgres(platform::member_db::primary_pool(&settings.member_primary)).await,
        Need::Redis => redis(settings).await,
        Need::Kafka => kafka(settings).await,
        Need::Registry => registry(settings).await,
    };
    result.map_err(|source| {
        let (service, address) = describe(settings, need);
        Unreachable { service, address, source }
    })
}

async fn postgres(pool: Result<deadpool_postgres::Pool, platform::db::DbError>) -> Result<(), BoxError> {
    let client = pool?.get().await?;
    client.simple_query("SELECT 1").await?;
    Ok(())
}

async fn redis(settings: &CliSettings) -> Result<(), BoxError> {
    let mut connection = tokio::time::timeout(PROBE_TIMEOUT, platform::redis::connect(&settings.redis))
        .await
        .map_err(|_| format!("no answer within {PROBE_TIMEOUT:?}"))??;
    let _: String = redis::cmd("PING").query_async(&mut connection).await?;
    Ok(())
}

async fn kafka(settings: &CliSettings) -> Result<(), BoxError> {
    let kafka = settings.kafka.clone();
    tokio::task::spawn_blocking(move || -> Result<(), BoxError> {
        let consumer: BaseConsumer =
            platform::kafka::client_config(&kafka).set("client.id", "firstcome-probe").create()?;
        consumer.fetch_metadata(None, PROBE_TIMEOUT)?;
        Ok(())
    })
    .await?
}

async fn registry(settings: &CliSettings) -> Result<(), BoxError> {
    let http = reqwest::Client::builder().no_proxy().timeout(PROBE_TIMEOUT).build()?;
    // Any HTTP answer will do: a registry that answers is reachable, whatever it says.
    http.get(format!("{}/subjects", settings.registry.url.trim_end_matches('/'))).send().await?;
    Ok(())
}
