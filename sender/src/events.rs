//! Operational events of the dispatch group: one struct per event, whose
//! `emit()` writes the log line and the metric together, so logs and
//! `/metrics` never disagree. Emitted inside the record's span where there
//! is one (entry id, offset and correlation id come from it).

use platform::error::ErrorChain;
use platform::kafka::HandlerError;
use platform::metrics::{Metric, Unit};
use schemas::DispatchStatus;

use crate::dispatch::{Rejected, Resolution};
use crate::payout_guard::RefusalReason;
use crate::provider::{IssueError, LookupError, Mismatch};
use crate::store::WonEntry;

/// Every metric of the sender (beside platform's consumer and producer
/// ones), described when it is built: help text, unit, and the series known
/// before the first batch at zero.
pub const METRICS: &[Metric] = &[
    Metric::counter(
        "firstcome_sender_dispatches_total",
        "Won gifts handled, by status (SENT, FAILED, or skipped, unresolved, rejected, parked)",
    )
    .labels(&["status"])
    .known(&[&["SENT"], &["FAILED"], &["skipped"], &["unresolved"], &["rejected"], &["parked"]]),
    Metric::counter("firstcome_sender_rejected_records_total", "Records that can never be processed (dead-lettered)"),
    Metric::counter("firstcome_sender_payout_refusals_total", "Payouts the payout guard refused, by reason")
        .labels(&["reason"])
        .known(&[&["member_already_paid"], &["stock_exhausted"], &["unknown_event"], &["conflicting_claim"]]),
    Metric::counter(
        "firstcome_sender_won_without_entry_total",
        "WON decisions refused because no entry of theirs was recorded for the member and event (dead-lettered)",
    ),
    Metric::counter(
        "firstcome_sender_entry_waits_total",
        "Batches retried because a WON's entry was not recorded yet (the recorder lags)",
    ),
    Metric::counter(
        "firstcome_sender_awaiting_recorder_total",
        "Batches retried because WONs past their entry deadline wait for the recorder to read past their entries",
    ),
    Metric::gauge(
        "firstcome_sender_awaiting_recorder",
        Unit::Count,
        "WONs past their entry deadline held until the recorder reads past their entries",
    ),
    Metric::counter(
        "firstcome_sender_provider_mismatches_total",
        "Provider answers that did not match the gift asked for, by call (issue, lookup)",
    )
    .labels(&["call"])
    .known(&[&["issue"], &["lookup"]]),
    Metric::counter("firstcome_sender_provider_calls_total", "Calls to the gift provider, by result")
        .labels(&["result"])
        .known(&[&["issued"], &["lookup_not_found"], &["lookup_failed"], &["timeout"], &["transient"], &["refused"]]),
    Metric::counter("firstcome_sender_provider_retries_total", "Provider calls after the first for the same gift"),
    Metric::counter("firstcome_sender_outbox_published_total", "Outbox rows published to Kafka"),
    Metric::counter("firstcome_sender_outbox_send_failures_total", "Outbox rows whose publish failed (retried)"),
    Metric::counter("firstcome_sender_outbox_errors_total", "Outbox relay rounds that failed"),
    Metric::gauge("firstcome_sender_outbox_pending", Unit::Count, "Outbox rows not published yet"),
    Metric::counter(
        "firstcome_sender_duplicates_in_batch_total",
        "Decisions of an entry already in the same batch (handled once)",
    ),
    Metric::counter(
        "firstcome_sender_rate_limited_total",
        "Provider calls that waited for the rate toward the provider",
    ),
    Metric::counter(
        "firstcome_sender_gifts_parked_total",
        "Gifts parked because the provider's answers settled nothing",
    ),
    Metric::counter("firstcome_sender_parked_retries_total", "Retries of parked gifts, by result")
        .labels(&["result"])
        .known(&[&["settled"], &["still_parked"]]),
    Metric::gauge("firstcome_sender_parked_gifts", Unit::Count, "Gifts parked now"),
    Metric::counter("firstcome_sender_parked_errors_total", "Rounds of the parked-gift retrier that failed"),
];

/// Describes the sender's metrics, platform's producer ones with them.
pub fn describe_metrics() {
    platform::metrics::describe(platform::metrics::PRODUCER);
    platform::metrics::describe(METRICS);
}

