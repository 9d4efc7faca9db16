//! Every service's settings for a lab run, built in one place from typed
//! settings: the stack's sections (Kafka, the registry, PostgreSQL, the
//! member replica, Redis) from the run's, each service's own fields typed
//! too. A service is started with its settings written as its TOML file
//! (`FIRSTCOME_CONFIG`), the only configuration it reads: the lab's
//! `FIRSTCOME_*` variables are not passed on ([`ServiceSpec::new`]), so no
//! list of variable names is kept here, in the demo, the chaos suite or bash.
//!
//! The services log in as themselves: the operator's login the lab uses
//! (`CliSettings::with_local_credentials`) is left out, and each service
//! takes its own principal on the local stack, as it does when started by hand.

use std::path::Path;

use anyhow::Context;
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

    /// Kafka without the operator's login.
    fn kafka(&self) -> KafkaSettings {
        KafkaSettings { username: None, password: None, ..self.settings.kafka.clone() }
    }

    /// firstcome's database without the operator's login.
    fn database(&self) -> DatabaseSettings {
        DatabaseSettings { user: None, password: None, ..self.settings.database.clone() }
    }

    /// Redis without the operator's login.
    fn redis(&self) -> RedisSettings {
        RedisSettings { username: None, password: None, ..self.settings.redis.clone() }
    }

    pub fn ingest(&self, port: u16, ops_port: u16) -> ingest::Settings {
        let defaults = ingest::Settings::default();
        let mut settings = ingest::Settings {
            environment: self.settings.environment,
            http: HttpSettings { port, ..defaults.http.clone() },
            // `/healthz` and `/metrics` are on ingest's internal ops listener.
            ops: HttpSettings { port: ops_port, ..defaults.ops.clone() },
            kafka: self.kafka(),
            registry: self.settings.registry.clone(),
            redis: self.redis(),
            database: self.database(),
            ..defaults
        };
        // The lab mints its members' tokens with its own secret.
        settings.auth.token_secret = self.settings.auth.token_secret.clone();
        settings
    }

    pub fn stock(&self, port: u16, instance_id: Option<String>, replica_acks: Option<u32>) -> stock_processor::Settings {
        let defaults = stock_processor::Settings::default();
        stock_processor::Settings {
            environment: self.settings.environment,
            kafka: self.kafka(),
            registry: self.settings.registry.clone(),
            redis: self.redis(),
            database: self.database(),
            replica: self.settings.replica.clone(),
            http: HttpSettings { port, ..defaults.http.clone() },
            instance_id: instance_id.unwrap_or(defaults.instance_id.clone()),
            replica_acks: replica_acks.unwrap_or(defaults.replica_acks),
            ..defaults
        }
    }

    pub fn recorder(&self, port: u16) -> recorder::Settings {
        let defaults = recorder::Settings::default();
        recorder::Settings {
            environment: self.settings.environment,
            kafka: self.kafka(),
            registry: self.settings.registry.clone(),
            database: self.database(),
            http: HttpSettings { port, ..defaults.http.clone() },
            ..defaults
        }
    }

    pub fn sender(&self, port: u16, provider: &ProviderLink) -> sender::Settings {
        let defaults = sender::Settings::default();
        let mut settings = sender::Settings {
            environment: self.settings.environment,
            kafka: self.kafka(),
            registry: self.settings.registry.clone(),
            database: self.database(),
            replica: self.settings.replica.clone(),
            http: HttpSettings { port, ..defaults.http.clone() },
            ..defaults
        };
        settings.provider.base_url = provider.base_url.clone();
        settings.provider.timeout_ms = provider.timeout_ms;
        if let Some(rate) = provider.rate_per_sec {
            settings.provider.rate_per_sec = rate;
        }
        if let Some(backoff) = provider.backoff_max_ms {
            settings.provider.backoff_max_ms = backoff;
        }
        settings
    }

    pub fn provider_sim(&self, port: u16, faults: provider_sim::faults::Faults, seed: Option<u64>) -> provider_sim::Settings {
        let defaults = provider_sim::Settings::default();
        provider_sim::Settings {
            environment: self.settings.environment,
            http: HttpSettings { port, ..defaults.http.clone() },
            faults,
            seed,
            ..defaults
        }
    }
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
        let stock: stock_processor::Settings = read_back(&stack.stock(9101, Some("chaos-stock-1".into()), Some(1)));
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
        let link = ProviderLink { base_url: "http://127.0.0.1:8090".into(), timeout_ms: 1000, rate_per_sec: Some(60), backoff_max_ms: None };
        let sender: sender::Settings = read_back(&stack.sender(9103, &link));
        assert_eq!((sender.provider.base_url.as_str(), sender.provider.timeout_ms), ("http://127.0.0.1:8090", 1000));
        assert_eq!(sender.provider.rate_per_sec, 60);
        let faults = provider_sim::faults::Faults { refused_phone_suffixes: vec!["77".into()], ..Default::default() };
        let sim: provider_sim::Settings = read_back(&stack.provider_sim(8090, faults, Some(3)));
        assert_eq!((sim.faults.refused_phone_suffixes, sim.seed), (vec!["77".to_string()], Some(3)));
        let ingest: ingest::Settings = read_back(&stack.ingest(8080, 9110));
        assert_eq!((ingest.http.port, ingest.ops.port), (8080, 9110));
    }
}
