//! `firstcome reconcile`: compare the Redis counter, the PostgreSQL ledger,
//! our dispatch records and the provider's records; with `--repair`, set the
//! Redis counter back to what the ledger says — only when nothing is in
//! flight, since the ledger is then the whole truth.

use redis::Script;

use platform::event_keys::{EventKeys, STATE_CHANNEL};

use super::invariants::{self, InvariantReport, Stores};
use crate::settings::CliSettings;

#[derive(Debug)]
pub struct Reconciliation {
    pub report: InvariantReport,
    /// The counter value written by `--repair`, if any.
    pub repaired_stock: Option<i64>,
}

/// Sets the counter, keeping its expiry, and announces the state change that
/// follows (ingest instances switch between 410 and accepting).
const REPAIR_LUA: &str = r#"
-- KEYS: stock, meta; ARGV: counter, event id, channel
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
local status = redis.call('HGET', KEYS[2], 'status')
local next = nil
if tonumber(ARGV[1]) > 0 and status == 'sold_out' then next = 'open' end
if tonumber(ARGV[1]) <= 0 and status == 'open' then next = 'sold_out' end
if next then
  redis.call('HSET', KEYS[2], 'status', next)
  redis.call('PUBLISH', ARGV[3], cjson.encode({event_id = ARGV[2], status = next}))
end
return next or ''
"#;

pub async fn run(
    settings: &CliSettings,
    event_id: &str,
    provider_url: Option<&str>,
    repair: bool,
) -> anyhow::Result<Reconciliation> {
    let stores = Stores::connect(settings).await?;
    let report = invariants::check(&stores, event_id, &[], provider_url).await?;
    let tally = &report.tally;
    let expected = (tally.for_sale - (tally.ledger_issued - tally.ledger_returned)).max(0);
    let mut repaired_stock = None;
    if repair && tally.redis_stock != expected {
        // Idle: no entry waiting for a decision, no WON waiting for its gift,
        // and every FAILED unit's release already applied in Redis (check 4),
        // otherwise a release still in Kafka would add the unit a second time.
        let returns_applied = report.checks.iter().any(|c| c.name.starts_with('4') && c.holds);
        anyhow::ensure!(
            tally.pending == 0 && tally.won == 0 && returns_applied,
            "pipeline not idle ({} pending, {} won-unsent, returns applied: {returns_applied}): not repairing",
            tally.pending,
            tally.won
        );
        let keys = EventKeys::new(event_id);
        let mut redis = stores.redis.clone();
        let _: String = Script::new(REPAIR_LUA)
            .key(&keys.stock)
            .key(&keys.meta)
            .arg(expected)
            .arg(event_id)
            .arg(STATE_CHANNEL)
            .invoke_async(&mut redis)
            .await?;
        repaired_stock = Some(expected);
    }
    Ok(Reconciliation { report, repaired_stock })
}
