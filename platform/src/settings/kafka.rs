//! Where Kafka and its schema registry are, and how the clients behave.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{Environment, Principal, SettingsError};

/// Where Kafka is and how the clients behave.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    #[serde(serialize_with = "super::secret::expose_option")]
    pub password: Option<SecretString>,
    /// sasl.mechanism when a user is set (SCRAM needs librdkafka with OpenSSL).
    pub sasl_mechanism: String,
    /// security.protocol when a user is set: `sasl_plaintext` on the local
    /// stack (loopback), `sasl_ssl` across a network.
    pub security_protocol: String,
    /// Extra librdkafka properties, passed through (they win). From the
    /// environment a key is spelled with `_` for `.`, as a variable's name
    /// cannot hold a dot: `FIRSTCOME_KAFKA__EXTRA__SSL_CA_LOCATION=/etc/ca.pem`
    /// is `ssl.ca.location` (no librdkafka property has an `_` in its name);
    /// see [`extra_properties`](Self::extra_properties).
    pub extra: BTreeMap<String, String>,
    /// The `client.id` every Kafka client of the process sends (a hosted
    /// cluster's quotas and request logs are per client id). None: a stable
    /// name of the client's role (`ingest`, the consumer group, …), the same
    /// at every start.
    pub client_id: Option<String>,
    /// The consumer group protocol (`group.protocol`): `classic`, or
    /// `consumer` (KIP-848: the broker assigns partitions and owns the
    /// session timeout and heartbeat interval, so the consumer sets neither
    /// nor an assignment strategy).
    pub group_protocol: GroupProtocol,
    /// Static membership (`group.instance.id`): a member that restarts with
    /// the same id takes its partitions back without a rebalance, instead of
    /// the group waiting out the dead member's session. Each service sets it
    /// from its own stable instance id (the stock stage does); None here.
    pub group_instance_id: Option<String>,
    /// The Kafka principal of each service in the ACLs `firstcome topics
    /// create` grants, by service (`ingest`, `stock`, `recorder`, `sender`):
    /// a hosted cluster's service accounts are not `User:<service>` (e.g.
    /// `FIRSTCOME_KAFKA__PRINCIPALS__STOCK=User:sa-1x2y3z`). A service not
    /// named keeps `User:<service>`.
    pub principals: BTreeMap<String, String>,
}