fn count_dispatch(status: &'static str) {
    metrics::counter!("firstcome_sender_dispatches_total", "status" => status).increment(1);
}

/// A gift's definite outcome (SENT or FAILED) recorded with its outbox rows.
pub struct DispatchRecorded<'a> {
    pub resolution: &'a Resolution,
}

impl DispatchRecorded<'_> {
    pub fn emit(&self) {
        let status = match self.resolution {
            Resolution::Sent { .. } => DispatchStatus::Sent,
            Resolution::Failed { .. } => DispatchStatus::Failed,
            Resolution::Refused { .. } => DispatchStatus::Refused,
        };
        tracing::info!(status = status.as_str(), resolution = ?self.resolution, "dispatch recorded");
        count_dispatch(status.as_str());
    }
}

/// Why a WON of the batch needs nothing sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Its dispatch row exists (a redelivery).
    AlreadyRecorded,
    /// Its payout claim is settled (sent or released).
    ClaimSettled,
    /// The guard refused it on an earlier delivery.
    RefusedEarlier(RefusalReason),
    /// Another run recorded its outcome between our claim and our write.
    RecordedMeanwhile,
    /// It is parked: the retrier of parked gifts owns it.
    Parked,
}

/// A WON skipped: its outcome is known already.
pub struct DispatchSkipped {
    pub reason: SkipReason,
}

impl DispatchSkipped {
    pub fn emit(&self) {
        match self.reason {
            SkipReason::AlreadyRecorded => tracing::debug!("outcome already recorded; skipping"),
            SkipReason::ClaimSettled => tracing::debug!("payout claim already settled; skipping"),
            SkipReason::RefusedEarlier(reason) => {
                tracing::info!(reason = reason.as_str(), "payout refused on an earlier delivery; skipping")
            }
            SkipReason::RecordedMeanwhile => {
                tracing::info!("outcome recorded meanwhile by another run; nothing written")
            }
            SkipReason::Parked => tracing::info!("gift parked; its retrier settles it"),
        }
        count_dispatch("skipped");
    }
}

/// A gift not finished in this run: the batch is retried.
pub struct DispatchUnresolved<'a> {
    pub error: &'a HandlerError,
}

impl DispatchUnresolved<'_> {
    pub fn emit(&self) {
        tracing::warn!(error = %self.error.chain(), "gift not finished; the batch will be retried");
        count_dispatch("unresolved");
    }
}

/// The provider rejected one gift's request as malformed: the record is
/// dead-lettered for an operator, never failed nor compensated.
pub struct RequestRejected<'a> {
    pub rejected: &'a Rejected,
}

impl RequestRejected<'_> {
    pub fn emit(&self) {
        tracing::error!(
            status = self.rejected.status,
            reason = %self.rejected.reason,
            attempts = self.rejected.attempts,
            "the provider rejected this gift's request; dead-lettering it (never failed nor compensated)"
        );
        count_dispatch("rejected");
    }
}

/// A record of `stock-decided` the sender can never act on (undecodable, or
/// a WON without a usable unit or ids): dead-lettered.
pub struct DecisionRejected<'a> {
    pub error: &'a HandlerError,
}

impl DecisionRejected<'_> {
    pub fn emit(&self) {
        tracing::warn!(reason = %ErrorChain(self.error.cause()), "invalid decision; dead-lettering it");
        metrics::counter!("firstcome_sender_rejected_records_total").increment(1);
    }
}

/// A payout claimed before the provider call.
pub struct PayoutClaimed {
    /// False when a claim from an earlier delivery was found.
    pub fresh: bool,
}

impl PayoutClaimed {
    pub fn emit(&self) {
        tracing::debug!(fresh = self.fresh, "payout claimed");
    }
}

/// A WON refused by the guard: logged at ERROR and counted together.
pub struct PayoutRefused<'a> {
    pub entry: &'a WonEntry,
    pub reason: RefusalReason,
}

