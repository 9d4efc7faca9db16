//! The ingest service's settings: the shared pieces from `platform`, plus
//! member authentication, request limits and the event-state cache timings.
//!
//! Loaded with `platform::settings::load_layered` (defaults → `FIRSTCOME_CONFIG`
//! file → `FIRSTCOME_…__…` env vars, each changing only the fields it names);
//! the defaults run against the local stack.

use std::time::Duration;

use platform::settings::{
    Credentials, DatabaseSettings, Environment, HttpSettings, KafkaSettings, Principal, RedisSettings,
    RegistrySettings, ServiceSettings, SettingsError, TelemetrySettings,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// The API port ingest listens on by default.
pub const DEFAULT_PORT: u16 = 8080;
/// The internal ops port (`/healthz`, `/metrics`) by default, beside the
/// consumer services' 9101–9103.
pub const DEFAULT_OPS_PORT: u16 = 9100;

/// Everything `ingest` needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `local` (default) or `production`: outside local, ingest refuses to
    /// start on the development token secret, a short one, or the stack's
    /// database password (`FIRSTCOME_ENVIRONMENT`).
    pub environment: Environment,
    /// The public API listener.
    pub http: HttpSettings,
    /// The internal ops listener: `/healthz` and `/metrics`, never on the
    /// API port (bind it where only operators and Prometheus reach it).
    pub ops: HttpSettings,
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
    /// Admission control: a rate-paced line and a pre-queue (`crate::waiting_room`).
    pub waiting_room: crate::waiting_room::WaitingRoomSettings,
    /// The operations dashboard's credential (`crate::routes::dashboard`).
    pub operator: OperatorSettings,
    /// The key that signs every 202's receipt (`crate::receipts`).
    pub receipts: crate::receipts::ReceiptSettings,
    /// The admission fence (`FIRSTCOME_REPLICA_ACKS`): a new entry's ticket
    /// and first-entry mark must reach this many Redis replicas before the
    /// entry is produced, so a failover cannot hand its ticket out again.
    /// 0 (the default): off, for a Redis without replicas.
    pub replica_acks: u32,
    /// How long an admission waits for the replicas before the member is
    /// answered 503 (the entry is resumed by their retry).
    pub replica_ack_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            environment: Environment::default(),
            http: HttpSettings::on_port(DEFAULT_PORT),
            ops: HttpSettings::on_port(DEFAULT_OPS_PORT),
            kafka: KafkaSettings::default(),
            registry: RegistrySettings::default(),
            redis: RedisSettings::default(),
            database: DatabaseSettings::default(),
            telemetry: TelemetrySettings::default(),
            auth: AuthSettings::default(),
            limits: Limits::default(),
            state_refresh_ms: 1_000,
            resume_after_ms: None,
            waiting_room: Default::default(),
            operator: OperatorSettings::default(),
            receipts: Default::default(),
            replica_acks: 0,
            replica_ack_timeout_ms: 1_000,
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

    /// The admission fence, `None` when off (see [`Settings::replica_acks`]).
    pub fn admission_fence(&self) -> Option<platform::redis::fence::ReplicaFence> {
        platform::redis::fence::ReplicaFence::of(self.replica_acks, Duration::from_millis(self.replica_ack_timeout_ms))
    }

    /// The deadline of one publish, after which the member is answered 503.
    pub fn publish_deadline(&self) -> Duration {
        self.kafka.delivery_timeout() + PUBLISH_SLACK
    }

    /// These settings with the local stack's credentials of
    /// [`Principal::INGEST`] wherever none is configured (local only).
    pub fn with_local_credentials(self) -> Self {
        ServiceSettings::with_local_credentials(self)
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
        if self.auth.issuer.trim().is_empty() || self.auth.audience.trim().is_empty() {
            return Err(SettingsError::Invalid("auth.issuer and auth.audience must be set".into()));
        }
        if self.auth.max_token_lifetime_secs == 0 {
            return Err(SettingsError::Invalid("auth.max_token_lifetime_secs must be > 0".into()));
        }
        self.environment.check_token_secret("auth.token_secret", &self.auth.token_secret)?;
        self.check_credentials()?;
        self.waiting_room.validate().map_err(SettingsError::Invalid)?;
        self.operator.check(self.environment, &self.auth.token_secret)?;
        self.receipts.signer(self.environment)?;
        self.limits.validate()
    }
}

impl ServiceSettings for Settings {
    const PRINCIPAL: Principal = Principal::INGEST;

    fn environment(&self) -> Environment {
        self.environment
    }

