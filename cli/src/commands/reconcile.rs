//! `firstcome reconcile`: compare the Redis counter, the PostgreSQL ledger,
//! our dispatch records and the provider's records; with `--repair`, set the
//! Redis counter back to what the ledger says once the pipeline is idle.

use redis::AsyncCommands;

use platform::event_keys::EventKeys;

use super::invariants::{self, InvariantReport};
use crate::settings::CliSettings;

#[derive(Debug)]
pub struct Reconciliation {
    pub report: InvariantReport,
    /// The counter value written by `--repair`, if any.
    pub repaired_stock: Option<i64>,
}

pub async fn run(
    settings: &CliSettings,
    event_id: &str,
    provider_url: Option<&str>,
    repair: bool,
) -> anyhow::Result<Reconciliation> {
    let report = invariants::check(settings, event_id, &[], provider_url).await?;
    let tally = &report.tally;
    let expected = tally.for_sale - (tally.ledger_issued - tally.ledger_returned);
    let mut repaired_stock = None;
    if repair && tally.redis_stock != expected {
        // Only an idle pipeline has a ledger that is the whole truth: entries
        // still pending or won-unsent mean decisions or returns are in flight.
        anyhow::ensure!(
            tally.pending == 0 && tally.won == 0,
            "pipeline not idle ({} pending, {} won-unsent): not repairing",
            tally.pending,
            tally.won
        );
        let mut redis = platform::redis::connect(&settings.redis).await?;
        let _: () = redis.set(EventKeys::new(event_id).stock, expected.max(0)).await?;
        repaired_stock = Some(expected.max(0));
    }
    Ok(Reconciliation { report, repaired_stock })
}
