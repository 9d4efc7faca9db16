//! `firstcome reconcile`: check the five invariants against the Redis
//! counter, the PostgreSQL ledger, our dispatch records and the provider's;
//! with `--repair`, set the Redis counter back to what Redis' own decision
//! log says.
//!
//! The repair is one script, atomic with the stock decisions: the counter
//! must equal `for_sale − WON decisions + released units`, both of which the
//! decision and release scripts write in the same step as they move the
//! counter. It therefore needs no idle pipeline and cannot race a decision;
//! the ledger (written later, by the recording group) is only reported.

use redis::Script;

use platform::event_keys::{EventKeys, STATE_CHANNEL};

use super::invariants::{self, InvariantReport, Stores};
use crate::settings::CliSettings;

#[derive(Debug)]
pub struct Reconciliation {
    pub report: InvariantReport,
    /// The counter value written by `--repair`, if it changed.
    pub repaired_stock: Option<i64>,
}

/// Recomputes the counter from the decision log, keeps its expiry, and
/// announces the state change that follows (ingest switches between 410 and
/// accepting). Returns {counter before, counter derived, new status or ''}.
const REPAIR_LUA: &str = r#"
-- KEYS: stock, meta, decisions, released; ARGV: event id, channel
local for_sale = tonumber(redis.call('HGET', KEYS[2], 'for_sale'))
if not for_sale then return {-1, -1, 'unknown_event'} end
local won = 0
for _, decision in ipairs(redis.call('HVALS', KEYS[3])) do
  if string.sub(decision, 1, 4) == 'WON|' then won = won + 1 end
end
local expected = for_sale - won + redis.call('SCARD', KEYS[4])
local before = tonumber(redis.call('GET', KEYS[1]) or '-1')
if expected < 0 then return {before, expected, 'oversold'} end
if before == expected then return {before, expected, ''} end
redis.call('SET', KEYS[1], expected, 'KEEPTTL')
local status = redis.call('HGET', KEYS[2], 'status')
local next = ''
if expected > 0 and status == 'sold_out' then next = 'open' end
if expected <= 0 and status == 'open' then next = 'sold_out' end
if next ~= '' then
  redis.call('HSET', KEYS[2], 'status', next)
  redis.call('PUBLISH', ARGV[2], cjson.encode({event_id = ARGV[1], status = next}))
end
return {before, expected, next}
"#;

pub async fn run(
    settings: &CliSettings,
    event_id: &str,
    provider_url: Option<&str>,
    repair: bool,
) -> anyhow::Result<Reconciliation> {
    let stores = Stores::connect(settings).await?;
    let mut repaired_stock = None;
    if repair {
        let keys = EventKeys::new(event_id);
        let mut redis = stores.redis.clone();
        let (before, derived, note): (i64, i64, String) = Script::new(REPAIR_LUA)
            .key(&keys.stock)
            .key(&keys.meta)
            .key(&keys.decisions)
            .key(&keys.released)
            .arg(event_id)
            .arg(STATE_CHANNEL)
            .invoke_async(&mut redis)
            .await?;
        anyhow::ensure!(note != "unknown_event", "no event {event_id} in Redis");
        anyhow::ensure!(note != "oversold", "Redis decisions show more units won than for sale ({derived}): not repairing");
        if before != derived {
            repaired_stock = Some(derived);
        }
    }
    let report = invariants::check(&stores, event_id, &[], provider_url).await?;
    Ok(Reconciliation { report, repaired_stock })
}
