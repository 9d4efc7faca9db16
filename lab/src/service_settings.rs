//! Every service's settings for a lab run, built in one place from typed
//! settings: each service's `Settings` as it would load them from the lab's
//! environment (so a `FIRSTCOME_WAITING_ROOM__ENABLED=true` given to the demo
//! reaches its ingest processes), with the run's stack (Kafka, the registry,
//! PostgreSQL, the member replica, Redis) and the service's own fields
//! (ports, instance id, provider link, faults) set as typed values. A
//! service is started with its settings written as its TOML file
//! (`FIRSTCOME_CONFIG`), the only configuration it reads: the lab's
//! `FIRSTCOME_*` variables are not passed on ([`ServiceSpec::new`]), so no
//! list of variable names is kept here, in the demo, the chaos suite or bash.
//!
//! The services log in as themselves: the operator's login the lab uses
//! (`CliSettings::with_local_credentials`) is not passed on; the logins the
//! environment names for a service, if any, are.

use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;

use firstcome_cli::CliSettings;
use platform::settings::{DatabaseSettings, HttpSettings, KafkaSettings, RedisSettings};

use crate::services::ServiceSpec;

/// The stack a run's services share, from the run's settings.
#[derive(Debug, Clone)]
pub struct Stack {
    settings: CliSettings,
}

/// Where the sender finds the gift provider, and how it calls it.
#[derive(Debug, Clone)]
pub struct ProviderLink {
    pub base_url: String,
    pub timeout_ms: u64,
    /// `None`: the sender's default.
    pub rate_per_sec: Option<u32>,
    pub backoff_max_ms: Option<u64>,
}

impl Stack {
    pub fn new(settings: &CliSettings) -> Self {
        Self { settings: settings.clone() }
    }

    /// The run's Kafka with the login `base` names (none: the service's own).
    fn kafka(&self, base: &KafkaSettings) -> KafkaSettings {
        KafkaSettings {
            username: base.username.clone(),
            password: base.password.clone(),
            ..self.settings.kafka.clone()
        }
    }

    /// The run's database with the login `base` names.
    fn database(&self, base: &DatabaseSettings) -> DatabaseSettings {
        DatabaseSettings { user: base.user.clone(), password: base.password.clone(), ..self.settings.database.clone() }
    }

    /// The run's Redis with the login `base` names.
    fn redis(&self, base: &RedisSettings) -> RedisSettings {
        RedisSettings {
            username: base.username.clone(),
            password: base.password.clone(),
            ..self.settings.redis.clone()
        }
    }

    pub fn ingest(&self, port: u16, ops_port: u16) -> anyhow::Result<ingest::Settings> {
        let base: ingest::Settings = from_environment("ingest")?;
        let mut settings = ingest::Settings {
            environment: self.settings.environment,
            http: HttpSettings { port, ..base.http.clone() },
            // `/healthz` and `/metrics` are on ingest's internal ops listener.
            ops: HttpSettings { port: ops_port, ..base.ops.clone() },
            kafka: self.kafka(&base.kafka),
            registry: self.settings.registry.clone(),
            redis: self.redis(&base.redis),
            database: self.database(&base.database),
            ..base
        };
        // The lab mints its members' tokens with its own secret.
        settings.auth.token_secret = self.settings.auth.token_secret.clone();
        Ok(settings)
    }

    pub fn stock(
        &self,
        port: u16,
        instance_id: Option<String>,
        replica_acks: Option<u32>,
    ) -> anyhow::Result<stock_processor::Settings> {
        let base: stock_processor::Settings = from_environment("stock-processor")?;
        Ok(stock_processor::Settings {
            environment: self.settings.environment,
            kafka: self.kafka(&base.kafka),
            registry: self.settings.registry.clone(),
            redis: self.redis(&base.redis),
            database: self.database(&base.database),
            replica: self.settings.replica.clone(),
            http: HttpSettings { port, ..base.http.clone() },
            instance_id: instance_id.unwrap_or(base.instance_id.clone()),
            replica_acks: replica_acks.unwrap_or(base.replica_acks),
            ..base
        })
    }

    pub fn recorder(&self, port: u16) -> anyhow::Result<recorder::Settings> {
        let base: recorder::Settings = from_environment("recorder")?;
        Ok(recorder::Settings {
            environment: self.settings.environment,
            kafka: self.kafka(&base.kafka),
            registry: self.settings.registry.clone(),
            database: self.database(&base.database),
            http: HttpSettings { port, ..base.http.clone() },
            ..base
        })
    }

    pub fn sender(&self, port: u16, provider: &ProviderLink) -> anyhow::Result<sender::Settings> {
        let base: sender::Settings = from_environment("sender")?;
        let mut settings = sender::Settings {
            environment: self.settings.environment,
            kafka: self.kafka(&base.kafka),
            registry: self.settings.registry.clone(),
            database: self.database(&base.database),
            replica: self.settings.replica.clone(),
            http: HttpSettings { port, ..base.http.clone() },
            ..base
        };
        settings.provider.base_url = provider.base_url.clone();
        settings.provider.timeout_ms = provider.timeout_ms;
        if let Some(rate) = provider.rate_per_sec {
            settings.provider.rate_per_sec = rate;
        }
        if let Some(backoff) = provider.backoff_max_ms {
            settings.provider.backoff_max_ms = backoff;
        }
        Ok(settings)
    }

