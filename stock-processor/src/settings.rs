//! The stock processor's settings: defaults run against the local stack;
//! override with `FIRSTCOME_CONFIG` (TOML) or `FIRSTCOME_<SECTION>__<FIELD>`.

use std::sync::atomic::{AtomicU32, Ordering};

use platform::settings::{
    Credentials, DatabaseSettings, Environment, HttpSettings, KafkaSettings, Principal, RedisSettings,
    RegistrySettings, ReplicaSettings, ServiceSettings, SettingsError, TelemetrySettings,
};
use serde::{Deserialize, Serialize};

/// The ops port (`/healthz`, `/metrics`) of the stock processor.
pub const DEFAULT_OPS_PORT: u16 = 9101;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `local` (default) or `production` (`FIRSTCOME_ENVIRONMENT`): outside
    /// local the stack's passwords are refused, as by every service.
    pub environment: Environment,
    pub kafka: KafkaSettings,
    pub registry: RegistrySettings,
    pub redis: RedisSettings,
    /// firstcome's PostgreSQL, read only to restore an event Redis lost whole
    /// (`events`; role `firstcome_stock`, SELECT on `events` only).
    pub database: DatabaseSettings,
    /// The shop's member replica, read only to restore a lost event's
    /// eligible members (`purchases`).
    pub replica: ReplicaSettings,
    /// The ops listener; port 0 picks a free port (tests).
    pub http: HttpSettings,
    pub telemetry: TelemetrySettings,
    /// Names this instance's transactional producer
    /// (`firstcome-stock-<topic_prefix><instance_id>`). Stable across restarts
    /// of one instance: the restarted instance's `init_transactions` fences
    /// its dead predecessor and aborts the transaction it left open at once,
    /// instead of readers of `stock-decided` (read_committed) waiting for the
    /// transaction timeout. Every running instance needs its own.
    ///
    /// Set it with `FIRSTCOME_INSTANCE_ID` (e.g. a StatefulSet pod name).
    /// Default: `<hostname>-<ordinal>`, the ordinal from
    /// `FIRSTCOME_INSTANCE_ORDINAL` (0 when unset) — stable for one instance
    /// per host, or per ordinal on a shared host. A second stage built in the
    /// same process (tests) gets `.1`, `.2`, … appended, so two never collide.
    pub instance_id: String,
    /// First come, first served across partitions: the stage decides records
    /// in record-timestamp (accept-time) order, and a record waits at most
    /// this long for an older one on a partition that is behind (see
    /// `platform::kafka::consumer::merge`). It only waits when a partition
    /// is known to have more to fetch (a backlog); a caught-up stage never
    /// waits on it.
    pub order_max_idle_ms: u64,
    /// The failover fence: no batch commits to Kafka until this many Redis
    /// replicas acknowledged its decisions (`WAIT`), so a decision the log
    /// holds survives a Sentinel failover, and a deposed primary — whose
    /// replica now follows another — can decide, but never commit. 0 turns
    /// the fence off (a Redis without replicas; docs/defence-in-depth.md
    /// says what that risks). Set it to the number of replicas a failover
    /// may promote from (`FIRSTCOME_REPLICA_ACKS`).
    pub replica_acks: u32,
    /// How long a batch waits for the replicas' acknowledgement before it
    /// fails and is tried again (`FIRSTCOME_REPLICA_ACK_TIMEOUT_MS`).
    pub replica_ack_timeout_ms: u64,
    /// Static group membership (`FIRSTCOME_STATIC_MEMBERSHIP=true`): the
    /// consumer joins with `group.instance.id` = `<topic_prefix><instance_id>`,
    /// so an instance restarted under the same id (a crash, a redeploy of a
    /// StatefulSet pod) takes its partitions back at once instead of the
    /// group waiting out the dead member's session (see
    /// docs/measurements/). The price: a static member does not leave the
    /// group when it stops, so an instance stopped for good (scaled down)
    /// holds its partitions for `kafka.session_timeout_ms`. Off by default;
    /// needs an `instance_id` that is stable and unique per instance.
    pub static_membership: bool,
}

