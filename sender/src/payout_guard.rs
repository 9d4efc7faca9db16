//! The payout guard: PostgreSQL's own limit on what the dispatch group pays,
//! independent of Redis (migration `0005_payout_guard.sql`).
//!
//! Why: Redis decides who won, fast, but it is not the last word. One Redis
//! with `appendfsync everysec` can forget the last second of decisions after
//! the stock stage's Kafka transaction committed them, and then decide the
//! same units again; and a `stock-decided` record may be replayed or forged
//! by anything that can produce to the topic. So before any provider call
//! every WON must **claim** its payout here, and a WON that cannot claim is
//! never sent.
//!
//! The rules, each enforced by the database rather than by a read:
//! - at most one claim per (event, member), ever — the unique constraint on
//!   `payout_claims (event_id, user_id)`; a member whose gift failed keeps
//!   the (released) row, so no later entry of theirs is paid either;
//! - at most `for_sale` claims holding a unit per event — the guarded
//!   counter `events.payout_claimed`, taken with one conditional `UPDATE`
//!   (never read-then-write), given back only when a FAILED outcome returns
//!   the unit to stock (see [`settle`]);
//! - only for an event that exists in `events`.
//!
//! A redelivered or retried WON finds its own claim (same entry id) and goes
//! on: the provider's idempotency key keeps its gift single. A refused WON is
//! recorded in `payout_refusals` and stays refused on every redelivery.
//!
//! Claims are taken for a whole batch in one transaction, in the order of
//! the batch within each event (so when units run short the earlier records
//! keep them), and events are locked in a fixed order (by event id), so two
//! instances claiming for the same events cannot deadlock.

use std::collections::HashMap;
use std::fmt;

use deadpool_postgres::{Pool, Transaction};
use uuid::Uuid;

use crate::dispatch::Resolution;
use crate::store::{StoreError, WonEntry};

/// Why a WON could not claim its payout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The member already holds a claim in this event under another entry
    /// id (paid, in flight, or failed and released).
    MemberAlreadyPaid,
    /// Every unit for sale is already claimed.
    StockExhausted,
    /// No such event in PostgreSQL.
    UnknownEvent,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::MemberAlreadyPaid => "member_already_paid",
            RefusalReason::StockExhausted => "stock_exhausted",
            RefusalReason::UnknownEvent => "unknown_event",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "member_already_paid" => Some(RefusalReason::MemberAlreadyPaid),
            "stock_exhausted" => Some(RefusalReason::StockExhausted),
            "unknown_event" => Some(RefusalReason::UnknownEvent),
            _ => None,
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the guard answered for one WON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The entry holds an open claim: send its gift. `fresh` is false when
    /// the claim was found from an earlier delivery or run.
    Granted { fresh: bool },
    /// The entry's claim is settled (sent, or released by a FAILED): its
    /// outcome is recorded, nothing is left to do.
    Settled,
    /// Refused now: never send it; dead-letter it for an operator.
    Refused(RefusalReason),
    /// Refused on an earlier delivery: skip it (it was dead-lettered then).
    AlreadyRefused(RefusalReason),
    /// The entry id is claimed for another event or member: the record
    /// contradicts the claim, so it is never sent; dead-letter it.
    Conflicting { event_id: String, user_id: String },
}

/// Claims payouts in PostgreSQL.
#[derive(Clone)]
pub struct PayoutGuard {
    pool: Pool,
}

impl PayoutGuard {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Claims the payout of every entry, in one transaction; the answers
    /// come back in the order of `entries`. Entry ids must be distinct.
    pub async fn claim_all(&self, entries: &[&WonEntry]) -> Result<Vec<Claim>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        // A stable lock order on `events` rows across instances; batch order within an event.
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by(|&a, &b| entries[a].event_id.cmp(&entries[b].event_id).then(a.cmp(&b)));

        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut answers: Vec<Option<Claim>> = vec![None; entries.len()];
        // Whether each event exists (looked up once per batch).
        let mut known: HashMap<&str, bool> = HashMap::new();
        for index in order {
            let entry = entries[index];
            let exists = match known.get(entry.event_id.as_str()) {
                Some(exists) => *exists,
                None => {
                    let exists =
                        tx.query_opt("SELECT 1 FROM events WHERE event_id = $1", &[&entry.event_id]).await?.is_some();
                    known.insert(entry.event_id.as_str(), exists);
                    exists
                }
            };
            answers[index] = Some(claim_one(&tx, entry, exists).await?);
        }
        tx.commit().await?;
        Ok(answers.into_iter().map(|a| a.unwrap_or(Claim::Settled)).collect())
    }

    /// Claims one entry's payout (see [`PayoutGuard::claim_all`]).
    pub async fn claim(&self, entry: &WonEntry) -> Result<Claim, StoreError> {
        let mut answers = self.claim_all(&[entry]).await?;
        answers.pop().ok_or(StoreError::ClaimRace { entry_id: entry.entry_id })
    }
}

