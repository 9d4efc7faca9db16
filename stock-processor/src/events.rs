//! Operational events of the stage: each `emit()` logs and counts together,
//! so logs and `/metrics` never disagree.

use platform::error::ErrorChain;
use platform::kafka::HandlerError;
use platform::metrics::{Metric, Unit};
use schemas::Outcome;

use crate::restore::{Restore, RestoreError};
use crate::store::Released;

/// One entry decided.
pub struct DecisionMade<'a> {
    pub outcome: Outcome,
    pub unit_no: Option<i32>,
    pub user_id: &'a str,
}

impl DecisionMade<'_> {
    pub fn emit(&self) {
        tracing::debug!(outcome = self.outcome.as_str(), unit_no = ?self.unit_no, user_id = self.user_id, "entry decided");
        metrics::counter!("firstcome_stock_decisions_total", "outcome" => self.outcome.as_str()).increment(1);
    }
}

/// Units left for one event after a batch.
pub struct StockRemaining<'a> {
    pub event_id: &'a str,
    pub remaining: i64,
}

impl StockRemaining<'_> {
    pub fn emit(&self) {
        metrics::gauge!("firstcome_stock_remaining", "event_id" => self.event_id.to_string())
            .set(self.remaining as f64);
    }
}

/// One release applied (or refused).
pub struct ReleaseApplied<'a> {
    pub result: &'a Released,
    pub unit_no: i32,
}

impl ReleaseApplied<'_> {
    pub fn emit(&self) {
        let result = match self.result {
            Released::Returned { reopened: false } => "returned",
            Released::Returned { reopened: true } => "reopened",
            Released::Promoted(_) => "promoted",
            Released::Duplicate(_) => "duplicate",
            Released::Mismatch => "mismatch",
            Released::UnknownEvent => "unknown_event",
        };
        match self.result {
            Released::Returned { reopened } => {
                tracing::info!(unit_no = self.unit_no, reopened, "unit returned to stock")
            }
            Released::Promoted(promotions) => {
                for p in promotions {
                    tracing::info!(
                        unit_no = p.unit_no,
                        promoted_entry_id = %p.entry_id,
                        promoted_user_id = %p.user_id,
                        "returned unit went to the next in line"
                    )
                }
            }
            Released::Duplicate(_) => tracing::debug!(unit_no = self.unit_no, "release already applied"),
            _ => tracing::warn!(unit_no = self.unit_no, result, "release refused"),
        }
        metrics::counter!("firstcome_stock_releases_total", "result" => result).increment(1);
    }
}

/// Redis is behind what the stage committed to Kafka for an event: it lost
/// writes (AOF everysec, a failover). Nothing is decided on it until rebuilt.
pub struct RedisBehind<'a> {
    pub event_id: &'a str,
    pub field: &'a str,
    pub applied: i64,
    pub expected: i64,
}

impl RedisBehind<'_> {
    pub fn emit(&self) {
        tracing::error!(
            event_id = self.event_id,
            field = self.field,
            applied = self.applied,
            committed = self.expected,
            "redis is behind the log: rebuilding the event before deciding"
        );
        metrics::counter!("firstcome_stock_redis_behind_total").increment(1);
    }
}

/// A rebuild of an event's stock state from the log ended.
pub struct RebuildFinished<'a, E: std::fmt::Display> {
    pub event_id: &'a str,
    pub error: Option<&'a E>,
}

impl<E: std::fmt::Display> RebuildFinished<'_, E> {
    pub fn emit(&self) {
        let result = match self.error {
            None => {
                tracing::warn!(event_id = self.event_id, "event rebuilt from the log");
                "rebuilt"
            }
            Some(error) => {
                tracing::error!(event_id = self.event_id, %error, "rebuilding the event failed; the batch will be retried");
                "failed"
            }
        };
        metrics::counter!("firstcome_stock_rebuilds_total", "result" => result).increment(1);
    }
}

