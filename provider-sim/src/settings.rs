//! Settings of the simulator: where it listens, which faults it starts with,
//! and the seed of its dice.

use platform::settings::{Environment, HttpSettings, SettingsError, TelemetrySettings};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::faults::Faults;

/// The simulator's port when none is configured.
pub const DEFAULT_PORT: u16 = 8090;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `local` (default) or `production` (`FIRSTCOME_ENVIRONMENT`): outside
    /// local the local API key (public: it is in this repository) and keys
    /// shorter than 32 bytes are refused, as by every service.
    pub environment: Environment,
    /// Listener of the provider API (and its `/healthz`, `/metrics`).
    pub http: HttpSettings,
    /// Faults active from the start; changed at runtime with `PUT /admin/faults`.
    pub faults: Faults,
    /// Seed of the random faults; a fixed seed repeats the same sequence of
    /// dice rolls (tests). `None` picks one at random and logs it.
    pub seed: Option<u64>,
    pub telemetry: TelemetrySettings,
    /// The key callers must send as `X-Api-Key` on issue and lookup (the
    /// sender's `provider.api_key`; the same local default on both sides).
    #[serde(serialize_with = "platform::settings::secret::expose")]
    pub api_key: SecretString,
}

/// The simulator's key on the local stack (the sender's default too).
pub const DEV_API_KEY: &str = "firstcome-local-provider-key";

impl Default for Settings {
    fn default() -> Self {
        Self {
            environment: Environment::default(),
            http: HttpSettings::on_port(DEFAULT_PORT),
            faults: Faults::default(),
            seed: None,
            telemetry: TelemetrySettings::default(),
            api_key: SecretString::from(DEV_API_KEY),
        }
    }
}

impl Settings {
    /// Cross-field rules, checked before the listener is bound.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.faults.validate().map_err(SettingsError::Invalid)?;
        self.environment.check_token_secret("api_key", &self.api_key)?;
        if !self.environment.is_local() && secrecy::ExposeSecret::expose_secret(&self.api_key) == DEV_API_KEY {
            return Err(SettingsError::Invalid("api_key is the local key (environment = production)".into()));
        }
        Ok(())
    }

    /// The simulator on a random port with the given faults and seed (tests, demos).
    pub fn ephemeral(faults: Faults, seed: u64) -> Self {
        Self { http: HttpSettings::on_port(0), faults, seed: Some(seed), ..Self::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_variable_changes_one_field() {
        let defaults = Settings::default();
        assert_eq!(defaults.http.port, DEFAULT_PORT, "a default of the simulator's own");
        platform::settings::check_layering(&defaults).unwrap();
    }

    #[test]
    fn production_refuses_the_local_api_key() {
        assert!(Settings::default().validate().is_ok());
        let mut settings = Settings { environment: Environment::Production, ..Settings::default() };
        let error = settings.validate().expect_err("the local key outside local");
        assert!(error.to_string().contains("api_key"), "{error}");
        settings.api_key = SecretString::from("k".repeat(32));
        assert!(settings.validate().is_ok());
    }
}