    pub fn provider_sim(
        &self,
        port: u16,
        faults: provider_sim::faults::Faults,
        seed: Option<u64>,
    ) -> anyhow::Result<provider_sim::Settings> {
        let base: provider_sim::Settings = from_environment("provider-sim")?;
        Ok(provider_sim::Settings {
            environment: self.settings.environment,
            http: HttpSettings { port, ..base.http.clone() },
            faults,
            seed,
            ..base
        })
    }
}

/// A service's settings as it would load them from the lab's environment
/// (its defaults, then `FIRSTCOME_…`).
fn from_environment<S: Serialize + DeserializeOwned + Default>(service: &str) -> anyhow::Result<S> {
    platform::settings::load_layered::<S>()
        .with_context(|| format!("Failed to read {service}'s settings from the environment"))
}

impl ServiceSpec {
    /// A service started with `settings` alone: written to
    /// `<dir>/<name>.toml`, named by `FIRSTCOME_CONFIG`.
    pub fn new(
        name: &str,
        binary: &str,
        settings: &impl Serialize,
        dir: &Path,
        health_port: u16,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("Failed to create {}", dir.display()))?;
        let file = dir.join(format!("{name}.toml"));
        let text = toml::to_string(settings).with_context(|| format!("Failed to write {name}'s settings as TOML"))?;
        std::fs::write(&file, text).with_context(|| format!("Failed to write {}", file.display()))?;
        // The file holds the stack's passwords and the token secret: its owner's alone.
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let file = std::fs::canonicalize(&file)?;
        Ok(Self {
            name: name.to_string(),
            binary: binary.to_string(),
            env: vec![("FIRSTCOME_CONFIG".into(), file.display().to_string())],
            health_url: format!("http://127.0.0.1:{health_port}/healthz"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a service reads from the file the lab writes.
    fn read_back<S: serde::de::DeserializeOwned>(settings: &impl Serialize) -> S {
        let text = toml::to_string(settings).expect("TOML");
        config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("the service reads it back")
    }

    fn run() -> CliSettings {
        let mut settings = CliSettings::default();
        settings.kafka.topic_prefix = "chaos-1-ab.".into();
        settings.kafka.brokers = "127.0.0.1:9192,127.0.0.1:9193,127.0.0.1:9194".into();
        settings.redis.sentinels = "127.0.0.1:26380".into();
        settings.replica.schema = "chaos_1_ab".into();
        settings.with_local_credentials()
    }

    #[test]
    fn a_service_gets_the_runs_stack_but_not_the_operators_login() {
        let stack = Stack::new(&run());
        let stock: stock_processor::Settings =
            read_back(&stack.stock(9101, Some("chaos-stock-1".into()), Some(1)).expect("settings"));
        assert_eq!(stock.kafka.topic_prefix, "chaos-1-ab.");
        assert_eq!(stock.kafka.brokers, "127.0.0.1:9192,127.0.0.1:9193,127.0.0.1:9194");
        assert_eq!(stock.redis.sentinels, "127.0.0.1:26380");
        assert_eq!(stock.replica.schema, "chaos_1_ab");
        assert_eq!((stock.http.port, stock.instance_id.as_str(), stock.replica_acks), (9101, "chaos-stock-1", 1));
        assert_eq!((stock.database.user, stock.kafka.username, stock.redis.username), (None, None, None));
    }

    #[test]
    fn the_provider_link_and_the_simulators_faults_survive_the_file() {
        let stack = Stack::new(&run());
        let link = ProviderLink {
            base_url: "http://127.0.0.1:8090".into(),
            timeout_ms: 1000,
            rate_per_sec: Some(60),
            backoff_max_ms: None,
        };
        let sender: sender::Settings = read_back(&stack.sender(9103, &link).expect("settings"));
        assert_eq!((sender.provider.base_url.as_str(), sender.provider.timeout_ms), ("http://127.0.0.1:8090", 1000));
        assert_eq!(sender.provider.rate_per_sec, 60);
        let faults = provider_sim::faults::Faults { refused_phone_suffixes: vec!["77".into()], ..Default::default() };
        let sim: provider_sim::Settings = read_back(&stack.provider_sim(8090, faults, Some(3)).expect("settings"));
        assert_eq!((sim.faults.refused_phone_suffixes, sim.seed), (vec!["77".to_string()], Some(3)));
        let ingest: ingest::Settings = read_back(&stack.ingest(8080, 9110).expect("settings"));
        assert_eq!((ingest.http.port, ingest.ops.port), (8080, 9110));
    }
}