/// Redis lost an event whole (no `meta`, every key gone) although something
/// names it: the committed marks (the stage decided entries of it and
/// committed them), or recent entries of it (PostgreSQL is asked whether it
/// exists). Answering INELIGIBLE would take accepted members' places for
/// good, so the stage restores the event from PostgreSQL and the member
/// replica (`crate::restore`), rebuilds it from the log and decides again.
/// An event PostgreSQL does not know, or whose keys' lifetime is over, is
/// decided as unknown (INELIGIBLE). Logged at WARN when restored or when
/// committed marks name an event PostgreSQL lacks; counted by result.
pub struct EventLost<'a> {
    pub event_id: &'a str,
    /// `marks` (the committed marks name it), `entries` (recent entries of
    /// an event Redis does not know) or `release` (a unit returned to one).
    pub named_by: &'static str,
    /// What the restore did; `None` when this stage has no restorer.
    pub restore: Option<&'a Result<Restore, RestoreError>>,
}

impl EventLost<'_> {
    pub fn emit(&self) {
        let (event_id, named_by) = (self.event_id, self.named_by);
        // The marks naming an event PostgreSQL lacks is surprising; a junk id
        // in an entry is a hostile or broken producer's, and not worth a WARN each.
        let surprising = named_by == "marks";
        let result = match self.restore {
            Some(Ok(Restore::Restored { eligible })) => {
                tracing::warn!(
                    event_id,
                    named_by,
                    eligible,
                    "Redis lost the event whole: meta and eligibility restored from PostgreSQL; rebuilding it from the log before deciding"
                );
                "restored"
            }
            Some(Ok(Restore::Present)) => {
                tracing::info!(
                    event_id,
                    named_by,
                    "the lost event's meta is back (restored meanwhile): rebuilding it from the log"
                );
                "present"
            }
            Some(Ok(Restore::Unknown { cached })) => {
                if surprising && !cached {
                    tracing::warn!(
                        event_id,
                        named_by,
                        "Redis and PostgreSQL both lack the event: its entries are decided as an unknown event's"
                    );
                } else {
                    tracing::debug!(event_id, named_by, cached, "no such event in PostgreSQL: decided as unknown");
                }
                "unknown"
            }
            Some(Ok(Restore::Expired { cached })) => {
                tracing::debug!(event_id, named_by, cached, "the event's keys expired: decided as unknown");
                "expired"
            }
            Some(Err(error)) => {
                tracing::error!(
                    event_id,
                    named_by,
                    error = %ErrorChain(error),
                    "Redis lost the event whole and restoring it failed: nothing decided on it, the batch will be retried"
                );
                "failed"
            }
            None => {
                tracing::error!(
                    event_id,
                    named_by,
                    "Redis lost the event whole and this stage cannot restore it (no database): its entries wait; run `firstcome rebuild redis {event_id}`"
                );
                "not_restorable"
            }
        };
        metrics::counter!("firstcome_stock_events_lost_total", "result" => result).increment(1);
    }
}

/// A script call found the event held by a rebuild: the batch waits for the
/// swap instead of deciding on a state about to be replaced.
pub struct DecisionsHeld<'a> {
    pub event_id: &'a str,
}

impl DecisionsHeld<'_> {
    pub fn emit(&self) {
        tracing::info!(event_id = self.event_id, "a rebuild holds the event: waiting for it before deciding");
        metrics::counter!("firstcome_stock_held_waits_total").increment(1);
    }
}

/// A record that can never be processed (dead-lettered by the loop).
pub struct RecordRejected<'a> {
    pub error: &'a HandlerError,
}

impl RecordRejected<'_> {
    pub fn emit(&self) {
        tracing::warn!(reason = %ErrorChain(self.error.cause()), "record rejected");
        metrics::counter!("firstcome_stock_rejected_total").increment(1);
    }
}

/// A read of the group's committed marks longer than this is logged even
/// when it succeeds: it normally takes milliseconds.
pub const MARKS_SLOW: std::time::Duration = std::time::Duration::from_secs(1);

