//! `firstcome rebuild redis <event>` (see `stock_processor::rebuild`).

use crate::CliSettings;

/// Rebuilds `event_id`'s stock state and prints what it found.
pub async fn run(_settings: &CliSettings, _event_id: &str) -> anyhow::Result<()> {
    anyhow::bail!("rebuild redis: not written yet")
}