    fn credentials(&mut self) -> Credentials<'_> {
        Credentials {
            kafka: Some(&mut self.kafka),
            redis: Some(&mut self.redis),
            database: Some(&mut self.database),
            replica: None,
        }
    }
}

/// Member bearer tokens (HS256 JWTs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// The shared HMAC secret; the shop's login service signs with it too.
    #[serde(serialize_with = "platform::settings::secret::expose")]
    pub token_secret: SecretString,
    /// The `iss` claim every token must carry.
    pub issuer: String,
    /// The `aud` claim every token must carry (tokens the login service signs
    /// for its other services are refused).
    pub audience: String,
    /// Tokens whose lifetime (`exp − iat`) is longer are refused.
    pub max_token_lifetime_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            token_secret: SecretString::from(crate::auth::DEV_SECRET),
            issuer: crate::auth::DEFAULT_ISSUER.into(),
            audience: crate::auth::DEFAULT_AUDIENCE.into(),
            max_token_lifetime_secs: crate::auth::DEFAULT_MAX_LIFETIME.as_secs(),
        }
    }
}

impl AuthSettings {
    /// The verifier of members' bearer tokens under these settings (built
    /// once, kept for the life of the server).
    pub fn verifier(&self) -> crate::auth::Verifier {
        let expected = crate::auth::Expected {
            issuer: &self.issuer,
            audience: &self.audience,
            max_lifetime: Duration::from_secs(self.max_token_lifetime_secs),
        };
        crate::auth::Verifier::new(&self.token_secret, &expected)
    }
}

/// The operator's bearer token, for the operations dashboard (on the ops
/// listener). Distinct from member tokens: it is a shared secret, not a JWT,
/// and a member token is never accepted in its place.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OperatorSettings {
    /// `Authorization: Bearer <token>` of the dashboard's API
    /// (`FIRSTCOME_OPERATOR__TOKEN`). Outside local: not the development one,
    /// at least 32 bytes, and not the member token secret.
    #[serde(serialize_with = "platform::settings::secret::expose")]
    pub token: SecretString,
}

/// The development operator token (local only; refused elsewhere).
pub const DEV_OPERATOR_TOKEN: &str = "firstcome-dev-operator";

impl Default for OperatorSettings {
    fn default() -> Self {
        Self { token: SecretString::from(DEV_OPERATOR_TOKEN) }
    }
}

impl OperatorSettings {
    fn check(&self, environment: Environment, member_secret: &SecretString) -> Result<(), SettingsError> {
        use secrecy::ExposeSecret;
        let token = self.token.expose_secret();
        if token.is_empty() {
            return Err(SettingsError::Invalid("operator.token must be set".into()));
        }
        if environment == Environment::Local {
            return Ok(());
        }
        if token == DEV_OPERATOR_TOKEN {
            return Err(SettingsError::Invalid(
                "operator.token is the development token (environment = production)".into(),
            ));
        }
        if token == member_secret.expose_secret() {
            return Err(SettingsError::Invalid("operator.token must differ from auth.token_secret".into()));
        }
        // The same length rule as every secret outside local.
        environment.check_token_secret("operator.token", &self.token)
    }

