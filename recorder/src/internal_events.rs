//! One struct per operational event: `emit()` logs and counts together, so
//! the log line and the metric never drift apart.

use platform::error::ErrorChain;
use platform::kafka::HandlerError;
use platform::metrics::Metric;

use crate::store::{row_kinds, BatchReport};

/// Every metric of the recorder (beside platform's consumer ones), described
/// when it is built: help text, unit, and the series known before the first
/// batch at zero.
pub const METRICS: &[Metric] = &[
    Metric::counter("firstcome_recorder_records_total", "Records decoded into facts, by kind")
        .labels(&["kind"])
        .known(&[&["submission"], &["decision"], &["dispatch"]]),
    Metric::counter("firstcome_recorder_rows_total", "Rows written, by kind").labels(&["kind"]).known(&[
        &["entry_created"],
        &["entry_filled"],
        &["issued"],
        &["returned"],
    ]),
    Metric::counter(
        "firstcome_recorder_poison_records_total",
        "Records that can never be stored (dead-lettered), by topic",
    )
    .labels(&["topic"]),
    Metric::counter(
        "firstcome_recorder_ledger_missing_total",
        "Batches with movements of an event that has no ledger row (the counters not updated)",
    ),
    Metric::counter(
        "firstcome_recorder_batch_splits_total",
        "Batches the database refused for their data, written one record at a time",
    ),
    Metric::counter("firstcome_recorder_batch_failures_total", "Batches that could not be written (retried whole)"),
];

/// Describes the recorder's metrics.
pub fn describe_metrics() {
    platform::metrics::describe(METRICS);
}

/// A record decoded into a fact.
pub struct RecordDecoded {
    pub kind: &'static str,
}

impl RecordDecoded {
    pub fn emit(&self) {
        tracing::trace!(kind = self.kind, "decoded");
        metrics::counter!("firstcome_recorder_records_total", "kind" => self.kind).increment(1);
    }
}

/// A record that cannot be decoded now (the registry away): the whole batch
/// is retried, nothing written.
pub struct CannotDecodeNow<'a> {
    pub error: &'a HandlerError,
}

impl CannotDecodeNow<'_> {
    pub fn emit(&self) {
        tracing::warn!(error = %self.error.chain(), "cannot decode now");
    }
}

/// A record that can never be stored: it is dead-lettered.
pub struct PoisonRecord<'a> {
    pub topic: &'a str,
    pub error: &'a HandlerError,
}

impl PoisonRecord<'_> {
    pub fn emit(&self) {
        tracing::warn!(topic = self.topic, reason = %ErrorChain(self.error.cause()), "poison record, dead-lettering");
        metrics::counter!("firstcome_recorder_poison_records_total", "topic" => self.topic.to_string()).increment(1);
    }
}

/// Movements for an event without a ledger row (created by other tooling):
/// the movements are kept, the counters are not updated.
pub struct LedgerMissing<'a> {
    pub event_id: &'a str,
    pub issued: i32,
    pub returned: i32,
}

impl LedgerMissing<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            event_id = self.event_id,
            issued = self.issued,
            returned = self.returned,
            "no stock_ledger row for this event; ledger not updated (reconcile repairs it)"
        );
        metrics::counter!("firstcome_recorder_ledger_missing_total").increment(1);
    }
}

/// A batch committed to the database.
pub struct BatchRecorded<'a> {
    pub records: usize,
    pub report: &'a BatchReport,
}

impl BatchRecorded<'_> {
    pub fn emit(&self) {
        tracing::debug!(
            records = self.records,
            created = self.report.entries_created,
            filled = self.report.entries_filled,
            issued = self.report.issued(),
            returned = self.report.returned(),
            "batch recorded"
        );
        for (kind, count) in row_kinds(self.report) {
            if count > 0 {
                metrics::counter!("firstcome_recorder_rows_total", "kind" => kind).increment(count);
            }
        }
    }
}

/// The batch write was refused because of its data (SQLSTATE class 22/23):
/// its records are written one by one to find the one(s) at fault.
pub struct BatchSplit<'a> {
    pub records: usize,
    pub error: &'a (dyn std::error::Error + 'static),
}

impl BatchSplit<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            records = self.records,
            error = %ErrorChain(self.error),
            "the database refused the batch's data; writing its records one by one to isolate the poison"
        );
        metrics::counter!("firstcome_recorder_batch_splits_total").increment(1);
    }
}

/// The batch could not be written; it is retried whole.
pub struct BatchFailed<'a> {
    pub error: &'a (dyn std::error::Error + 'static),
}

impl BatchFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(error = %ErrorChain(self.error), "recording the batch failed; nothing committed, will retry");
        metrics::counter!("firstcome_recorder_batch_failures_total").increment(1);
    }
}
