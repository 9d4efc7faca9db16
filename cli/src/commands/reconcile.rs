//! `firstcome reconcile`: check the five invariants against Redis (counter,
//! decisions, accepted first-entry marks), the PostgreSQL ledger, entries and
//! payout claims, our dispatch records and the provider's; count what was
//! refused on the way (WONs the payout guard refused, releases the stock
//! stage dead-lettered); with `--repair`, set the Redis counter back to what
//! Redis' own decision log says.
//!
//! The repair is one script, atomic with the stock decisions: the counter
//! must equal `for_sale − WON decisions + released units`, both of which the
//! decision and release scripts write in the same step as they move the
//! counter. It therefore needs no idle pipeline and cannot race a decision;
//! the ledger (written later, by the recording group) is only reported.

use std::collections::BTreeMap;

use anyhow::Context;
use rdkafka::message::Message;
use redis::Script;

use platform::event_keys::{EventKeys, STATE_CHANNEL};
use schemas::StockRelease;

use super::dlq;
use super::invariants::{self, InvariantReport, Stores};
use crate::settings::CliSettings;

#[derive(Debug)]
pub struct Reconciliation {
    pub report: InvariantReport,
    /// The counter value written by `--repair`, if it changed.
    pub repaired_stock: Option<i64>,
    /// WONs of this event the payout guard refused, by reason (never paid).
    pub payout_refusals: BTreeMap<String, i64>,
    /// Releases of this event dead-lettered on `stock-released.dlq`.
    pub refused_releases: RefusedReleases,
}

/// Releases (`stock-released` records) refused on the way: their unit did
/// not go back to stock where they were refused.
#[derive(Debug, Default)]
pub struct RefusedReleases {
    /// Of this event, by the group that dead-lettered them.
    pub by_group: BTreeMap<String, usize>,
    /// Dead letters whose bytes do not decode as a release: their event is
    /// unknown, so they are counted for every event.
    pub unreadable: usize,
}

impl RefusedReleases {
    /// Refused by the stock stage (group `stock`): units not returned to Redis.
    pub fn by_stock_stage(&self, settings: &CliSettings) -> usize {
        self.by_group.get(&settings.kafka.group(STOCK_GROUP)).copied().unwrap_or(0)
    }
}

/// The stock stage's consumer group, behind the topic prefix (see stock-processor's settings).
const STOCK_GROUP: &str = "stock";

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
    // No rush here: invariant 3 is checked against Redis' accepted marks.
    let report = invariants::check(&stores, event_id, &[], provider_url).await?;
    let payout_refusals = payout_refusals(&stores, event_id).await?;
    let refused_releases = refused_releases(settings, event_id).await?;
    Ok(Reconciliation { report, repaired_stock, payout_refusals, refused_releases })
}

/// The event's refused WONs by reason.
async fn payout_refusals(stores: &Stores, event_id: &str) -> anyhow::Result<BTreeMap<String, i64>> {
    let db = stores.pool.get().await?;
    Ok(db
        .query("SELECT reason, count(*) FROM payout_refusals WHERE event_id = $1 GROUP BY reason", &[&event_id])
        .await
        .context("Failed to count payout refusals")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Counts the event's dead letters on `stock-released.dlq` (every one there
/// when the call starts, read by assignment; nothing committed).
async fn refused_releases(settings: &CliSettings, event_id: &str) -> anyhow::Result<RefusedReleases> {
    let source = settings.kafka.topics().stock_released;
    let dead = dlq::read(&settings.kafka, &source, usize::MAX).await?;
    let mut refused = RefusedReleases::default();
    if dead.is_empty() {
        return Ok(refused);
    }
    let codec = settings.registry.codec().context("Failed to build the registry codec")?;
    for message in &dead {
        match codec.decode::<StockRelease>(message.payload()).await {
            Ok(release) if release.event_id == event_id => {
                let group = dlq::header(message.headers(), "dlq-group").unwrap_or_else(|| "?".into());
                *refused.by_group.entry(group).or_default() += 1;
            }
            Ok(_) => {}
            Err(schemas::CodecError::Poison(_)) => refused.unreadable += 1,
            Err(error) => return Err(error).context("Failed to decode a dead-lettered release"),
        }
    }
    Ok(refused)
}

/// Prints what `run` found, for people.
pub fn print(settings: &CliSettings, event_id: &str, outcome: &Reconciliation) {
    println!("reconcile {event_id}");
    invariants::print(&outcome.report);
    if let Some(stock) = outcome.repaired_stock {
        println!("repaired: redis stock set to {stock} (from the decision log)");
    }
    let refusals: i64 = outcome.payout_refusals.values().sum();
    if refusals > 0 {
        let reasons: Vec<String> = outcome.payout_refusals.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!("payout guard refused {refusals} WONs (never paid; see the dispatch dead letters): {}", reasons.join(", "));
    }
    let releases = &outcome.refused_releases;
    if !releases.by_group.is_empty() || releases.unreadable > 0 {
        let groups: Vec<String> = releases.by_group.iter().map(|(g, n)| format!("{g} {n}")).collect();
        println!(
            "releases dead-lettered on stock-released.dlq: {} by the stock stage (units not returned to Redis); by group: {}; {} unreadable",
            releases.by_stock_stage(settings),
            groups.join(", "),
            releases.unreadable
        );
    }
}
