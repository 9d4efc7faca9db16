//! The batch handler of the `dispatch` group: decode every decision, keep
//! the WON ones, skip those already recorded, claim the payout of the rest
//! in PostgreSQL ([`crate::payout_guard`]) and send the claimed ones
//! concurrently — bounded by a semaphore toward the provider — each in the
//! span of its record.
//!
//! At-least-once: the handler returns only after every gift of the batch
//! has a recorded outcome or has been dead-lettered, or fails the whole
//! batch. A failed batch runs again; the entries finished meanwhile are
//! skipped then because their dispatch row exists, and the claimed ones find
//! their own claim. Nothing goes to Kafka from here but dead letters:
//! outcomes leave through the outbox (see [`crate::outbox`]), so `produce`
//! stays empty.
//!
//! Dead-lettered (each on its own; the rest of the batch finishes and
//! commits): poison records, WONs the payout guard refused, and gifts whose
//! request the provider rejected as malformed.
//!
//! Parked (each on its own; the rest of the batch finishes and commits):
//! gifts that may have been issued and whose provider answers settle
//! nothing. Their claims stay, their state is in PostgreSQL, and the retrier
//! of parked gifts ([`crate::parked`]) settles them on its own schedule.
//!
//! Before the first issue call of a gift, its claim records that a gift may
//! exist from now on (`issue_started_at`): a later run, on any instance,
//! asks the provider before it fails such a gift for any reason of ours.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use platform::kafka::{BatchHandler, BatchOutcome, DeadLetter, HandlerError, Record, RecordContext};
use schemas::{Codec, Outcome, StockDecision};
use tokio::sync::Semaphore;
use tracing::Instrument;
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::entries::EntryWitness;
use crate::events::{
    AwaitingEntries, AwaitingRecorder, ConflictingClaim, DecisionRejected, DispatchSkipped, DispatchUnresolved,
    GiftParked, PayoutClaimed, PayoutRefused, RequestRejected, SkipReason, WonWithoutEntry,
};
use crate::payout_guard::{Claim, PayoutGuard, RefusalReason};
use crate::phone;
use crate::settle::{NotSettled, Settler};
use crate::store::{Store, WonEntry};

pub use crate::phone::{INVALID_PHONE, NO_PHONE};

/// A won entry of the batch, with what its outputs need.
struct Pending {
    /// Position of its record in the batch (for dead-lettering).
    index: usize,
    entry: WonEntry,
    context: RecordContext,
    span: tracing::Span,
    /// An earlier run may have asked the provider to issue it.
    maybe_issued: bool,
}

pub struct DispatchHandler {
    group: String,
    codec: Codec,
    store: Arc<Store>,
    guard: PayoutGuard,
    settler: Arc<Settler>,
    permits: Arc<Semaphore>,
    /// When a parked gift is first retried.
    park_backoff: Backoff,
    /// The entry each WON must match before its claim.
    witness: EntryWitness,
}

impl DispatchHandler {
    pub fn new(
        group: String,
        codec: Codec,
        settler: Arc<Settler>,
        concurrency: usize,
        park_backoff: Backoff,
        witness: EntryWitness,
    ) -> Self {
        let store = settler.store().clone();
        Self {
            group,
            codec,
            witness,
            guard: PayoutGuard::new(store.pool().clone()),
            store,
            settler,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            park_backoff,
        }
    }