/// Stock settings built by this process so far (see `instance_id`).
static BUILT: AtomicU32 = AtomicU32::new(0);

/// `<hostname>-<ordinal>[.<n>]`, see [`Settings::instance_id`].
fn default_instance_id() -> String {
    let ordinal =
        std::env::var("FIRSTCOME_INSTANCE_ORDINAL").ok().and_then(|o| o.trim().parse::<u32>().ok()).unwrap_or(0);
    let id = format!("{}-{ordinal}", hostname());
    match BUILT.fetch_add(1, Ordering::Relaxed) {
        0 => id,
        n => format!("{id}.{n}"),
    }
}

/// The host's name: `HOSTNAME`, else the kernel's, else `localhost`.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            environment: Environment::default(),
            kafka: KafkaSettings::default(),
            registry: RegistrySettings::default(),
            redis: RedisSettings::default(),
            // A restore is rare and one query at a time: few connections, short waits
            // (it runs inside a batch's Kafka transaction).
            database: DatabaseSettings {
                max_connections: 2,
                timeout_ms: 2_000,
                statement_timeout_ms: 5_000,
                ..Default::default()
            },
            replica: ReplicaSettings {
                max_connections: 2,
                timeout_ms: 2_000,
                statement_timeout_ms: 5_000,
                ..Default::default()
            },
            http: HttpSettings::on_port(DEFAULT_OPS_PORT),
            telemetry: TelemetrySettings::default(),
            instance_id: default_instance_id(),
            order_max_idle_ms: 500,
            replica_acks: 0,
            replica_ack_timeout_ms: 1_000,
            static_membership: false,
        }
    }
}

impl Settings {
    /// The consumer group: `stock`, behind the topic prefix.
    pub fn group(&self) -> String {
        self.kafka.group("stock")
    }

    /// See [`Settings::order_max_idle_ms`].
    pub fn order_max_idle(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.order_max_idle_ms)
    }

    /// The failover fence, `None` when off (see [`Settings::replica_acks`]).
    pub fn fence(&self) -> Option<crate::handler::Fence> {
        crate::handler::Fence::of(self.replica_acks, std::time::Duration::from_millis(self.replica_ack_timeout_ms))
    }

    /// The Kafka settings of the stage's consumer: with
    /// `group.instance.id` under static membership.
    pub fn consumer_kafka(&self) -> KafkaSettings {
        let mut kafka = self.kafka.clone();
        if self.static_membership {
            kafka.group_instance_id = Some(format!("{}{}", self.kafka.topic_prefix, self.instance_id));
        }
        kafka
    }

    /// `firstcome-stock-<topic_prefix><instance_id>`.
    pub fn transactional_id(&self) -> String {
        format!("firstcome-stock-{}{}", self.kafka.topic_prefix, self.instance_id)
    }

    /// These settings with the local stack's credentials of
    /// [`Principal::STOCK`] wherever none is configured (local only).
    pub fn with_local_credentials(self) -> Self {
        ServiceSettings::with_local_credentials(self)
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
        if self.replica_acks > 0 && self.replica_ack_timeout_ms >= self.kafka.transaction_timeout_ms {
            return Err(SettingsError::Invalid(format!(
                "replica_ack_timeout_ms ({}) must be below kafka.transaction_timeout_ms ({}): the batch waits inside its transaction",
                self.replica_ack_timeout_ms, self.kafka.transaction_timeout_ms
            )));
        }
        self.check_credentials()
    }
}

impl ServiceSettings for Settings {
    const PRINCIPAL: Principal = Principal::STOCK;

    fn environment(&self) -> Environment {
        self.environment
    }