/// The consumer group protocol (`group.protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupProtocol {
    #[default]
    Classic,
    /// KIP-848, generally available from Kafka 4.0.
    Consumer,
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
            client_id: None,
            group_protocol: GroupProtocol::Classic,
            group_instance_id: None,
            principals: BTreeMap::new(),
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

    /// `extra` as librdkafka properties: a key read from the environment
    /// (`ssl_ca_location`) with its `_` turned into `.`; a key given with
    /// dots (a TOML file's `"ssl.ca.location"`) as it is.
    pub fn extra_properties(&self) -> impl Iterator<Item = (String, &str)> + '_ {
        self.extra.iter().map(|(key, value)| (key.replace('_', "."), value.as_str()))
    }

    /// The `client.id` of a client in `role` (see [`client_id`](Self::client_id)).
    pub fn client_id_for(&self, role: &str) -> String {
        self.client_id.clone().unwrap_or_else(|| role.to_string())
    }

    /// The Kafka principal `principal` has in the ACLs (see [`principals`](Self::principals)).
    pub fn acl_principal(&self, principal: Principal) -> String {
        self.principals.get(principal.name()).cloned().unwrap_or_else(|| format!("User:{}", principal.name()))
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
        if let Some(unknown) = self.principals.keys().find(|k| !Principal::ALL.iter().any(|p| p.name() == k.as_str())) {
            return Err(SettingsError::Invalid(format!(
                "kafka.principals.{unknown}: not a service (ingest, stock, recorder, sender, admin)"
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistrySettings {
    /// Base URL of the Confluent API (Apicurio: `…/apis/ccompat/v7`).
    pub url: String,
    pub timeout_ms: u64,
    /// Basic-auth user of a hosted registry (its API key); None: no
    /// credentials, as on the local stack.
    pub username: Option<String>,
    /// Its password (the API secret).
    #[serde(serialize_with = "super::secret::expose_option")]
    pub password: Option<SecretString>,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self { url: "http://127.0.0.1:8081/apis/ccompat/v7".into(), timeout_ms: 5_000, username: None, password: None }
    }
}

impl RegistrySettings {
    /// How every registry call is made: the URL, the deadline, the credentials.
    pub fn connection(&self) -> schemas::RegistryConnection {
        let connection = schemas::RegistryConnection::new(&self.url, Duration::from_millis(self.timeout_ms));
        match &self.username {
            Some(username) => connection
                .with_basic_auth(username, self.password.as_ref().map(|p| p.expose_secret()).unwrap_or_default()),
            None => connection,
        }
    }

    pub fn codec(&self) -> Result<schemas::Codec, schemas::CodecError> {
        schemas::Codec::connect(&self.connection())
    }

    /// A codec that has looked up every schema the services write, as a
    /// service builds it at start: services never register, so a schema
    /// missing from the registry stops the service there, the error naming
    /// the subject and the registry. A registry that does not answer does
    /// not: the service starts and looks the schemas up at its first record,
    /// as it rides out any registry outage.
    pub async fn required_codec(&self, topics: &schemas::Topics) -> Result<schemas::Codec, schemas::CodecError> {
        let codec = self.codec()?;
        match codec.require_registered(topics).await {
            Ok(()) => {}
            Err(error) if error.is_retriable() => {
                tracing::warn!(registry = %self.url, error = %error, "schemas not looked up at start: the registry did not answer");
            }
            Err(error) => return Err(error),
        }
        Ok(codec)
    }

    pub fn admin(&self) -> Result<schemas::RegistryAdmin, schemas::CodecError> {
        schemas::RegistryAdmin::connect(&self.connection())
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
        assert!(RegistrySettings::default().connection().basic_auth.is_none());
    }

    fn kafka_from(variables: &[(&str, &str)]) -> KafkaSettings {
        #[derive(Default, Serialize, Deserialize)]
        struct Service {
            kafka: KafkaSettings,
        }
        let variables: config::Map<String, String> =
            variables.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let loaded: Service =
            super::super::layered(&Service::default(), super::super::environment().source(Some(variables)))
                .and_then(|c| Ok(c.try_deserialize()?))
                .expect("loaded");
        loaded.kafka
    }

    #[test]
    fn librdkafka_properties_and_hosted_settings_come_from_the_environment() {
        let kafka = kafka_from(&[
            ("FIRSTCOME_KAFKA__EXTRA__SSL_CA_LOCATION", "/etc/firstcome/ca.pem"),
            ("FIRSTCOME_KAFKA__EXTRA__SASL_OAUTHBEARER_METHOD", "oidc"),
            ("FIRSTCOME_KAFKA__EXTRA__ENABLE_SSL_CERTIFICATE_VERIFICATION", "true"),
            ("FIRSTCOME_KAFKA__CLIENT_ID", "firstcome-prod"),
            ("FIRSTCOME_KAFKA__GROUP_PROTOCOL", "consumer"),
            ("FIRSTCOME_KAFKA__PRINCIPALS__STOCK", "User:sa-1x2y3z"),
        ]);
        let extra: Vec<(String, &str)> = kafka.extra_properties().collect();
        assert_eq!(
            extra,
            [
                ("enable.ssl.certificate.verification".to_string(), "true"),
                ("sasl.oauthbearer.method".to_string(), "oidc"),
                ("ssl.ca.location".to_string(), "/etc/firstcome/ca.pem"),
            ]
        );
        assert_eq!(kafka.client_id_for("ingest"), "firstcome-prod");
        assert_eq!(kafka.group_protocol, GroupProtocol::Consumer);
        assert_eq!(kafka.acl_principal(Principal::STOCK), "User:sa-1x2y3z");
        assert_eq!(kafka.acl_principal(Principal::SENDER), "User:sender");
        assert_eq!(kafka.brokers, KafkaSettings::default().brokers, "one variable, one field");
        assert!(kafka.validate().is_ok());
        let defaults = KafkaSettings::default();
        assert_eq!(defaults.client_id_for("ingest"), "ingest", "stable, not random");
        let typo = kafka_from(&[("FIRSTCOME_KAFKA__PRINCIPALS__STOCKS", "User:x")]);
        assert!(typo.validate().is_err(), "a principal of no service is refused");
    }

    #[test]
    fn registry_credentials_come_from_the_environment_one_field_each() {
        let variables: config::Map<String, String> =
            [("FIRSTCOME_REGISTRY__USERNAME", "api-key"), ("FIRSTCOME_REGISTRY__PASSWORD", "s3cret")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        #[derive(Default, Serialize, Deserialize)]
        struct Service {
            registry: RegistrySettings,
        }
        let defaults = Service { registry: RegistrySettings { timeout_ms: 1_234, ..Default::default() } };
        let loaded: Service = super::super::layered(&defaults, super::super::environment().source(Some(variables)))
            .and_then(|c| Ok(c.try_deserialize()?))
            .expect("loaded");
        assert_eq!(loaded.registry.timeout_ms, 1_234, "the other fields keep the service's defaults");
        let auth = loaded.registry.connection().basic_auth.expect("credentials");
        assert_eq!((auth.username.as_str(), auth.password.as_str()), ("api-key", "s3cret"));
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
    fn each_service_logs_in_as_its_own_user_on_the_local_stack() {
        let kafka = KafkaSettings::default().for_principal(Environment::Local, Principal::SENDER);
        assert_eq!(kafka.username.as_deref(), Some("sender"));
        let properties = kafka.security_properties();
        assert!(properties.contains(&("sasl.mechanism", "SCRAM-SHA-512".to_string())), "{properties:?}");
        assert!(KafkaSettings::default().security_properties().is_empty());
        let production = KafkaSettings::default().for_principal(Environment::Production, Principal::SENDER);
        assert_eq!(production.username, None, "outside local nothing is filled in");
    }
}