    async fn handle_batch(&self, batch: &[Record]) -> Result<BatchOutcome, HandlerError> {
        let (pending, mut dead_letters) = self.decode(batch).await?;

        let ids: Vec<Uuid> = pending.iter().map(|p| p.entry.entry_id).collect();
        let done = self
            .store
            .already_dispatched(&ids)
            .await
            .map_err(|e| HandlerError::transient_in("reading recorded outcomes", e))?;
        let open: Vec<Pending> = pending
            .into_iter()
            .filter(|p| {
                let finished = done.contains(&p.entry.entry_id);
                if finished {
                    p.span.in_scope(|| DispatchSkipped { reason: SkipReason::AlreadyRecorded }.emit());
                }
                !finished
            })
            .collect();
        // The second key: an entry recorded from `survey-submitted`.
        let open = self.vouched(open, &mut dead_letters).await?;
        // Before any provider call (and before the no-phone FAILED path).
        let todo = self.claim(open, &mut dead_letters).await?;
        if todo.is_empty() {
            return Ok(BatchOutcome { produce: Vec::new(), dead_letters, ..Default::default() });
        }

        let todo = self.unparked(todo).await?;
        if todo.is_empty() {
            return Ok(BatchOutcome { produce: Vec::new(), dead_letters, ..Default::default() });
        }

        let mut members: Vec<String> = todo.iter().map(|p| p.entry.user_id.clone()).collect();
        members.sort();
        members.dedup();
        let phones = self.store.phones(&members).await.map_err(|e| HandlerError::transient_in("reading phones", e))?;
        // Written ahead of the first issue call: whatever becomes of this
        // run, a gift may exist under these keys from now on.
        let issuing: Vec<Uuid> = todo
            .iter()
            .filter(|p| !p.maybe_issued && phone::check(phones.get(&p.entry.user_id).map(String::as_str)).is_ok())
            .map(|p| p.entry.entry_id)
            .collect();
        self.store
            .mark_issue_started(&issuing)
            .await
            .map_err(|e| HandlerError::transient_in("marking the issue calls", e))?;

        let total = todo.len();
        let gifts = todo.into_iter().map(|pending| {
            let phone = phones.get(&pending.entry.user_id).cloned();
            let span = pending.span.clone();
            async move {
                // Bounded concurrency toward the provider; the semaphore is never closed.
                let result = match self.permits.acquire().await {
                    Ok(_permit) => {
                        let span = tracing::info_span!("dispatch", otel.name = "dispatch");
                        self.dispatch_one(&pending, phone.as_deref()).instrument(span).await
                    }
                    Err(closed) => Err(HandlerError::transient(closed)),
                };
                if let Err(error) = &result {
                    if !error.is_poison() {
                        DispatchUnresolved { error }.emit();
                    }
                }
                (pending.index, result)
            }
            .instrument(span)
        });
        let mut unfinished = Vec::new();
        for (index, result) in futures::future::join_all(gifts).await {
            match result {
                Ok(()) => {}
                // The provider rejected the request: dead-letter the record.
                Err(error) if error.is_poison() => dead_letters.push(DeadLetter::new(index, &error)),
                Err(error) => unfinished.push(error),
            }
        }
        let count = unfinished.len();
        if let Some(first) = unfinished.into_iter().next() {
            return Err(HandlerError::transient_in(format!("{count} of {total} gifts unfinished"), first));
        }
        Ok(BatchOutcome { produce: Vec::new(), dead_letters, ..Default::default() })
    }

    /// Leaves out the parked gifts (their retrier settles them) and notes
    /// which of the others an earlier run may have issued.
    async fn unparked(&self, todo: Vec<Pending>) -> Result<Vec<Pending>, HandlerError> {
        let ids: Vec<Uuid> = todo.iter().map(|p| p.entry.entry_id).collect();
        let progress = self
            .store
            .progress(&ids)
            .await
            .map_err(|e| HandlerError::transient_in("reading the claims' progress", e))?;
        Ok(todo
            .into_iter()
            .filter_map(|mut pending| {
                let known = progress.get(&pending.entry.entry_id).copied().unwrap_or_default();
                if known.parked {
                    pending.span.in_scope(|| DispatchSkipped { reason: SkipReason::Parked }.emit());
                    return None;
                }
                pending.maybe_issued = known.maybe_issued;
                Some(pending)
            })
            .collect())
    }

    /// Keeps the WONs whose entries are recorded for their member and event
    /// ([`crate::entries`]). One not recorded yet fails the batch as
    /// transient (retried after the loop's backoff, nothing claimed or sent),
    /// past the deadline too while the recorder has not read past it; one
    /// still not recorded once the recorder has is refused and dead-lettered.
    async fn vouched(
        &self,
        open: Vec<Pending>,
        dead_letters: &mut Vec<DeadLetter>,
    ) -> Result<Vec<Pending>, HandlerError> {
        let entries: Vec<&WonEntry> = open.iter().map(|p| &p.entry).collect();
        let vouched =
            self.witness.vouch(&entries).await.map_err(|e| HandlerError::transient_in("reading entries", e))?;
        if !vouched.awaiting_recorder.is_empty() {
            let count = vouched.awaiting_recorder.len();
            AwaitingRecorder { count, short: &vouched.recorder_short, first: vouched.newly_held }.emit();
        }
        if !vouched.awaiting.is_empty() {
            AwaitingEntries { count: vouched.awaiting.len() }.emit();
        }
        let count = vouched.awaiting.len() + vouched.awaiting_recorder.len();
        if count > 0 {
            return Err(HandlerError::transient_in(
                "awaiting the recorder",
                format!("{count} WONs without a recorded entry yet"),
            ));
        }
        let mut kept = Vec::with_capacity(open.len());
        for pending in open {
            if vouched.unvouched.contains(&pending.entry.entry_id) {
                pending.span.in_scope(|| WonWithoutEntry { entry: &pending.entry }.emit());
                let error = HandlerError::poison_in("payout refused", "no entry recorded for this member and event");
                dead_letters.push(DeadLetter::new(pending.index, &error));
            } else {
                kept.push(pending);
            }
        }
        Ok(kept)
    }

