//! Operational events of the consumer loop, the same in every group: one
//! struct per event whose `emit()` writes the log line and the metric
//! together (each labelled with the group).

use std::time::Duration;

use rdkafka::consumer::Rebalance;
use rdkafka::error::KafkaError;

use super::record::{DeadLetter, HandlerError, Record};
use crate::error::ErrorChain;

/// The loop joined its group and consumes.
pub struct LoopStarted<'a> {
    pub group: &'a str,
    pub delivery: &'a super::Delivery,
}

impl LoopStarted<'_> {
    pub fn emit(&self) {
        tracing::info!(group = self.group, mode = ?self.delivery, "consumer loop started");
    }
}

/// The loop left its group.
pub struct LoopStopped<'a> {
    pub group: &'a str,
    /// Leaving the group did not finish in time (broker gone).
    pub timed_out: bool,
}

impl LoopStopped<'_> {
    pub fn emit(&self) {
        if self.timed_out {
            tracing::warn!(group = self.group, "leaving the group timed out");
        }
        tracing::info!(group = self.group, "consumer loop stopped");
    }
}

/// A rebalance begins (partitions about to be assigned or revoked).
pub struct RebalanceStarted<'a, 'r> {
    pub group: &'a str,
    pub rebalance: &'a Rebalance<'r>,
}

impl RebalanceStarted<'_, '_> {
    pub fn emit(&self) {
        tracing::info!(group = self.group, rebalance = ?self.rebalance, "rebalance starting");
    }
}

/// A rebalance ended.
pub struct RebalanceDone<'a, 'r> {
    pub group: &'a str,
    pub rebalance: &'a Rebalance<'r>,
}

impl RebalanceDone<'_, '_> {
    pub fn emit(&self) {
        tracing::info!(group = self.group, rebalance = ?self.rebalance, "rebalance done");
        metrics::counter!("firstcome_rebalances_total", "group" => self.group.to_string()).increment(1);
    }
}

/// Records of partitions revoked while their batch was gathered were
/// dropped: the partitions' new owner reads them from the committed offset.
pub struct RevokedRecordsDropped<'a> {
    pub group: &'a str,
    pub dropped: usize,
}

impl RevokedRecordsDropped<'_> {
    pub fn emit(&self) {
        tracing::info!(group = self.group, dropped = self.dropped, "dropped records of revoked partitions");
        metrics::counter!("firstcome_revoked_records_dropped_total", "group" => self.group.to_string())
            .increment(self.dropped as u64);
    }
}

/// Partitions behind their high watermark delivered nothing for a whole
/// `max_idle`: the timestamp order goes on without them until they deliver.
pub struct PartitionsStalled<'a> {
    pub group: &'a str,
    pub partitions: &'a [(String, i32)],
    pub max_idle: Duration,
}

impl PartitionsStalled<'_> {
    pub fn emit(&self) {
        tracing::info!(
            group = self.group,
            partitions = ?self.partitions,
            max_idle_ms = self.max_idle.as_millis() as u64,
            "lagging partitions not waited for"
        );
        metrics::counter!("firstcome_partitions_stalled_total", "group" => self.group.to_string())
            .increment(self.partitions.len() as u64);
    }
}

/// A poll returned an error (the loop pauses briefly and polls again).
pub struct PollFailed<'a> {
    pub group: &'a str,
    pub error: &'a KafkaError,
}

impl PollFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(group = self.group, error = %ErrorChain(self.error), "poll error");
        metrics::counter!("firstcome_poll_errors_total", "group" => self.group.to_string()).increment(1);
    }
}

/// The handler failed the batch transiently: nothing committed, tried again.
pub struct BatchRetried<'a> {
    pub group: &'a str,
    pub error: &'a HandlerError,
    pub retry_in: Duration,
}

impl BatchRetried<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            group = self.group,
            error = %self.error.chain(),
            retry_in_ms = self.retry_in.as_millis() as u64,
            "batch failed, will retry"
        );
        metrics::counter!("firstcome_batch_retries_total", "group" => self.group.to_string()).increment(1);
    }
}

/// The handler refused the whole batch as poison: every record is dead-lettered.
pub struct BatchRefused<'a> {
    pub group: &'a str,
    pub records: usize,
    pub error: &'a HandlerError,
}

impl BatchRefused<'_> {
    pub fn emit(&self) {
        tracing::error!(
            group = self.group,
            records = self.records,
            error = %self.error.chain(),
            "the handler refused the whole batch; dead-lettering it"
        );
    }
}

/// A batch handled: its records counted by result, its duration recorded.
pub struct BatchProcessed<'a> {
    pub group: &'a str,
    pub records: usize,
    pub dead_letters: usize,
}

impl BatchProcessed<'_> {
    pub fn emit(&self) {
        let dead = self.dead_letters.min(self.records) as u64;
        metrics::counter!("firstcome_records_total", "group" => self.group.to_string(), "result" => "ok")
            .increment(self.records as u64 - dead);
        if dead > 0 {
            metrics::counter!("firstcome_records_total", "group" => self.group.to_string(), "result" => "dead_letter")
                .increment(dead);
        }
    }
}

/// A batch committed (or given up), from its first record to its commit.
pub struct BatchFinished<'a> {
    pub group: &'a str,
    pub elapsed: Duration,
}

impl BatchFinished<'_> {
    pub fn emit(&self) {
        metrics::histogram!("firstcome_batch_seconds", "group" => self.group.to_string())
            .record(self.elapsed.as_secs_f64());
    }
}

/// One record sent to its dead-letter topic.
pub struct RecordDeadLettered<'a> {
    pub group: &'a str,
    pub record: &'a Record,
    pub dead: &'a DeadLetter,
}

