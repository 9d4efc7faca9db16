//! The sender's settings. Defaults run against the local stack and the
//! provider simulator on its default port.

use std::time::Duration;

use platform::settings::{
    Credentials, DatabaseSettings, Environment, HttpSettings, KafkaSettings, Principal, RegistrySettings,
    ReplicaSettings, ServiceSettings, SettingsError, TelemetrySettings,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The ops port (`/healthz`, `/metrics`) when none is configured.
pub const DEFAULT_OPS_PORT: u16 = 9103;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `local` (default) or `production`: outside local the stack's database
    /// passwords, a plain-http provider and the local provider key are
    /// refused (`FIRSTCOME_ENVIRONMENT`).
    pub environment: Environment,
    pub kafka: KafkaSettings,
    pub registry: RegistrySettings,
    pub database: DatabaseSettings,
    /// The shop's member replica: winners' phones are read there only.
    pub replica: ReplicaSettings,
    /// The ops server: `/healthz` (postgres, kafka, registry) and `/metrics`.
    pub http: HttpSettings,
    pub telemetry: TelemetrySettings,
    pub provider: ProviderSettings,
    pub relay: RelaySettings,
    /// The gift sent when the event row does not name one.
    pub gift: GiftSettings,
    pub dispatch: DispatchSettings,
    /// The retrier of parked gifts.
    pub parked: ParkedSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            environment: Environment::default(),
            kafka: KafkaSettings::default(),
            registry: RegistrySettings::default(),
            database: DatabaseSettings::default(),
            replica: ReplicaSettings::default(),
            http: HttpSettings::on_port(DEFAULT_OPS_PORT),
            telemetry: TelemetrySettings::default(),
            provider: ProviderSettings::default(),
            relay: RelaySettings::default(),
            gift: GiftSettings::default(),
            dispatch: DispatchSettings::default(),
            parked: ParkedSettings::default(),
        }
    }
}

/// How the sender talks to the gift provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Sent as `X-Api-Key` on every call (the provider-sim checks it).
    #[serde(serialize_with = "platform::settings::secret::expose")]
    pub api_key: SecretString,
    /// A provider answer longer than this is not read (a misbehaving or
    /// hostile endpoint cannot make the sender buffer without bound).
    pub max_response_bytes: usize,
}

/// The provider simulator's key on the local stack (public, so refused
/// outside local).
pub const DEV_PROVIDER_API_KEY: &str = "firstcome-local-provider-key";

impl Default for ProviderSettings {
    fn default() -> Self {
        Self {
            api_key: SecretString::from(DEV_PROVIDER_API_KEY),
            max_response_bytes: 64 * 1024,
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

    /// The longest one gift can take in one run of its batch: `max_attempts`
    /// rounds, each a lookup and an issue call that both time out, after the
    /// longest backoff (a provider's `Retry-After` is capped by it too).
    pub fn worst_gift(&self) -> Duration {
        let round = 2 * self.timeout_ms + self.backoff_max_ms;
        Duration::from_millis(u64::from(self.max_attempts).saturating_mul(round))
    }
}

/// The dispatch group's batches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DispatchSettings {
    /// Most decisions (so most WONs) in work in one batch. The consumer
    /// loop's batch is the smaller of this and `kafka.batch_max_records`
    /// (which other groups size for cheap records): a batch is committed
    /// only when every gift in it is done, so it must end well inside
    /// `kafka.max_poll_interval_ms` or the group evicts a healthy instance.
    pub batch_max_records: usize,
    /// How long a batch waits for the recorder to record a WON's entry
    /// before it is retried (`crate::entries`).
    pub entry_wait_ms: u64,
    /// A WON whose entry is still not recorded this long after this instance
    /// first looked is refused and dead-lettered, but only once the recorder
    /// has committed past the entries topic's watermarks of that first look
    /// (`crate::entries`): until then it keeps waiting, however long.
    pub entry_deadline_ms: u64,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        // 2 waves of 32 gifts: a worst case of about 1 minute with the
        // default provider settings, against a 5 minute poll interval.
        Self { batch_max_records: 64, entry_wait_ms: 5_000, entry_deadline_ms: 300_000 }
    }
}

