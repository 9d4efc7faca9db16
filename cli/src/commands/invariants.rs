//! The invariants of DESIGN.md, checked against the real stores: what the
//! demo prints, what `reconcile` reports, what the end-to-end tests assert.
//!
//! 1. Gifts sent ≤ stock for sale.
//! 2. At most one gift per member.
//! 3. Every entry answered 202 is in the entries table.
//! 4. Every WON ends SENT, or FAILED with its unit returned.
//! 5. Redis counter, PostgreSQL ledger and provider records reconcile.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use platform::event_keys::EventKeys;

use super::rush::Accepted;
use crate::settings::CliSettings;

/// One invariant's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub holds: bool,
    pub detail: String,
}

/// The counts behind the verdicts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    pub for_sale: i64,
    pub entries: i64,
    pub pending: i64,
    pub won: i64,
    pub sent: i64,
    pub failed: i64,
    pub lost: i64,
    pub ledger_issued: i64,
    pub ledger_returned: i64,
    pub redis_stock: i64,
    pub provider_gifts: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InvariantReport {
    pub tally: Tally,
    pub checks: Vec<Check>,
}

impl InvariantReport {
    pub fn all_hold(&self) -> bool {
        self.checks.iter().all(|c| c.holds)
    }

    /// Whether the pipeline has finished with these entries: every accepted
    /// entry recorded and decided, no WON waiting for its gift, and every
    /// returned unit back in the Redis counter (check 5 holds).
    pub fn drained(&self, accepted: usize) -> bool {
        let t = &self.tally;
        t.entries >= accepted as i64
            && t.pending == 0
            && t.won == 0
            && self.checks.iter().any(|c| c.name.starts_with('5') && c.holds)
    }

    pub fn failing(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.holds).collect()
    }
}

/// A gift as the provider lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderGift {
    pub idempotency_key: String,
    pub phone: String,
}

#[derive(Debug, Deserialize)]
struct GiftList {
    gifts: Vec<ProviderGift>,
}

/// The stores the checks read, connected once (the drain loops poll them).
#[derive(Clone)]
pub struct Stores {
    pub pool: deadpool_postgres::Pool,
    pub redis: redis::aio::ConnectionManager,
    http: reqwest::Client,
}

impl Stores {
    pub async fn connect(settings: &CliSettings) -> anyhow::Result<Self> {
        Ok(Self {
            pool: platform::db::pool(&settings.database)?,
            redis: platform::redis::connect(&settings.redis).await?,
            http: reqwest::Client::builder().no_proxy().timeout(std::time::Duration::from_secs(10)).build()?,
        })
    }
}

/// Every gift the provider issued.
pub async fn provider_gifts(http: &reqwest::Client, provider_url: &str) -> anyhow::Result<Vec<ProviderGift>> {
    let url = format!("{}/v1/gifts", provider_url.trim_end_matches('/'));
    let list: GiftList = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("Failed to list gifts at {url}"))?
        .error_for_status()?
        .json()
        .await?;
    Ok(list.gifts)
}

