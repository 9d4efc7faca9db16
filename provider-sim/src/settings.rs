//! Settings of the simulator: where it listens, which faults it starts with,
//! and the seed of its dice.

use platform::settings::{HttpSettings, TelemetrySettings};
use secrecy::SecretString;
use serde::Deserialize;

use crate::faults::Faults;

/// The simulator's port when none is configured.
pub const DEFAULT_PORT: u16 = 8090;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Listener of the provider API (and its `/healthz`, `/metrics`).
    pub http: HttpSettings,
    /// Faults active from the start; changed at runtime with `PUT /admin/faults`.
    pub faults: Faults,
    /// Seed of the random faults; a fixed seed repeats the same sequence of
    /// dice rolls (tests). `None` picks one at random and logs it.
    pub seed: Option<u64>,
    pub telemetry: TelemetrySettings,
    /// The key callers must send as `X-Api-Key` on issue and lookup (the
    /// sender's `provider.api_key`; the same local default on both sides).
    pub api_key: SecretString,
}

/// The simulator's key on the local stack (the sender's default too).
pub const DEV_API_KEY: &str = "firstcome-local-provider-key";

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on_port(DEFAULT_PORT),
            faults: Faults::default(),
            seed: None,
            telemetry: TelemetrySettings::default(),
            api_key: SecretString::from(DEV_API_KEY),
        }
    }
}

impl Settings {
    /// The simulator on a random port with the given faults and seed (tests, demos).
    pub fn ephemeral(faults: Faults, seed: u64) -> Self {
        Self { http: HttpSettings::on_port(0), faults, seed: Some(seed), ..Self::default() }
    }
}