/// Gifts parked because the provider's answers settle nothing are retried
/// on their own schedule, apart from the batches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ParkedSettings {
    /// How often the retrier looks for parked gifts that are due.
    pub poll_ms: u64,
    /// Parked gifts retried at once (each a few provider calls).
    pub batch: i64,
    /// Exponential backoff with full jitter between the tries of one parked
    /// gift: try n waits uniform(0, min(max, base·2ⁿ)).
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for ParkedSettings {
    fn default() -> Self {
        Self { poll_ms: 1_000, batch: 16, backoff_base_ms: 1_000, backoff_max_ms: 60_000 }
    }
}

impl ParkedSettings {
    pub fn backoff(&self) -> crate::backoff::Backoff {
        crate::backoff::Backoff::new(
            Duration::from_millis(self.backoff_base_ms),
            Duration::from_millis(self.backoff_max_ms),
        )
    }
}

/// The outbox relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The consumer loop's batch size for the dispatch group.
    pub fn batch_max_records(&self) -> usize {
        self.kafka.batch_max_records.min(self.dispatch.batch_max_records)
    }

    /// The Kafka settings the dispatch consumer runs with.
    pub fn consumer_kafka(&self) -> KafkaSettings {
        KafkaSettings { batch_max_records: self.batch_max_records(), ..self.kafka.clone() }
    }

    /// The worst-case time of one batch: `ceil(batch / concurrency)` waves
    /// of the worst gift, plus the time the rate limit can make the batch's
    /// calls (two per round) wait. An upper bound: the first round has no
    /// lookup and no backoff, and real calls rarely all time out.
    pub fn worst_batch(&self) -> Duration {
        let p = &self.provider;
        let batch = self.batch_max_records() as u64;
        let waves = batch.div_ceil(p.concurrency.max(1) as u64);
        let calls = batch.saturating_mul(2 * u64::from(p.max_attempts));
        let rate_wait_ms = calls.saturating_mul(1_000).div_ceil(u64::from(p.rate_per_sec.max(1)));
        p.worst_gift().saturating_mul(waves.min(u64::from(u32::MAX)) as u32) + Duration::from_millis(rate_wait_ms)
    }

    /// These settings with the local stack's credentials of
    /// [`Principal::SENDER`] wherever none is configured (local only).
    pub fn with_local_credentials(self) -> Self {
        ServiceSettings::with_local_credentials(self)
    }

    /// Cross-field rules, checked before anything connects.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.kafka.validate()?;
        self.check_credentials()?;
        let p = &self.provider;
        let invalid = |m: &str| Err(SettingsError::Invalid(m.to_string()));
        if p.base_url.trim().is_empty() {
            return invalid("provider.base_url is empty");
        }
        if !self.environment.is_local() {
            if !p.base_url.trim().to_ascii_lowercase().starts_with("https://") {
                return invalid("provider.base_url must be https outside local");
            }
            self.environment.check_token_secret("provider.api_key", &p.api_key)?;
            if p.api_key.expose_secret() == DEV_PROVIDER_API_KEY {
                return invalid("provider.api_key is the local simulator's key (environment = production)");
            }
        }
        if p.max_response_bytes == 0 {
            return invalid("provider.max_response_bytes must be > 0");
        }
        if p.timeout_ms == 0 || p.max_attempts == 0 || p.rate_per_sec == 0 || p.concurrency == 0 {
            return invalid("provider.timeout_ms, max_attempts, rate_per_sec and concurrency must be > 0");
        }
        if p.backoff_base_ms > p.backoff_max_ms {
            return invalid("provider.backoff_base_ms must not exceed provider.backoff_max_ms");
        }
        if self.dispatch.batch_max_records == 0 {
            return invalid("dispatch.batch_max_records must be > 0");
        }
        let poll_ms = self.kafka.max_poll_interval_ms;
        if poll_ms <= self.kafka.session_timeout_ms {
            return invalid("kafka.max_poll_interval_ms must exceed kafka.session_timeout_ms");
        }
        // A batch is committed only once every gift in it is done, and the
        // loop does not poll meanwhile: a batch that outlasts
        // max.poll.interval.ms gets a healthy instance evicted and its batch
        // replayed elsewhere, over and over. Keep the worst case within half
        // of it (the rest is the margin for the database and Kafka).
        let worst = self.worst_batch();
        if worst.as_millis() > u128::from(poll_ms / 2) {
            let batch = self.batch_max_records();
            return Err(SettingsError::Invalid(format!(
                "a dispatch batch could take up to {worst_s} s, more than half of kafka.max_poll_interval_ms \
                 ({poll_s} s): ceil({batch} records / {concurrency} in flight) = {waves} waves × {gift_s} s per gift \
                 (provider.max_attempts {attempts} × (2 × timeout_ms {timeout} + backoff_max_ms {backoff})) \
                 + the wait of the rate limit; lower dispatch.batch_max_records, provider.max_attempts or \
                 provider.timeout_ms, or raise provider.concurrency",
                worst_s = worst.as_secs(),
                poll_s = poll_ms / 1_000,
                concurrency = p.concurrency,
                waves = (batch as u64).div_ceil(p.concurrency as u64),
                gift_s = p.worst_gift().as_secs(),
                attempts = p.max_attempts,
                timeout = p.timeout_ms,
                backoff = p.backoff_max_ms,
            )));
        }
        if self.relay.batch <= 0 || self.relay.poll_ms == 0 {
            return invalid("relay.batch and relay.poll_ms must be > 0");
        }
        let parked = &self.parked;
        if parked.batch <= 0 || parked.poll_ms == 0 || parked.backoff_base_ms == 0 {
            return invalid("parked.batch, parked.poll_ms and parked.backoff_base_ms must be > 0");
        }
        if parked.backoff_base_ms > parked.backoff_max_ms {
            return invalid("parked.backoff_base_ms must not exceed parked.backoff_max_ms");
        }
        if self.gift.product.trim().is_empty() || self.gift.amount <= 0 {
            return invalid("gift.product must be set and gift.amount > 0");
        }
        Ok(())
    }
}

