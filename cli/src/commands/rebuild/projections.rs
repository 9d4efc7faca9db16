//! `firstcome rebuild projections`.

use crate::CliSettings;

/// Rebuilds the projections into fresh tables and prints the comparison.
pub async fn run(_settings: &CliSettings) -> anyhow::Result<()> {
    anyhow::bail!("rebuild projections: not written yet")
}
