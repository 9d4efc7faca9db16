//! The invariants of docs/DESIGN.md, checked against the real stores: what the
//! demo prints, what `reconcile` reports, what the end-to-end tests assert.
//!
//! 1. Gifts sent ≤ stock for sale.
//! 2. At most one gift per member.
//! 3. Every entry answered 202 is in the entries table: the entries a rush
//!    saw accepted, and every accepted first-entry mark (`A|<entry>`) Redis
//!    holds, so `reconcile` (which saw no rush) checks it too.
//! 4. Every WON ends SENT, or FAILED with its unit returned. A WON the payout
//!    guard refused is never paid and never moves on: when it is the
//!    standing decision of a real entry whose member holds no gift, the
//!    member was told "won" and is never paid — a **phantom success**, a
//!    violation. A refused WON that is no entry's standing decision (a
//!    forged or replayed record) and one of a member paid under another
//!    entry are counted apart ([`classify_won_ends`]).
//! 5. Redis counter, PostgreSQL ledger, payout claims and provider records
//!    reconcile: the units Redis holds (its WON decisions not released) are
//!    the units the ledger holds (issued, not returned) less the refused
//!    WONs, and so are the claims holding a unit (`claimed`/`sent`), whose
//!    number is the guard's counter `events.payout_claimed`.
//!
//! [`check_log`] adds the log of record's side of 3 (every 202 entry in
//! `survey-submitted`, with exactly one decision in `stock-decided`, which
//! the entries table holds); [`fcfs_fidelity`] and [`last_gift_at`] give the
//! chaos suite's and the drill's figures.

use std::collections::{BTreeSet, HashMap, HashSet};

use anyhow::Context;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use platform::event_keys::EventKeys;
use schemas::Outcome;

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
    /// Accepted first-entry marks in Redis (`A|<entry>`).
    pub accepted_marks: i64,
    /// Distinct entries the rush saw answered 202 (a resumed entry can be
    /// answered 202 to two concurrent requests of its member: one entry).
    pub accepted_entries: i64,
    /// Units Redis holds: its WON decisions whose unit was not released.
    pub redis_held: i64,
    /// Claims holding a unit (`claimed` or `sent`).
    pub claims_holding: i64,
    /// The payout guard's counter, `events.payout_claimed`.
    pub payout_claimed: i64,
    /// WONs the payout guard refused (`payout_refusals`): never paid.
    pub refused: i64,
    /// Of the entries still `won`, those the guard refused (they never move on).
    pub won_refused: i64,
    /// Refused WONs that are a real entry's standing decision, of members
    /// paid under no entry: told "won", never paid. A violation of 4.
    pub phantom_successes: i64,
    /// Refused WONs that are no recorded entry's standing decision: forged
    /// or replayed records, refused as they should be.
    pub forged_wins_refused: i64,
    /// Refused WONs of members paid under another entry: the member holds
    /// their one gift (the extra unit Redis holds is invariant 5's).
    pub repeat_wins_refused: i64,
}

