//! Typed settings shared by the services.
//!
//! Every service has its own settings struct that embeds the pieces below and
//! is loaded by [`load`]: the struct's `Default` (which runs the local stack),
//! then an optional TOML file named by `FIRSTCOME_CONFIG`, then environment
//! variables `FIRSTCOME_<SECTION>__<FIELD>` (e.g. `FIRSTCOME_KAFKA__BROKERS`).

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Settings could not be loaded or are inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("failed to read settings: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid settings: {0}")]
    Invalid(String),
}

/// Loads `S` from its defaults, the optional file and the environment.
pub fn load<S: DeserializeOwned>() -> Result<S, SettingsError> {
    let mut builder = config::Config::builder();
    if let Ok(path) = std::env::var("FIRSTCOME_CONFIG") {
        builder = builder.add_source(config::File::with_name(&path).required(true));
    }
    let settings = builder.add_source(environment()).build()?;
    Ok(settings.try_deserialize()?)
}

/// The `FIRSTCOME_…__…` variables as a settings source (`FIRSTCOME_KAFKA__BROKERS`
/// is `kafka.brokers`). Tests hand it a map of their own
/// (`config::Environment::source`) to read a deployment's variables as a service would.
pub fn environment() -> config::Environment {
    config::Environment::with_prefix("FIRSTCOME").prefix_separator("_").separator("__").try_parsing(true)
}

/// Where a service runs: `local` (the stack of `stack/bin/stack`, the
/// default) or `production` (`FIRSTCOME_ENVIRONMENT=production`). Outside
/// local, every service refuses to start on a secret anyone can read in this
/// repository ([`Environment::check_token_secret`],
/// [`Environment::check_database_url`]); each service's settings validation
/// calls them for the secrets it holds.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Local,
    Production,
}

/// The member-token secret of the local stack (committed here, so public).
pub const DEV_TOKEN_SECRET: &str = "firstcome-local-dev-secret";
/// The shortest token secret accepted outside local (HS256 wants ≥ 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;
/// The local stack's passwords (`stack/`): the database owner, the member
/// replica's reader, and every [`Principal`]'s local password. Refused
/// outside local wherever a password is set (database, Redis, Kafka).
pub const STACK_PASSWORDS: &[&str] = &[
    "firstcome",
    "firstcome_reader",
    "postgres",
    "firstcome_registry",
    "firstcome_ingest",
    "firstcome_stock",
    "firstcome_recorder",
    "firstcome_sender",
    "firstcome_admin",
];
/// The former name of [`STACK_PASSWORDS`].
pub const STACK_DATABASE_PASSWORDS: &[&str] = STACK_PASSWORDS;

/// Who a client is on the stack: one identity per service, each with only
/// the rights it needs (least privilege). It names the service's PostgreSQL
/// role (`firstcome_<name>`, granted by `migrations/grants.sql`), its Redis
/// ACL user and its Kafka SCRAM user (`<name>`, whose ACLs
/// `platform::kafka::acl` derives from `schemas::topology`).
///
/// On the local stack every password is `firstcome_<name>` and each service
/// fills in its own when its settings name no user (so `stack env` exports
/// no credentials); outside local nothing is filled in and those passwords
/// are refused ([`STACK_PASSWORDS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Principal(&'static str);

impl Principal {
    pub const INGEST: Principal = Principal("ingest");
    pub const STOCK: Principal = Principal("stock");
    pub const RECORDER: Principal = Principal("recorder");
    pub const SENDER: Principal = Principal("sender");
    /// The operator's CLI and the test kit: the database owner (the only
    /// role that runs DDL), the Kafka and Redis administrator.
    pub const ADMIN: Principal = Principal("admin");
    /// Every principal, services first.
    pub const ALL: [Principal; 5] =
        [Principal::INGEST, Principal::STOCK, Principal::RECORDER, Principal::SENDER, Principal::ADMIN];

    /// The principal of a pipeline stage.
    pub const fn of(stage: schemas::topology::Stage) -> Principal {
        use schemas::topology::Stage;
        match stage {
            Stage::Ingest => Principal::INGEST,
            Stage::Stock => Principal::STOCK,
            Stage::Recording => Principal::RECORDER,
            Stage::Dispatch => Principal::SENDER,
        }
    }