/// One entry, inside the batch's transaction. The reads only classify; the
/// limits are the unique constraints and the guarded `UPDATE`.
async fn claim_one(tx: &Transaction<'_>, entry: &WonEntry, event_exists: bool) -> Result<Claim, StoreError> {
    if let Some(row) =
        tx.query_opt("SELECT reason FROM payout_refusals WHERE entry_id = $1", &[&entry.entry_id]).await?
    {
        let reason: String = row.get(0);
        // The table's CHECK admits only the three reasons.
        return Ok(Claim::AlreadyRefused(RefusalReason::parse(&reason).unwrap_or(RefusalReason::StockExhausted)));
    }
    match existing(tx, entry).await? {
        Existing::Own(claim) => return Ok(claim),
        Existing::MembersOther => return refuse(tx, entry, RefusalReason::MemberAlreadyPaid).await,
        Existing::None => {}
    }
    if !event_exists {
        return refuse(tx, entry, RefusalReason::UnknownEvent).await;
    }
    // The guarded counter: a unit is taken only while one is left.
    let took = tx
        .execute(
            "UPDATE events SET payout_claimed = payout_claimed + 1
             WHERE event_id = $1 AND payout_claimed < total_stock - safety_stock",
            &[&entry.event_id],
        )
        .await?;
    if took == 0 {
        return refuse(tx, entry, RefusalReason::StockExhausted).await;
    }
    let inserted = tx
        .execute(
            "INSERT INTO payout_claims (entry_id, event_id, user_id, unit_no, status)
             VALUES ($1, $2, $3, $4, 'claimed')
             ON CONFLICT DO NOTHING",
            &[&entry.entry_id, &entry.event_id, &entry.user_id, &entry.unit_no],
        )
        .await?;
    if inserted == 1 {
        return Ok(Claim::Granted { fresh: true });
    }
    // A claim for this entry or this member was committed by another
    // instance meanwhile (the insert waited for it): give the unit back
    // within this transaction and answer from that claim.
    tx.execute("UPDATE events SET payout_claimed = payout_claimed - 1 WHERE event_id = $1", &[&entry.event_id]).await?;
    match existing(tx, entry).await? {
        Existing::Own(claim) => Ok(claim),
        Existing::MembersOther => refuse(tx, entry, RefusalReason::MemberAlreadyPaid).await,
        Existing::None => Err(StoreError::ClaimRace { entry_id: entry.entry_id }),
    }
}

/// The claims that bear on an entry.
enum Existing {
    /// The entry's own claim, as an answer.
    Own(Claim),
    /// Another entry of the same member holds the event's claim.
    MembersOther,
    None,
}

async fn existing(tx: &Transaction<'_>, entry: &WonEntry) -> Result<Existing, StoreError> {
    let rows = tx
        .query(
            "SELECT entry_id, event_id, user_id, status FROM payout_claims
             WHERE entry_id = $1 OR (event_id = $2 AND user_id = $3)",
            &[&entry.entry_id, &entry.event_id, &entry.user_id],
        )
        .await?;
    let own = rows.iter().find(|row| row.get::<_, Uuid>(0) == entry.entry_id);
    if let Some(row) = own {
        let (event_id, user_id, status): (String, String, String) = (row.get(1), row.get(2), row.get(3));
        if event_id != entry.event_id || user_id != entry.user_id {
            return Ok(Existing::Own(Claim::Conflicting { event_id, user_id }));
        }
        return Ok(Existing::Own(match status.as_str() {
            "claimed" => Claim::Granted { fresh: false },
            _ => Claim::Settled,
        }));
    }
    Ok(if rows.is_empty() { Existing::None } else { Existing::MembersOther })
}

async fn refuse(tx: &Transaction<'_>, entry: &WonEntry, reason: RefusalReason) -> Result<Claim, StoreError> {
    tx.execute(
        "INSERT INTO payout_refusals (entry_id, event_id, user_id, unit_no, reason)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (entry_id) DO NOTHING",
        &[&entry.entry_id, &entry.event_id, &entry.user_id, &entry.unit_no, &reason.as_str()],
    )
    .await?;
    Ok(Claim::Refused(reason))
}

/// Settles the entry's claim inside the transaction that records its
/// outcome: SENT → 'sent'; FAILED (the unit goes back to stock through a
/// `StockRelease`) → 'released' and the unit given back to the counter, so
/// the next WON for that unit can claim it. The member keeps the row either
/// way. The claim must be open: an outcome without a claim would mean the
/// guard was bypassed, so the transaction fails instead.
pub async fn settle(tx: &Transaction<'_>, entry: &WonEntry, resolution: &Resolution) -> Result<(), StoreError> {
    let status = match resolution {
        Resolution::Sent { .. } => "sent",
        Resolution::Failed { .. } => "released",
        // A refused WON holds no claim: nothing to settle.
        Resolution::Refused { .. } => return Ok(()),
    };
    if status == "released" {
        // The event row first, as a claim does (counter, then claim row): the
        // same lock order in both transactions, so they cannot deadlock. A
        // missing claim below rolls the decrement back with everything else.
        tx.execute("UPDATE events SET payout_claimed = payout_claimed - 1 WHERE event_id = $1", &[&entry.event_id])
            .await?;
    }
    let settled = tx
        .execute(
            "UPDATE payout_claims SET status = $2, settled_at = now() WHERE entry_id = $1 AND status = 'claimed'",
            &[&entry.entry_id, &status],
        )
        .await?;
    if settled != 1 {
        return Err(StoreError::ClaimNotHeld { entry_id: entry.entry_id });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reasons_read_back_as_written() {
        for reason in [RefusalReason::MemberAlreadyPaid, RefusalReason::StockExhausted, RefusalReason::UnknownEvent] {
            assert_eq!(RefusalReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(RefusalReason::parse("conflicting_claim"), None);
    }
}