/// Every metric of the stage (beside platform's consumer, producer and
/// Redis ones), described when it is built: help text, unit, and the series
/// known before the first batch at zero.
pub const METRICS: &[Metric] = &[
    Metric::counter("firstcome_stock_decisions_total", "Entries decided, by outcome").labels(&["outcome"]).known(&[
        &["WON"],
        &["SOLD_OUT"],
        &["ALREADY_WON"],
        &["INELIGIBLE"],
        &["CLOSED"],
    ]),
    Metric::gauge("firstcome_stock_remaining", Unit::Count, "Units an event has left after the last batch")
        .labels(&["event_id"]),
    Metric::counter("firstcome_stock_releases_total", "Units released back (a gift that failed for good), by result")
        .labels(&["result"])
        .known(&[&["returned"], &["reopened"], &["promoted"], &["duplicate"], &["mismatch"], &["unknown_event"]]),
    Metric::counter(
        "firstcome_stock_redis_behind_total",
        "Times Redis was found behind the log (an event rebuilt before deciding)",
    ),
    Metric::counter("firstcome_stock_rebuilds_total", "Rebuilds of an event's stock state from the log, by result")
        .labels(&["result"])
        .known(&[&["rebuilt"], &["failed"]]),
    Metric::counter("firstcome_stock_events_lost_total", "Events Redis lost whole, by what the stage did about it")
        .labels(&["result"])
        .known(&[&["restored"], &["present"], &["unknown"], &["expired"], &["failed"], &["not_restorable"]]),
    Metric::counter("firstcome_stock_held_waits_total", "Batches that waited for a rebuild holding their event"),
    Metric::counter("firstcome_stock_rejected_total", "Records that can never be processed (dead-lettered)"),
    Metric::counter(
        "firstcome_stock_failover_rebuilds_total",
        "Events rebuilt after a Redis failover because the new primary was behind the log",
    ),
    Metric::counter(
        "firstcome_stock_fence_refusals_total",
        "Batches not committed because too few Redis replicas acknowledged their decisions",
    ),
    Metric::seconds(
        "firstcome_stock_fence_wait_seconds",
        "Time a batch waited for the Redis replicas' acknowledgement",
    ),
    Metric::seconds("firstcome_stock_rebuild_hold_seconds", "Time a rebuild held its event's decisions"),
    Metric::seconds(
        "firstcome_stock_marks_wait_seconds",
        "How long reading the stock group's committed offsets and marks took, by result (ok, timeout, error)",
    )
    .labels(&["result"])
    .known(&[&["ok"], &["timeout"], &["error"]]),
    Metric::counter(
        "firstcome_stock_marks_timeouts_total",
        "Reads of the committed marks that hit their deadline, by what they waited for",
    )
    .labels(&["waited_for"])
    .known(&[&["partitions"], &["committed_offsets"]]),
];

/// Describes the stage's metrics, platform's producer and Redis ones with them.
pub fn describe_metrics() {
    platform::metrics::describe(platform::metrics::PRODUCER);
    platform::metrics::describe(platform::metrics::REDIS);
    platform::metrics::describe(METRICS);
}

/// One read of the group's committed marks (before every batch): timed and
/// counted; logged at WARN when it failed (what it waited for, how long) or
/// was slow. A lost group coordinator shows here first.
pub struct MarksWaited<'a> {
    /// The step that failed (`None`: the read succeeded).
    pub waited_for: Option<crate::marks::MarksStep>,
    pub waited: std::time::Duration,
    pub error: Option<&'a rdkafka::error::KafkaError>,
}

impl MarksWaited<'_> {
    pub fn emit(&self) {
        use rdkafka::error::RDKafkaErrorCode::{OperationTimedOut, RequestTimedOut};
        let waited_ms = self.waited.as_millis() as u64;
        let result = match (self.error, self.waited_for) {
            (None, _) => {
                if self.waited >= MARKS_SLOW {
                    tracing::warn!(
                        waited_ms,
                        call = "reading the committed marks",
                        "reading the committed marks was slow (group coordinator moving?)"
                    );
                }
                "ok"
            }
            (Some(error), waited_for) => {
                let waited_for = waited_for.unwrap_or(crate::marks::MarksStep::CommittedOffsets).as_str();
                let timed_out = matches!(error.rdkafka_error_code(), Some(OperationTimedOut | RequestTimedOut));
                tracing::warn!(
                    waited_for,
                    waited_ms,
                    error = %ErrorChain(error),
                    "reading the committed marks failed; the batch will be retried"
                );
                if timed_out {
                    metrics::counter!("firstcome_stock_marks_timeouts_total", "waited_for" => waited_for).increment(1);
                    "timeout"
                } else {
                    "error"
                }
            }
        };
        metrics::histogram!("firstcome_stock_marks_wait_seconds", "result" => result).record(self.waited.as_secs_f64());
    }
}