impl PayoutRefused<'_> {
    pub fn emit(&self) {
        tracing::error!(
            entry_id = %self.entry.entry_id,
            event_id = %self.entry.event_id,
            user_id = %self.entry.user_id,
            unit_no = self.entry.unit_no,
            reason = self.reason.as_str(),
            "payout refused: this WON is never sent and its unit is not returned; dead-lettering it for an operator"
        );
        metrics::counter!("firstcome_sender_payout_refusals_total", "reason" => self.reason.as_str()).increment(1);
    }
}

/// A WON with no entry recorded for its member and event within the
/// deadline: never paid (`crate::entries`).
pub struct WonWithoutEntry<'a> {
    pub entry: &'a WonEntry,
}

impl WonWithoutEntry<'_> {
    pub fn emit(&self) {
        tracing::error!(
            entry_id = %self.entry.entry_id,
            event_id = %self.entry.event_id,
            user_id = %self.entry.user_id,
            unit_no = self.entry.unit_no,
            "WON refused: no entry recorded for this member and event; never sent, dead-lettering it for an operator"
        );
        metrics::counter!("firstcome_sender_won_without_entry_total").increment(1);
    }
}

/// WONs of a batch whose entries are not recorded yet: the batch is retried.
pub struct AwaitingEntries {
    pub count: usize,
}

impl AwaitingEntries {
    pub fn emit(&self) {
        tracing::warn!(count = self.count, "WONs whose entries the recorder has not recorded yet; retrying the batch");
        metrics::counter!("firstcome_sender_entry_waits_total").increment(1);
    }
}

/// WONs of a batch past their entry deadline whose entries the recorder
/// has not read past yet: never refused for that, the batch is retried. The
/// WARN line once per batch of them, the count on every retry.
pub struct AwaitingRecorder<'a> {
    pub count: usize,
    /// Records the recorder is short of, by partition of `survey-submitted`.
    pub short: &'a std::collections::BTreeMap<i32, i64>,
    /// First time these WONs are held (else the line is DEBUG).
    pub first: bool,
}

impl AwaitingRecorder<'_> {
    pub fn emit(&self) {
        let records: i64 = self.short.values().sum();
        let partitions = self.short.len();
        if self.first {
            tracing::warn!(
                count = self.count,
                records,
                partitions,
                "WONs past their entry deadline, but the recorder has not read past their entries yet; \
                 holding them (never paid meanwhile) until it does"
            );
        } else {
            tracing::debug!(count = self.count, records, partitions, "still awaiting the recorder");
        }
        metrics::counter!("firstcome_sender_awaiting_recorder_total").increment(1);
    }
}

/// A WON whose entry id is claimed for another event or member.
pub struct ConflictingClaim<'a> {
    pub entry: &'a WonEntry,
    pub claimed_event_id: &'a str,
    pub claimed_user_id: &'a str,
}

impl ConflictingClaim<'_> {
    pub fn emit(&self) {
        tracing::error!(
            entry_id = %self.entry.entry_id,
            event_id = %self.entry.event_id,
            user_id = %self.entry.user_id,
            claimed_event_id = self.claimed_event_id,
            claimed_user_id = self.claimed_user_id,
            "WON contradicts the entry's payout claim; never sent, dead-lettering it"
        );
        metrics::counter!("firstcome_sender_payout_refusals_total", "reason" => "conflicting_claim").increment(1);
    }
}

/// A member without a phone the provider accepts: the gift fails and its
/// unit goes back to stock — at once when nothing was ever asked of the
/// provider, otherwise only once a lookup says nothing was issued.
pub struct PhoneUnusable<'a> {
    pub user_id: &'a str,
    pub reason: &'a str,
    pub maybe_issued: bool,
}

impl PhoneUnusable<'_> {
    pub fn emit(&self) {
        if self.maybe_issued {
            tracing::warn!(
                user_id = self.user_id,
                reason = self.reason,
                "member has no phone the provider accepts, but a gift may have been issued; \
                 failing it only if the provider says none was"
            );
        } else {
            tracing::warn!(
                user_id = self.user_id,
                reason = self.reason,
                "member has no phone the provider accepts; failing the gift and returning its unit"
            );
        }
    }
}

/// Which provider call an answer came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Issue,
    Lookup,
}

impl CallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Issue => "issue",
            CallKind::Lookup => "lookup",
        }
    }
}

