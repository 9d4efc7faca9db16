//! The invariants of docs/DESIGN.md, checked against the real stores: what
//! the demo prints, what `firstcome reconcile` reports, what the lab's chaos
//! suite and the end-to-end tests assert. One function per invariant
//! (`check.rs`), each reading the stores it needs.
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
//! chaos suite's and the drill's figures. Decisions fold by one rule, the
//! waitlist promotion ([`schemas::Outcome::supersedes`], [`standing`]).

mod check;
mod error;
mod fidelity;
mod ids;
mod log;
mod report;
mod stores;
mod won_ends;

use serde::Serialize;

pub use check::check;
pub use error::{postgres_address, postgres_url_address, redis_address, AuditError, Store};
pub use fidelity::{fcfs_fidelity, fcfs_fidelity_in, last_gift_at, Fidelity, FirstN};
pub use log::{check_log, LogTally};
pub use report::{text, Check, InvariantReport, Tally, PHANTOMS_LISTED};
pub use stores::{provider_gifts, ProviderGift, Stores};
pub use won_ends::{classify_won_ends, standing, EntryEnd, EntryStatus, PhantomSuccess, Refusal, WonEnds};

/// One entry answered 202: what a rush (or a test) saw accepted.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Accepted {
    pub member: String,
    pub entry_id: String,
}