impl Tally {
    /// WONs waiting for their gift: `won` entries the guard did not refuse.
    pub fn won_waiting(&self) -> i64 {
        self.won - self.won_refused
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct InvariantReport {
    pub tally: Tally,
    pub checks: Vec<Check>,
    /// The phantom successes, oldest refusal first, at most
    /// [`PHANTOMS_LISTED`] (`tally.phantom_successes` counts them all).
    pub phantom_successes: Vec<PhantomSuccess>,
}

/// How many phantom successes a report lists.
pub const PHANTOMS_LISTED: usize = 100;

impl InvariantReport {
    pub fn all_hold(&self) -> bool {
        self.checks.iter().all(|c| c.holds)
    }

    /// Whether the pipeline has finished with these entries: every accepted
    /// entry recorded and decided, no WON waiting for its gift, and every
    /// returned unit back in the Redis counter (check 5 holds).
    pub fn drained(&self, accepted: usize) -> bool {
        let t = &self.tally;
        t.entries >= (accepted as i64).min(t.accepted_entries)
            && t.pending == 0
            && t.won_waiting() == 0
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
    pub redis: platform::redis::Connection,
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

    // 3: every 202 is recorded, with its submission: the rush's 202s and
    // every accepted first-entry mark Redis holds.
    let from_rush: HashSet<String> = accepted.iter().map(|a| canonical(&a.entry_id)).collect();
    tally.accepted_entries = from_rush.len() as i64;
    // One entry id answered 202 to two members would be two entries under one id.
    let mut member_of_entry: HashMap<String, &str> = HashMap::new();
    let mut shared = BTreeSet::new();
    for a in accepted {
        let previous = member_of_entry.insert(canonical(&a.entry_id), a.member.as_str());
        if previous.is_some_and(|m| m != a.member) {
            shared.insert(a.entry_id.as_str());
        }
    }
    let marks: HashSet<String> = hash_values(&mut redis, &keys.entered)
        .await?
        .iter()
        .filter_map(|mark| mark.strip_prefix("A|"))
        .map(canonical)
        .collect();
    tally.accepted_marks = marks.len() as i64;
    let recorded: HashSet<String> = db
        .query(
            "SELECT entry_id::text FROM event_entries WHERE event_id = $1 AND submitted_at IS NOT NULL",
            &[&event_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: HashSet<&String> = from_rush.iter().chain(marks.iter()).collect();
    let missing: BTreeSet<&str> =
        expected.iter().filter(|id| !recorded.contains(id.as_str())).map(|id| id.as_str()).collect();
    checks.push(Check {
        name: "3 every 202 entry is in the entries table",
        holds: missing.is_empty() && shared.is_empty(),
        detail: format!(
            "{} of {} accepted entries recorded ({} answered 202 here, {} distinct; {} accepted marks in Redis){}{}",
            expected.len() - missing.len(),
            expected.len(),
            accepted.len(),
            from_rush.len(),
            marks.len(),
            sample(" missing", &missing),
            sample("; answered 202 to two members", &shared),
        ),
    });

    // The payout guard's side (migration 0005).
    tally.payout_claimed = db
        .query_one("SELECT payout_claimed::bigint FROM events WHERE event_id = $1", &[&event_id])
        .await?
        .get(0);
    let mut claims_holding = HashSet::new();
    let mut claims_sent = 0i64;
    for row in db
        .query("SELECT entry_id::text, status FROM payout_claims WHERE event_id = $1", &[&event_id])
        .await?
    {
        let (entry, status): (String, String) = (row.get(0), row.get(1));
        if status == "sent" {
            claims_sent += 1;
        }
        if status != "released" {
            claims_holding.insert(entry);
        }
    }
    tally.claims_holding = claims_holding.len() as i64;
    let refusals: Vec<Refusal> = db
        .query(
            "SELECT entry_id::text, user_id, unit_no, reason, refused_at FROM payout_refusals WHERE event_id = $1",
            &[&event_id],
        )
        .await?
        .iter()
        .map(|r| Refusal {
            entry_id: r.get(0),
            member: r.get(1),
            unit_no: r.get(2),
            reason: r.get(3),
            refused_at: r.get(4),
        })
        .collect();
    let refused: HashSet<String> = refusals.iter().map(|r| r.entry_id.clone()).collect();
    tally.refused = refused.len() as i64;

    // 4: every WON SENT, or FAILED with its unit back in stock — in the
    // ledger (a 'returned' movement) and in Redis (the release script ran);
    // a WON the guard refused never moves on, and is a phantom success when
    // its member was told "won" and paid under no entry. The rows: every
    // won or failed entry, and every entry of a member the guard refused.
    let rows = db
        .query(
            "SELECT e.entry_id::text, e.user_id, e.outcome, e.status, e.submitted_at IS NOT NULL,
                    e.status = 'failed' AND EXISTS (SELECT 1 FROM stock_movements m
                                                    WHERE m.entry_id = e.entry_id AND m.kind = 'returned')
             FROM event_entries e
             WHERE e.event_id = $1
               AND (e.status IN ('won', 'failed')
                    OR e.user_id IN (SELECT user_id FROM payout_refusals WHERE event_id = $1))",
            &[&event_id],
        )
        .await?;
    let failed_ids: Vec<String> =
        rows.iter().filter(|r| r.get::<_, String>(3) == "failed").map(|r| r.get(0)).collect();
    let released_in_redis: HashSet<String> = if failed_ids.is_empty() {
        HashSet::new()
    } else {
        let flags: Vec<bool> = redis::cmd("SMISMEMBER")
            .arg(&keys.released)
            .arg(&failed_ids)
            .query_async(&mut redis)
            .await?;
        failed_ids.iter().zip(flags).filter(|(_, released)| *released).map(|(id, _)| id.clone()).collect()
    };
    let mut entries = Vec::with_capacity(rows.len());
    for r in &rows {
        let (entry_id, status): (String, String) = (r.get(0), r.get(3));
        let returned = r.get::<_, bool>(5) && released_in_redis.contains(&entry_id);
        let status = EntryStatus::parse(&status, returned)
            .with_context(|| format!("entry {entry_id} has an unknown status {status}"))?;
        let outcome = r.get::<_, Option<String>>(2).as_deref().and_then(Outcome::parse);
        entries.push(EntryEnd { entry_id, member: r.get(1), outcome, submitted: r.get(4), status });
    }
    let ends = classify_won_ends(&entries, &refusals);
    tally.won_refused = ends.won_refused as i64;
    tally.phantom_successes = ends.phantoms.len() as i64;
    tally.forged_wins_refused = ends.forged_refused.len() as i64;
    tally.repeat_wins_refused = ends.repeat_refused.len() as i64;
    let phantom_ids: BTreeSet<&str> = ends.phantoms.iter().map(|p| p.entry_id.as_str()).collect();
    let phantoms_listed = if phantom_ids.is_empty() {
        String::new()
    } else {
        format!(" (told \"won\", refused by the payout guard, never paid){}", sample("", &phantom_ids))
    };
    let mut refused_note = String::new();
    if !ends.forged_refused.is_empty() {
        refused_note.push_str(&format!(
            "; {} forged WONs refused (no recorded entry stands WON){}",
            ends.forged_refused.len(),
            sample("", &ends.forged_refused.iter().map(String::as_str).collect())
        ));
    }
    if !ends.repeat_refused.is_empty() {
        refused_note.push_str(&format!(
            "; {} WONs refused for members paid under another entry{}",
            ends.repeat_refused.len(),
            sample("", &ends.repeat_refused.iter().map(String::as_str).collect())
        ));
    }
    let unreturned = ends.unreturned.len();
    checks.push(Check {
        name: "4 every WON ends SENT or FAILED with its unit returned",
        holds: tally.won_waiting() == 0 && unreturned == 0 && ends.phantoms.is_empty(),
        detail: format!(
            "{} sent, {} failed ({unreturned} without a return{}), {} still won-unsent, {} phantom successes{phantoms_listed}{refused_note}",
            tally.sent,
            tally.failed,
            sample("", &ends.unreturned.iter().map(String::as_str).collect()),
            tally.won_waiting(),
            phantom_ids.len(),
        ),
    });
    let phantom_successes: Vec<PhantomSuccess> = ends.phantoms.into_iter().take(PHANTOMS_LISTED).collect();

    // 5: Redis counter and decisions vs ledger vs claims vs dispatches vs provider.
    tally.redis_stock = redis.get::<_, Option<i64>>(&keys.stock).await?.unwrap_or(-1);
    let released: HashSet<String> = set_members(&mut redis, &keys.released).await?.iter().map(|e| canonical(e)).collect();
    let redis_held: HashSet<String> = hash_entries(&mut redis, &keys.decisions)
        .await?
        .into_iter()
        .filter(|(_, decision)| decision.starts_with("WON|"))
        .map(|(entry, _)| canonical(&entry))
        .filter(|entry| !released.contains(entry))
        .collect();
    tally.redis_held = redis_held.len() as i64;
    let ledger_held: HashSet<String> = db
        .query(
            "SELECT entry_id::text FROM stock_movements WHERE event_id = $1 GROUP BY entry_id
             HAVING bool_or(kind = 'issued') AND NOT bool_or(kind = 'returned')",
            &[&event_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let ledger_paid: HashSet<String> = ledger_held.difference(&refused).cloned().collect();
    let redis_paid: HashSet<String> = redis_held.difference(&refused).cloned().collect();

    let held = tally.ledger_issued - tally.ledger_returned;
    let mut drift = Vec::new();
    if tally.redis_stock != tally.for_sale - tally.redis_held {
        drift.push(format!(
            "redis stock {} != for sale {} - {} units its decisions hold",
            tally.redis_stock, tally.for_sale, tally.redis_held
        ));
    }
    if held != ledger_held.len() as i64 {
        drift.push(format!("ledger counters hold {held} units, its movements {}", ledger_held.len()));
    }
    // Leaving the refused WONs aside (never paid, reported under 4), the
    // entries Redis holds a unit for, the ledger's and the claims' are the
    // same. A refused WON Redis holds a unit for is a unit lost to stock:
    // Redis forgot an earlier winner and decided again (see docs/DESIGN.md).
    compare(&mut drift, "held in Redis", &redis_paid, "held in the ledger", &ledger_paid);
    let redis_refused: BTreeSet<&str> = redis_held.intersection(&refused).map(String::as_str).collect();
    if !redis_refused.is_empty() {
        drift.push(format!(
            "{} units Redis holds for WONs the payout guard refused{}",
            redis_refused.len(),
            sample("", &redis_refused)
        ));
    }
    compare(&mut drift, "claimed", &claims_holding, "held in the ledger", &ledger_paid);
    if tally.payout_claimed != tally.claims_holding {
        drift.push(format!(
            "payout_claimed {} != {} claims holding a unit",
            tally.payout_claimed, tally.claims_holding
        ));
    }
    let won_entries = tally.won + tally.sent + tally.failed;
    if tally.ledger_issued != won_entries {
        drift.push(format!("ledger issued {} != {won_entries} won entries", tally.ledger_issued));
    }
    if tally.ledger_returned != tally.failed {
        drift.push(format!("ledger returned {} != {} failed entries", tally.ledger_returned, tally.failed));
    }
    if claims_sent != sent_rows {
        drift.push(format!("{claims_sent} claims sent != {sent_rows} sent"));
    }
    if provider_url.is_some() && tally.provider_gifts != sent_rows {
        drift.push(format!("provider issued {} != {sent_rows} sent", tally.provider_gifts));
    }
    checks.push(Check {
        name: "5 redis, ledger, claims and provider reconcile",
        holds: drift.is_empty(),
        detail: if drift.is_empty() {
            format!(
                "redis stock {} = {} - {} held; ledger {} issued - {} returned = {} claims{}; provider {} = sent {sent_rows}",
                tally.redis_stock,
                tally.for_sale,
                tally.redis_held,
                tally.ledger_issued,
                tally.ledger_returned,
                tally.claims_holding,
                if tally.refused > 0 { format!(" + {} refused", ledger_held.len() - ledger_paid.len()) } else { String::new() },
                tally.provider_gifts
            )
        } else {
            drift.join("; ")
        },
    });
    Ok(InvariantReport { tally, checks, phantom_successes })
}

/// Where an entry stands, as the entries table says (`status`), with
/// whether a FAILED gift's unit is back in stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryStatus {
    Pending,
    Won,
    Lost,
    Sent,
    /// `returned`: the unit is back in stock in the ledger (a `returned`
    /// movement) and in Redis (the release script ran).
    Failed { returned: bool },
}

impl EntryStatus {
    /// The entries table's `status`; `None` for anything else.
    pub fn parse(status: &str, returned: bool) -> Option<Self> {
        Some(match status {
            "pending" => EntryStatus::Pending,
            "won" => EntryStatus::Won,
            "lost" => EntryStatus::Lost,
            "sent" => EntryStatus::Sent,
            "failed" => EntryStatus::Failed { returned },
            _ => return None,
        })
    }
}

/// One row of the entries table, as invariant 4 reads it.
#[derive(Debug, Clone)]
pub struct EntryEnd {
    pub entry_id: String,
    pub member: String,
    /// The entry's standing decision: the first one, or a promotion's WON
    /// over its SOLD_OUT ([`standing`]); the recorder stores it so.
    pub outcome: Option<Outcome>,
    /// Its submission is recorded: the entry came through `survey-submitted`
    /// (a decision alone also makes a row, without it).
    pub submitted: bool,
    pub status: EntryStatus,
}

/// A WON the payout guard refused (a `payout_refusals` row).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub entry_id: String,
    pub member: String,
    pub unit_no: Option<i32>,
    pub reason: String,
    pub refused_at: chrono::DateTime<chrono::Utc>,
}

/// A member told "won" who is never paid: the entry's standing decision is
/// a WON the payout guard refused, and no entry of the member was paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhantomSuccess {
    pub entry_id: String,
    pub member: String,
    pub unit_no: Option<i32>,
    /// The guard's reason (`member_already_paid`, `stock_exhausted`, `unknown_event`).
    pub reason: String,
    pub refused_at: chrono::DateTime<chrono::Utc>,
}

/// How the WONs of an event ended (invariant 4), from [`classify_won_ends`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WonEnds {
    /// `won` entries the guard did not refuse: their gift is on its way.
    pub waiting: usize,
    /// `won` entries the guard refused (whatever the class below).
    pub won_refused: usize,
    /// FAILED entries whose unit is not back in stock.
    pub unreturned: BTreeSet<String>,
    /// Oldest refusal first.
    pub phantoms: Vec<PhantomSuccess>,
    /// Refused WONs that are no recorded entry's standing decision.
    pub forged_refused: BTreeSet<String>,
    /// Refused WONs of members paid under another entry.
    pub repeat_refused: BTreeSet<String>,
}

/// The standing decision of an entry's distinct decisions in log order:
/// the first stands, unless a later one supersedes it (the waitlist
/// promotion, [`Outcome::supersedes`]), so either order gives the same.
pub fn standing(decisions: impl IntoIterator<Item = Outcome>) -> Option<Outcome> {
    decisions.into_iter().fold(None, |held, next| match held {
        Some(current) if !next.supersedes(current) => Some(current),
        _ => Some(next),
    })
}

/// Invariant 4 over rows, no store in sight. `entries` must hold at least
/// every `won` and `failed` entry and every entry of a member in
/// `refusals` (whether the member was paid under another entry).
///
/// A refused WON is classed by the entry it names: an entry whose recorded
/// submission stands decided WON, of a member with no SENT entry, is a
/// phantom success; an entry the table does not hold, holds without a
/// submission, or holds with another standing decision (an ALREADY_WON
/// stays ALREADY_WON) is a forged or replayed WON the guard rightly
/// refused; a member paid under another entry holds their one gift. An
/// entry refused and yet SENT or FAILED is not classed here: a payout past
/// the guard is invariants 1, 2 and 5's (the claims and the dispatches).
pub fn classify_won_ends(entries: &[EntryEnd], refusals: &[Refusal]) -> WonEnds {
    let by_id: HashMap<&str, &EntryEnd> = entries.iter().map(|e| (e.entry_id.as_str(), e)).collect();
    let refused: HashSet<&str> = refusals.iter().map(|r| r.entry_id.as_str()).collect();
    let paid: HashSet<&str> =
        entries.iter().filter(|e| e.status == EntryStatus::Sent).map(|e| e.member.as_str()).collect();
    let mut ends = WonEnds::default();
    for entry in entries {
        match entry.status {
            EntryStatus::Won if refused.contains(entry.entry_id.as_str()) => ends.won_refused += 1,
            EntryStatus::Won => ends.waiting += 1,
            EntryStatus::Failed { returned: false } => {
                ends.unreturned.insert(entry.entry_id.clone());
            }
            _ => {}
        }
    }
    for refusal in refusals {
        let id = refusal.entry_id.clone();
        match by_id.get(refusal.entry_id.as_str()) {
            Some(entry) if entry.submitted && entry.outcome == Some(Outcome::Won) => match entry.status {
                EntryStatus::Sent | EntryStatus::Failed { .. } => {}
                _ if paid.contains(entry.member.as_str()) => {
                    ends.repeat_refused.insert(id);
                }
                // The member the entries table names is the one told "won".
                _ => ends.phantoms.push(PhantomSuccess {
                    entry_id: id,
                    member: entry.member.clone(),
                    unit_no: refusal.unit_no,
                    reason: refusal.reason.clone(),
                    refused_at: refusal.refused_at,
                }),
            },
            _ => {
                ends.forged_refused.insert(id);
            }
        }
    }
    ends.phantoms.sort_by(|a, b| a.refused_at.cmp(&b.refused_at).then_with(|| a.entry_id.cmp(&b.entry_id)));
    ends
}

/// An entry id as PostgreSQL prints a uuid (ids that are not uuids stay as
/// they are: they can match nothing in PostgreSQL, and are reported as such).
fn canonical(id: &str) -> String {
    uuid::Uuid::parse_str(id).map(|u| u.to_string()).unwrap_or_else(|_| id.to_string())
}

/// Up to five ids, for a detail line.
fn sample(label: &str, ids: &BTreeSet<&str>) -> String {
    if ids.is_empty() {
        return String::new();
    }
    let shown: Vec<&str> = ids.iter().take(5).copied().collect();
    let more = if ids.len() > shown.len() { format!(", … {} more", ids.len() - shown.len()) } else { String::new() };
    format!("{label}: {}{more}", shown.join(", "))
}

/// Reports, into `drift`, the entries one side holds and the other does not.
fn compare(drift: &mut Vec<String>, left: &str, a: &HashSet<String>, right: &str, b: &HashSet<String>) {
    let only_a: BTreeSet<&str> = a.difference(b).map(String::as_str).collect();
    let only_b: BTreeSet<&str> = b.difference(a).map(String::as_str).collect();
    if !only_a.is_empty() {
        drift.push(format!("{} {left}, not {right}{}", only_a.len(), sample("", &only_a)));
    }
    if !only_b.is_empty() {
        drift.push(format!("{} {right}, not {left}{}", only_b.len(), sample("", &only_b)));
    }
}

/// How many fields an HSCAN/SSCAN page asks for: an event's hashes can hold
/// one field per member, so they are read in pages, never in one reply.
const SCAN_PAGE: usize = 1_000;

/// Every field and value of a hash.
async fn hash_entries(redis: &mut platform::redis::Connection, key: &str) -> anyhow::Result<Vec<(String, String)>> {
    let flat = scan(redis, "HSCAN", key).await?;
    Ok(flat.chunks_exact(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect())
}

/// Every value of a hash.
async fn hash_values(redis: &mut platform::redis::Connection, key: &str) -> anyhow::Result<Vec<String>> {
    Ok(hash_entries(redis, key).await?.into_iter().map(|(_, value)| value).collect())
}

/// Every member of a set.
async fn set_members(redis: &mut platform::redis::Connection, key: &str) -> anyhow::Result<Vec<String>> {
    scan(redis, "SSCAN", key).await
}

/// The flat replies of a whole HSCAN/SSCAN iteration.
async fn scan(redis: &mut platform::redis::Connection, command: &str, key: &str) -> anyhow::Result<Vec<String>> {
    let mut cursor = String::from("0");
    let mut out = Vec::new();
    loop {
        let (next, page): (String, Vec<String>) = redis::cmd(command)
            .arg(key)
            .arg(&cursor)
            .arg("COUNT")
            .arg(SCAN_PAGE)
            .query_async(redis)
            .await
            .with_context(|| format!("Failed to {command} {key}"))?;
        out.extend(page);
        if next == "0" {
            return Ok(out);
        }
        cursor = next;
    }
}

/// What an entry's distinct decisions in `stock-decided` add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Folded {
    /// One decision (redelivered copies included).
    Once(Outcome),
    /// SOLD_OUT, then given a returned unit (a WON).
    Promoted,
}

/// An entry's distinct decisions, in log order, folded to one; `None` when
/// they conflict. A waitlist promotion reads in either order: the SOLD_OUT is
/// written by the instance that decided the entry, the WON by the one that
/// applied the release, and their transactions interleave in the log.
fn one_decision(seen: &[(Outcome, Option<i32>)]) -> Option<Folded> {
    // The promotion's WON carries the returned unit.
    let promotes = |(over, _): &(Outcome, Option<i32>), (by, unit): &(Outcome, Option<i32>)| {
        by.supersedes(*over) && unit.is_some()
    };
    match seen {
        [(outcome, _)] => Some(Folded::Once(*outcome)),
        [a, b] if promotes(a, b) || promotes(b, a) => Some(Folded::Promoted),
        _ => None,
    }
}

/// Prints a report for people.
pub fn print(report: &InvariantReport) {
    for check in &report.checks {
        let mark = if check.holds { "HOLDS " } else { "BROKEN" };
        println!("  [{mark}] {:<55} {}", check.name, check.detail);
    }
}

/// What the log of record says about an event's entries (the chaos suite's
/// reading of Kafka): invariant 3 from the log's side — every 202 entry is
/// in `survey-submitted` and has exactly one decision in `stock-decided`
/// (a SOLD_OUT followed by the WON of a waitlist promotion is one decision
/// superseded, as the recorder stores it), and the entries table holds that
/// decision.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogTally {
    /// `survey-submitted` records of the event (a resumed entry may be there twice).
    pub submitted_records: usize,
    pub submitted_entries: usize,
    pub decision_records: usize,
    pub decided_entries: usize,
    /// Entries whose SOLD_OUT was superseded by a promotion's WON.
    pub promoted: usize,
    /// Entries with two different decisions that are not a promotion.
    pub conflicting: usize,
    /// 202 entries missing from `survey-submitted`.
    pub not_submitted: usize,
    /// 202 entries with no decision in the log.
    pub undecided: usize,
    /// 202 entries whose row's outcome differs from the log's last decision.
    pub table_disagrees: usize,
}

/// Reads `survey-submitted` and `stock-decided` (committed records, to
/// their high watermarks now) and checks the 202 entries against them and
/// against the entries table.
pub async fn check_log(
    settings: &CliSettings,
    stores: &Stores,
    event_id: &str,
    accepted: &[Accepted],
) -> anyhow::Result<(LogTally, Check)> {
    use schemas::{StockDecision, SurveySubmitted};
    let codec = settings.registry.codec().context("Failed to build the registry codec")?;
    let topics = settings.kafka.topics();
    let client_id = format!("firstcome-invariants-{}", uuid::Uuid::new_v4().simple());
    let mut tally = LogTally::default();

    let mut submitted: HashSet<String> = HashSet::new();
    let mut reader = platform::kafka::LogReader::open(&settings.kafka, &client_id, &[&topics.survey_submitted]).await?;
    while let Some(record) = reader.next().await? {
        let entry: SurveySubmitted = match codec.decode(rdkafka::Message::payload(&record)).await {
            Ok(entry) => entry,
            Err(schemas::CodecError::Poison(_)) => continue,
            Err(error) => return Err(error).context("Failed to decode survey-submitted"),
        };
        if entry.event_id == event_id {
            tally.submitted_records += 1;
            submitted.insert(canonical(&entry.entry_id));
        }
    }
    tally.submitted_entries = submitted.len();

    // entry → its distinct decisions, in log order.
    let mut decisions: HashMap<String, Vec<(Outcome, Option<i32>)>> = HashMap::new();
    let mut reader = platform::kafka::LogReader::open(&settings.kafka, &client_id, &[&topics.stock_decided]).await?;
    while let Some(record) = reader.next().await? {
        let decision: StockDecision = match codec.decode(rdkafka::Message::payload(&record)).await {
            Ok(decision) => decision,
            Err(schemas::CodecError::Poison(_)) => continue,
            Err(error) => return Err(error).context("Failed to decode stock-decided"),
        };
        if decision.event_id != event_id {
            continue;
        }
        tally.decision_records += 1;
        let seen = decisions.entry(canonical(&decision.entry_id)).or_default();
        let this = (decision.outcome, decision.unit_no);
        if !seen.contains(&this) {
            seen.push(this);
        }
    }
    tally.decided_entries = decisions.len();
    let mut last: HashMap<&str, Outcome> = HashMap::new();
    let mut conflicting = BTreeSet::new();
    for (entry, seen) in &decisions {
        match one_decision(seen) {
            Some(Folded::Once(outcome)) => {
                last.insert(entry, outcome);
            }
            Some(Folded::Promoted) => {
                tally.promoted += 1;
                if let Some(outcome) = standing(seen.iter().map(|(outcome, _)| *outcome)) {
                    last.insert(entry, outcome);
                }
            }
            None => {
                conflicting.insert(entry.as_str());
            }
        }
    }
    tally.conflicting = conflicting.len();

    let db = stores.pool.get().await?;
    let outcomes: HashMap<String, Option<String>> = db
        .query("SELECT entry_id::text, outcome FROM event_entries WHERE event_id = $1", &[&event_id])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut not_submitted = BTreeSet::new();
    let mut undecided = BTreeSet::new();
    let mut disagrees = BTreeSet::new();
    let from_rush: BTreeSet<String> = accepted.iter().map(|a| canonical(&a.entry_id)).collect();
    for entry in &from_rush {
        if !submitted.contains(entry) {
            not_submitted.insert(entry.as_str());
        }
        match last.get(entry.as_str()) {
            None if !conflicting.contains(entry.as_str()) => {
                undecided.insert(entry.as_str());
            }
            None => {}
            Some(outcome) => {
                let logged = serde_json::to_value(outcome)?.as_str().unwrap_or_default().to_string();
                if outcomes.get(entry).cloned().flatten().as_deref() != Some(logged.as_str()) {
                    disagrees.insert(entry.as_str());
                }
            }
        }
    }
    tally.not_submitted = not_submitted.len();
    tally.undecided = undecided.len();
    tally.table_disagrees = disagrees.len();
    let holds = not_submitted.is_empty() && undecided.is_empty() && disagrees.is_empty() && conflicting.is_empty();
    let detail = format!(
        "{} answered 202: in survey-submitted {}, decided once {}; {} records / {} entries in survey-submitted, {} decisions / {} entries in stock-decided ({} promoted){}{}{}{}",
        from_rush.len(),
        from_rush.len() - not_submitted.len(),
        from_rush.len() - undecided.len() - conflicting.iter().filter(|e| from_rush.contains(**e)).count(),
        tally.submitted_records,
        tally.submitted_entries,
        tally.decision_records,
        tally.decided_entries,
        tally.promoted,
        sample("; not in survey-submitted", &not_submitted),
        sample("; no decision", &undecided),
        sample("; conflicting decisions", &conflicting),
        sample("; entries table disagrees with the log", &disagrees),
    );
    Ok((tally, Check { name: "3 every 202 entry is in survey-submitted, decided once", holds, detail }))
}

/// FCFS fidelity: of the first `for_sale` entries by accept time, the share
/// that won a unit (a perfect first-come-first-served run: 1.0).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Fidelity {
    pub first_n: i64,
    pub winners_among_first_n: i64,
    pub share: f64,
    /// Winners (outcome WON) in all.
    pub winners: i64,
}

pub async fn fcfs_fidelity(stores: &Stores, event_id: &str) -> anyhow::Result<Fidelity> {
    let db = stores.pool.get().await?;
    let row = db
        .query_one(
            "WITH firsts AS (
                SELECT outcome FROM event_entries WHERE event_id = $1 AND accepted_at IS NOT NULL
                ORDER BY accepted_at, entry_id
                LIMIT (SELECT (total_stock - safety_stock) FROM events WHERE event_id = $1))
             SELECT count(*), count(*) FILTER (WHERE outcome = 'WON'),
                    (SELECT count(*) FROM event_entries WHERE event_id = $1 AND outcome = 'WON')
             FROM firsts",
            &[&event_id],
        )
        .await?;
    let (first_n, winners_among_first_n, winners): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let share = if first_n > 0 { winners_among_first_n as f64 / first_n as f64 } else { 0.0 };
    Ok(Fidelity { first_n, winners_among_first_n, share, winners })
}

