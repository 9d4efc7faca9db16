//! The sender's settings. Defaults run against the local stack and the
//! provider simulator on its default port.

use std::time::Duration;

use platform::settings::{
    DatabaseSettings, HttpSettings, KafkaSettings, RegistrySettings, SettingsError, TelemetrySettings,
};
use serde::Deserialize;

/// The ops port (`/healthz`, `/metrics`) when none is configured.
pub const DEFAULT_OPS_PORT: u16 = 9103;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub registry: RegistrySettings,
    pub database: DatabaseSettings,
    /// The ops server: `/healthz` (postgres, kafka, registry) and `/metrics`.
    pub http: HttpSettings,
    pub telemetry: TelemetrySettings,
    pub provider: ProviderSettings,
    pub relay: RelaySettings,
    /// The gift sent when the event row does not name one.
    pub gift: GiftSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            kafka: KafkaSettings::default(),
            registry: RegistrySettings::default(),
            database: DatabaseSettings::default(),
            http: HttpSettings::on_port(DEFAULT_OPS_PORT),
            telemetry: TelemetrySettings::default(),
            provider: ProviderSettings::default(),
            relay: RelaySettings::default(),
            gift: GiftSettings::default(),
        }
    }
}

/// How the sender talks to the gift provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ProviderSettings {
    pub base_url: String,
    /// One HTTP call's deadline. A call that runs out has an UNKNOWN outcome.
    pub timeout_ms: u64,
    /// Provider rounds per gift in one batch run (a round may be a lookup
    /// plus an issue). After them an unresolved gift fails the batch, which
    /// is retried later — never compensated.
    pub max_attempts: u32,
    /// Exponential backoff with full jitter: retry n waits uniform(0, min(max, base·2ⁿ)).
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Calls per second toward the provider (token bucket, burst = one second).
    pub rate_per_sec: u32,
    /// Gifts in flight at once.
    pub concurrency: usize,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8090".into(),
            timeout_ms: 2_000,
            max_attempts: 5,
            backoff_base_ms: 100,
            backoff_max_ms: 2_000,
            rate_per_sec: 500,
            concurrency: 32,
        }
    }
}

impl ProviderSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// The outbox relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RelaySettings {
    /// Pause between polls when the outbox is drained (a commit wakes it sooner).
    pub poll_ms: u64,
    /// Rows published per transaction.
    pub batch: i64,
    /// Published rows are deleted once this old (the outbox is a queue, not a log:
    /// Kafka and gift_dispatches keep the history).
    pub retain_published_secs: i64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self { poll_ms: 50, batch: 200, retain_published_secs: 3_600 }
    }
}

/// The gifticon product and face value.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GiftSettings {
    pub product: String,
    /// KRW.
    pub amount: i64,
}

impl Default for GiftSettings {
    fn default() -> Self {
        Self { product: "coffee-10000".into(), amount: 10_000 }
    }
}

impl Settings {
    /// Cross-field rules, checked before anything connects.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.kafka.validate()?;
        let p = &self.provider;
        let invalid = |m: &str| Err(SettingsError::Invalid(m.to_string()));
        if p.base_url.trim().is_empty() {
            return invalid("provider.base_url is empty");
        }
        if p.timeout_ms == 0 || p.max_attempts == 0 || p.rate_per_sec == 0 || p.concurrency == 0 {
            return invalid("provider.timeout_ms, max_attempts, rate_per_sec and concurrency must be > 0");
        }
        if p.backoff_base_ms > p.backoff_max_ms {
            return invalid("provider.backoff_base_ms must not exceed provider.backoff_max_ms");
        }
        // A batch must finish well inside the consumer's max.poll.interval
        // (300 s): the worst case is every round timing out twice (lookup +
        // issue) and backing off the maximum.
        let worst_ms = u64::from(p.max_attempts) * (2 * p.timeout_ms + p.backoff_max_ms);
        if worst_ms >= 240_000 {
            return invalid("provider.max_attempts × (2 × timeout_ms + backoff_max_ms) must stay under 240 s");
        }
        if self.relay.batch <= 0 || self.relay.poll_ms == 0 {
            return invalid("relay.batch and relay.poll_ms must be > 0");
        }
        if self.gift.product.trim().is_empty() || self.gift.amount <= 0 {
            return invalid("gift.product must be set and gift.amount > 0");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_point_at_the_local_stack() {
        let settings = Settings::default();
        assert!(settings.validate().is_ok());
        assert_eq!(settings.http.port, DEFAULT_OPS_PORT);
        assert_eq!(settings.provider.base_url, "http://127.0.0.1:8090");
    }

    #[test]
    fn a_backoff_base_above_its_max_is_refused() {
        let mut settings = Settings::default();
        settings.provider.backoff_base_ms = 5_000;
        assert!(settings.validate().is_err());
    }

    #[test]
    fn retries_that_could_outlast_the_poll_interval_are_refused() {
        let mut settings = Settings::default();
        settings.provider.max_attempts = 100;
        assert!(settings.validate().is_err());
    }

    #[test]
    fn zero_concurrency_is_refused() {
        let mut settings = Settings::default();
        settings.provider.concurrency = 0;
        assert!(settings.validate().is_err());
    }
}