    /// The Redis and Kafka user name.
    pub const fn name(self) -> &'static str {
        self.0
    }

    /// The PostgreSQL role: `firstcome_<name>`; the admin is the owner, `firstcome`.
    pub fn database_role(self) -> String {
        match self {
            Principal::ADMIN => "firstcome".into(),
            _ => format!("firstcome_{}", self.0),
        }
    }

    /// The local stack's password of the Redis and Kafka user (public).
    pub fn local_password(self) -> String {
        format!("firstcome_{}", self.0)
    }

    /// The local stack's password of the PostgreSQL role (public).
    pub fn local_database_password(self) -> String {
        self.database_role()
    }
}

impl Environment {
    pub fn is_local(self) -> bool {
        self == Environment::Local
    }

    /// Outside local: not the development secret, at least [`MIN_SECRET_BYTES`].
    pub fn check_token_secret(self, name: &str, secret: &SecretString) -> Result<(), SettingsError> {
        if self.is_local() {
            return Ok(());
        }
        let secret = secret.expose_secret();
        if secret == DEV_TOKEN_SECRET {
            return Err(SettingsError::Invalid(format!("{name} is the development secret (environment = production)")));
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SettingsError::Invalid(format!(
                "{name} is shorter than {MIN_SECRET_BYTES} bytes (environment = production)"
            )));
        }
        Ok(())
    }

    /// Outside local: `password` (of a Redis or Kafka user, or a database
    /// role given apart from its URL), when set, is not one of the stack's.
    pub fn check_password(self, name: &str, password: Option<&SecretString>) -> Result<(), SettingsError> {
        match password {
            Some(password) if !self.is_local() && STACK_PASSWORDS.contains(&password.expose_secret()) => Err(
                SettingsError::Invalid(format!("{name} is the local stack's default password (environment = production)")),
            ),
            _ => Ok(()),
        }
    }

    /// [`check_database_url`](Self::check_database_url) and
    /// [`check_password`](Self::check_password) of a [`DatabaseSettings`].
    /// Outside local a role must also be named: no service falls back on
    /// the stack's (which [`DatabaseSettings::for_principal`] fills in locally only).
    pub fn check_database(self, name: &str, database: &DatabaseSettings) -> Result<(), SettingsError> {
        if !self.is_local() && !database.has_user() {
            return Err(SettingsError::Invalid(format!(
                "{name}.url names no role and {name}.user is not set (environment = production)"
            )));
        }
        self.check_database_url(&format!("{name}.url"), &database.url)?;
        self.check_password(&format!("{name}.password"), database.password.as_ref())
    }

    /// Outside local: the Redis password (URL or field) is not one of the stack's.
    pub fn check_redis(self, name: &str, redis: &RedisSettings) -> Result<(), SettingsError> {
        self.check_database_url(&format!("{name}.url"), &SecretString::from(redis.url.clone()))?;
        self.check_password(&format!("{name}.password"), redis.password.as_ref())
    }

    /// Outside local: the SASL password (field or `kafka.extra`) is not one of the stack's.
    pub fn check_kafka(self, name: &str, kafka: &KafkaSettings) -> Result<(), SettingsError> {
        self.check_password(&format!("{name}.password"), kafka.password.as_ref())?;
        let password = kafka.extra.get("sasl.password").map(|p| SecretString::from(p.clone()));
        self.check_password(&format!("{name}.extra.sasl.password"), password.as_ref())
    }

    /// Outside local: the database URL carries a password, not one of the stack's.
    pub fn check_database_url(self, name: &str, url: &SecretString) -> Result<(), SettingsError> {
        if self.is_local() {
            return Ok(());
        }
        let url = url.expose_secret();
        let password = url
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(rest))
            .and_then(|authority| authority.rsplit_once('@'))
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, password)| password);
        match password {
            Some(password) if !password.is_empty() && !STACK_PASSWORDS.contains(&password) => Ok(()),
            Some(password) if !password.is_empty() => Err(SettingsError::Invalid(format!(
                "{name} uses the local stack's default password (environment = production)"
            ))),
            // A password from PGPASSWORD/.pgpass or a client certificate is fine;
            // a keyword-style URL is checked for the same defaults.
            _ if STACK_PASSWORDS.iter().any(|p| url.contains(&format!("password={p}"))) => Err(
                SettingsError::Invalid(format!("{name} uses the local stack's default password (environment = production)")),
            ),
            _ => Ok(()),
        }
    }
}