    fn credentials(&mut self) -> Credentials<'_> {
        Credentials {
            kafka: Some(&mut self.kafka),
            redis: Some(&mut self.redis),
            database: Some(&mut self.database),
            replica: Some(&mut self.replica),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn production_refuses_the_stack_passwords() {
        let mut settings = Settings { environment: Environment::Production, ..Default::default() };
        // TLS and a Kafka login, as production requires of every connection (not under test here).
        settings.kafka.username = Some("stock".into());
        settings.redis.tls = platform::settings::TlsSettings::verify_full("/etc/ssl/store-ca.pem");
        settings.database.tls = platform::settings::TlsSettings::verify_full("/etc/ssl/store-ca.pem");
        settings.replica.tls = platform::settings::TlsSettings::verify_full("/etc/ssl/store-ca.pem");
        let refused = settings.validate().expect_err("no role named for the database");
        assert!(refused.to_string().contains("database"), "{refused}");
        settings.database.url = SecretString::from("postgres://firstcome_stock:firstcome_stock@db/firstcome");
        assert!(settings.validate().expect_err("the stack's database password").to_string().contains("database"));
        settings.database.url = SecretString::from("postgres://stock:Zq9-long-random@db/firstcome");
        let refused = settings.validate().expect_err("the stack's replica reader");
        assert!(refused.to_string().contains("replica.url"), "{refused}");
        settings.replica.url = SecretString::from("postgres://stock_ro:Kp2-issued-by-vault@replica:5432/shop");
        assert!(settings.validate().is_ok(), "no Redis or Kafka password configured: nothing to refuse");
        settings.redis.url = "redis://stock:firstcome_stock@10.0.0.5:6379".into();
        let error = settings.validate().expect_err("the stack's Redis password");
        assert!(error.to_string().contains("redis"), "{error}");
        settings.redis.url = "redis://stock:Zq9-long-random@10.0.0.5:6379".into();
        assert!(settings.validate().is_ok());
        settings.kafka.extra.insert("sasl.password".into(), "firstcome_stock".into());
        assert!(settings.validate().expect_err("the stack's Kafka password").to_string().contains("kafka"));
        settings.environment = Environment::Local;
        assert!(settings.validate().is_ok(), "local accepts the stack's passwords");
    }

    #[test]
    fn one_variable_changes_one_field() {
        let defaults = Settings::default();
        assert_eq!(defaults.database.max_connections, 2, "a default of the stock stage's own");
        platform::settings::check_layering(&defaults).unwrap();
    }

    #[test]
    fn defaults_serve_ops_on_9101_with_a_host_derived_instance() {
        let a = Settings::default();
        let b = Settings::default();
        assert_eq!(a.http.port, DEFAULT_OPS_PORT);
        assert!(a.instance_id.starts_with(&format!("{}-", hostname())), "{}", a.instance_id);
        // Two stages built in one process never share a transactional id.
        assert_ne!(a.instance_id, b.instance_id);
        assert!(a.validate().is_ok());
        assert!(a.kafka.transaction_timeout_ms <= 10_000, "a dead transaction stalls readers this long at most");
        // A restore runs inside a batch's transaction: its waits are shorter.
        assert!(
            a.database.timeout_ms < a.kafka.transaction_timeout_ms
                && a.replica.timeout_ms < a.kafka.transaction_timeout_ms
        );
        let local = a.with_local_credentials();
        assert_eq!(local.database.user.as_deref(), Some("firstcome_stock"), "its own role on the local stack");
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
    fn static_membership_joins_under_the_stable_instance_id() {
        let mut settings = Settings { instance_id: "stock-2".into(), ..Default::default() };
        settings.kafka.topic_prefix = "t-1.".into();
        assert_eq!(settings.consumer_kafka().group_instance_id, None, "off by default");
        settings.static_membership = true;
        assert_eq!(settings.consumer_kafka().group_instance_id.as_deref(), Some("t-1.stock-2"));
    }

    #[test]
    fn an_empty_instance_id_is_refused() {
        let settings = Settings { instance_id: " ".into(), ..Default::default() };
        assert!(settings.validate().is_err());
    }
}
