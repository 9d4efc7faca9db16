//! Sending one gift: the retry state machine, free of storage and Kafka so
//! its rules can be read (and tested) on their own.
//!
//! Rules:
//! - Every call carries the same idempotency key, so repeating an issue call
//!   never issues a second gift.
//! - After an answer that may have issued (timeout, broken exchange, 409),
//!   the next round first asks `GET /v1/gifts/{key}`: found → sent; 404 →
//!   nothing exists, issuing again is safe; the lookup failing → still unknown.
//! - A business refusal (422) ends in `Failed` — compensation is only ever
//!   decided on such an answer to a call made while no gift could exist
//!   under the key.
//! - A 4xx about our configuration (bad credentials, a wrong base URL: 401,
//!   403, 404, …) is our fault, not the member's: it ends the rounds at once
//!   as `Unresolved` (the same call would get the same answer, for every
//!   gift), so the gift stays open until the configuration is fixed.
//! - Any other 4xx (400, 413, 415, …) rejects this one request: it ends the
//!   rounds at once as `Rejected`, which the caller settles on its own
//!   (dead-lettered, never failed nor compensated) so one bad gift never
//!   holds the others.
//! - Every answer carrying a gift is matched to the order (key, status,
//!   product, amount, [`GiftOrder::mismatch`]): another key's gift, or one
//!   not issued, is an unknown outcome (logged at ERROR, counted) that a
//!   lookup resolves — never a SENT with somebody else's `provider_ref`.
//! - A gift that may have been issued (now, or by an earlier run: [`Start`])
//!   is FAILED only after the provider says nothing was issued (lookup 404
//!   `not_found`): one that cannot be issued now (no usable phone) is looked
//!   up, and fails only then.
//! - Anything else after `max_attempts` rounds is `Unresolved`: the caller
//!   fails the batch and the whole thing runs again later — unless the
//!   provider kept answering about this gift with answers that settle
//!   nothing (`parkable`): then the caller parks the gift so it never holds
//!   the others.

use std::sync::Arc;
use std::time::Duration;

use platform::trace_context::TraceParent;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::events::{CallKind, ProviderCall, ProviderCalled};
use crate::provider::{GiftOrder, IssueError, ProviderClient};
use crate::rate_limit::TokenBucket;
use crate::settings::ProviderSettings;

/// A definite end of one gift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Sent {
        gift_id: String,
        attempts: i32,
    },
    Failed {
        reason: String,
        attempts: i32,
    },
    /// The payout guard refused the WON: nothing sent, no unit returned
    /// (see [`crate::payout_guard`]); recorded so the member is told.
    Refused {
        reason: String,
    },
}

/// The outcome is still unknown or the provider still unavailable: try later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unresolved after {attempts} provider calls: {last}")]
pub struct Unresolved {
    pub attempts: i32,
    pub last: String,
    /// The gift may have been issued and the provider's last answer about
    /// it settled nothing (an unusable body, a 404 without `not_found`,
    /// another key's gift): trying the batch again would meet the same
    /// answer, so the gift is parked and retried on its own.
    pub parkable: bool,
}

/// What is known of a gift before this run, and what this run may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Start<'a> {
    /// An issue call may have been made for the key by an earlier run (the
    /// claim remembers it): the gift is never failed before a lookup says
    /// nothing was issued.
    pub maybe_issued: bool,
    /// Why no issue call may be made now (the member has no usable phone).
    /// The gift fails with this reason — at once when nothing can have been
    /// issued, otherwise only once a lookup says nothing was.
    pub cannot_issue: Option<&'a str>,
}

/// The provider rejected this one request as malformed (a 4xx about the
/// request, not the configuration): definitely not issued, and the same
/// request would get the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rejected by the provider ({status} {reason}) after {attempts} provider calls")]
pub struct Rejected {
    pub status: u16,
    pub reason: String,
    pub attempts: i32,
}

