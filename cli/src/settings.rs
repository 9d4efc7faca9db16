//! The CLI's settings: the same sections and environment variables as the
//! services (`FIRSTCOME_KAFKA__BROKERS`, …), so one `stack env` serves all.

use serde::Deserialize;

use platform::settings::{
    DatabaseSettings, Environment, KafkaSettings, MemberPrimarySettings, Principal, RedisSettings, RegistrySettings,
    ReplicaSettings, SettingsError, TelemetrySettings, DEV_TOKEN_SECRET,
};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CliSettings {
    /// `local` (default) or `production` (`FIRSTCOME_ENVIRONMENT`): outside
    /// local the development token secret and the stack's passwords are
    /// refused, as by every service.
    pub environment: Environment,
    pub kafka: KafkaSettings,
    pub registry: RegistrySettings,
    pub database: DatabaseSettings,
    /// The shop's member database as firstcome reads it (a streaming replica).
    pub replica: ReplicaSettings,
    /// The shop's member primary: only `members seed` writes there.
    pub member_primary: MemberPrimarySettings,
    pub redis: RedisSettings,
    pub telemetry: TelemetrySettings,
    pub auth: AuthSettings,
    /// Who runs the command, for the audit of operator actions
    /// (`--operator` / `FIRSTCOME_OPERATOR_NAME`; the OS user when unset).
    /// Not read from the settings sources: `FIRSTCOME_OPERATOR__*` is
    /// ingest's operator section.
    #[serde(skip)]
    pub operator: Option<String>,
}

impl CliSettings {
    /// Outside local: no development token secret, no stack password.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.environment.check_token_secret("auth.token_secret", &self.auth.token_secret)?;
        self.environment.check_database("database", &self.database)?;
        self.environment.check_redis("redis", &self.redis)?;
        self.environment.check_kafka("kafka", &self.kafka)?;
        self.environment.check_database_url("replica.url", &self.replica.url)?;
        self.environment.check_database_url("member_primary.url", &self.member_primary.url)
    }

    /// The operator's identity ([`Principal::ADMIN`]: the database owner,
    /// the only role that runs DDL) wherever none is configured (local only).
    pub fn with_local_credentials(mut self) -> Self {
        self.database = self.database.for_principal(self.environment, Principal::ADMIN);
        self.redis = self.redis.for_principal(self.environment, Principal::ADMIN);
        self.kafka = self.kafka.for_principal(self.environment, Principal::ADMIN);
        self
    }
}

/// Must match ingest's `auth.token_secret` for minted tokens to verify.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    pub token_secret: secrecy::SecretString,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self { token_secret: secrecy::SecretString::from(DEV_TOKEN_SECRET) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_accepts_the_development_token_secret() {
        assert!(CliSettings::default().validate().is_ok());
    }

    #[test]
    fn production_refuses_the_development_token_secret() {
        let settings = CliSettings { environment: Environment::Production, ..Default::default() };
        let error = settings.validate().expect_err("the development secret outside local");
        assert!(error.to_string().contains("auth.token_secret"), "{error}");
    }

    #[test]
    fn the_cli_logs_in_as_the_database_owner_locally_only() {
        let local = CliSettings::default().with_local_credentials();
        assert_eq!(local.database.user.as_deref(), Some("firstcome"));
        let production = CliSettings { environment: Environment::Production, ..Default::default() };
        assert_eq!(production.with_local_credentials().database.user, None);
    }
}