impl RecordDeadLettered<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            group = self.group,
            topic = self.record.topic(),
            partition = self.record.partition(),
            offset = self.record.offset(),
            reason = %self.dead.reason,
            "dead-lettering record"
        );
        metrics::counter!(
            "firstcome_dead_letters_total",
            "group" => self.group.to_string(),
            "topic" => self.record.topic().to_string()
        )
        .increment(1);
    }
}

/// Shutdown found a batch still in work past the drain deadline: it is
/// abandoned, nothing of it committed, and replays after the restart.
pub struct DrainAbandoned<'a> {
    pub group: &'a str,
    pub records: usize,
    pub drain_timeout: Duration,
}

impl DrainAbandoned<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            group = self.group,
            records = self.records,
            drain_timeout_ms = self.drain_timeout.as_millis() as u64,
            "the batch in work did not finish within the drain deadline; abandoned uncommitted, it replays after the restart"
        );
        metrics::counter!("firstcome_drain_abandoned_total", "group" => self.group.to_string()).increment(1);
    }
}

/// An output or dead letter was not acknowledged (at-least-once: retried).
pub struct OutputNotAcknowledged<'a> {
    pub group: &'a str,
    pub error: &'a KafkaError,
}

impl OutputNotAcknowledged<'_> {
    pub fn emit(&self) {
        tracing::warn!(group = self.group, error = %ErrorChain(self.error), "output not acknowledged, retrying");
    }
}

/// Shutting down with outputs unacknowledged: nothing committed, the batch
/// replays after the restart.
pub struct OutputsAbandoned<'a> {
    pub group: &'a str,
}

impl OutputsAbandoned<'_> {
    pub fn emit(&self) {
        tracing::error!(group = self.group, "shutting down with unacknowledged outputs; batch will replay");
    }
}

/// The offset commit failed (e.g. partitions revoked meanwhile): the
/// records are redelivered.
pub struct CommitFailed<'a> {
    pub group: &'a str,
    pub error: &'a (dyn std::error::Error + 'static),
}

impl CommitFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(group = self.group, error = %ErrorChain(self.error), "offset commit failed; records will be redelivered");
        metrics::counter!("firstcome_commit_failures_total", "group" => self.group.to_string()).increment(1);
    }
}

/// A transaction failed: aborted and rewound, or fatal (the loop ends).
pub struct TransactionAborted<'a> {
    pub group: &'a str,
    pub error: &'a KafkaError,
    pub fatal: bool,
}

impl TransactionAborted<'_> {
    pub fn emit(&self) {
        if self.fatal {
            tracing::error!(group = self.group, error = %ErrorChain(self.error), "transaction failed fatally; the loop stops");
        } else {
            tracing::warn!(group = self.group, error = %ErrorChain(self.error), "transaction failed; aborting and rewinding");
        }
        metrics::counter!("firstcome_transaction_aborts_total", "group" => self.group.to_string()).increment(1);
    }
}

/// A blocking transactional call did not return within its bound (librdkafka
/// can wait past the timeout it was given while it looks for a lost group
/// coordinator): the producer has a call in progress and takes no other, so
/// the loop ends and is rebuilt with a new producer, which fences this one.
pub struct TransactionCallStuck<'a> {
    pub group: &'a str,
    pub call: &'static str,
    pub waited: std::time::Duration,
}

impl TransactionCallStuck<'_> {
    pub fn emit(&self) {
        tracing::error!(
            group = self.group,
            call = self.call,
            waited_ms = self.waited.as_millis() as u64,
            "transactional call did not return within its timeout; rebuilding the loop"
        );
        metrics::counter!("firstcome_transaction_calls_stuck_total", "group" => self.group.to_string()).increment(1);
    }
}

/// A starting transactional loop's `init_transactions` failed with an error
/// that is not fatal (the coordinator moving or loading after a broker
/// restart): asked again after `pause`.
pub struct TransactionInitRetried<'a> {
    pub group: &'a str,
    pub transactional_id: &'a str,
    pub tries: u32,
    pub error: &'a rdkafka::error::RDKafkaError,
    pub pause: Duration,
}

impl TransactionInitRetried<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            group = self.group,
            transactional_id = self.transactional_id,
            tries = self.tries,
            error = %self.error,
            retry_in_ms = self.pause.as_millis() as u64,
            "the transaction coordinator is not ready; asking again"
        );
        metrics::counter!("firstcome_transaction_init_retries_total", "group" => self.group.to_string()).increment(1);
    }
}

/// The loop stopped with an error it cannot go on from; it is rebuilt
/// after `pause` (`platform::service`).
pub struct LoopFailed<'a> {
    pub group: &'a str,
    pub error: &'a super::ConsumerError,
    pub pause: Duration,
}

impl LoopFailed<'_> {
    pub fn emit(&self) {
        tracing::error!(
            group = self.group,
            error = %ErrorChain(self.error),
            rebuild_in_ms = self.pause.as_millis() as u64,
            "consumer loop stopped; rebuilding it"
        );
        metrics::counter!("firstcome_consumer_loop_rebuilds_total", "group" => self.group.to_string()).increment(1);
    }
}

/// Rebuilding a failed loop failed (Kafka still away): tried again after a pause.
pub struct LoopRebuildFailed<'a> {
    pub group: &'a str,
    pub error: &'a (dyn std::error::Error + 'static),
}

impl LoopRebuildFailed<'_> {
    pub fn emit(&self) {
        tracing::error!(group = self.group, error = %ErrorChain(self.error), "rebuilding the consumer loop failed; will retry");
    }
}