impl ServiceSettings for Settings {
    const PRINCIPAL: Principal = Principal::SENDER;

    fn environment(&self) -> Environment {
        self.environment
    }

    fn credentials(&mut self) -> Credentials<'_> {
        Credentials {
            kafka: Some(&mut self.kafka),
            database: Some(&mut self.database),
            replica: Some(&mut self.replica),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_variable_changes_one_field() {
        platform::settings::check_layering(&Settings::default()).unwrap();
    }

    #[test]
    fn the_defaults_are_valid_and_point_at_the_local_stack() {
        let settings = Settings::default();
        assert!(settings.validate().is_ok());
        assert_eq!(settings.http.port, DEFAULT_OPS_PORT);
        assert_eq!(settings.provider.base_url, "http://127.0.0.1:8090");
    }

    #[test]
    fn production_refuses_the_local_secrets_and_a_plain_http_provider() {
        let mut settings = Settings { environment: Environment::Production, ..Default::default() };
        // TLS and a Kafka login, as production requires of every connection (not under test here).
        settings.kafka.username = Some("sender".into());
        settings.database.tls = platform::settings::TlsSettings::verify_full("/etc/ssl/store-ca.pem");
        settings.replica.tls = platform::settings::TlsSettings::verify_full("/etc/ssl/store-ca.pem");
        assert!(settings.validate().unwrap_err().to_string().contains("database.url"));
        settings.database.url = SecretString::from("postgres://sender:Vx7-issued-by-vault@db:5432/firstcome");
        assert!(settings.validate().unwrap_err().to_string().contains("replica.url"));
        settings.replica.url = SecretString::from("postgres://sender_ro:Kp2-issued-by-vault@replica:5432/shop");
        assert!(settings.validate().unwrap_err().to_string().contains("https"));
        settings.provider.base_url = "https://gifts.example.com".into();
        assert!(settings.validate().unwrap_err().to_string().contains("provider.api_key"));
        settings.provider.api_key = SecretString::from("a-provider-key-of-at-least-32-bytes");
        assert!(settings.validate().is_ok());
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
    fn the_default_batch_ends_well_inside_the_poll_interval() {
        let settings = Settings::default();
        assert_eq!(settings.batch_max_records(), 64);
        assert!(settings.worst_batch() <= Duration::from_millis(settings.kafka.max_poll_interval_ms / 2));
    }

    #[test]
    fn five_hundred_wons_with_32_in_flight_and_a_slow_provider_are_refused() {
        let mut settings = Settings::default();
        settings.kafka.batch_max_records = 500;
        settings.dispatch.batch_max_records = 500;
        settings.provider.concurrency = 32;
        settings.provider.timeout_ms = 10_000;
        let error = settings.validate().expect_err("refused").to_string();
        assert!(error.contains("max_poll_interval_ms"), "{error}");
        assert!(error.contains("ceil(500 records / 32 in flight) = 16 waves"), "{error}");
    }

    #[test]
    fn five_hundred_wons_with_the_default_provider_are_refused_too() {
        let mut settings = Settings::default();
        settings.dispatch.batch_max_records = 500;
        assert!(settings.validate().is_err(), "16 waves × 30 s = 480 s > 150 s");
    }

    #[test]
    fn the_dispatch_batch_is_the_smaller_of_the_two_limits() {
        let mut settings = Settings::default();
        assert_eq!(settings.consumer_kafka().batch_max_records, 64);
        settings.kafka.batch_max_records = 10;
        assert_eq!(settings.consumer_kafka().batch_max_records, 10);
    }

    #[test]
    fn a_kafka_section_from_the_environment_keeps_the_dispatch_cap() {
        let variables = platform::settings::environment()
            .source(Some([("FIRSTCOME_KAFKA__BROKERS".to_string(), "10.0.0.1:9092".to_string())].into()));
        let settings: Settings =
            platform::settings::layered(&Settings::default(), variables).unwrap().try_deserialize().unwrap();
        assert_eq!(settings.kafka.brokers, "10.0.0.1:9092");
        assert_eq!(settings.kafka.batch_max_records, 500);
        assert_eq!(settings.batch_max_records(), 64);
        assert!(settings.validate().is_ok());
    }

    #[test]
    fn a_longer_poll_interval_admits_a_bigger_batch() {
        let mut settings = Settings::default();
        settings.dispatch.batch_max_records = 256;
        assert!(settings.validate().is_err(), "8 waves × 30 s = 240 s > 150 s");
        settings.kafka.max_poll_interval_ms = 600_000;
        assert!(settings.validate().is_ok(), "240 s + the rate wait < 300 s");
    }

    #[test]
    fn a_tight_rate_limit_counts_against_the_poll_interval() {
        let mut settings = Settings::default();
        settings.provider.rate_per_sec = 2;
        // 64 gifts × 10 calls at 2 per second: 320 s of waiting alone.
        assert!(settings.validate().is_err());
    }

    #[test]
    fn a_poll_interval_within_the_session_timeout_is_refused() {
        let mut settings = Settings::default();
        settings.kafka.max_poll_interval_ms = settings.kafka.session_timeout_ms;
        assert!(settings.validate().is_err());
    }

    #[test]
    fn a_zero_dispatch_batch_is_refused() {
        let mut settings = Settings::default();
        settings.dispatch.batch_max_records = 0;
        assert!(settings.validate().is_err());
    }

    #[test]
    fn a_parked_backoff_base_above_its_max_is_refused() {
        let mut settings = Settings::default();
        settings.parked.backoff_base_ms = 120_000;
        assert!(settings.validate().is_err());
        settings.parked = ParkedSettings { batch: 0, ..ParkedSettings::default() };
        assert!(settings.validate().is_err());
    }

    #[test]
    fn zero_concurrency_is_refused() {
        let mut settings = Settings::default();
        settings.provider.concurrency = 0;
        assert!(settings.validate().is_err());
    }
}
