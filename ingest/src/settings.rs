//! The ingest service's settings: the shared pieces from `platform`, plus
//! member authentication, request limits and the event-state cache timings.
//!
//! Loaded with `platform::settings::load` (defaults → `FIRSTCOME_CONFIG` file →
//! `FIRSTCOME_…__…` env vars); the defaults run against the local stack.

use std::time::Duration;

use platform::settings::{
    DatabaseSettings, HttpSettings, KafkaSettings, RedisSettings, RegistrySettings, SettingsError,
    TelemetrySettings,
};
use secrecy::SecretString;
use serde::Deserialize;

/// The API port ingest listens on by default.
pub const DEFAULT_PORT: u16 = 8080;

/// Everything `ingest` needs to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The API listener (also serves `/healthz` and `/metrics`).
    pub http: HttpSettings,
    pub kafka: KafkaSettings,
    pub registry: RegistrySettings,
    /// Event state, eligibility and the first-entry marks.
    pub redis: RedisSettings,
    /// Entry status lookups (`event_entries`, written by the recorder).
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
    pub auth: AuthSettings,
    pub limits: Limits,
    /// Every known event's state is re-read from Redis this often, a safety
    /// net behind the pub/sub notifications (a missed message heals this fast).
    pub state_refresh_ms: u64,
    /// A pending first-entry mark older than this is resumed by the member's
    /// retry (same entry id, produced again). `None`: the Kafka delivery
    /// timeout + 1 s, so the request that set the mark has surely finished.
    pub resume_after_ms: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on_port(DEFAULT_PORT),
            kafka: KafkaSettings::default(),
            registry: RegistrySettings::default(),
            redis: RedisSettings::default(),
            database: DatabaseSettings::default(),
            telemetry: TelemetrySettings::default(),
            auth: AuthSettings::default(),
            limits: Limits::default(),
            state_refresh_ms: 1_000,
            resume_after_ms: None,
        }
    }
}

/// How long the publish of one entry may take in total (registry encode +
/// broker acknowledgement) before the member gets a 503.
pub(crate) const PUBLISH_SLACK: Duration = Duration::from_millis(500);

impl Settings {
    pub fn state_refresh(&self) -> Duration {
        Duration::from_millis(self.state_refresh_ms)
    }

    /// The age after which a pending mark is resumed.
    pub fn resume_after(&self) -> Duration {
        Duration::from_millis(self.resume_after_ms.unwrap_or(self.kafka.delivery_timeout_ms + 1_000))
    }

    /// The deadline of one publish, after which the member is answered 503.
    pub fn publish_deadline(&self) -> Duration {
        self.kafka.delivery_timeout() + PUBLISH_SLACK
    }

    /// Cross-field rules, checked before anything starts.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.kafka.validate()?;
        if self.state_refresh_ms == 0 {
            return Err(SettingsError::Invalid("state_refresh_ms must be > 0".into()));
        }
        // A resume must never overlap the publish of the request that set the
        // mark, or two requests would be in flight for one entry.
        if self.resume_after() <= self.publish_deadline() {
            return Err(SettingsError::Invalid(format!(
                "resume_after_ms ({} ms) must exceed kafka.delivery_timeout_ms + {} ms",
                self.resume_after().as_millis(),
                PUBLISH_SLACK.as_millis()
            )));
        }
        if self.auth.issuer.trim().is_empty() {
            return Err(SettingsError::Invalid("auth.issuer is empty".into()));
        }
        self.limits.validate()
    }
}

/// Member bearer tokens (HS256 JWTs).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// The shared HMAC secret; the shop's login service signs with it too.
    pub token_secret: SecretString,
    /// The `iss` claim every token must carry.
    pub issuer: String,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            token_secret: SecretString::from(crate::auth::DEV_SECRET),
            issuer: crate::auth::DEFAULT_ISSUER.into(),
        }
    }
}

/// Bounds on what one entry request may carry.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Larger bodies are refused with 413 before they are parsed.
    pub max_body_bytes: usize,
    /// Most answers one entry may carry.
    pub max_answers: usize,
    /// Longest answer (and question id), in characters.
    pub max_answer_chars: usize,
    /// Most entry requests in flight on this instance; more are answered 503
    /// `overloaded` (Retry-After: 1) at once. Each may wait up to the publish
    /// deadline for Kafka, so this bounds memory when the broker is slow.
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 16_384, max_answers: 32, max_answer_chars: 500, max_in_flight: 2_048 }
    }
}

impl Limits {
    fn validate(&self) -> Result<(), SettingsError> {
        if self.max_body_bytes == 0 || self.max_answers == 0 || self.max_answer_chars == 0 || self.max_in_flight == 0
        {
            return Err(SettingsError::Invalid("every limits.* must be > 0".into()));
        }
        // A semaphore holds the slots; more than it can count would panic at start.
        if self.max_in_flight > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(SettingsError::Invalid("limits.max_in_flight is too large".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_listen_on_8080() {
        let settings = Settings::default();
        assert!(settings.validate().is_ok());
        assert_eq!(settings.http.port, 8080);
    }

    #[test]
    fn resume_defaults_to_the_delivery_timeout_plus_a_second() {
        let mut settings = Settings::default();
        settings.kafka.delivery_timeout_ms = 2_000;
        assert_eq!(settings.resume_after(), Duration::from_millis(3_000));
    }

    #[test]
    fn no_room_in_flight_is_refused() {
        let mut settings = Settings::default();
        assert_eq!(settings.limits.max_in_flight, 2_048);
        settings.limits.max_in_flight = 0;
        assert!(settings.validate().is_err());
    }

    #[test]
    fn a_resume_window_inside_the_publish_deadline_is_refused() {
        let settings = Settings { resume_after_ms: Some(1_000), ..Default::default() };
        assert!(settings.validate().is_err());
    }
}
