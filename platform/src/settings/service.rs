//! What every service's settings have in common: an environment, an identity,
//! and sections holding credentials, filled in and checked once for all.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{DatabaseSettings, Environment, KafkaSettings, Principal, RedisSettings, ReplicaSettings, SettingsError};

/// A service's settings. Each service says once who it is and which of its
/// sections hold a credential; filling in the local stack's credentials and
/// refusing the stack's passwords outside local are written here only.
///
/// The sections stay top-level fields of each service's struct rather than
/// one struct flattened in (`#[serde(flatten)]`): a flattened struct hides
/// the keys no field reads from `serde_ignored`, which the compose test
/// uses to catch a variable no service reads.
pub trait ServiceSettings: Serialize + DeserializeOwned + Default + Clone {
    /// Who the service is on the stack.
    const PRINCIPAL: Principal;

    /// `local` or `production` (`FIRSTCOME_ENVIRONMENT`).
    fn environment(&self) -> Environment;

    /// The service's sections that hold a credential.
    fn credentials(&mut self) -> Credentials<'_>;

    /// These settings with the local stack's credentials of
    /// [`PRINCIPAL`](Self::PRINCIPAL) wherever none is configured (local
    /// only; outside local they are returned as they are).
    fn with_local_credentials(mut self) -> Self {
        let environment = self.environment();
        let principal = Self::PRINCIPAL;
        let sections = self.credentials();
        if let Some(kafka) = sections.kafka {
            *kafka = kafka.for_principal(environment, principal);
        }
        if let Some(redis) = sections.redis {
            *redis = redis.for_principal(environment, principal);
        }
        if let Some(database) = sections.database {
            *database = database.for_principal(environment, principal);
        }
        self
    }

    /// Outside local: no section holds one of the stack's passwords, and the
    /// database names its role. Checked in the order Kafka, Redis, database,
    /// replica.
    fn check_credentials(&self) -> Result<(), SettingsError> {
        let environment = self.environment();
        // A copy, as `credentials` lends its sections mutably; this runs once, at start.
        let mut copy = self.clone();
        let sections = copy.credentials();
        if let Some(kafka) = sections.kafka {
            environment.check_kafka("kafka", kafka)?;
        }
        if let Some(redis) = sections.redis {
            environment.check_redis("redis", redis)?;
        }
        if let Some(database) = sections.database {
            environment.check_database("database", database)?;
        }
        if let Some(replica) = sections.replica {
            environment.check_database_url("replica.url", &replica.url)?;
            replica.tls.check(environment, "replica")?;
        }
        self.check_listeners(super::layers::environment_is_explicit())
    }

    /// Every HTTP listener (each section with a `host` and a `port`: `http`,
    /// ingest's `ops`, any added later) keeps to
    /// [`Environment::check_listener`]; in the default local environment a
    /// line says so at start. `explicit`: the environment was configured.
    fn check_listeners(&self, explicit: bool) -> Result<(), SettingsError> {
        let environment = self.environment();
        let sections =
            serde_json::to_value(self).map_err(|e| SettingsError::Invalid(format!("settings as JSON: {e}")))?;
        let listeners = sections.as_object().into_iter().flatten().filter_map(|(name, section)| {
            let host = section.get("host")?.as_str()?;
            section.get("port")?.as_u64().map(|_| (name, host))
        });
        for (name, host) in listeners {
            environment.check_listener(explicit, name, host)?;
        }
        if environment.is_local() && !explicit {
            tracing::warn!(
                "local environment: development secrets accepted, loopback only \
                 (set FIRSTCOME_ENVIRONMENT=production for a deployment)"
            );
        }
        Ok(())
    }
}

/// The sections of a service's settings that hold a credential (`None`: the
/// service has no such section).
#[derive(Default)]
pub struct Credentials<'a> {
    /// Logs in as the principal's SCRAM user.
    pub kafka: Option<&'a mut KafkaSettings>,
    /// Logs in as the principal's ACL user.
    pub redis: Option<&'a mut RedisSettings>,
    /// Logs in as the principal's role.
    pub database: Option<&'a mut DatabaseSettings>,
    /// The shop's member replica: its URL carries its own reader, checked
    /// but never filled in.
    pub replica: Option<&'a mut ReplicaSettings>,
}
