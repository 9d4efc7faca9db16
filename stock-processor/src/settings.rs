//! The stock processor's settings: defaults run against the local stack;
//! override with `FIRSTCOME_CONFIG` (TOML) or `FIRSTCOME_<SECTION>__<FIELD>`.

use platform::settings::{
    HttpSettings, KafkaSettings, RedisSettings, RegistrySettings, SettingsError, TelemetrySettings,
};
use serde::Deserialize;

/// The ops port (`/healthz`, `/metrics`) of the stock processor.
pub const DEFAULT_OPS_PORT: u16 = 9101;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub registry: RegistrySettings,
    pub redis: RedisSettings,
    /// The ops listener; port 0 picks a free port (tests).
    pub http: HttpSettings,
    pub telemetry: TelemetrySettings,
    /// Names this instance's transactional producer. Keep it stable across
    /// restarts of one instance (a restarted instance then fences its zombie);
    /// every running instance needs its own. Default: a random UUID per start.
    pub instance_id: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            kafka: KafkaSettings::default(),
            registry: RegistrySettings::default(),
            redis: RedisSettings::default(),
            http: HttpSettings::on_port(DEFAULT_OPS_PORT),
            telemetry: TelemetrySettings::default(),
            instance_id: uuid::Uuid::new_v4().to_string(),
        }
    }
}

impl Settings {
    /// The consumer group: `stock`, behind the topic prefix.
    pub fn group(&self) -> String {
        self.kafka.group("stock")
    }

    /// `firstcome-stock-<topic_prefix><instance_id>`.
    pub fn transactional_id(&self) -> String {
        format!("firstcome-stock-{}{}", self.kafka.topic_prefix, self.instance_id)
    }

    /// Cross-field rules, checked before anything connects.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.kafka.validate()?;
        if self.instance_id.trim().is_empty() {
            return Err(SettingsError::Invalid("instance_id is empty".into()));
        }
        if self.registry.url.trim().is_empty() {
            return Err(SettingsError::Invalid("registry.url is empty".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_ops_on_9101_with_a_random_instance() {
        let a = Settings::default();
        let b = Settings::default();
        assert_eq!(a.http.port, DEFAULT_OPS_PORT);
        assert_ne!(a.instance_id, b.instance_id);
        assert!(a.validate().is_ok());
    }

    #[test]
    fn the_transactional_id_carries_prefix_and_instance() {
        let mut settings = Settings::default();
        settings.kafka.topic_prefix = "t-1.".into();
        settings.instance_id = "i-9".into();
        assert_eq!(settings.transactional_id(), "firstcome-stock-t-1.i-9");
        assert_eq!(settings.group(), "t-1.stock");
    }

    #[test]
    fn an_empty_instance_id_is_refused() {
        let settings = Settings { instance_id: " ".into(), ..Default::default() };
        assert!(settings.validate().is_err());
    }
}
