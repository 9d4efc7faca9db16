//! What the checks return: one verdict per invariant ([`Check`]), the
//! counts behind them ([`Tally`]) and the phantom successes listed.

use serde::Serialize;

use crate::won_ends::PhantomSuccess;

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
    /// Entries whose WON the payout guard refused, told so (a REFUSED
    /// dispatch): still a broken promise, counted in `phantom_successes`.
    pub refused_entries: i64,
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
    /// Entries recorded with a ticket (an entry of another producer has none).
    pub ticketed_entries: i64,
    /// Entries holding a ticket another entry holds too (a violation of 6).
    pub duplicate_tickets: i64,
    /// What admission may reach: for sale + the line's depth, or the
    /// frontier once returned units reopened it.
    pub admission_bound: i64,
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

/// The verdicts as lines for people, one per check.
pub fn text(checks: &[Check]) -> String {
    let mut out = String::new();
    for check in checks {
        let mark = if check.holds { "HOLDS " } else { "BROKEN" };
        out.push_str(&format!("  [{mark}] {:<55} {}\n", check.name, check.detail));
    }
    out
}