/// When the provider issued its last gift for one of the event's entries.
pub async fn last_gift_at(
    stores: &Stores,
    event_id: &str,
    provider_url: &str,
) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    #[derive(Deserialize)]
    struct Issued {
        idempotency_key: String,
        issued_at: chrono::DateTime<chrono::Utc>,
    }
    #[derive(Deserialize)]
    struct List {
        gifts: Vec<Issued>,
    }
    let url = format!("{}/v1/gifts", provider_url.trim_end_matches('/'));
    let list: List = stores.http.get(&url).send().await?.error_for_status()?.json().await?;
    let db = stores.pool.get().await?;
    let entries: HashSet<String> = db
        .query("SELECT entry_id::text FROM event_entries WHERE event_id = $1", &[&event_id])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(list.gifts.iter().filter(|g| entries.contains(&canonical(&g.idempotency_key))).map(|g| g.issued_at).max())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promotion_is_one_decision_in_either_log_order() {
        assert_eq!(one_decision(&[(Outcome::SoldOut, None), (Outcome::Won, Some(9))]), Some(Folded::Promoted));
        assert_eq!(one_decision(&[(Outcome::Won, Some(9)), (Outcome::SoldOut, None)]), Some(Folded::Promoted));
        assert_eq!(one_decision(&[(Outcome::Won, Some(9))]), Some(Folded::Once(Outcome::Won)));
    }

    fn entry(id: &str, member: &str, outcome: Option<Outcome>, status: EntryStatus) -> EntryEnd {
        EntryEnd { entry_id: id.into(), member: member.into(), outcome, submitted: true, status }
    }

    fn refusal(id: &str, member: &str, reason: &str, second: u32) -> Refusal {
        Refusal {
            entry_id: id.into(),
            member: member.into(),
            unit_no: Some(3),
            reason: reason.into(),
            refused_at: chrono::DateTime::from_timestamp(1_800_000_000 + i64::from(second), 0).unwrap(),
        }
    }

    fn phantom_ids(ends: &WonEnds) -> Vec<&str> {
        ends.phantoms.iter().map(|p| p.entry_id.as_str()).collect()
    }

    #[test]
    fn a_refused_won_of_a_member_never_paid_is_a_phantom_success() {
        let entries = [entry("e1", "m1", Some(Outcome::Won), EntryStatus::Won)];
        let ends = classify_won_ends(&entries, &[refusal("e1", "m1", "stock_exhausted", 7)]);
        assert_eq!(
            ends.phantoms,
            vec![PhantomSuccess {
                entry_id: "e1".into(),
                member: "m1".into(),
                unit_no: Some(3),
                reason: "stock_exhausted".into(),
                refused_at: chrono::DateTime::from_timestamp(1_800_000_007, 0).unwrap(),
            }]
        );
        assert_eq!((ends.waiting, ends.won_refused), (0, 1), "refused, not waiting for its gift");
        assert!(ends.forged_refused.is_empty() && ends.repeat_refused.is_empty());
    }

    #[test]
    fn phantom_successes_are_listed_oldest_refusal_first() {
        let entries = [
            entry("e1", "m1", Some(Outcome::Won), EntryStatus::Won),
            entry("e2", "m2", Some(Outcome::Won), EntryStatus::Won),
        ];
        let refusals = [refusal("e1", "m1", "stock_exhausted", 9), refusal("e2", "m2", "unknown_event", 2)];
        assert_eq!(phantom_ids(&classify_won_ends(&entries, &refusals)), ["e2", "e1"]);
    }

    #[test]
    fn a_refused_forged_won_of_an_entry_that_does_not_exist_is_no_phantom() {
        let paid = entry("e1", "m1", Some(Outcome::Won), EntryStatus::Sent);
        // No row at all, or the row the recorder made from the forged decision alone.
        let decision_only = EntryEnd { submitted: false, ..entry("e3", "m2", Some(Outcome::Won), EntryStatus::Won) };
        let refusals = [refusal("e2", "m1", "member_already_paid", 1), refusal("e3", "m2", "stock_exhausted", 2)];
        let ends = classify_won_ends(&[paid, decision_only], &refusals);
        assert!(ends.phantoms.is_empty(), "{ends:?}");
        assert_eq!(ends.forged_refused, BTreeSet::from(["e2".to_string(), "e3".to_string()]));
        assert_eq!((ends.waiting, ends.won_refused), (0, 1));
    }

    #[test]
    fn a_refused_won_the_entry_does_not_stand_on_is_forged() {
        // The second entry stands ALREADY_WON; a WON record for it was refused.
        let entries = [
            entry("e1", "m1", Some(Outcome::Won), EntryStatus::Sent),
            entry("e2", "m1", Some(Outcome::AlreadyWon), EntryStatus::Lost),
            entry("e3", "m2", Some(Outcome::SoldOut), EntryStatus::Lost),
        ];
        let refusals = [refusal("e2", "m1", "member_already_paid", 1), refusal("e3", "m2", "stock_exhausted", 2)];
        let ends = classify_won_ends(&entries, &refusals);
        assert!(ends.phantoms.is_empty(), "{ends:?}");
        assert_eq!(ends.forged_refused.len(), 2);
    }

    #[test]
    fn a_second_entry_decided_already_won_is_fine() {
        let entries = [
            entry("e1", "m1", Some(Outcome::Won), EntryStatus::Sent),
            entry("e2", "m1", Some(Outcome::AlreadyWon), EntryStatus::Lost),
        ];
        assert_eq!(classify_won_ends(&entries, &[]), WonEnds::default());
    }

    #[test]
    fn a_refused_second_won_of_a_member_paid_under_another_entry_is_no_phantom() {
        let entries = [
            entry("e1", "m1", Some(Outcome::Won), EntryStatus::Sent),
            entry("e2", "m1", Some(Outcome::Won), EntryStatus::Won),
        ];
        let ends = classify_won_ends(&entries, &[refusal("e2", "m1", "member_already_paid", 1)]);
        assert!(ends.phantoms.is_empty(), "{ends:?}");
        assert_eq!(ends.repeat_refused, BTreeSet::from(["e2".to_string()]));
    }

    #[test]
    fn a_refused_won_after_the_members_gift_failed_is_a_phantom_success() {
        // The failed gift released its claim but the member keeps it: a later
        // WON of theirs is refused, and they were told "won" and never paid.
        let entries = [
            entry("e1", "m1", Some(Outcome::Won), EntryStatus::Failed { returned: true }),
            entry("e2", "m1", Some(Outcome::Won), EntryStatus::Won),
        ];
        let ends = classify_won_ends(&entries, &[refusal("e2", "m1", "member_already_paid", 1)]);
        assert_eq!(phantom_ids(&ends), ["e2"]);
        assert!(ends.unreturned.is_empty());
    }

    #[test]
    fn a_promotion_sent_is_one_win_in_either_log_order() {
        for log in [[Outcome::SoldOut, Outcome::Won], [Outcome::Won, Outcome::SoldOut]] {
            let promoted = entry("e2", "m2", standing(log), EntryStatus::Sent);
            let entries = [entry("e1", "m1", Some(Outcome::Won), EntryStatus::Failed { returned: true }), promoted];
            assert_eq!(classify_won_ends(&entries, &[]), WonEnds::default(), "{log:?}");
        }
        // The promoted entry stands WON: refused, its member is told "won" and never paid.
        let promoted = entry("e2", "m2", standing([Outcome::SoldOut, Outcome::Won]), EntryStatus::Won);
        let ends = classify_won_ends(&[promoted], &[refusal("e2", "m2", "stock_exhausted", 1)]);
        assert_eq!(phantom_ids(&ends), ["e2"]);
    }

    #[test]
    fn a_failed_gift_with_its_unit_returned_is_fine_and_without_it_is_not() {
        let entries = [
            entry("e1", "m1", Some(Outcome::Won), EntryStatus::Failed { returned: true }),
            entry("e2", "m2", Some(Outcome::Won), EntryStatus::Failed { returned: false }),
        ];
        let ends = classify_won_ends(&entries, &[]);
        assert_eq!(ends.unreturned, BTreeSet::from(["e2".to_string()]));
        assert!(ends.phantoms.is_empty());
    }

    #[test]
    fn a_won_the_guard_did_not_refuse_is_waiting_not_a_phantom() {
        let entries = [entry("e1", "m1", Some(Outcome::Won), EntryStatus::Won)];
        let ends = classify_won_ends(&entries, &[]);
        assert_eq!((ends.waiting, ends.phantoms.len()), (1, 0));
    }

    #[test]
    fn the_first_decision_stands_but_for_a_promotion() {
        assert_eq!(standing([Outcome::SoldOut, Outcome::Won]), Some(Outcome::Won));
        assert_eq!(standing([Outcome::Won, Outcome::SoldOut]), Some(Outcome::Won));
        assert_eq!(standing([Outcome::AlreadyWon, Outcome::Won]), Some(Outcome::AlreadyWon));
        assert_eq!(standing([]), None);
    }

    #[test]
    fn two_units_or_two_outcomes_conflict() {
        assert_eq!(one_decision(&[(Outcome::SoldOut, None), (Outcome::Won, Some(9)), (Outcome::Won, Some(375))]), None);
        assert_eq!(one_decision(&[(Outcome::Won, Some(9)), (Outcome::Won, Some(375))]), None);
        assert_eq!(one_decision(&[(Outcome::Ineligible, None), (Outcome::Won, Some(1))]), None);
    }
}