/// Where Kafka is and how the clients behave.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct KafkaSettings {
    /// bootstrap.servers
    pub brokers: String,
    /// Put in front of every topic name (environments, test runs).
    pub topic_prefix: String,
    /// How long the producer may try to deliver a record (message.timeout.ms).
    pub delivery_timeout_ms: u64,
    /// Consumer group session timeout; the shutdown drain must fit inside it.
    pub session_timeout_ms: u64,
    /// On shutdown, how long the batch in work may take to finish (handled,
    /// outputs acknowledged, offsets committed) before it is abandoned:
    /// nothing of it is committed and it replays after the restart. Must be
    /// below `session_timeout_ms`, so the group does not evict a member that
    /// is still draining (checked at start).
    pub drain_timeout_ms: u64,
    /// Longest time a consumer may hold a batch between polls
    /// (max.poll.interval.ms) before the group evicts it; services whose
    /// batches can be slow validate against it.
    pub max_poll_interval_ms: u64,
    /// Largest batch handed to a handler.
    pub batch_max_records: usize,
    /// How long to wait to fill a batch once the first record is in.
    pub batch_max_wait_ms: u64,
    /// Producer linger (linger.ms): latency traded for throughput.
    pub linger_ms: u64,
    /// Transaction timeout for transactional stages (transaction.timeout.ms):
    /// how long read_committed readers can be held behind a transaction its
    /// producer abandoned (a crash) when no restart with the same
    /// transactional id aborts it first. Must exceed `delivery_timeout_ms`.
    pub transaction_timeout_ms: u64,
    /// The SASL user (the broker's principal `User:<username>`, whose ACLs
    /// `platform::kafka::acl` derives from `schemas::topology`). None: no
    /// SASL. On the local stack a service left without one logs in as its own
    /// ([`for_principal`](Self::for_principal)).
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// sasl.mechanism when a user is set (SCRAM needs librdkafka with OpenSSL).
    pub sasl_mechanism: String,
    /// security.protocol when a user is set: `sasl_plaintext` on the local
    /// stack (loopback), `sasl_ssl` across a network.
    pub security_protocol: String,
    /// Extra librdkafka properties, passed through as given (they win).
    pub extra: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: String::new(),
            delivery_timeout_ms: 5_000,
            session_timeout_ms: 10_000,
            drain_timeout_ms: 5_000,
            max_poll_interval_ms: 300_000,
            batch_max_records: 500,
            batch_max_wait_ms: 5,
            linger_ms: 2,
            transaction_timeout_ms: 10_000,
            username: None,
            password: None,
            sasl_mechanism: "SCRAM-SHA-512".into(),
            security_protocol: "sasl_plaintext".into(),
            extra: BTreeMap::new(),
        }
    }
}

impl KafkaSettings {
    /// These settings as `principal` on the local stack: its SCRAM user and
    /// local password when none is configured.
    pub fn for_principal(&self, environment: Environment, principal: Principal) -> Self {
        let mut settings = self.clone();
        if environment.is_local() && settings.username.is_none() && !settings.extra.contains_key("sasl.username") {
            settings.username = Some(principal.name().into());
            settings.password = Some(SecretString::from(principal.local_password()));
        }
        settings
    }

    /// The librdkafka properties of the SASL login (none without a user;
    /// `security_protocol = plaintext` turns the login off, for a broker
    /// without authentication such as compose/'s demo cluster).
    pub fn security_properties(&self) -> Vec<(&'static str, String)> {
        if self.security_protocol.eq_ignore_ascii_case("plaintext") {
            return vec![("security.protocol", "plaintext".into())];
        }
        match &self.username {
            None => Vec::new(),
            Some(username) => vec![
                ("security.protocol", self.security_protocol.clone()),
                ("sasl.mechanism", self.sasl_mechanism.clone()),
                ("sasl.username", username.clone()),
                ("sasl.password", self.password.as_ref().map(|p| p.expose_secret().to_string()).unwrap_or_default()),
            ],
        }
    }

