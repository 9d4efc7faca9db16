//! What can stop a check: a store it cannot reach (named with its address,
//! so an operator knows where to look), or a store that answered something
//! the checks cannot read.

use std::str::FromStr;

use secrecy::ExposeSecret;

use platform::error::BoxError;
use platform::settings::{DatabaseSettings, KafkaSettings, RedisSettings};

/// The stores and services the checks read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Postgres,
    Redis,
    Kafka,
    Registry,
    Provider,
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Store::Postgres => "PostgreSQL",
            Store::Redis => "Redis",
            Store::Kafka => "Kafka",
            Store::Registry => "the schema registry",
            Store::Provider => "the gift provider",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A store did not answer: the checks could not run. Not a verdict.
    #[error("cannot reach {store} at {address}")]
    Unreachable {
        store: Store,
        address: String,
        #[source]
        source: BoxError,
    },
    #[error("no event {0} with a ledger")]
    NoEvent(String),
    #[error("entry {entry_id} has an unknown status {status}")]
    UnknownStatus { entry_id: String, status: String },
    #[error("PostgreSQL query failed")]
    Query(#[from] tokio_postgres::Error),
    #[error("Redis command failed")]
    Redis(#[source] redis::RedisError),
    #[error("Kafka read failed")]
    Kafka(#[source] rdkafka::error::KafkaError),
    #[error("Failed to decode {topic}")]
    Decode {
        topic: String,
        #[source]
        source: schemas::CodecError,
    },
    #[error("the gift provider at {url} answered badly")]
    Provider {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Failed to build an HTTP client")]
    Http(#[source] reqwest::Error),
}

impl AuditError {
    /// Whether a store could not be reached (rather than a check that failed
    /// or an answer that could not be read).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, AuditError::Unreachable { .. })
    }

    pub(crate) fn postgres(settings: &DatabaseSettings, source: impl Into<BoxError>) -> Self {
        AuditError::Unreachable { store: Store::Postgres, address: postgres_address(settings), source: source.into() }
    }

    pub(crate) fn redis(settings: &RedisSettings, source: redis::RedisError) -> Self {
        AuditError::Unreachable { store: Store::Redis, address: redis_address(settings), source: source.into() }
    }

    /// A Redis error met mid-check: unreachable when the connection failed.
    pub(crate) fn redis_call(address: &str, source: redis::RedisError) -> Self {
        if source.is_io_error()
            || source.is_connection_refusal()
            || source.is_timeout()
            || source.is_connection_dropped()
        {
            AuditError::Unreachable { store: Store::Redis, address: address.to_string(), source: source.into() }
        } else {
            AuditError::Redis(source)
        }
    }

    pub(crate) fn kafka(settings: &KafkaSettings, source: rdkafka::error::KafkaError) -> Self {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let transport = matches!(
            source.rdkafka_error_code(),
            Some(Code::BrokerTransportFailure | Code::AllBrokersDown | Code::OperationTimedOut | Code::Resolve)
        ) || matches!(source, rdkafka::error::KafkaError::MetadataFetch(Code::OperationTimedOut));
        if transport {
            AuditError::Unreachable { store: Store::Kafka, address: settings.brokers.clone(), source: source.into() }
        } else {
            AuditError::Kafka(source)
        }
    }

    pub(crate) fn provider(url: &str, source: reqwest::Error) -> Self {
        if source.is_connect() || source.is_timeout() {
            AuditError::Unreachable { store: Store::Provider, address: url.to_string(), source: source.into() }
        } else {
            AuditError::Provider { url: url.to_string(), source }
        }
    }
}

/// Where a PostgreSQL pool connects, without credentials: `host:port/db`.
pub fn postgres_address(settings: &DatabaseSettings) -> String {
    postgres_url_address(settings.url.expose_secret())
}

/// [`postgres_address`] of a connection URL (or key=value string).
pub fn postgres_url_address(url: &str) -> String {
    let Ok(config) = tokio_postgres::Config::from_str(url) else {
        return platform::redact::urls(url);
    };
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let host = match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    format!("{}/{}", hosts.join(","), config.get_dbname().unwrap_or(""))
}

/// Where a Redis connection goes: the Sentinels when configured, else the URL
/// (without credentials).
pub fn redis_address(settings: &RedisSettings) -> String {
    match settings.sentinel_addresses() {
        sentinels if sentinels.is_empty() => platform::redact::urls(&settings.url),
        sentinels => format!("sentinels {} (primary {})", sentinels.join(","), settings.master_name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_address_names_host_port_and_database_without_the_password() {
        let settings = DatabaseSettings {
            url: "postgres://app:s3cret@db.example:6543/firstcome".to_string().into(),
            ..Default::default()
        };
        assert_eq!(postgres_address(&settings), "db.example:6543/firstcome");
    }

    #[test]
    fn a_redis_address_is_the_sentinels_when_there_are_some() {
        let direct = RedisSettings { url: "redis://u:p@cache:6379".into(), ..Default::default() };
        assert_eq!(redis_address(&direct), "redis://***@cache:6379");
        let sentinel = RedisSettings { sentinels: "s1:26379, s2:26379".into(), ..Default::default() };
        assert_eq!(redis_address(&sentinel), "sentinels s1:26379,s2:26379 (primary firstcome)");
    }
}
