//! The retrier of parked gifts: gifts that may have been issued and whose
//! provider answers settled nothing (an unreadable lookup, a 404 without
//! `not_found`, another key's gift), set aside by the batch handler so they
//! never hold their partition.
//!
//! Each is retried on its own schedule (exponential backoff with full
//! jitter, [`Backoff`], per gift from its number of tries), always starting
//! with a lookup, and settled by the same [`Settler`] as a batch's gifts:
//! the outcome, the claim, the outbox rows and the end of its parking in one
//! transaction. Several sender instances share the table: a gift taken is
//! leased (its next try pushed past the longest one try can take), so no
//! two instances work on it at once, and a dead instance's lease runs out.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::events::{ParkedCount, ParkedPassFailed, ParkedResult, ParkedRetried};
use crate::settings::ParkedSettings;
use crate::settle::{NotSettled, Settler};
use crate::store::{ParkedGift, StoreError};

pub struct ParkedRetrier {
    settler: Arc<Settler>,
    settings: ParkedSettings,
    backoff: Backoff,
    /// Longer than one try of a gift can take.
    lease: Duration,
}

impl ParkedRetrier {
    /// `worst_try`: the longest one gift's provider rounds can take.
    pub fn new(settler: Arc<Settler>, settings: ParkedSettings, worst_try: Duration) -> Self {
        let backoff = settings.backoff();
        Self { settler, settings, backoff, lease: worst_try * 2 }
    }

    /// Retries due parked gifts until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(poll_ms = self.settings.poll_ms, batch = self.settings.batch, "parked-gift retrier started");
        let poll = Duration::from_millis(self.settings.poll_ms);
        loop {
            let full = match self.pass().await {
                Ok(taken) => taken as i64 >= self.settings.batch,
                Err(error) => {
                    ParkedPassFailed { error: &error }.emit();
                    false
                }
            };
            match self.settler.store().parked_count().await {
                Ok(count) => ParkedCount { count }.emit(),
                Err(error) => tracing::debug!(%error, "could not count parked gifts"),
            }
            if stop.is_cancelled() {
                break;
            }
            if full {
                continue;
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(poll) => {}
            }
        }
        tracing::info!("parked-gift retrier stopped");
    }

    /// Tries every due parked gift once (at most `batch`); how many were taken.
    pub async fn pass(&self) -> Result<usize, StoreError> {
        let store = self.settler.store();
        let due = store.take_due_parked(self.settings.batch, self.lease).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut members: Vec<String> = due.iter().map(|(gift, _)| gift.user_id.clone()).collect();
        members.sort();
        members.dedup();
        let phones = store.phones(&members).await?;
        let taken = due.len();
        let tries = due.into_iter().map(|(gift, context)| {
            let phone = phones.get(&gift.user_id).cloned();
            let span = tracing::info_span!(
                "parked_gift",
                otel.name = "retry parked gift",
                entry_id = %gift.entry_id,
                correlation_id = %context.correlation_id,
            );
            async move {
                // Parked only ever after an issue call: a gift may exist.
                let settled = self.settler.settle(&gift.entry(), phone.as_deref(), true, &context).await;
                self.after(&gift, settled).await;
            }
            .instrument(span)
        });
        futures::future::join_all(tries).await;
        Ok(taken)
    }

    async fn after(&self, gift: &ParkedGift, settled: Result<(), NotSettled>) {
        let tries = gift.tries + 1;
        let error = match settled {
            Ok(()) => return ParkedRetried { result: ParkedResult::Settled, tries }.emit(),
            Err(error) => error,
        };
        let retry_in = self.backoff.delay(tries.max(0) as u32, &mut rand::rng());
        ParkedRetried { result: ParkedResult::StillParked { error: &error, retry_in }, tries }.emit();
        if let Err(store_error) =
            self.settler.store().reschedule_parked(gift.entry_id, &error.to_string(), retry_in).await
        {
            // Its lease runs out and it is due again then.
            ParkedPassFailed { error: &store_error }.emit();
        }
    }
}
