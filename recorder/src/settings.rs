//! The recorder's settings: defaults run against the local stack; override
//! with `FIRSTCOME_CONFIG` (a TOML file) or `FIRSTCOME_<SECTION>__<FIELD>`.

use platform::settings::{
    Credentials, DatabaseSettings, Environment, HttpSettings, KafkaSettings, Principal, RegistrySettings,
    ServiceSettings, SettingsError, TelemetrySettings,
};
use serde::{Deserialize, Serialize};

/// The recorder's own ops port (`/healthz`, `/metrics`).
pub const DEFAULT_OPS_PORT: u16 = 9102;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `local` (default) or `production`: outside local the stack's
    /// database password is refused (`FIRSTCOME_ENVIRONMENT`).
    pub environment: Environment,
    /// Brokers, topic prefix (also isolates the group id), batch size and wait.
    pub kafka: KafkaSettings,
    /// Where the writers' schemas are looked up by id.
    pub registry: RegistrySettings,
    /// The projection's database; migrated at start when `migrate_on_start`.
    pub database: DatabaseSettings,
    /// The ops listener (port 0 picks a free port: tests).
    pub http: HttpSettings,
    pub telemetry: TelemetrySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            environment: Environment::default(),
            kafka: KafkaSettings::default(),
            registry: RegistrySettings::default(),
            database: DatabaseSettings::default(),
            http: HttpSettings::on_port(DEFAULT_OPS_PORT),
            telemetry: TelemetrySettings::default(),
        }
    }
}

impl Settings {
    /// These settings with the local stack's credentials of
    /// [`Principal::RECORDER`] wherever none is configured (local only).
    pub fn with_local_credentials(self) -> Self {
        ServiceSettings::with_local_credentials(self)
    }

    /// Cross-field rules, checked before anything connects.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.kafka.validate()?;
        self.check_credentials()?;
        if self.database.max_connections == 0 {
            return Err(SettingsError::Invalid("database.max_connections must be > 0".into()));
        }
        // The whole batch waits on one pooled connection: a zero wait would
        // turn every busy moment into a retried batch.
        if self.database.timeout_ms == 0 {
            return Err(SettingsError::Invalid("database.timeout_ms must be > 0".into()));
        }
        Ok(())
    }
}

impl ServiceSettings for Settings {
    const PRINCIPAL: Principal = Principal::RECORDER;

    fn environment(&self) -> Environment {
        self.environment
    }

    fn credentials(&mut self) -> Credentials<'_> {
        Credentials { kafka: Some(&mut self.kafka), database: Some(&mut self.database), ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_variable_changes_one_field() {
        let defaults = Settings::default();
        assert_eq!(defaults.http.port, DEFAULT_OPS_PORT, "a default of the recorder's own");
        platform::settings::check_layering(&defaults).unwrap();
    }

    #[test]
    fn defaults_are_valid_and_serve_ops_on_9102() {
        let settings = Settings::default();
        assert!(settings.validate().is_ok());
        assert_eq!(settings.http.port, DEFAULT_OPS_PORT);
    }

    #[test]
    fn an_empty_pool_is_refused() {
        let mut settings = Settings::default();
        settings.database.max_connections = 0;
        assert!(settings.validate().is_err());
    }
}