    /// Whether `presented` is the operator token (constant time in its length).
    pub fn accepts(&self, presented: &str) -> bool {
        use secrecy::ExposeSecret;
        let expected = self.token.expose_secret().as_bytes();
        let presented = presented.as_bytes();
        if expected.len() != presented.len() {
            return false;
        }
        expected.iter().zip(presented).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// Bounds on what one entry request may carry.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Taken only after the token verified, so anonymous clients hold none.
    pub max_in_flight: usize,
    /// A connection must send a whole request head within this, or it is
    /// closed (stalled and idle clients alike).
    pub header_read_timeout_ms: u64,
    /// An entry body must arrive whole within this, or the request is
    /// answered 408 and the connection closed.
    pub body_read_timeout_ms: u64,
    /// Most connections open at once on the API listener; more wait in the
    /// listen backlog.
    pub max_connections: usize,
    /// Requests per second one member may make (sustained), answered 429
    /// with Retry-After beyond it, before any Redis call.
    pub member_requests_per_sec: u32,
    /// Requests one member may make at once on top of the sustained rate.
    pub member_burst: u32,
    /// Most members whose request rate is remembered at once (bounded memory:
    /// a member idle long enough to be back to a full burst is forgotten first).
    pub max_tracked_members: usize,
    /// Costly refusals (401, 404 of an unknown event) per second one client
    /// address may cause (sustained); beyond it and its burst, the address is
    /// answered 429 before any token check or Redis call.
    pub address_refusals_per_sec: u32,
    /// Costly refusals one address may cause at once.
    pub address_refusal_burst: u32,
    /// Most addresses whose refusals are remembered at once (bounded memory).
    pub max_tracked_addresses: usize,
    /// Peers (the load balancers) whose `X-Forwarded-For` names the client's
    /// address; from any other peer, the header is ignored.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16_384,
            max_answers: 32,
            max_answer_chars: 500,
            max_in_flight: 2_048,
            header_read_timeout_ms: 5_000,
            body_read_timeout_ms: 5_000,
            max_connections: 10_000,
            member_requests_per_sec: 2,
            member_burst: 10,
            max_tracked_members: 200_000,
            address_refusals_per_sec: 10,
            address_refusal_burst: 50,
            max_tracked_addresses: 100_000,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Limits {
    fn validate(&self) -> Result<(), SettingsError> {
        if self.max_body_bytes == 0
            || self.max_answers == 0
            || self.max_answer_chars == 0
            || self.max_in_flight == 0
            || self.header_read_timeout_ms == 0
            || self.body_read_timeout_ms == 0
            || self.max_connections == 0
            || self.member_requests_per_sec == 0
            || self.member_burst == 0
            || self.max_tracked_members == 0
            || self.address_refusals_per_sec == 0
            || self.address_refusal_burst == 0
            || self.max_tracked_addresses == 0
        {
            return Err(SettingsError::Invalid("every limits.* must be > 0".into()));
        }
        // A semaphore holds the slots; more than it can count would panic at start.
        if self.max_in_flight > tokio::sync::Semaphore::MAX_PERMITS
            || self.max_connections > tokio::sync::Semaphore::MAX_PERMITS
        {
            return Err(SettingsError::Invalid("limits.max_in_flight or limits.max_connections is too large".into()));
        }
        Ok(())
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receipt signing key that is not the public development one.
    fn production_receipt_key() -> SecretString {
        use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey};
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        SecretString::from(key.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string())
    }

    #[test]
    fn one_variable_changes_one_field() {
        platform::settings::check_layering(&Settings::default()).unwrap();
    }

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
    fn production_refuses_the_local_secrets() {
        let mut settings = Settings { environment: Environment::Production, ..Default::default() };
        // TLS and a Kafka login, as production requires of every connection (not under test here).
        settings.kafka.username = Some("ingest".into());
        settings.redis.tls = platform::settings::TlsSettings::verify_full("/etc/ssl/store-ca.pem");
        settings.database.tls = platform::settings::TlsSettings::verify_full("/etc/ssl/store-ca.pem");
        settings.receipts.signing_key = production_receipt_key();
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("auth.token_secret"), "{error}");
        settings.auth.token_secret = SecretString::from("a-production-secret-of-32-bytes!!");
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("database.url"), "{error}");
        settings.database.url = SecretString::from("postgres://ingest:Qm4-vault-issued@db:5432/firstcome");
        settings.operator.token = SecretString::from("an-operator-secret-of-32-bytes-or-more");
        assert!(settings.validate().is_ok());
        settings.auth.token_secret = SecretString::from("short");
        assert!(settings.validate().is_err());
    }

    #[test]
    fn production_refuses_the_development_operator_token() {
        let mut settings = Settings { environment: Environment::Production, ..Default::default() };
        // TLS and a Kafka login, as production requires of every connection (not under test here).
        settings.kafka.username = Some("ingest".into());
        settings.redis.tls = platform::settings::TlsSettings::verify_full("/etc/ssl/store-ca.pem");
        settings.database.tls = platform::settings::TlsSettings::verify_full("/etc/ssl/store-ca.pem");
        settings.receipts.signing_key = production_receipt_key();
        settings.auth.token_secret = SecretString::from("a-production-secret-of-32-bytes!!");
        settings.database.url = SecretString::from("postgres://ingest:Qm4-vault-issued@db:5432/firstcome");
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("operator.token"), "{error}");
        settings.operator.token = SecretString::from("a-production-secret-of-32-bytes!!");
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("differ"), "{error}");
        settings.operator.token = SecretString::from("short-operator");
        assert!(settings.validate().is_err());
        settings.operator.token = SecretString::from("an-operator-secret-of-32-bytes-or-more");
        assert!(settings.validate().is_ok());
        assert!(settings.operator.accepts("an-operator-secret-of-32-bytes-or-more"));
        assert!(!settings.operator.accepts("an-operator-secret-of-32-bytes-or-mors"));
        assert!(Settings::default().validate().is_ok(), "local takes the development token");
    }

    #[test]
    fn a_resume_window_inside_the_publish_deadline_is_refused() {
        let settings = Settings { resume_after_ms: Some(1_000), ..Default::default() };
        assert!(settings.validate().is_err());
    }
}