    pub fn topics(&self) -> schemas::Topics {
        schemas::Topics::with_prefix(&self.topic_prefix)
    }

    /// A consumer group id; the topic prefix isolates groups like topics.
    pub fn group(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }

    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.delivery_timeout_ms)
    }

    /// How long a shutdown waits for the batch in work (`drain_timeout_ms`).
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// Cross-field rules checked at start.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.brokers.trim().is_empty() {
            return Err(SettingsError::Invalid("kafka.brokers is empty".into()));
        }
        if self.batch_max_records == 0 {
            return Err(SettingsError::Invalid("kafka.batch_max_records must be > 0".into()));
        }
        if self.drain_timeout_ms >= self.session_timeout_ms {
            return Err(SettingsError::Invalid(format!(
                "kafka.drain_timeout_ms ({}) must be below kafka.session_timeout_ms ({})",
                self.drain_timeout_ms, self.session_timeout_ms
            )));
        }
        if self.transaction_timeout_ms <= self.delivery_timeout_ms {
            return Err(SettingsError::Invalid(
                "kafka.transaction_timeout_ms must exceed kafka.delivery_timeout_ms".into(),
            ));
        }
        Ok(())
    }
}

/// Where the Confluent-compatible schema registry is.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RegistrySettings {
    /// Base URL of the Confluent API (Apicurio: `…/apis/ccompat/v7`).
    pub url: String,
    pub timeout_ms: u64,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self { url: "http://127.0.0.1:8081/apis/ccompat/v7".into(), timeout_ms: 5_000 }
    }
}

impl RegistrySettings {
    pub fn codec(&self) -> Result<schemas::Codec, schemas::CodecError> {
        schemas::Codec::new(&self.url, Duration::from_millis(self.timeout_ms))
    }
}

/// PostgreSQL. Services never migrate: `firstcome db migrate` does, as the
/// database owner ([`Principal::ADMIN`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// `postgres://[user[:password]@]host:port/database`. Credentials in the
    /// URL win over [`user`](Self::user) / [`password`](Self::password).
    pub url: SecretString,
    /// The role to log in as when the URL names none; on the local stack a
    /// service left without one logs in as its own
    /// ([`for_principal`](Self::for_principal)).
    pub user: Option<String>,
    pub password: Option<SecretString>,
    pub max_connections: usize,
    /// Wait for a pooled connection / create one / check one, each at most this long.
    pub timeout_ms: u64,
    /// Server-side limit for one statement and one lock wait.
    pub statement_timeout_ms: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://127.0.0.1:5432/firstcome"),
            user: None,
            password: None,
            max_connections: 16,
            timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
        }
    }
}

impl DatabaseSettings {
    /// Whether the URL or [`user`](Self::user) names a role.
    pub fn has_user(&self) -> bool {
        self.user.is_some() || url_user(self.url.expose_secret()).is_some()
    }

    /// The same server and database, no role named (a `user:password@` in the
    /// URL and the user and password fields are dropped).
    pub fn without_credentials(&self) -> Self {
        let url = self.url.expose_secret();
        let url = match url.split_once("://") {
            Some((scheme, rest)) => {
                let end = rest.find(['/', '?']).unwrap_or(rest.len());
                let host = rest[..end].rsplit_once('@').map(|(_, host)| host).unwrap_or(&rest[..end]);
                format!("{scheme}://{host}{}", &rest[end..])
            }
            None => url.to_string(),
        };
        Self { url: SecretString::from(url), user: None, password: None, ..self.clone() }
    }

    /// These settings as `principal` on the local stack: its role and local
    /// password when none is configured. Outside local they are returned as
    /// they are (a deployment names its roles).
    pub fn for_principal(&self, environment: Environment, principal: Principal) -> Self {
        let mut settings = self.clone();
        if environment.is_local() && !settings.has_user() {
            settings.user = Some(principal.database_role());
            settings.password = Some(SecretString::from(principal.local_database_password()));
        }
        settings
    }