/// How one provider call ended (`firstcome_sender_provider_calls_total{result}`).
pub enum ProviderCall<'a> {
    /// A gift answer that is not this gift (another key's, not issued, …):
    /// the outcome is unknown; logged at ERROR and counted on its own
    /// (`firstcome_sender_provider_mismatches_total{call}`).
    Mismatch { on: CallKind, mismatch: &'a Mismatch },
    /// A lookup found the gift an earlier call issued.
    LookupFound { gift_id: &'a str },
    /// A lookup proved nothing was issued: issuing again.
    LookupNotFound,
    /// A lookup could not tell: the outcome stays unknown.
    LookupFailed { error: &'a LookupError },
    /// The gift was issued.
    Issued { gift_id: &'a str },
    /// Any failed issue call (refused for good, our configuration, a
    /// rejected request, or worth retrying).
    IssueFailed { error: &'a IssueError },
}

/// One provider call, with the calls made for the gift so far.
pub struct ProviderCalled<'a> {
    pub call: ProviderCall<'a>,
    pub calls: i32,
}

impl ProviderCalled<'_> {
    pub fn emit(&self) {
        let calls = self.calls;
        let result = match &self.call {
            ProviderCall::Mismatch { on, mismatch } => {
                tracing::error!(
                    call = on.as_str(),
                    field = mismatch.field,
                    expected = %mismatch.expected,
                    got = %mismatch.got,
                    calls,
                    "the provider answered with a gift that is not this one; the outcome stays unknown and is looked up"
                );
                metrics::counter!("firstcome_sender_provider_mismatches_total", "call" => on.as_str()).increment(1);
                "mismatch"
            }
            ProviderCall::LookupFound { gift_id } => {
                tracing::info!(gift_id, calls, "unknown outcome resolved: the gift was issued");
                "lookup_found"
            }
            ProviderCall::LookupNotFound => {
                tracing::info!(calls, "unknown outcome resolved: nothing issued under the key");
                "lookup_not_found"
            }
            ProviderCall::LookupFailed { error } => {
                tracing::warn!(error = %ErrorChain(*error), calls, "lookup failed; the outcome stays unknown");
                "lookup_failed"
            }
            ProviderCall::Issued { gift_id } => {
                tracing::info!(gift_id, calls, "gift issued");
                "issued"
            }
            ProviderCall::IssueFailed { error } => {
                match error {
                    IssueError::Permanent { reason } => {
                        tracing::warn!(%reason, calls, "the provider refused the gift for good")
                    }
                    IssueError::ClientError { .. } => tracing::error!(
                        error = %ErrorChain(*error),
                        calls,
                        "the provider rejected our request (credentials, base URL or request shape?); \
                         the gift stays open and the batch will be retried"
                    ),
                    IssueError::Rejected { status, reason } => tracing::error!(
                        status,
                        %reason,
                        calls,
                        "the provider rejected this gift's request; it is dead-lettered, never failed nor compensated"
                    ),
                    other => tracing::warn!(
                        error = %ErrorChain(*error),
                        calls,
                        maybe_issued = other.maybe_issued(),
                        "provider call failed; will retry"
                    ),
                }
                error.label()
            }
        };
        metrics::counter!("firstcome_sender_provider_calls_total", "result" => result).increment(1);
        if self.calls > 1 {
            // A second or later call for the same gift: a retry (or a lookup after an unknown outcome).
            metrics::counter!("firstcome_sender_provider_retries_total").increment(1);
        }
    }
}

/// One relay pass published outbox rows (and left some pending).
pub struct RelayPublished {
    pub published: usize,
    pub failed: usize,
}

impl RelayPublished {
    pub fn emit(&self) {
        if self.published > 0 {
            tracing::debug!(published = self.published, failed = self.failed, "outbox rows published");
        }
        metrics::counter!("firstcome_sender_outbox_published_total").increment(self.published as u64);
        if self.failed > 0 {
            metrics::counter!("firstcome_sender_outbox_send_failures_total").increment(self.failed as u64);
        }
    }
}

/// One outbox row the broker did not acknowledge: it stays pending.
pub struct RelayRowNotAcknowledged<'a> {
    pub id: i64,
    pub error: &'a (dyn std::error::Error + 'static),
}

