//! Invariant 4 over rows, no store in sight: how each WON ended, which
//! refused WONs are phantom successes, and the promotion rule (a SOLD_OUT
//! superseded by a returned unit's WON, [`Outcome::supersedes`]) the log
//! check folds decisions with.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use schemas::Outcome;

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
    Failed {
        returned: bool,
    },
    /// The payout guard refused the WON and the member was told.
    Refused,
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
            "refused" => EntryStatus::Refused,
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

/// What an entry's distinct decisions in `stock-decided` add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Folded {
    /// One decision (redelivered copies included).
    Once(Outcome),
    /// SOLD_OUT, then given a returned unit (a WON).
    Promoted,
}

/// An entry's distinct decisions, in log order, folded to one; `None` when
/// they conflict. A waitlist promotion reads in either order: the SOLD_OUT is
/// written by the instance that decided the entry, the WON by the one that
/// applied the release, and their transactions interleave in the log.
pub(crate) fn one_decision(seen: &[(Outcome, Option<i32>)]) -> Option<Folded> {
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
    fn a_refused_won_its_member_was_told_of_is_still_a_phantom_success() {
        // The REFUSED dispatch answers the member; the promise is broken all the same.
        let entries = [entry("e1", "m1", Some(Outcome::Won), EntryStatus::Refused)];
        let ends = classify_won_ends(&entries, &[refusal("e1", "m1", "stock_exhausted", 7)]);
        assert_eq!(phantom_ids(&ends), ["e1"]);
        assert_eq!((ends.waiting, ends.won_refused), (0, 0), "answered: neither waiting nor left won");
        assert_eq!(EntryStatus::parse("refused", false), Some(EntryStatus::Refused));
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