    /// The same server with another database name (tests use one per run).
    pub fn with_database(&self, name: &str) -> Self {
        let url = self.url.expose_secret();
        let base = url.rsplit_once('/').map(|(base, _)| base).unwrap_or(url);
        Self { url: SecretString::from(format!("{base}/{name}")), ..self.clone() }
    }
}

/// The user of a `scheme://user[:password]@host…` URL, if it names one.
fn url_user(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let (userinfo, _) = authority.rsplit_once('@')?;
    let user = userinfo.split(':').next().unwrap_or(userinfo);
    (!user.is_empty()).then_some(user)
}

/// The shop's member database as firstcome reads it: a streaming replica
/// (hot standby), never the shop's primary. Members, phones and purchases
/// are read only through this (`replica.url`); the pipeline's own tables
/// stay in [`DatabaseSettings`].
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ReplicaSettings {
    /// `postgres://user:password@host:port/database` of a standby.
    pub url: SecretString,
    /// The schema holding `members` and `purchases` (empty: the server's
    /// default search_path). Tests use one schema each.
    pub schema: String,
    pub max_connections: usize,
    /// Wait for a pooled connection / create one / check one, each at most this long.
    pub timeout_ms: u64,
    pub statement_timeout_ms: u64,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://firstcome_reader:firstcome_reader@127.0.0.1:5434/shop"),
            schema: String::new(),
            max_connections: 8,
            timeout_ms: 2_000,
            statement_timeout_ms: 10_000,
        }
    }
}

/// The shop's member database primary. Only `firstcome members seed` (which
/// plays the shop in demos and tests) and test set-up write there; no
/// service connects to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MemberPrimarySettings {
    pub url: SecretString,
    /// As [`ReplicaSettings::schema`]; both must name the same schema.
    pub schema: String,
    pub max_connections: usize,
    pub timeout_ms: u64,
    pub statement_timeout_ms: u64,
}

impl Default for MemberPrimarySettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://firstcome:firstcome@127.0.0.1:5433/shop"),
            schema: String::new(),
            max_connections: 4,
            timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
        }
    }
}

/// Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RedisSettings {
    /// The one Redis to use when no Sentinels are configured.
    pub url: String,
    /// `host:port` of Redis Sentinels, comma-separated. When set, `url` is
    /// ignored: the primary of [`master_name`](Self::master_name) is asked
    /// from the Sentinels, and asked again after a connection fails or the
    /// server answers READONLY (a failover).
    pub sentinels: String,
    /// The Sentinels' name for the monitored primary.
    pub master_name: String,
    /// The ACL user when the URL names none (with Sentinels: on the data
    /// nodes they name). On the local stack a service left without one logs
    /// in as its own ([`for_principal`](Self::for_principal)).
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub connect_timeout_ms: u64,
    /// A timed-out call may still have run on the server: callers keep retries idempotent.
    pub response_timeout_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            sentinels: String::new(),
            master_name: "firstcome".into(),
            username: None,
            password: None,
            connect_timeout_ms: 1_000,
            response_timeout_ms: 2_000,
        }
    }
}

impl RedisSettings {
    /// These settings as `principal` on the local stack: its ACL user and
    /// local password when none is configured (in the URL or the fields).
    pub fn for_principal(&self, environment: Environment, principal: Principal) -> Self {
        let mut settings = self.clone();
        if environment.is_local() && settings.username.is_none() && url_user(&settings.url).is_none() {
            settings.username = Some(principal.name().into());
            settings.password = Some(SecretString::from(principal.local_password()));
        }
        settings
    }

    /// The Sentinel addresses, when any are configured.
    pub fn sentinel_addresses(&self) -> Vec<String> {
        self.sentinels.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
    }
}

/// An HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
}

