//! The exit status, as docs/operations.md documents it: a script tells a
//! check that failed from a service it could not reach from a command it
//! called wrongly.
//!
//! | status | meaning |
//! | --- | --- |
//! | 0 | done; whatever the command checked holds |
//! | 1 | the command ran and what it checked does not hold (an invariant, a schema's compatibility, the rebuilt projections) |
//! | 2 | bad usage: unknown command or option, an invalid value or setting |
//! | 3 | a store or service could not be reached (the message names it and its address) |
//! | 4 | any other failure (a store answered with an error, a refused request, …) |

use std::process::ExitCode;

use crate::reach::{self, Need, Unreachable};
use crate::settings::CliSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    CheckFailed = 1,
    Usage = 2,
    Unreachable = 3,
    Failed = 4,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// Bad usage found after parsing (a value clap cannot check, invalid settings).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The exit status for `error`, and the message to print: an unreachable
/// store met mid-command is named with its address from `settings`.
pub fn classify(error: &anyhow::Error, settings: &CliSettings) -> (Exit, String) {
    let message = platform::error::chain(error.as_ref()).to_string();
    for cause in error.chain() {
        if cause.downcast_ref::<Usage>().is_some()
            || cause.downcast_ref::<platform::settings::SettingsError>().is_some()
        {
            return (Exit::Usage, message);
        }
        if cause.downcast_ref::<Unreachable>().is_some() {
            return (Exit::Unreachable, message);
        }
        if let Some(audit) = cause.downcast_ref::<audit::AuditError>() {
            if audit.is_unreachable() {
                return (Exit::Unreachable, message);
            }
        }
        if let Some(need) = transport_failure(cause) {
            let (service, address) = reach::describe(settings, need);
            return (Exit::Unreachable, format!("cannot reach {service} at {address}: {message}"));
        }
        if let Some(http) = cause.downcast_ref::<reqwest::Error>() {
            if http.is_connect() || http.is_timeout() {
                let url = http.url().map(|u| u.to_string()).unwrap_or_else(|| "?".into());
                return (Exit::Unreachable, format!("cannot reach {url}: {message}"));
            }
        }
    }
    (Exit::Failed, message)
}

/// The store a connection-level error came from, when it is one.
fn transport_failure(cause: &(dyn std::error::Error + 'static)) -> Option<Need> {
    use rdkafka::types::RDKafkaErrorCode as Code;
    if let Some(pool) = cause.downcast_ref::<deadpool_postgres::PoolError>() {
        return matches!(pool, deadpool_postgres::PoolError::Timeout(_) | deadpool_postgres::PoolError::Backend(_))
            .then_some(Need::Database);
    }
    if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
        let io = std::error::Error::source(pg).is_some_and(|s| s.is::<std::io::Error>());
        return (pg.is_closed() || io).then_some(Need::Database);
    }
    if let Some(redis) = cause.downcast_ref::<redis::RedisError>() {
        return (redis.is_io_error()
            || redis.is_connection_refusal()
            || redis.is_timeout()
            || redis.is_connection_dropped())
        .then_some(Need::Redis);
    }
    if let Some(kafka) = cause.downcast_ref::<rdkafka::error::KafkaError>() {
        let transport = matches!(
            kafka.rdkafka_error_code(),
            Some(Code::BrokerTransportFailure | Code::AllBrokersDown | Code::OperationTimedOut | Code::Resolve)
        );
        return transport.then_some(Need::Kafka);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_store_is_exit_3_and_named_with_its_address() {
        let error = anyhow::Error::new(Unreachable {
            service: "Redis",
            address: "redis://127.0.0.1:6399".into(),
            source: "Connection refused".into(),
        });
        let (exit, message) = classify(&error, &CliSettings::default());
        assert_eq!(exit, Exit::Unreachable);
        assert!(message.contains("redis://127.0.0.1:6399"), "{message}");
    }

    #[test]
    fn a_redis_connection_error_met_mid_command_names_the_configured_redis() {
        let refused = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let error = anyhow::Error::new(refused).context("Failed to read the event");
        let settings = CliSettings::default();
        let (exit, message) = classify(&error, &settings);
        assert_eq!(exit, Exit::Unreachable);
        assert!(message.contains(&settings.redis.url), "{message}");
    }

    #[test]
    fn bad_usage_is_exit_2_and_anything_else_exit_4() {
        assert_eq!(classify(&anyhow::Error::new(Usage("bad time".into())), &CliSettings::default()).0, Exit::Usage);
        assert_eq!(classify(&anyhow::anyhow!("no event ev-1"), &CliSettings::default()).0, Exit::Failed);
    }
}
