//! The CLI's settings: the same sections and environment variables as the
//! services (`FIRSTCOME_KAFKA__BROKERS`, …), so one `stack env` serves all.

use serde::Deserialize;

use platform::settings::{
    DatabaseSettings, KafkaSettings, MemberPrimarySettings, RedisSettings, RegistrySettings, ReplicaSettings,
    TelemetrySettings,
};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CliSettings {
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
}

/// Must match ingest's `auth.token_secret` for minted tokens to verify.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    pub token_secret: secrecy::SecretString,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self { token_secret: secrecy::SecretString::from("firstcome-local-dev-secret") }
    }
}
