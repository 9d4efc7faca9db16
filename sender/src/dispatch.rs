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
//! - Any other 4xx (bad credentials, a wrong base URL, a request we built
//!   wrong) is our fault, not the member's: it ends the rounds at once as
//!   `Unresolved` (the same call would get the same answer), so the gift
//!   stays open until the configuration is fixed.
//! - Anything else after `max_attempts` rounds is `Unresolved`: the caller
//!   fails the batch and the whole thing runs again later.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::provider::{GiftOrder, IssueError, ProviderClient};
use crate::rate_limit::TokenBucket;
use crate::settings::ProviderSettings;

/// A definite end of one gift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Sent { gift_id: String, attempts: i32 },
    Failed { reason: String, attempts: i32 },
}

/// The outcome is still unknown or the provider still unavailable: try later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unresolved after {attempts} provider calls: {last}")]
pub struct Unresolved {
    pub attempts: i32,
    pub last: String,
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

    /// Drives `order` to a definite resolution, or gives up as `Unresolved`.
    pub async fn send(&self, order: &GiftOrder) -> Result<Resolution, Unresolved> {
        let mut calls: i32 = 0;
        // Whether a gift may exist under the key, unknown to us.
        let mut maybe_issued = false;
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
                match self.provider.lookup(&order.idempotency_key).await {
                    Ok(Some(gift)) => {
                        count_call("lookup_found");
                        tracing::info!(gift_id = %gift.gift_id, calls, "unknown outcome resolved: the gift was issued");
                        return Ok(Resolution::Sent { gift_id: gift.gift_id, attempts: calls });
                    }
                    Ok(None) => {
                        count_call("lookup_not_found");
                        // Nothing exists under the key: the issue call below
                        // decides afresh whether a gift may exist.
                        tracing::info!(calls, "unknown outcome resolved: nothing issued, issuing again");
                    }
                    Err(error) => {
                        count_call("lookup_failed");
                        tracing::warn!(%error, calls, "lookup failed; the outcome stays unknown");
                        last = error.to_string();
                        continue;
                    }
                }
            }
            self.bucket.acquire().await;
            calls += 1;
            match self.provider.issue(order).await {
                Ok(gift) => {
                    count_call("issued");
                    tracing::info!(gift_id = %gift.gift_id, calls, "gift issued");
                    return Ok(Resolution::Sent { gift_id: gift.gift_id, attempts: calls });
                }
                Err(IssueError::Permanent { reason }) => {
                    count_call("refused");
                    tracing::warn!(%reason, calls, "the provider refused the gift for good");
                    return Ok(Resolution::Failed { reason, attempts: calls });
                }
                Err(error @ IssueError::ClientError { .. }) => {
                    count_call(error.label());
                    tracing::error!(
                        %error,
                        calls,
                        "the provider rejected our request (credentials, base URL or request shape?); \
                         the gift stays open and the batch will be retried"
                    );
                    return Err(Unresolved { attempts: calls, last: error.to_string() });
                }
                Err(error) => {
                    count_call(error.label());
                    tracing::warn!(%error, calls, maybe_issued = error.maybe_issued(), "provider call failed; will retry");
                    maybe_issued = error.maybe_issued();
                    if let IssueError::Transient { retry_after, .. } = &error {
                        hint = *retry_after;
                    }
                    last = error.to_string();
                }
            }
        }
        Err(Unresolved { attempts: calls, last })
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

fn count_call(result: &'static str) {
    metrics::counter!("firstcome_sender_provider_calls_total", "result" => result).increment(1);
}