    /// Claims the payouts of the batch's open WONs (one transaction) and
    /// keeps those to send. A refused WON is never sent: it is recorded as
    /// refused, logged, counted and dead-lettered, and its unit is not
    /// returned (no `StockRelease`: the refusal says the unit is not this
    /// record's to give back). Its member is told: a REFUSED dispatch is
    /// recorded and announced, on the refusal and on every redelivery until
    /// it is (the member's entry then reads "refused", never "won").
    async fn claim(
        &self,
        open: Vec<Pending>,
        dead_letters: &mut Vec<DeadLetter>,
    ) -> Result<Vec<Pending>, HandlerError> {
        let entries: Vec<&WonEntry> = open.iter().map(|p| &p.entry).collect();
        let claims =
            self.guard.claim_all(&entries).await.map_err(|e| HandlerError::transient_in("claiming payouts", e))?;
        let mut todo = Vec::with_capacity(open.len());
        let mut refused = Vec::new();
        for (pending, claim) in open.into_iter().zip(claims) {
            match claim {
                Claim::Granted { fresh } => {
                    pending.span.in_scope(|| PayoutClaimed { fresh }.emit());
                    todo.push(pending);
                }
                Claim::Settled => {
                    pending.span.in_scope(|| DispatchSkipped { reason: SkipReason::ClaimSettled }.emit());
                }
                Claim::AlreadyRefused(reason) => {
                    pending.span.in_scope(|| DispatchSkipped { reason: SkipReason::RefusedEarlier(reason) }.emit());
                    refused.push((pending, reason));
                }
                Claim::Refused(reason) => {
                    pending.span.in_scope(|| PayoutRefused { entry: &pending.entry, reason }.emit());
                    let error = HandlerError::poison_in("payout refused", reason.to_string());
                    dead_letters.push(DeadLetter::new(pending.index, &error));
                    refused.push((pending, reason));
                }
                Claim::Conflicting { event_id, user_id } => {
                    pending.span.in_scope(|| {
                        ConflictingClaim {
                            entry: &pending.entry,
                            claimed_event_id: &event_id,
                            claimed_user_id: &user_id,
                        }
                        .emit()
                    });
                    let error = HandlerError::poison_in(
                        "payout refused",
                        format!("entry id already claimed for event {event_id} member {user_id}"),
                    );
                    dead_letters.push(DeadLetter::new(pending.index, &error));
                }
            }
        }
        // A WON of an event nobody created has no member to tell.
        for (pending, reason) in refused.into_iter().filter(|(_, reason)| *reason != RefusalReason::UnknownEvent) {
            self.settler
                .refuse(&pending.entry, reason.as_str(), &pending.context)
                .instrument(pending.span.clone())
                .await?;
        }
        Ok(todo)
    }

    /// Decodes the batch: WON entries (first of each entry id) to send, poison
    /// to dead-letter; a registry outage fails the whole batch.
    async fn decode(&self, batch: &[Record]) -> Result<(Vec<Pending>, Vec<DeadLetter>), HandlerError> {
        let mut pending = Vec::new();
        let mut dead_letters = Vec::new();
        let mut seen = HashSet::new();
        for (index, record) in batch.iter().enumerate() {
            let span = record.span(&self.group);
            let decision = match self.codec.decode::<StockDecision>(record.payload()).await.map_err(HandlerError::from)
            {
                Ok(decision) => decision,
                Err(error) if error.is_poison() => {
                    span.in_scope(|| DecisionRejected { error: &error }.emit());
                    dead_letters.push(DeadLetter::new(index, &error));
                    continue;
                }
                Err(error) => return Err(error),
            };
            span.record("entry_id", decision.entry_id.as_str());
            match won_entry(&decision) {
                Ok(Some(entry)) if seen.insert(entry.entry_id) => {
                    pending.push(Pending { index, entry, context: record.context.clone(), span, maybe_issued: false });
                }
                Ok(Some(_)) => span.in_scope(|| crate::events::DuplicateInBatch.emit()),
                Ok(None) => {}
                Err(reason) => {
                    let error = HandlerError::poison_in("invalid WON decision", reason);
                    span.in_scope(|| DecisionRejected { error: &error }.emit());
                    dead_letters.push(DeadLetter::new(index, &error));
                }
            }
        }
        Ok((pending, dead_letters))
    }

