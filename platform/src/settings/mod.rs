//! Typed settings shared by the services, one file per section.
//!
//! Every service has its own settings struct that holds the sections below
//! and is loaded by [`load_layered`], in layers: the struct's `Default`
//! (which runs the local stack), then an optional TOML file named by
//! `FIRSTCOME_CONFIG`, then environment variables
//! `FIRSTCOME_<SECTION>__<FIELD>` (e.g. `FIRSTCOME_KAFKA__BROKERS`). A layer
//! changes only the fields it names: one variable changes one field, and the
//! section's other fields keep the service's defaults (which may differ from
//! the section type's own, e.g. each service's `http.port`).
//!
//! A service's settings implement [`ServiceSettings`]: they name once which
//! sections hold a credential, and the local stack's credentials are filled
//! in and the stack's passwords refused outside local for all of them alike.

mod database;
mod environment;
mod http;
mod kafka;
mod layers;
mod principal;
mod redis;
pub mod secret;
mod service;
mod telemetry;

pub use database::{DatabaseSettings, MemberPrimarySettings, ReplicaSettings, TlsMode, TlsSettings};
pub use environment::{Environment, DEV_TOKEN_SECRET, MIN_SECRET_BYTES, STACK_PASSWORDS};
pub use http::{BindError, HttpSettings};
pub use kafka::{GroupProtocol, KafkaSettings, RegistrySettings};
pub use layers::{check_layering, environment, layered, load, load_layered};
pub use principal::Principal;
pub use redis::RedisSettings;
pub use service::{Credentials, ServiceSettings};
pub use telemetry::{LogFormat, TelemetrySettings};

/// Settings could not be loaded or are inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("failed to read settings: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid settings: {0}")]
    Invalid(String),
}