/// Why a gift has no definite resolution from this run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotSent {
    /// Try the whole batch again later.
    #[error(transparent)]
    Unresolved(#[from] Unresolved),
    /// Settle this gift on its own: an operator must look at it.
    #[error(transparent)]
    Rejected(#[from] Rejected),
}

impl NotSent {
    /// Provider calls made.
    pub fn attempts(&self) -> i32 {
        match self {
            NotSent::Unresolved(unresolved) => unresolved.attempts,
            NotSent::Rejected(rejected) => rejected.attempts,
        }
    }
}

/// Sends gifts through one provider client, rate-limited and retried.
pub struct Dispatcher {
    provider: ProviderClient,
    bucket: Arc<TokenBucket>,
    backoff: Backoff,
    max_attempts: u32,
    /// Cancelled on shutdown: backoffs end early and the gift is left unresolved
    /// (the batch is not committed and replays after restart).
    shutdown: CancellationToken,
}

impl Dispatcher {
    pub fn new(provider: ProviderClient, settings: &ProviderSettings, shutdown: CancellationToken) -> Self {
        Self {
            provider,
            bucket: Arc::new(TokenBucket::new(settings.rate_per_sec, settings.rate_per_sec)),
            backoff: Backoff::new(
                Duration::from_millis(settings.backoff_base_ms),
                Duration::from_millis(settings.backoff_max_ms),
            ),
            max_attempts: settings.max_attempts,
            shutdown,
        }
    }

    /// Drives `order` to a definite resolution, or gives up as `Unresolved`
    /// (retry later) or `Rejected` (this request will never be accepted).
    /// The provider calls continue `trace` (the gift's record).
    pub async fn send(&self, order: &GiftOrder, trace: Option<&TraceParent>) -> Result<Resolution, NotSent> {
        self.resume(order, trace, Start::default()).await
    }

    /// [`send`](Self::send), from what an earlier run left (`start`).
    pub async fn resume(
        &self,
        order: &GiftOrder,
        trace: Option<&TraceParent>,
        start: Start<'_>,
    ) -> Result<Resolution, NotSent> {
        if let (Some(reason), false) = (start.cannot_issue, start.maybe_issued) {
            // Nothing was ever asked of the provider: nothing can exist.
            return Ok(Resolution::Failed { reason: reason.into(), attempts: 0 });
        }
        let mut calls: i32 = 0;
        // Whether a gift may exist under the key, unknown to us. With a
        // phone to send to, issuing again under the same key is safe and
        // answers for itself (the same gift, a 409, or our configuration's
        // error): only a gift that cannot be issued starts with a lookup.
        let mut maybe_issued = start.maybe_issued && start.cannot_issue.is_some();
        // Whether the provider's last answer about the gift settled nothing.
        let mut unusable = false;
        let mut last = String::from("not tried");
        let mut hint: Option<Duration> = None;

        for round in 0..self.max_attempts {
            if round > 0 && !self.pause(round - 1, hint.take()).await {
                last = format!("shutting down ({last})");
                break;
            }
            if maybe_issued {
                self.bucket.acquire().await;
                calls += 1;
                match self.provider.lookup(&order.idempotency_key, trace).await {
                    Ok(Some(gift)) => match order.mismatch(&gift) {
                        None => {
                            ProviderCalled { call: ProviderCall::LookupFound { gift_id: &gift.gift_id }, calls }.emit();
                            return Ok(Resolution::Sent { gift_id: gift.gift_id, attempts: calls });
                        }
                        Some(mismatch) => {
                            ProviderCalled {
                                call: ProviderCall::Mismatch { on: CallKind::Lookup, mismatch: &mismatch },
                                calls,
                            }
                            .emit();
                            (unusable, last) = (true, mismatch.to_string());
                            continue;
                        }
                    },
                    Ok(None) => {
                        // Nothing exists under the key: the issue call below
                        // decides afresh whether a gift may exist.
                        ProviderCalled { call: ProviderCall::LookupNotFound, calls }.emit();
                        if let Some(reason) = start.cannot_issue {
                            return Ok(Resolution::Failed { reason: reason.into(), attempts: calls });
                        }
                    }
                    Err(error) => {
                        ProviderCalled { call: ProviderCall::LookupFailed { error: &error }, calls }.emit();
                        (unusable, last) = (error.is_unusable(), error.to_string());
                        continue;
                    }
                }
            }
            self.bucket.acquire().await;
            calls += 1;
            match self.provider.issue(order, trace).await {
                Ok(gift) => match order.mismatch(&gift) {
                    None => {
                        ProviderCalled { call: ProviderCall::Issued { gift_id: &gift.gift_id }, calls }.emit();
                        return Ok(Resolution::Sent { gift_id: gift.gift_id, attempts: calls });
                    }
                    Some(mismatch) => {
                        // Something was answered to our request: ours may exist.
                        ProviderCalled {
                            call: ProviderCall::Mismatch { on: CallKind::Issue, mismatch: &mismatch },
                            calls,
                        }
                        .emit();
                        (maybe_issued, unusable, last) = (true, true, mismatch.to_string());
                    }
                },
                Err(error) => {
                    ProviderCalled { call: ProviderCall::IssueFailed { error: &error }, calls }.emit();
                    match error {
                        IssueError::Permanent { reason } => return Ok(Resolution::Failed { reason, attempts: calls }),
                        IssueError::ClientError { .. } => {
                            return Err(Unresolved { attempts: calls, last: error.to_string(), parkable: false }.into())
                        }
                        IssueError::Rejected { status, reason } => {
                            return Err(Rejected { status, reason, attempts: calls }.into())
                        }
                        _ => {}
                    }
                    maybe_issued = error.maybe_issued();
                    unusable = error.is_unusable();
                    if let IssueError::Transient { retry_after, .. } = &error {
                        hint = *retry_after;
                    }
                    last = error.to_string();
                }
            }
        }
        Err(Unresolved { attempts: calls, last, parkable: maybe_issued && unusable }.into())
    }

    /// Waits before retry `retry`; at least the provider's `Retry-After` when
    /// it gave one (capped by the backoff maximum). False when shutting down.
    async fn pause(&self, retry: u32, hint: Option<Duration>) -> bool {
        let jittered = self.backoff.delay(retry, &mut rand::rng());
        let wait = match hint {
            Some(hint) => jittered.max(hint.min(self.backoff.ceiling(u32::MAX))),
            None => jittered,
        };
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }
}