    /// Settles one claimed gift (see [`Settler::settle`]). `Poison`: the
    /// provider rejected the request (dead-letter the record); `Transient`:
    /// unfinished, the batch is retried. A gift whose answers settle
    /// nothing is parked and counts as done here.
    async fn dispatch_one(&self, pending: &Pending, phone: Option<&str>) -> Result<(), HandlerError> {
        let entry = &pending.entry;
        match self.settler.settle(entry, phone, pending.maybe_issued, &pending.context).await {
            Ok(()) => Ok(()),
            // Settled on its own so it never holds the batch. It is never
            // compensated and its claim is kept (not released): nothing
            // proves the member can never be paid, and an operator who fixes
            // the cause replays the dead letter, which finds this same claim
            // — while no other entry of the member, nor a WON past the
            // stock, can take it.
            Err(NotSettled::Rejected(rejected)) => {
                RequestRejected { rejected: &rejected }.emit();
                Err(HandlerError::poison(rejected))
            }
            // Trying the batch again would meet the same answers: set it
            // aside, claim kept, and let the rest of the partition go on.
            Err(NotSettled::Unresolved(unresolved)) if unresolved.parkable => {
                let first_try = self.park_backoff.delay(0, &mut rand::rng());
                self.store
                    .park(entry, &pending.context, &unresolved.to_string(), first_try)
                    .await
                    .map_err(|e| HandlerError::transient_in("parking the gift", e))?;
                GiftParked { entry, error: &unresolved }.emit();
                Ok(())
            }
            Err(NotSettled::Unresolved(unresolved)) => Err(HandlerError::transient(unresolved)),
            Err(NotSettled::Storage(error)) => Err(error),
        }
    }
}

impl BatchHandler for DispatchHandler {
    fn handle<'a>(
        &'a self,
        batch: &'a [Record],
    ) -> impl Future<Output = Result<BatchOutcome, HandlerError>> + Send + 'a {
        self.handle_batch(batch)
    }
}

/// The entry to send a gift for: `None` for any other outcome; `Err` for a
/// WON decision that cannot be acted on (dead-lettered).
pub fn won_entry(decision: &StockDecision) -> Result<Option<WonEntry>, String> {
    if decision.outcome != Outcome::Won {
        return Ok(None);
    }
    // The shared check, so the sender refuses exactly what the stock group
    // and the recorder refuse (non-canonical UUIDs, blank or braced ids).
    let identity = schemas::check_identity(&decision.event_id, &decision.entry_id, &decision.user_id)?;
    let unit_no = match decision.unit_no {
        Some(unit) if unit >= 1 => unit,
        other => return Err(format!("WON decision with unit_no {other:?}")),
    };
    Ok(Some(WonEntry { event_id: identity.event_id, entry_id: identity.entry_id, user_id: identity.user_id, unit_no }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(outcome: Outcome, unit_no: Option<i32>) -> StockDecision {
        StockDecision {
            event_id: "ev".into(),
            entry_id: Uuid::new_v4().to_string(),
            user_id: "u1".into(),
            outcome,
            unit_no,
            decided_at: 1,
            accepted_at: 1,
            ticket: 0,
        }
    }

    #[test]
    fn only_won_decisions_are_sent() {
        for outcome in [Outcome::SoldOut, Outcome::AlreadyWon, Outcome::Ineligible, Outcome::Closed] {
            assert_eq!(won_entry(&decision(outcome, Some(1))), Ok(None));
        }
        let won = won_entry(&decision(Outcome::Won, Some(3))).unwrap().unwrap();
        assert_eq!(won.unit_no, 3);
    }

    #[test]
    fn a_won_decision_without_a_unit_is_poison() {
        assert!(won_entry(&decision(Outcome::Won, None)).is_err());
        assert!(won_entry(&decision(Outcome::Won, Some(0))).is_err());
    }

    #[test]
    fn a_won_decision_with_a_malformed_entry_id_is_poison() {
        let mut bad = decision(Outcome::Won, Some(1));
        bad.entry_id = "not-a-uuid".into();
        assert!(won_entry(&bad).is_err());
    }

    #[test]
    fn a_won_decision_with_a_non_canonical_entry_id_is_poison() {
        let good = decision(Outcome::Won, Some(1));
        for spelling in [good.entry_id.to_uppercase(), good.entry_id.replace('-', ""), format!("{{{}}}", good.entry_id)]
        {
            let bad = StockDecision { entry_id: spelling.clone(), ..good.clone() };
            assert!(won_entry(&bad).is_err(), "{spelling:?} accepted");
        }
    }

    #[test]
    fn a_won_decision_with_blank_or_braced_ids_is_poison() {
        for (event_id, user_id) in [("ev", " "), ("ev", "m 1"), ("ev", "m|1"), ("e{v}", "u1"), ("", "u1"), ("ev", "")] {
            let bad =
                StockDecision { event_id: event_id.into(), user_id: user_id.into(), ..decision(Outcome::Won, Some(1)) };
            assert!(won_entry(&bad).is_err(), "{event_id:?} {user_id:?} accepted");
        }
    }
}