/// Checks every invariant for `event_id`. `accepted` are the entries answered
/// 202 (from a rush); `provider_url` adds the provider's records.
pub async fn check(
    stores: &Stores,
    event_id: &str,
    accepted: &[Accepted],
    provider_url: Option<&str>,
) -> anyhow::Result<InvariantReport> {
    let db = stores.pool.get().await?;
    let mut redis = stores.redis.clone();
    let keys = EventKeys::new(event_id);
    let mut tally = Tally::default();

    let event = db
        .query_one(
            "SELECT (e.total_stock - e.safety_stock)::bigint, l.issued::bigint, l.returned::bigint
             FROM events e JOIN stock_ledger l USING (event_id) WHERE e.event_id = $1",
            &[&event_id],
        )
        .await
        .with_context(|| format!("no event {event_id} with a ledger"))?;
    tally.for_sale = event.get(0);
    tally.ledger_issued = event.get(1);
    tally.ledger_returned = event.get(2);

    for row in db
        .query("SELECT status, count(*) FROM event_entries WHERE event_id = $1 GROUP BY status", &[&event_id])
        .await?
    {
        let (status, n): (String, i64) = (row.get(0), row.get(1));
        tally.entries += n;
        match status.as_str() {
            "pending" => tally.pending = n,
            "won" => tally.won = n,
            "sent" => tally.sent = n,
            "failed" => tally.failed = n,
            "lost" => tally.lost = n,
            _ => {}
        }
    }
    let mut checks = Vec::new();

    // 1 and 2, from our dispatch records.
    let sent = db
        .query_one(
            "SELECT count(*), count(DISTINCT user_id) FROM gift_dispatches WHERE event_id = $1 AND status = 'SENT'",
            &[&event_id],
        )
        .await?;
    let (sent_rows, sent_members): (i64, i64) = (sent.get(0), sent.get(1));

    // The provider's side: gifts whose idempotency key is an entry of this
    // event, as recorded or as known to Redis (an entry the recorder skipped or
    // has not written yet still counts), each attributed to the entry's member.
    let mut provider_detail = String::new();
    let mut provider_ok = true;
    if let Some(url) = provider_url {
        let mut member_of: HashMap<String, String> = db
            .query("SELECT entry_id::text, user_id FROM event_entries WHERE event_id = $1", &[&event_id])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let issued = provider_gifts(&stores.http, url).await?;
        // Keys the entries table does not know yet: ask Redis about those only
        // (the event's hashes can be large; the gifts are few).
        let unknown: Vec<&str> = issued
            .iter()
            .map(|g| g.idempotency_key.as_str())
            .filter(|key| !member_of.contains_key(*key))
            .collect();
        let mut decided_only = HashSet::new();
        if !unknown.is_empty() {
            let admitted: Vec<Option<String>> =
                redis::cmd("HMGET").arg(&keys.entries).arg(&unknown).query_async(&mut redis).await?;
            let decided: Vec<Option<String>> =
                redis::cmd("HMGET").arg(&keys.decisions).arg(&unknown).query_async(&mut redis).await?;
            for ((key, member), decision) in unknown.iter().zip(admitted).zip(decided) {
                match (member, decision) {
                    (Some(member), _) => {
                        member_of.insert(key.to_string(), member);
                    }
                    (None, Some(_)) => {
                        decided_only.insert(key.to_string());
                    }
                    (None, None) => {}
                }
            }
        }
        let gifts: Vec<ProviderGift> = issued
            .into_iter()
            .filter(|g| member_of.contains_key(&g.idempotency_key) || decided_only.contains(&g.idempotency_key))
            .collect();
        let members: HashSet<&str> = gifts
            .iter()
            .map(|g| member_of.get(&g.idempotency_key).map(String::as_str).unwrap_or("?"))
            .collect();
        tally.provider_gifts = gifts.len() as i64;
        provider_ok = members.len() == gifts.len() && !members.contains("?");
        provider_detail = format!("; provider issued {} to {} members", gifts.len(), members.len());
    }
    checks.push(Check {
        name: "1 gifts sent <= stock for sale",
        holds: sent_rows <= tally.for_sale && tally.provider_gifts <= tally.for_sale,
        detail: format!("{sent_rows} sent, {} for sale{provider_detail}", tally.for_sale),
    });
    checks.push(Check {
        name: "2 at most one gift per member",
        holds: sent_rows == sent_members && provider_ok,
        detail: format!("{sent_rows} gifts to {sent_members} members{provider_detail}"),
    });

    // 3: every 202 is recorded, with its submission.
    let ids: Vec<uuid::Uuid> = accepted.iter().filter_map(|a| a.entry_id.parse().ok()).collect();
    let recorded: i64 = db
        .query_one(
            "SELECT count(*) FROM event_entries WHERE entry_id = ANY($1) AND submitted_at IS NOT NULL",
            &[&ids],
        )
        .await?
        .get(0);
    checks.push(Check {
        name: "3 every 202 entry is in the entries table",
        holds: recorded == accepted.len() as i64 && ids.len() == accepted.len(),
        detail: format!("{recorded} of {} accepted entries recorded", accepted.len()),
    });

    // 4: no WON left undispatched; every FAILED unit is back in stock — in the
    // ledger (a 'returned' movement) and in Redis (the release script ran).
    let failed_rows = db
        .query(
            "SELECT e.entry_id::text,
                    EXISTS (SELECT 1 FROM stock_movements m WHERE m.entry_id = e.entry_id AND m.kind = 'returned')
             FROM event_entries e WHERE e.event_id = $1 AND e.status = 'failed'",
            &[&event_id],
        )
        .await?;
    let failed_ids: Vec<String> = failed_rows.iter().map(|r| r.get(0)).collect();
    let in_ledger = failed_rows.iter().filter(|r| r.get::<_, bool>(1)).count();
    let in_redis = if failed_ids.is_empty() {
        0
    } else {
        let flags: Vec<bool> = redis::cmd("SMISMEMBER")
            .arg(&keys.released)
            .arg(&failed_ids)
            .query_async(&mut redis)
            .await?;
        flags.into_iter().filter(|f| *f).count()
    };
    let unreturned = (failed_ids.len() - in_ledger.min(in_redis)) as i64;
    checks.push(Check {
        name: "4 every WON ends SENT or FAILED with its unit returned",
        holds: tally.won == 0 && unreturned == 0,
        detail: format!(
            "{} sent, {} failed ({unreturned} without a return), {} still won-unsent",
            tally.sent, tally.failed, tally.won
        ),
    });

    // 5: Redis counter vs ledger vs dispatches vs provider.
    tally.redis_stock = redis.get::<_, Option<i64>>(&keys.stock).await?.unwrap_or(-1);
    let held = tally.ledger_issued - tally.ledger_returned;
    let mut drift = Vec::new();
    if tally.redis_stock != tally.for_sale - held {
        drift.push(format!("redis stock {} != for sale {} - held {held}", tally.redis_stock, tally.for_sale));
    }
    let won_entries = tally.won + tally.sent + tally.failed;
    if tally.ledger_issued != won_entries {
        drift.push(format!("ledger issued {} != {won_entries} won entries", tally.ledger_issued));
    }
    if tally.ledger_returned != tally.failed {
        drift.push(format!("ledger returned {} != {} failed entries", tally.ledger_returned, tally.failed));
    }
    if provider_url.is_some() && tally.provider_gifts != sent_rows {
        drift.push(format!("provider issued {} != {sent_rows} sent", tally.provider_gifts));
    }
    checks.push(Check {
        name: "5 redis, ledger and provider reconcile",
        holds: drift.is_empty(),
        detail: if drift.is_empty() {
            format!(
                "redis stock {} = {} - ({} issued - {} returned); provider {} = sent {sent_rows}",
                tally.redis_stock, tally.for_sale, tally.ledger_issued, tally.ledger_returned, tally.provider_gifts
            )
        } else {
            drift.join("; ")
        },
    });
    Ok(InvariantReport { tally, checks })
}

/// Prints a report for people.
pub fn print(report: &InvariantReport) {
    for check in &report.checks {
        let mark = if check.holds { "HOLDS " } else { "BROKEN" };
        println!("  [{mark}] {:<55} {}", check.name, check.detail);
    }
}
