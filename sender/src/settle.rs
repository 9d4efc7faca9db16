//! Settling one claimed gift: ask the provider ([`crate::dispatch`]) and
//! record the definite outcome with its outbox rows ([`crate::store`]). The
//! batch handler and the retrier of parked gifts ([`crate::parked`]) both
//! settle gifts through here, so a gift is settled the same way whoever
//! picks it up.

use std::sync::Arc;

use platform::kafka::{EventProducer, HandlerError, OutRecord, ProduceError, RecordContext};
use schemas::{now_millis, DispatchStatus, GiftDispatch, StockRelease};
use tokio::sync::Notify;

use crate::dispatch::{Dispatcher, NotSent, Rejected, Resolution, Start, Unresolved};
use crate::events::{DispatchRecorded, DispatchSkipped, PhoneUnusable, SkipReason};
use crate::phone;
use crate::provider::GiftOrder;
use crate::store::{Store, WonEntry};

/// Why a gift has no recorded outcome after [`Settler::settle`].
#[derive(Debug, thiserror::Error)]
pub enum NotSettled {
    /// The provider rejected this one request: an operator must look at it.
    #[error(transparent)]
    Rejected(Rejected),
    /// The provider could not tell, or is unavailable; `parkable` says
    /// whether trying again soon would only meet the same answer.
    #[error(transparent)]
    Unresolved(Unresolved),
    /// The database or the codec failed: try again.
    #[error(transparent)]
    Storage(HandlerError),
}

impl From<NotSent> for NotSettled {
    fn from(not_sent: NotSent) -> Self {
        match not_sent {
            NotSent::Rejected(rejected) => NotSettled::Rejected(rejected),
            NotSent::Unresolved(unresolved) => NotSettled::Unresolved(unresolved),
        }
    }
}

pub struct Settler {
    /// Encodes the outcome records (the relay sends them).
    producer: EventProducer,
    store: Arc<Store>,
    dispatcher: Arc<Dispatcher>,
    /// Wakes the relay as soon as an outcome is committed.
    relay_wake: Arc<Notify>,
}

impl Settler {
    pub fn new(
        producer: EventProducer,
        store: Arc<Store>,
        dispatcher: Arc<Dispatcher>,
        relay_wake: Arc<Notify>,
    ) -> Self {
        Self { producer, store, dispatcher, relay_wake }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Resolves the claimed gift of `entry` and records its definite
    /// outcome. `phone` is the member's, as the replica holds it now;
    /// `maybe_issued`: an issue call may have been made by an earlier run.
    /// `cause` is the WON record's context (the outcome records continue it).
    pub async fn settle(
        &self,
        entry: &WonEntry,
        phone: Option<&str>,
        maybe_issued: bool,
        cause: &RecordContext,
    ) -> Result<(), NotSettled> {
        let gift = self
            .store
            .gift_for(&entry.event_id)
            .await
            .map_err(|e| NotSettled::Storage(HandlerError::transient_in("reading the gift", e)))?;
        let (phone, cannot_issue) = match phone::check(phone) {
            Ok(phone) => (phone.to_string(), None),
            Err(problem) => {
                PhoneUnusable { user_id: &entry.user_id, reason: problem.reason(), maybe_issued }.emit();
                (String::new(), Some(problem.reason()))
            }
        };
        let order = GiftOrder {
            idempotency_key: entry.entry_id.to_string(),
            phone,
            product: gift.product,
            amount: gift.amount,
        };
        let start = Start { maybe_issued, cannot_issue };
        let resolution = self.dispatcher.resume(&order, cause.trace().as_ref(), start).await?;
        self.record(entry, &resolution, cause).await.map_err(NotSettled::Storage)
    }

    /// Records the payout guard's refusal of `entry`'s WON as its outcome
    /// (a REFUSED dispatch, announced on `gift-dispatched`), so the member's
    /// entry reads "refused", never "won" for ever. Idempotent: a
    /// redelivered refusal finds the outcome recorded and writes nothing.
    pub async fn refuse(&self, entry: &WonEntry, reason: &str, cause: &RecordContext) -> Result<(), HandlerError> {
        self.record(entry, &Resolution::Refused { reason: reason.to_string() }, cause).await
    }

    /// Records the outcome with its outbox rows, in one transaction.
    async fn record(
        &self,
        entry: &WonEntry,
        resolution: &Resolution,
        cause: &RecordContext,
    ) -> Result<(), HandlerError> {
        let outbox = self
            .outbox_records(entry, resolution, cause)
            .await
            .map_err(|e| HandlerError::transient_in("encoding the outcome", e))?;
        let recorded = self
            .store
            .record(entry, resolution, &outbox)
            .await
            .map_err(|e| HandlerError::transient_in("recording the outcome", e))?;
        if recorded {
            self.relay_wake.notify_one();
            DispatchRecorded { resolution }.emit();
        } else {
            DispatchSkipped { reason: SkipReason::RecordedMeanwhile }.emit();
        }
        Ok(())
    }

    /// `GiftDispatch` always; `StockRelease` too when the gift definitely failed
    /// (compensation: the stock group returns the unit).
    async fn outbox_records(
        &self,
        entry: &WonEntry,
        resolution: &Resolution,
        cause: &RecordContext,
    ) -> Result<Vec<OutRecord>, ProduceError> {
        let now = now_millis();
        let (status, provider_ref, attempts, reason) = match resolution {
            Resolution::Sent { gift_id, attempts } => (DispatchStatus::Sent, Some(gift_id.clone()), *attempts, None),
            Resolution::Failed { reason, attempts } => (DispatchStatus::Failed, None, *attempts, Some(reason.clone())),
            Resolution::Refused { reason } => (DispatchStatus::Refused, None, 0, Some(reason.clone())),
        };
        let dispatch = GiftDispatch {
            event_id: entry.event_id.clone(),
            entry_id: entry.entry_id.to_string(),
            user_id: entry.user_id.clone(),
            status,
            provider_ref,
            attempts,
            reason: reason.clone(),
            dispatched_at: now,
        };
        let mut records = vec![self.producer.encode(&dispatch, cause.caused()).await?];
        // Only a definite failure gives the unit back: a refusal says the
        // unit was never this entry's to return.
        if let (Some(reason), DispatchStatus::Failed) = (reason, status) {
            let release = StockRelease {
                event_id: entry.event_id.clone(),
                entry_id: entry.entry_id.to_string(),
                user_id: entry.user_id.clone(),
                unit_no: entry.unit_no,
                reason,
                released_at: now,
            };
            records.push(self.producer.encode(&release, cause.caused()).await?);
        }
        Ok(records)
    }
}