impl HttpSettings {
    pub fn on_port(port: u16) -> Self {
        Self { host: "127.0.0.1".into(), port }
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Binds the listener; returns it with the real port (port 0 picks one).
    pub async fn bind(&self) -> Result<(tokio::net::TcpListener, u16), BindError> {
        let address = self.address();
        let bound = async {
            let listener = tokio::net::TcpListener::bind(&address).await?;
            let port = listener.local_addr()?.port();
            Ok((listener, port))
        };
        bound.await.map_err(|source| BindError { address, source })
    }
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("failed to bind {address}: {source}")]
pub struct BindError {
    pub address: String,
    #[source]
    pub source: std::io::Error,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self::on_port(0)
    }
}

/// Logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TelemetrySettings {
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub log_filter: String,
    /// `pretty` for people, `json` for log pipelines.
    pub log_format: LogFormat,
    /// An `EnvFilter` directive for the spans exported over OTLP
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT`), apart from the log filter.
    pub trace_filter: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self { log_filter: "info,rdkafka=warn".into(), log_format: LogFormat::Pretty, trace_filter: "info,rdkafka=off".into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_point_at_the_local_stack() {
        let kafka = KafkaSettings::default();
        assert_eq!(kafka.brokers, "127.0.0.1:9092");
        assert!(kafka.validate().is_ok());
        assert!(RegistrySettings::default().url.ends_with("/apis/ccompat/v7"));
    }

    #[test]
    fn a_transaction_shorter_than_a_delivery_is_refused() {
        let kafka = KafkaSettings { transaction_timeout_ms: 1_000, ..Default::default() };
        assert!(kafka.validate().is_err());
    }

    #[test]
    fn a_drain_deadline_not_below_the_session_timeout_is_refused() {
        let defaults = KafkaSettings::default();
        assert!(defaults.drain_timeout_ms < defaults.session_timeout_ms);
        for drain_timeout_ms in [defaults.session_timeout_ms, defaults.session_timeout_ms + 1] {
            let kafka = KafkaSettings { drain_timeout_ms, ..Default::default() };
            let error = kafka.validate().expect_err("a drain as long as the session is refused");
            assert!(error.to_string().contains("kafka.drain_timeout_ms"), "{error}");
        }
        let kafka = KafkaSettings { drain_timeout_ms: defaults.session_timeout_ms - 1, ..Default::default() };
        assert!(kafka.validate().is_ok());
    }

    #[test]
    fn sentinels_are_a_comma_separated_list() {
        let redis = RedisSettings { sentinels: " 127.0.0.1:26380, 127.0.0.1:26381 ,".into(), ..Default::default() };
        assert_eq!(redis.sentinel_addresses(), ["127.0.0.1:26380", "127.0.0.1:26381"]);
        assert!(RedisSettings::default().sentinel_addresses().is_empty());
    }

    #[test]
    fn the_member_database_defaults_to_the_local_standby_and_primary() {
        assert!(ReplicaSettings::default().url.expose_secret().contains(":5434/shop"));
        assert!(MemberPrimarySettings::default().url.expose_secret().contains(":5433/shop"));
    }

    #[test]
    fn local_accepts_the_stack_secrets() {
        let local = Environment::default();
        assert_eq!(local, Environment::Local);
        assert!(local.check_token_secret("auth.token_secret", &SecretString::from(DEV_TOKEN_SECRET)).is_ok());
        assert!(local.check_database_url("database.url", &DatabaseSettings::default().url).is_ok());
    }

    #[test]
    fn production_refuses_the_development_or_a_short_token_secret() {
        let prod = Environment::Production;
        let dev = prod.check_token_secret("auth.token_secret", &SecretString::from(DEV_TOKEN_SECRET));
        assert!(dev.unwrap_err().to_string().contains("development secret"));
        let short = prod.check_token_secret("auth.token_secret", &SecretString::from("x".repeat(31)));
        assert!(short.unwrap_err().to_string().contains("shorter than 32"));
        assert!(prod.check_token_secret("auth.token_secret", &SecretString::from("k".repeat(32))).is_ok());
    }

    #[test]
    fn production_refuses_the_stack_database_passwords() {
        let prod = Environment::Production;
        for url in [
            SecretString::from("postgres://firstcome:firstcome@127.0.0.1:5432/firstcome"),
            SecretString::from("postgres://firstcome_ingest:firstcome_ingest@db:5432/firstcome"),
            ReplicaSettings::default().url,
            MemberPrimarySettings::default().url,
            SecretString::from("postgres://app:postgres@db.internal:5432/firstcome?sslmode=require"),
            SecretString::from("host=db user=app password=firstcome"),
        ] {
            let refused = prod.check_database_url("database.url", &url);
            assert!(refused.is_err(), "{}", url.expose_secret());
            assert!(!refused.unwrap_err().to_string().contains("firstcome@"), "the error names no URL");
        }
        for url in ["postgres://app:Zq9-long-random@db.internal:5432/firstcome", "postgres://app@db.internal/firstcome"] {
            assert!(prod.check_database_url("database.url", &SecretString::from(url)).is_ok(), "{url}");
        }
    }

    #[test]
    fn the_environment_is_read_in_lowercase() {
        #[derive(Deserialize)]
        struct S {
            environment: Environment,
        }
        let s: S = serde_json::from_str(r#"{"environment": "production"}"#).unwrap();
        assert_eq!(s.environment, Environment::Production);
        assert!(serde_json::from_str::<S>(r#"{"environment": "staging"}"#).is_err());
    }

    #[test]
    fn each_service_is_its_own_principal_on_the_local_stack_only() {
        let local = DatabaseSettings::default().for_principal(Environment::Local, Principal::INGEST);
        assert_eq!(local.user.as_deref(), Some("firstcome_ingest"));
        assert_eq!(local.password.as_ref().map(|p| p.expose_secret()), Some("firstcome_ingest"));
        assert_eq!(DatabaseSettings::default().for_principal(Environment::Local, Principal::ADMIN).user.as_deref(), Some("firstcome"));
        let production = DatabaseSettings::default().for_principal(Environment::Production, Principal::INGEST);
        assert_eq!(production.user, None, "outside local nothing is filled in");
        // Credentials a deployment configured are kept.
        let named = DatabaseSettings { url: SecretString::from("postgres://app:pw@db/firstcome"), ..Default::default() };
        assert_eq!(named.for_principal(Environment::Local, Principal::INGEST).user, None);

        let redis = RedisSettings::default().for_principal(Environment::Local, Principal::STOCK);
        assert_eq!(redis.username.as_deref(), Some("stock"));
        let kafka = KafkaSettings::default().for_principal(Environment::Local, Principal::SENDER);
        assert_eq!(kafka.username.as_deref(), Some("sender"));
        let properties = kafka.security_properties();
        assert!(properties.contains(&("sasl.mechanism", "SCRAM-SHA-512".to_string())), "{properties:?}");
        assert!(KafkaSettings::default().security_properties().is_empty());
    }

    #[test]
    fn production_refuses_the_stack_passwords_of_redis_and_kafka() {
        let prod = Environment::Production;
        let redis = RedisSettings::default().for_principal(Environment::Local, Principal::INGEST);
        assert!(prod.check_redis("redis", &redis).is_err());
        let in_url = RedisSettings { url: "redis://ingest:firstcome_ingest@10.0.0.5:6379".into(), ..Default::default() };
        assert!(prod.check_redis("redis", &in_url).is_err());
        let kafka = KafkaSettings::default().for_principal(Environment::Local, Principal::STOCK);
        assert!(prod.check_kafka("kafka", &kafka).is_err());
        let own = KafkaSettings { username: Some("stock".into()), password: Some("Zq9-long-random".into()), ..Default::default() };
        assert!(prod.check_kafka("kafka", &own).is_ok());
        assert!(Environment::Local.check_kafka("kafka", &kafka).is_ok());
    }

    #[test]
    fn credentials_are_dropped_from_a_url() {
        let db = DatabaseSettings { url: SecretString::from("postgres://a:b@h:1/d?x=y"), user: Some("u".into()), ..Default::default() };
        let bare = db.without_credentials();
        assert_eq!(bare.url.expose_secret(), "postgres://h:1/d?x=y");
        assert_eq!(bare.user, None);
    }

    #[test]
    fn another_database_keeps_the_server() {
        let db = DatabaseSettings::default().with_database("t_123");
        assert_eq!(db.url.expose_secret(), "postgres://127.0.0.1:5432/t_123");
    }
}