impl RelayRowNotAcknowledged<'_> {
    pub fn emit(&self) {
        tracing::warn!(id = self.id, error = %ErrorChain(self.error), "outbox row not acknowledged; it stays pending");
    }
}

/// A relay pass failed as a whole (database away): tried again.
pub struct RelayPassFailed<'a> {
    pub error: &'a (dyn std::error::Error + 'static),
}

impl RelayPassFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(error = %ErrorChain(self.error), "outbox pass failed; will retry");
        metrics::counter!("firstcome_sender_outbox_errors_total").increment(1);
    }
}

/// Rows written to the outbox and not yet published.
pub struct OutboxPending {
    pub count: i64,
}

impl OutboxPending {
    pub fn emit(&self) {
        metrics::gauge!("firstcome_sender_outbox_pending").set(self.count as f64);
    }
}

/// A WON whose entry id came twice in one batch: the later copy is skipped.
pub struct DuplicateInBatch;

impl DuplicateInBatch {
    pub fn emit(&self) {
        tracing::debug!("duplicate in the batch; skipping");
        metrics::counter!("firstcome_sender_duplicates_in_batch_total").increment(1);
    }
}

/// A provider call waited for the rate toward the provider.
pub struct RateLimited {
    pub wait: std::time::Duration,
}

impl RateLimited {
    pub fn emit(&self) {
        tracing::trace!(wait_ms = self.wait.as_millis() as u64, "waiting for the provider rate");
        metrics::counter!("firstcome_sender_rate_limited_total").increment(1);
    }
}

/// A gift set aside: it may have been issued and the provider's answers
/// settle nothing; its claim is kept and the retrier looks it up again.
pub struct GiftParked<'a> {
    pub entry: &'a WonEntry,
    pub error: &'a (dyn std::error::Error + 'static),
}

impl GiftParked<'_> {
    pub fn emit(&self) {
        tracing::error!(
            entry_id = %self.entry.entry_id,
            event_id = %self.entry.event_id,
            user_id = %self.entry.user_id,
            error = %ErrorChain(self.error),
            "gift parked: it may have been issued and the provider's answers settle nothing; \
             its claim is kept and it is retried on its own (firstcome gifts parked)"
        );
        metrics::counter!("firstcome_sender_gifts_parked_total").increment(1);
        count_dispatch("parked");
    }
}

/// One retry of a parked gift (`firstcome_sender_parked_retries_total{result}`).
pub struct ParkedRetried<'a> {
    pub result: ParkedResult<'a>,
    /// Retries since it was parked, this one included.
    pub tries: i32,
}

pub enum ParkedResult<'a> {
    /// Settled: its outcome is recorded and it is no longer parked.
    Settled,
    /// Still unsettled: next retry at its backoff.
    StillParked { error: &'a (dyn std::error::Error + 'static), retry_in: std::time::Duration },
}

impl ParkedRetried<'_> {
    pub fn emit(&self) {
        let result = match &self.result {
            ParkedResult::Settled => {
                tracing::info!(tries = self.tries, "parked gift settled");
                "settled"
            }
            ParkedResult::StillParked { error, retry_in } => {
                tracing::warn!(
                    tries = self.tries,
                    error = %ErrorChain(*error),
                    retry_in_ms = retry_in.as_millis() as u64,
                    "parked gift still unsettled"
                );
                "still_parked"
            }
        };
        metrics::counter!("firstcome_sender_parked_retries_total", "result" => result).increment(1);
    }
}

/// Gifts parked now, all events (`firstcome_sender_parked_gifts`).
pub struct ParkedCount {
    pub count: i64,
}

impl ParkedCount {
    pub fn emit(&self) {
        metrics::gauge!("firstcome_sender_parked_gifts").set(self.count as f64);
    }
}

/// A pass of the parked-gift retrier failed as a whole (database away).
pub struct ParkedPassFailed<'a> {
    pub error: &'a (dyn std::error::Error + 'static),
}

impl ParkedPassFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(error = %ErrorChain(self.error), "parked-gift pass failed; will retry");
        metrics::counter!("firstcome_sender_parked_errors_total").increment(1);
    }
}
